package local

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/deliver"
)

const host = "mx.example.test"

func newAgent(t *testing.T, o Options, sub Submitter) *Agent {
	t.Helper()
	o.Hostname = host
	if o.LocalDomain == "" {
		o.LocalDomain = host
	}
	if o.LockAttempts == 0 {
		o.LockAttempts = 100
	}
	if o.LockDelay == 0 {
		o.LockDelay = 20 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	a, err := New(o, sub)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// recorder is a Submitter that keeps what the agent re-submits.
type recorder struct {
	mu   sync.Mutex
	msgs []recorded
}

type recorded struct {
	m    *cleanup.Message
	body string
}

func (r *recorder) Enqueue(_ context.Context, m *cleanup.Message, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, recorded{m: m, body: string(b)})
	return fmt.Sprintf("4Fwd%08d", len(r.msgs)), nil
}

func (r *recorder) all() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.msgs...)
}

func wantStatus(t *testing.T, what string, r deliver.Result, st deliver.Status, enhanced string) {
	t.Helper()
	if r.Status != st || (enhanced != "" && r.Reply.Enhanced.String() != enhanced) {
		t.Fatalf("%s: %s %s, want %s %s", what, r.Status, r.Reply.String(), st, enhanced)
	}
	if r.Relay != Relay {
		t.Errorf("%s: relay %q, want %q", what, r.Relay, Relay)
	}
}

func fileOwner(t *testing.T, path string) (uid int, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid), fi.Mode().Perm()
}

func writeOwned(t *testing.T, path, content string, uid, gid int, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

func TestMailboxDeliveryAsTheUser(t *testing.T) {
	base := sharedDir(t)
	spool := debianSpool(t, base)
	u := newSysUser(t, base)
	a := newAgent(t, Options{MailSpoolDir: spool}, nil)

	r := deliverOne(t, a, newMessage(testMessage), u.name+"@"+host, "someone@"+host)
	wantStatus(t, "mailbox", r, deliver.Delivered, "2.0.0")
	r = deliverOne(t, a, newMessage(testMessage), u.name+"+tag@"+host, "")
	wantStatus(t, "mailbox with an extension", r, deliver.Delivered, "2.0.0")

	path := filepath.Join(spool, u.name)
	if uid, mode := fileOwner(t, path); uid != u.uid || mode != 0o600 {
		t.Errorf("mailbox owned by %d mode %v, want %d 0600", uid, mode, u.uid)
	}
	got := readFile(t, path)
	msgs := strings.Split(got, "\nFrom alice@example.net ")
	if !strings.HasPrefix(got, "From alice@example.net ") || len(msgs) != 2 {
		t.Fatalf("mailbox should hold 2 messages with From_ lines:\n%s", got)
	}
	first := msgs[0]
	for _, want := range []string{
		"\nReturn-Path: <alice@example.net>\nX-Original-To: someone@" + host + "\nDelivered-To: " + u.name + "@" + host + "\nReceived: ",
		"\nHello.\n>From the start of this line, quoting applies.\n>From this one is left alone (mboxo).\nBye.\n\n",
	} {
		if !strings.Contains(first+"\n", want) {
			t.Errorf("first message lacks %q:\n%s", want, first)
		}
	}
	if strings.Contains(got, "\r") {
		t.Error("mailbox has CR characters")
	}
	if !strings.HasSuffix(got, "Bye.\n\n") {
		t.Errorf("mailbox does not end with the message and an empty line: %q", got[max(0, len(got)-40):])
	}
	if !strings.Contains(msgs[1], "Delivered-To: "+u.name+"+tag@"+host+"\n") {
		t.Errorf("second message lacks its Delivered-To:\n%s", msgs[1])
	}
	if _, err := os.Stat(path + ".lock"); !os.IsNotExist(err) {
		t.Errorf("dot-lock left behind: %v", err)
	}
}

func TestMaildirStyleAsTheUser(t *testing.T) {
	base := sharedDir(t)
	u := newSysUser(t, base)
	a := newAgent(t, Options{MailboxStyle: StyleMaildir}, nil)
	r := deliverOne(t, a, newMessage(testMessage), u.name+"@"+host, "")
	wantStatus(t, "maildir", r, deliver.Delivered, "2.0.0")
	ents, err := os.ReadDir(filepath.Join(u.home, "Maildir", "new"))
	if err != nil || len(ents) != 1 {
		t.Fatalf("~/Maildir/new: %v, %d files", err, len(ents))
	}
	p := filepath.Join(u.home, "Maildir", "new", ents[0].Name())
	if uid, _ := fileOwner(t, p); uid != u.uid {
		t.Errorf("maildir file owned by %d, want %d", uid, u.uid)
	}
	if c := readFile(t, p); !strings.Contains(c, "Delivered-To: "+u.name+"@"+host+"\n") || !strings.Contains(c, "\nFrom the start") {
		t.Errorf("maildir file:\n%s", c)
	}
}

func TestForwardRunsAsTheUser(t *testing.T) {
	base := sharedDir(t)
	spool := debianSpool(t, base)
	u := newSysUser(t, base)
	v := newSysUser(t, base)
	h := u.home
	forward := "# forward to a colleague and a local user, keep a copy, run a filter, archive\n" +
		"colleague@example.org, " + v.name + "\n" +
		"\\" + u.name + "\n" +
		"\"|id -u > " + h + "/cmd.uid; id -g > " + h + "/cmd.gid; cat > " + h + "/cmd.msg\"\n" +
		h + "/archive.mbox\n"
	writeOwned(t, filepath.Join(h, ".forward"), forward, u.uid, u.gid, 0o644)
	rec := &recorder{}
	a := newAgent(t, Options{MailSpoolDir: spool}, rec)

	r := deliverOne(t, a, newMessage(testMessage), u.name+"@"+host, "")
	wantStatus(t, ".forward", r, deliver.Delivered, "2.0.0")
	if !strings.Contains(r.Reply.Text, "forwarded as 4Fwd") {
		t.Errorf("reply %q does not name the forwarded copy", r.Reply.Text)
	}
	if got := strings.TrimSpace(readFile(t, h+"/cmd.uid")); got != strconv.Itoa(u.uid) {
		t.Errorf("command ran as uid %s, want %d", got, u.uid)
	}
	if got := strings.TrimSpace(readFile(t, h+"/cmd.gid")); got != strconv.Itoa(u.gid) {
		t.Errorf("command ran as gid %s, want %d", got, u.gid)
	}
	cmdMsg := readFile(t, h+"/cmd.msg")
	if !strings.HasPrefix(cmdMsg, "From alice@example.net ") || !strings.Contains(cmdMsg, "\nDelivered-To: "+u.name+"@"+host+"\n") {
		t.Errorf("command's input:\n%s", cmdMsg)
	}
	for _, p := range []string{h + "/archive.mbox", filepath.Join(spool, u.name)} {
		if uid, _ := fileOwner(t, p); uid != u.uid {
			t.Errorf("%s owned by %d, want %d", p, uid, u.uid)
		}
		if c := readFile(t, p); !strings.Contains(c, "Subject: local delivery\n") {
			t.Errorf("%s lacks the message:\n%s", p, c)
		}
	}
	msgs := rec.all()
	if len(msgs) != 1 {
		t.Fatalf("%d messages re-submitted, want 1", len(msgs))
	}
	fw := msgs[0]
	var to []string
	for _, rc := range fw.m.Envelope.Recipients {
		to = append(to, rc.Address)
	}
	if strings.Join(to, ",") != "colleague@example.org,"+v.name+"@"+host || fw.m.Envelope.Sender != "alice@example.net" {
		t.Errorf("re-submitted from <%s> to %v", fw.m.Envelope.Sender, to)
	}
	if !strings.HasPrefix(fw.body, "Delivered-To: "+u.name+"@"+host+"\r\nReceived: ") {
		t.Errorf("re-submitted body starts %q", fw.body[:min(80, len(fw.body))])
	}

	// The copy reaches v (as cleanup and the queue would hand it over)...
	r = deliverOne(t, a, newMessage(fw.body), v.name+"@"+host, "")
	wantStatus(t, "forwarded copy to the other user", r, deliver.Delivered, "2.0.0")
	if c := readFile(t, filepath.Join(spool, v.name)); !strings.Contains(c, "Delivered-To: "+v.name+"@"+host+"\nDelivered-To: "+u.name+"@"+host+"\n") {
		t.Errorf("other user's mailbox:\n%s", c)
	}
	// ...and coming back to u, it is a loop.
	r = deliverOne(t, a, newMessage(fw.body), u.name+"@"+host, "")
	wantStatus(t, "forwarded copy back to the forwarder", r, deliver.Bounced, "5.4.6")
}

func TestUnsafeForwardIsIgnored(t *testing.T) {
	base := sharedDir(t)
	spool := debianSpool(t, base)
	for _, tc := range []struct {
		name  string
		setup func(u sysUser, path string)
	}{
		{"world-writable", func(u sysUser, p string) { os.Chmod(p, 0o666) }},
		{"group-writable", func(u sysUser, p string) { os.Chmod(p, 0o664) }},
		{"owned by root", func(u sysUser, p string) { os.Chown(p, 0, 0) }},
		{"home writable by others", func(u sysUser, p string) { os.Chmod(u.home, 0o777) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newSysUser(t, base)
			marker := filepath.Join(u.home, "ran")
			p := filepath.Join(u.home, ".forward")
			writeOwned(t, p, "\"|touch "+marker+"\", someone@example.org\n", u.uid, u.gid, 0o644)
			tc.setup(u, p)
			rec := &recorder{}
			a := newAgent(t, Options{MailSpoolDir: spool}, rec)
			r := deliverOne(t, a, newMessage(testMessage), u.name+"@"+host, "")
			wantStatus(t, "unsafe .forward", r, deliver.Delivered, "2.0.0")
			if _, err := os.Stat(marker); err == nil {
				t.Error("the command of an unsafe .forward ran")
			}
			if n := len(rec.all()); n != 0 {
				t.Errorf("an unsafe .forward forwarded %d messages", n)
			}
			if c := readFile(t, filepath.Join(spool, u.name)); !strings.Contains(c, "Subject: local delivery") {
				t.Error("the mail did not reach the mailbox")
			}
		})
	}
}

// nobody returns the default user's uid.
func nobody(t *testing.T) int {
	t.Helper()
	u, err := user.Lookup(DefaultUser)
	if err != nil {
		t.Fatalf("user %s: %v", DefaultUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	if uid == 0 {
		t.Fatalf("user %s is root", DefaultUser)
	}
	return uid
}

// openDir is a directory everyone may write (sticky), for what runs as
// nobody.
func openDir(t *testing.T, base string) string {
	t.Helper()
	d := filepath.Join(base, "out")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o1777); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestAliasCommandsAndFilesRunAsTheDefaultUser(t *testing.T) {
	requireRoot(t)
	base := sharedDir(t)
	out := openDir(t, base)
	a := newAgent(t, Options{}, nil)
	msg := newMessage(testMessage)
	nob := nobody(t)

	r := deliverOne(t, a, msg, "|id -u > "+out+"/alias.uid; cat > "+out+"/alias.msg", "list@"+host)
	wantStatus(t, "alias command", r, deliver.Delivered, "2.0.0")
	if got := strings.TrimSpace(readFile(t, out+"/alias.uid")); got != strconv.Itoa(nob) || got == "0" {
		t.Errorf("alias command ran as uid %s, want %d (nobody)", got, nob)
	}
	if c := readFile(t, out+"/alias.msg"); !strings.Contains(c, "X-Original-To: list@"+host+"\n") {
		t.Errorf("alias command's input:\n%s", c)
	}
	r = deliverOne(t, a, msg, out+"/alias.mbox", "list@"+host)
	wantStatus(t, "alias file", r, deliver.Delivered, "2.0.0")
	if uid, _ := fileOwner(t, out+"/alias.mbox"); uid != nob {
		t.Errorf("alias file written by uid %d, want %d", uid, nob)
	}
	r = deliverOne(t, a, msg, out+"/alias.maildir/", "list@"+host)
	wantStatus(t, "alias maildir", r, deliver.Delivered, "2.0.0")
	if ents, err := os.ReadDir(out + "/alias.maildir/new"); err != nil || len(ents) != 1 {
		t.Errorf("alias maildir: %v, %d files", err, len(ents))
	}
	wantStatus(t, "/dev/null", deliverOne(t, a, msg, "/dev/null", "list@"+host), deliver.Delivered, "2.0.0")
	// sys_exits, as the pipe agent maps them.
	wantStatus(t, "exit 67", deliverOne(t, a, msg, "|exit 67", "list@"+host), deliver.Bounced, "5.1.1")
	wantStatus(t, "exit 75", deliverOne(t, a, msg, "|exit 75", "list@"+host), deliver.Deferred, "4.3.0")
	// Environment values are filtered.
	msg2 := newMessage(testMessage)
	msg2.Sender = "x`touch " + out + "/pwned`@example.net"
	r = deliverOne(t, a, msg2, "|echo \"$SENDER\" > "+out+"/sender", "list@"+host)
	wantStatus(t, "command with a hostile sender", r, deliver.Delivered, "2.0.0")
	if got := strings.TrimSpace(readFile(t, out+"/sender")); got != "x_touch_"+out+"/pwned_@example.net" {
		t.Errorf("SENDER = %q", got)
	}
	if _, err := os.Stat(out + "/pwned"); err == nil {
		t.Error("a sender's backquotes ran")
	}
}

func TestIncludeFile(t *testing.T) {
	requireRoot(t)
	base := sharedDir(t)
	out := openDir(t, base)
	nob := nobody(t)
	incl := filepath.Join(base, "list.incl")
	content := "# members\nmember@example.org, bob\n\"|id -u > " + out + "/incl.uid\"\n"
	writeOwned(t, incl, content, 0, 0, 0o644)

	// Postfix's default: no commands or files from :include: files.
	rec := &recorder{}
	a := newAgent(t, Options{}, rec)
	r := deliverOne(t, a, newMessage(testMessage), ":include:"+incl, "list@"+host)
	wantStatus(t, "include with a command, not allowed", r, deliver.Bounced, "5.7.1")
	if _, err := os.Stat(out + "/incl.uid"); err == nil {
		t.Error("a command of an :include: file ran although not allowed")
	}
	if msgs := rec.all(); len(msgs) != 1 || len(msgs[0].m.Envelope.Recipients) != 2 ||
		msgs[0].m.Envelope.Recipients[1].Address != "bob@"+host {
		t.Errorf("members not forwarded: %+v", msgs)
	}

	// Allowed: as the file's owner, the default user for root.
	a = newAgent(t, Options{AllowIncludeCommands: true}, &recorder{})
	r = deliverOne(t, a, newMessage(testMessage), ":include:"+incl, "list@"+host)
	wantStatus(t, "include of root's", r, deliver.Delivered, "2.0.0")
	if got := strings.TrimSpace(readFile(t, out+"/incl.uid")); got != strconv.Itoa(nob) {
		t.Errorf("command of root's :include: file ran as %s, want %d", got, nob)
	}
	u := newSysUser(t, base)
	os.Remove(out + "/incl.uid")
	if err := os.Chown(incl, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	r = deliverOne(t, a, newMessage(testMessage), ":include:"+incl, "list@"+host)
	wantStatus(t, "include of a user's", r, deliver.Delivered, "2.0.0")
	if got := strings.TrimSpace(readFile(t, out+"/incl.uid")); got != strconv.Itoa(u.uid) {
		t.Errorf("command of %s's :include: file ran as %s, want %d", u.name, got, u.uid)
	}
	// Writable by others: not trusted.
	if err := os.Chmod(incl, 0o664); err != nil {
		t.Fatal(err)
	}
	r = deliverOne(t, a, newMessage(testMessage), ":include:"+incl, "list@"+host)
	wantStatus(t, "group-writable include", r, deliver.Deferred, "4.3.5")
}

func TestNeverAsRoot(t *testing.T) {
	a := newAgent(t, Options{MailSpoolDir: t.TempDir()}, nil)
	r := deliverOne(t, a, newMessage(testMessage), "root@"+host, "")
	wantStatus(t, "mail for root", r, deliver.Deferred, "4.3.5")
	if !strings.Contains(r.Reply.Text, "alias root") {
		t.Errorf("reply %q does not say to alias root", r.Reply.Text)
	}
	var out strings.Builder
	if code := HelperMain([]string{"read", "/etc/passwd"}, strings.NewReader(""), &out, io.Discard); os.Geteuid() == 0 && code != exNoPerm {
		t.Errorf("the helper ran as root: exit %d, %s", code, out.String())
	}
	if os.Geteuid() == 0 {
		if _, err := New(Options{DefaultUser: "root"}, nil); err == nil {
			t.Error("New accepted root as the default user")
		}
	}
}

func TestUnknownUserAndLoop(t *testing.T) {
	self := currentOrNew(t)
	spool := self.spool
	a := newAgent(t, Options{MailSpoolDir: spool}, nil)
	r := deliverOne(t, a, newMessage(testMessage), "no-such-user-facteur@"+host, "")
	wantStatus(t, "unknown user", r, deliver.Bounced, "5.1.1")
	looped := "Delivered-To: " + self.name + "@" + host + "\r\n" + testMessage
	r = deliverOne(t, a, newMessage(looped), self.name+"@"+host, "")
	wantStatus(t, "loop", r, deliver.Bounced, "5.4.6")
	if _, err := os.Stat(filepath.Join(spool, self.name)); err == nil {
		t.Error("a looping message was delivered")
	}
}

// target is a user the agent may deliver to in this test: a throwaway user
// as root, this process's user otherwise.
type target struct {
	name  string
	uid   int
	spool string
}

func currentOrNew(t *testing.T) target {
	t.Helper()
	base := sharedDir(t)
	spool := debianSpool(t, base)
	if os.Geteuid() == 0 {
		u := newSysUser(t, base)
		return target{name: u.name, uid: u.uid, spool: spool}
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	return target{name: u.Username, uid: uid, spool: spool}
}

// TestMboxLockingAgainstAConcurrentWriter holds each lock of the mailbox
// from this process (a mail reader, say) while the agent's helper, another
// process, delivers: the helper waits, then appends after the other
// writer's message, and both are intact.
func TestMboxLockingAgainstAConcurrentWriter(t *testing.T) {
	for _, kind := range []string{LockFcntl, LockFlock, LockDot} {
		t.Run(kind, func(t *testing.T) {
			tg := currentOrNew(t)
			a := newAgent(t, Options{MailSpoolDir: tg.spool, Locks: []string{LockDot, LockFcntl, LockFlock}}, nil)
			path := filepath.Join(tg.spool, tg.name)
			wantStatus(t, "first delivery", deliverOne(t, a, newMessage(testMessage), tg.name+"@"+host, ""), deliver.Delivered, "")

			f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			release := func() {}
			switch kind {
			case LockFcntl:
				lk := syscall.Flock_t{Type: syscall.F_WRLCK}
				if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLKW, &lk); err != nil {
					t.Fatal(err)
				}
				release = func() {
					lk.Type = syscall.F_UNLCK
					syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
				}
			case LockFlock:
				if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
					t.Fatal(err)
				}
				release = func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
			case LockDot:
				if err := os.WriteFile(path+".lock", nil, 0o600); err != nil {
					t.Fatal(err)
				}
				release = func() { os.Remove(path + ".lock") }
			}
			done := make(chan deliver.Result, 1)
			go func() {
				done <- a.Deliver(context.Background(), "", newMessage(strings.Replace(testMessage, "Hello.", "Second.", 1)),
					[]deliver.Recipient{{Address: tg.name + "@" + host}})[0]
			}()
			select {
			case r := <-done:
				t.Fatalf("delivered while the %s lock was held: %s", kind, r.Reply.String())
			case <-time.After(500 * time.Millisecond):
			}
			if _, err := f.WriteString("From tester Tue Jul  1 10:00:00 2025\nSubject: concurrent\n\nwritten under the lock\n\n"); err != nil {
				t.Fatal(err)
			}
			release()
			var r deliver.Result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("no delivery 30 s after the lock was released")
			}
			wantStatus(t, "delivery after the lock", r, deliver.Delivered, "2.0.0")
			got := readFile(t, path)
			i1 := strings.Index(got, "\nHello.\n")
			i2 := strings.Index(got, "\nwritten under the lock\n\nFrom alice@example.net ")
			i3 := strings.Index(got, "\nSecond.\n")
			if i1 < 0 || i2 < i1 || i3 < i2 || !strings.HasSuffix(got, "Bye.\n\n") {
				t.Errorf("messages out of order or mixed (%d %d %d):\n%s", i1, i2, i3, got)
			}
		})
	}
}

func TestLockHeldTooLongDefers(t *testing.T) {
	tg := currentOrNew(t)
	a := newAgent(t, Options{MailSpoolDir: tg.spool, LockAttempts: 3, LockDelay: 10 * time.Millisecond}, nil)
	path := filepath.Join(tg.spool, tg.name)
	wantStatus(t, "first delivery", deliverOne(t, a, newMessage(testMessage), tg.name+"@"+host, ""), deliver.Delivered, "")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Read the size first: closing any descriptor of the file would drop
	// this process's fcntl locks on it.
	size := len(readFile(t, path))
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLKW, &lk); err != nil {
		t.Fatal(err)
	}
	r := deliverOne(t, a, newMessage(testMessage), tg.name+"@"+host, "")
	wantStatus(t, "delivery to a locked mailbox", r, deliver.Deferred, "4.2.0")
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if n := int(fi.Size()); n != size {
		t.Errorf("mailbox changed from %d to %d bytes", size, n)
	}
}

// TestDestinationsOnlyFromAliases: a "|command" or "/file" recipient that is
// its own original recipient did not come from an alias (a quoted local
// part routed to this transport): refused, and nothing runs.
func TestDestinationsOnlyFromAliases(t *testing.T) {
	dir := t.TempDir()
	a := newAgent(t, Options{}, nil)
	for _, addr := range []string{"|touch " + dir + "/ran", dir + "/file", ":include:" + dir + "/incl"} {
		for _, orig := range []string{"", addr, strings.ToUpper(addr)} {
			r := deliverOne(t, a, newMessage(testMessage), addr, orig)
			wantStatus(t, fmt.Sprintf("%q from %q", addr, orig), r, deliver.Bounced, "5.1.3")
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("something ran or was written: %v", ents)
	}
}

// BenchmarkMailboxDelivery measures one delivery to a user's mbox: a helper
// to read .forward and one to append, each a process started as the user.
func BenchmarkMailboxDelivery(b *testing.B) {
	base, err := os.MkdirTemp("", "facteur-local-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o755)
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if os.Geteuid() == 0 {
		name = DefaultUser
	}
	a, err := New(Options{MailSpoolDir: base, Hostname: host}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if os.Geteuid() == 0 {
		os.Chmod(base, 0o1777)
	}
	msg := newMessage(testMessage)
	rc := []deliver.Recipient{{Address: name + "@" + host}}
	b.ResetTimer()
	for b.Loop() {
		if r := a.Deliver(context.Background(), "", msg, rc)[0]; r.Status != deliver.Delivered {
			b.Fatalf("%s", r.Reply.String())
		}
	}
}
