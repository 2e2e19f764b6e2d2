package maildir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/internal/dovecottest"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/store/storetest"
)

const testBody = "Received: from client.example by mx.example; Sat, 21 Nov 2026 10:00:00 +0000\r\n" +
	"From: Alice <alice@example.net>\r\n" +
	"To: John <john@example.com>\r\n" +
	"Subject: hello\r\n" +
	"Message-ID: <1@example.net>\r\n" +
	"\r\n" +
	"Line one.\r\n" +
	".leading dot and a bare CR\rinside\r\n" +
	"\r\n" +
	"Last line.\r\n"

func message(t testing.TB, sender, body string) *deliver.Message {
	return &deliver.Message{
		QueueID:   "4AbCdEfGh",
		Sender:    sender,
		Size:      int64(len(body)),
		ArrivedAt: time.Now(),
		Open:      func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
		Log:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("queue_id", "4AbCdEfGh"),
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func rcpt(addr string, quota *int64) deliver.Recipient {
	local, domain, _ := strings.Cut(addr, "@")
	return deliver.Recipient{Address: addr, Mailbox: &deliver.Mailbox{Maildir: domain + "/" + local + "/", QuotaBytes: quota}}
}

func ptr(n int64) *int64 { return &n }

// owner returns the mail owner for tests: vmail when root, else ourselves.
func owner(t testing.TB) (int, int) {
	return dovecottest.MailOwner(t)
}

func newAgent(t testing.TB, root string, mod func(*Options)) *Agent {
	t.Helper()
	uid, gid := owner(t)
	o := Options{Root: root, UID: uid, GID: gid, Hostname: "mx.example"}
	if mod != nil {
		mod(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// newFiles returns the names in <maildir>/new.
func newFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func wantStatus(t testing.TB, r deliver.Result, st deliver.Status, code int, es string) {
	t.Helper()
	if r.Status != st || r.Reply.Code != code || r.Reply.Enhanced.String() != es {
		t.Fatalf("result = %v %s; want %v %d %s", r.Status, r.Reply, st, code, es)
	}
	if r.Relay != "maildir" {
		t.Errorf("Relay = %q; want maildir", r.Relay)
	}
}

var nameRE = regexp.MustCompile(`^(\d+)\.M(\d+)P(\d+)Q(\d+)\.mx\.example,S=(\d+),W=(\d+)$`)

func TestDeliverWritesFileInNew(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, nil)
	before := time.Now().Unix()
	res := a.Deliver(context.Background(), "", message(t, "alice@example.net", testBody), []deliver.Recipient{rcpt("john@example.com", nil)})
	if len(res) != 1 {
		t.Fatalf("%d results", len(res))
	}
	wantStatus(t, res[0], deliver.Delivered, 250, "2.0.0")

	md := filepath.Join(root, "example.com", "john")
	names := newFiles(t, md)
	if len(names) != 1 {
		t.Fatalf("new/ = %v; want one file", names)
	}
	m := nameRE.FindStringSubmatch(names[0])
	if m == nil {
		t.Fatalf("file name %q is not <sec>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<vsize>", names[0])
	}
	if sec, _ := strconv.ParseInt(m[1], 10, 64); sec < before || sec > time.Now().Unix() {
		t.Errorf("seconds %d not now", sec)
	}
	if m[3] != strconv.Itoa(os.Getpid()) {
		t.Errorf("pid %s; want %d", m[3], os.Getpid())
	}
	got, err := os.ReadFile(filepath.Join(md, "new", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	want := "Return-Path: <alice@example.net>\nDelivered-To: john@example.com\n" +
		strings.ReplaceAll(testBody, "\r\n", "\n")
	if string(got) != want {
		t.Fatalf("file content:\n%q\nwant:\n%q", got, want)
	}
	if !strings.Contains(string(got), "bare CR\rinside") {
		t.Errorf("a CR without LF was not kept")
	}
	if m[5] != strconv.Itoa(len(got)) {
		t.Errorf("S=%s; file has %d bytes", m[5], len(got))
	}
	if vs := len(got) + strings.Count(string(got), "\n"); m[6] != strconv.Itoa(vs) {
		t.Errorf("W=%s; want %d", m[6], vs)
	}
	for _, d := range []string{"tmp", "cur"} {
		ents, err := os.ReadDir(filepath.Join(md, d))
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if len(ents) != 0 {
			t.Errorf("%s/ not empty: %v", d, ents)
		}
	}

	// Ownership and modes: the mail owner, 0700 directories, 0600 files,
	// for everything the agent created below the root.
	uid, gid := owner(t)
	for _, p := range []string{
		filepath.Join(root, "example.com"), md,
		filepath.Join(md, "tmp"), filepath.Join(md, "new"), filepath.Join(md, "cur"),
		filepath.Join(md, "new", names[0]),
	} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s owned by %d:%d; want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
		if os.Geteuid() == 0 && (st.Uid == 0 || st.Gid == 0) {
			t.Errorf("%s owned by root", p)
		}
		want := fs.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v; want %v", p, fi.Mode().Perm(), want)
		}
	}
}

func TestNullSenderReturnPath(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, nil)
	res := a.Deliver(context.Background(), "", message(t, "", testBody), []deliver.Recipient{rcpt("john@example.com", nil)})
	wantStatus(t, res[0], deliver.Delivered, 250, "2.0.0")
	md := filepath.Join(root, "example.com", "john")
	got, err := os.ReadFile(filepath.Join(md, "new", newFiles(t, md)[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), "Return-Path: <>\nDelivered-To: john@example.com\nReceived: ") {
		t.Fatalf("file starts %q", got[:80])
	}
}

func TestSeveralMailboxesEachGetTheirOwnFile(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, nil)
	rcpts := []deliver.Recipient{
		rcpt("john@example.com", nil), rcpt("jane@example.com", nil), rcpt("john@example.com", nil),
		{Address: "info@example.org", Mailbox: &deliver.Mailbox{Maildir: "example.org/shared/info"}},
	}
	res := a.Deliver(context.Background(), "", message(t, "alice@example.net", testBody), rcpts)
	if len(res) != len(rcpts) {
		t.Fatalf("%d results for %d recipients", len(res), len(rcpts))
	}
	for i, r := range res {
		wantStatus(t, r, deliver.Delivered, 250, "2.0.0")
		_ = i
	}
	for addr, dir := range map[string]string{
		"john@example.com": "example.com/john", "jane@example.com": "example.com/jane",
		"info@example.org": "example.org/shared/info",
	} {
		md := filepath.Join(root, dir)
		names := newFiles(t, md)
		if len(names) != 1 { // john twice in one delivery: one copy
			t.Fatalf("%s: new/ = %v; want one file", dir, names)
		}
		got, _ := os.ReadFile(filepath.Join(md, "new", names[0]))
		if !strings.Contains(string(got), "\nDelivered-To: "+addr+"\n") {
			t.Errorf("%s: no Delivered-To: %s", dir, addr)
		}
	}
}

// burst delivers workers×each messages to john concurrently, spread over
// the agents, and returns john's maildir.
func burst(t *testing.T, root string, agents []*Agent, quota *int64, workers, each int) string {
	var wg sync.WaitGroup
	errs := make(chan string, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ag := agents[w%len(agents)]
			for range each {
				res := ag.Deliver(context.Background(), "", message(t, "alice@example.net", testBody),
					[]deliver.Recipient{rcpt("john@example.com", quota)})
				if res[0].Status != deliver.Delivered {
					errs <- res[0].Reply.String()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	md := filepath.Join(root, "example.com", "john")
	if n := len(newFiles(t, md)); n != workers*each {
		t.Fatalf("%d files in new/; want %d", n, workers*each)
	}
	return md
}

func TestConcurrentDeliveriesAllLand(t *testing.T) {
	const workers, each = 8, 25
	// Two agents stand for two processes: same pid, same host, each its
	// own counter, so names clash and O_EXCL and link must pick others.
	root := t.TempDir()
	burst(t, root, []*Agent{newAgent(t, root, nil), newAgent(t, root, nil)}, nil, workers, each)

	// Within one agent, maildirsize stays exact (Maildir++ is exact only
	// within a process; across processes it is a soft limit that the
	// staleness rule repairs).
	root = t.TempDir()
	md := burst(t, root, []*Agent{newAgent(t, root, nil)}, ptr(1<<30), workers, each)
	names := newFiles(t, md)
	var total int64
	for _, n := range names {
		sz, ok := parseSize(n)
		if !ok {
			t.Fatalf("no S= in %q", n)
		}
		total += sz
	}
	data, err := os.ReadFile(filepath.Join(md, "maildirsize"))
	if err != nil {
		t.Fatal(err)
	}
	m, def, ok := parseMaildirsize(data)
	if !ok || def != strconv.Itoa(1<<30)+"S" {
		t.Fatalf("maildirsize %q", data)
	}
	if m.bytes != total || m.messages != workers*each {
		t.Errorf("maildirsize says %d bytes %d messages; new/ has %d bytes %d messages", m.bytes, m.messages, total, len(names))
	}
}

func TestMaildirsizeQuota(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, nil)
	msg := message(t, "alice@example.net", testBody)
	size := int64(len("Return-Path: <alice@example.net>\nDelivered-To: john@example.com\n") + len(strings.ReplaceAll(testBody, "\r\n", "\n")))
	quota := 2*size + size/2 // room for two
	md := filepath.Join(root, "example.com", "john")
	deliverJohn := func(a *Agent) deliver.Result {
		return a.Deliver(context.Background(), "", msg, []deliver.Recipient{rcpt("john@example.com", ptr(quota))})[0]
	}

	for i := range 2 {
		if r := deliverJohn(a); r.Status != deliver.Delivered {
			t.Fatalf("delivery %d: %s", i, r.Reply)
		}
	}
	data, err := os.ReadFile(filepath.Join(md, "maildirsize"))
	if err != nil {
		t.Fatal(err)
	}
	// Built from a scan of the empty maildir at the first delivery, then
	// one line per delivery.
	want := fmt.Sprintf("%dS\n0 0\n%d 1\n%d 1\n", quota, size, size)
	if string(data) != want {
		t.Fatalf("maildirsize = %q; want %q", data, want)
	}

	r := deliverJohn(a)
	wantStatus(t, r, deliver.Bounced, 552, "5.2.2")
	if len(newFiles(t, md)) != 2 {
		t.Fatalf("over-quota message was written")
	}
	if ents, _ := os.ReadDir(filepath.Join(md, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp/ not cleaned: %v", ents)
	}

	// Dovecot's quota_full_tempfail: a temporary failure instead.
	tf := newAgent(t, root, func(o *Options) { o.QuotaTempfail = true })
	wantStatus(t, deliverJohn(tf), deliver.Deferred, 452, "4.2.2")

	// A message removed by a client that does not update maildirsize: the
	// file still says "full", and is rebuilt once it is 15 minutes old.
	names := newFiles(t, md)
	if err := os.Remove(filepath.Join(md, "new", names[0])); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, deliverJohn(a), deliver.Bounced, 552, "5.2.2")
	old := time.Now().Add(-16 * time.Minute)
	if err := os.Chtimes(filepath.Join(md, "maildirsize"), old, old); err != nil {
		t.Fatal(err)
	}
	if r := deliverJohn(a); r.Status != deliver.Delivered {
		t.Fatalf("after the stale maildirsize: %s", r.Reply)
	}
	data, _ = os.ReadFile(filepath.Join(md, "maildirsize"))
	if want := fmt.Sprintf("%dS\n%d 1\n%d 1\n", quota, size, size); string(data) != want {
		t.Fatalf("rebuilt maildirsize = %q; want %q", data, want)
	}

	// A changed quota (the first line) rebuilds the file too.
	bigger := quota * 10
	r = a.Deliver(context.Background(), "", msg, []deliver.Recipient{rcpt("john@example.com", ptr(bigger))})[0]
	if r.Status != deliver.Delivered {
		t.Fatalf("with a bigger quota: %s", r.Reply)
	}
	data, _ = os.ReadFile(filepath.Join(md, "maildirsize"))
	if want := fmt.Sprintf("%dS\n%d 2\n%d 1\n", bigger, 2*size, size); string(data) != want {
		t.Fatalf("maildirsize after a quota change = %q; want %q", data, want)
	}

	// Messages in Maildir++ folders count; sizes come from S= or stat.
	if err := os.MkdirAll(filepath.Join(md, ".Sent", "cur"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(md, ".Sent", "cur", "1.M1P1.h,S=1000:2,S"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(md, ".Sent", "cur", "2.M1P1.h:2,S"), []byte("12345"), 0o600)
	os.Remove(filepath.Join(md, "maildirsize"))
	if r := a.Deliver(context.Background(), "", msg, []deliver.Recipient{rcpt("john@example.com", ptr(bigger))})[0]; r.Status != deliver.Delivered {
		t.Fatal(r.Reply)
	}
	data, _ = os.ReadFile(filepath.Join(md, "maildirsize"))
	if want := fmt.Sprintf("%dS\n%d 5\n%d 1\n", bigger, 3*size+1005, size); string(data) != want {
		t.Fatalf("maildirsize with folders = %q; want %q", data, want)
	}

	// No quota: no check, no maildirsize.
	r = a.Deliver(context.Background(), "", msg, []deliver.Recipient{rcpt("jane@example.com", nil)})[0]
	wantStatus(t, r, deliver.Delivered, 250, "2.0.0")
	if _, err := os.Stat(filepath.Join(root, "example.com", "jane", "maildirsize")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("maildirsize for a mailbox without quota: %v", err)
	}
}

func TestQuotaFromUsageSource(t *testing.T) {
	db := storetest.New(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO domain (name) VALUES ('example.com')`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO mailbox (address, quota_bytes) VALUES
		('john@example.com', 10000), ('jane@example.com', 10000), ('new@example.com', 10000)`); err != nil {
		t.Fatal(err)
	}
	// Dovecot's numbers, exported by quota_clone: john is nearly full.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO quota_usage (username, bytes, messages) VALUES
		('john@example.com', 9900, 40), ('jane@example.com', 100, 1)`); err != nil {
		t.Fatal(err)
	}
	var lookups []string
	var mu sync.Mutex
	usage := UsageFunc(func(ctx context.Context, mailbox string) (int64, int64, bool, error) {
		mu.Lock()
		lookups = append(lookups, mailbox)
		mu.Unlock()
		var b, n int64
		err := db.Pool.QueryRow(ctx, `SELECT bytes, messages FROM quota_usage WHERE username = $1`, mailbox).Scan(&b, &n)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, 0, false, nil
		}
		return b, n, err == nil, err
	})
	root := t.TempDir()
	a := newAgent(t, root, func(o *Options) { o.QuotaSource = usage })
	q := ptr(10000)
	res := a.Deliver(ctx, "", message(t, "alice@example.net", testBody), []deliver.Recipient{
		rcpt("john@example.com", q), rcpt("jane@example.com", q), rcpt("new@example.com", q),
	})
	wantStatus(t, res[0], deliver.Bounced, 552, "5.2.2")
	wantStatus(t, res[1], deliver.Delivered, 250, "2.0.0")
	wantStatus(t, res[2], deliver.Delivered, 250, "2.0.0") // no row yet: empty
	slices.Sort(lookups)                                   // the recipients of one delivery are written in parallel
	if strings.Join(lookups, ",") != "jane@example.com,john@example.com,new@example.com" {
		t.Errorf("usage looked up for %v", lookups)
	}
	if _, err := os.Stat(filepath.Join(root, "example.com", "jane", "maildirsize")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the agent wrote maildirsize although Dovecot owns usage: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "example.com", "john", "new")); err == nil && len(newFiles(t, filepath.Join(root, "example.com", "john"))) != 0 {
		t.Errorf("over-quota message delivered")
	}

	// The database going away defers (a lookup error is never "empty").
	db.Pool.Close()
	res = a.Deliver(ctx, "", message(t, "alice@example.net", testBody), []deliver.Recipient{rcpt("jane@example.com", q)})
	wantStatus(t, res[0], deliver.Deferred, 451, "4.3.0")
	if n := len(newFiles(t, filepath.Join(root, "example.com", "jane"))); n != 1 {
		t.Errorf("jane has %d messages; want 1", n)
	}
}

func TestDeliveredToLoopBounces(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, nil)
	for _, hdr := range []string{
		"Delivered-To: john@example.com\r\n",
		"delivered-to:   <John@Example.COM> \r\n",
		"Delivered-To:\r\n\tjohn@example.com\r\n",
	} {
		body := hdr + testBody
		res := a.Deliver(context.Background(), "", message(t, "alice@example.net", body),
			[]deliver.Recipient{rcpt("john@example.com", nil), rcpt("jane@example.com", nil)})
		wantStatus(t, res[0], deliver.Bounced, 554, "5.4.6")
		wantStatus(t, res[1], deliver.Delivered, 250, "2.0.0")
	}
	if _, err := os.Stat(filepath.Join(root, "example.com", "john")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the looping recipient's maildir was created: %v", err)
	}
	// Delivered-To: in the body is not a header field.
	body := testBody + "Delivered-To: john@example.com\r\n"
	res := a.Deliver(context.Background(), "", message(t, "alice@example.net", body), []deliver.Recipient{rcpt("john@example.com", nil)})
	wantStatus(t, res[0], deliver.Delivered, 250, "2.0.0")
}

func TestOperatorFailuresDefer(t *testing.T) {
	t.Run("missing mail root", func(t *testing.T) {
		a := newAgent(t, filepath.Join(t.TempDir(), "not-mounted"), nil)
		res := a.Deliver(context.Background(), "", message(t, "a@example.net", testBody),
			[]deliver.Recipient{rcpt("john@example.com", nil), rcpt("jane@example.com", nil)})
		for _, r := range res {
			wantStatus(t, r, deliver.Deferred, 451, "4.3.0")
		}
	})
	t.Run("file in the way", func(t *testing.T) {
		root := t.TempDir()
		os.WriteFile(filepath.Join(root, "example.com"), []byte("oops"), 0o600)
		a := newAgent(t, root, nil)
		res := a.Deliver(context.Background(), "", message(t, "a@example.net", testBody), []deliver.Recipient{rcpt("john@example.com", nil)})
		wantStatus(t, res[0], deliver.Deferred, 451, "4.3.0")
	})
	t.Run("bad maildir paths", func(t *testing.T) {
		root := t.TempDir()
		a := newAgent(t, root, nil)
		for _, p := range []string{"/etc/", "../x/", "example.com/../../x", "", "a/\nb"} {
			r := deliver.Recipient{Address: "john@example.com", Mailbox: &deliver.Mailbox{Maildir: p}}
			res := a.Deliver(context.Background(), "", message(t, "a@example.net", testBody), []deliver.Recipient{r})
			wantStatus(t, res[0], deliver.Deferred, 451, "4.3.0")
		}
		if ents, _ := os.ReadDir(root); len(ents) != 0 {
			t.Errorf("something was created: %v", ents)
		}
	})
	t.Run("symlink out of the root", func(t *testing.T) {
		root, outside := t.TempDir(), t.TempDir()
		if err := os.Symlink(outside, filepath.Join(root, "example.com")); err != nil {
			t.Fatal(err)
		}
		a := newAgent(t, root, nil)
		res := a.Deliver(context.Background(), "", message(t, "a@example.net", testBody), []deliver.Recipient{rcpt("john@example.com", nil)})
		wantStatus(t, res[0], deliver.Deferred, 451, "4.3.0")
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Errorf("wrote outside the mail root: %v", ents)
		}
	})
	t.Run("queued message unreadable", func(t *testing.T) {
		a := newAgent(t, t.TempDir(), nil)
		msg := message(t, "a@example.net", testBody)
		msg.Open = func() (io.ReadCloser, error) { return nil, fs.ErrNotExist }
		res := a.Deliver(context.Background(), "", msg, []deliver.Recipient{rcpt("john@example.com", nil)})
		wantStatus(t, res[0], deliver.Deferred, 451, "4.3.0")
	})
	t.Run("no mailbox", func(t *testing.T) {
		a := newAgent(t, t.TempDir(), nil)
		res := a.Deliver(context.Background(), "", message(t, "a@example.net", testBody), []deliver.Recipient{{Address: "gone@example.com"}})
		wantStatus(t, res[0], deliver.Bounced, 550, "5.1.1")
	})
}

// TestPermissionDeniedDefers writes into a mail root that the agent's user
// cannot write. Root ignores permissions, so as root the delivery runs in a
// child process (this test binary) as nobody.
func TestPermissionDeniedDefers(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "mail")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	var r deliver.Result
	if os.Geteuid() != 0 {
		os.Chmod(root, 0o555)
		t.Cleanup(func() { os.Chmod(root, 0o755) })
		a := newAgent(t, root, nil)
		r = a.Deliver(context.Background(), "", message(t, "a@example.net", testBody), []deliver.Recipient{rcpt("john@example.com", nil)})[0]
	} else {
		r = deliverAsNobody(t, base, root)
	}
	wantStatus(t, r, deliver.Deferred, 452, "4.3.1")
	if !strings.Contains(r.Reply.Text, "permission denied") {
		t.Errorf("reply %q does not say why", r.Reply)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("something was created: %v", ents)
	}
}

func deliverAsNobody(t *testing.T, base, root string) deliver.Result {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no nobody user: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	// nobody must reach the test binary and the mail root.
	for d := base; d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o005); err != nil {
				t.Fatal(err)
			}
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "maildir.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "FACTEUR_MAILDIR_CHILD_ROOT="+root, "HOME=/", "TMPDIR="+base)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, js, ok := strings.Cut(string(out), "RESULT ")
	if !ok {
		t.Fatalf("child printed no result:\n%s", out)
	}
	js, _, _ = strings.Cut(js, "\n")
	var r deliver.Result
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatalf("child result %q: %v", js, err)
	}
	return r
}

// TestMain runs the child of TestPermissionDeniedDefers when asked to.
func TestMain(m *testing.M) {
	if root := os.Getenv("FACTEUR_MAILDIR_CHILD_ROOT"); root != "" {
		os.Exit(childDeliver(root))
	}
	os.Exit(m.Run())
}

// childDeliver delivers one message into root as this process's user and
// prints the result.
func childDeliver(root string) int {
	a, err := New(Options{Root: root, Hostname: "mx.example"})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	msg := &deliver.Message{QueueID: "4AbCdEfGh", Sender: "a@example.net", Size: int64(len(testBody)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(testBody)), nil },
		Log:  slog.New(slog.NewTextHandler(os.Stderr, nil))}
	r := a.Deliver(context.Background(), "", msg, []deliver.Recipient{rcpt("john@example.com", nil)})
	js, _ := json.Marshal(r[0])
	fmt.Printf("RESULT %s\n", js)
	return 0
}

func TestNewRefusesRootOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the mail owner matters only when running as root")
	}
	for _, o := range []Options{{Root: "/x"}, {Root: "/x", UID: 0, GID: 100}, {Root: "/x", UID: 100, GID: 0}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted a root mail owner", o)
		}
	}
}

// TestDovecotReadsTheMaildir delivers with the agent into the mail root of a
// real Dovecot and reads the message back over IMAP; Dovecot's quota plugin
// reads the agent's maildirsize.
func TestDovecotReadsTheMaildir(t *testing.T) {
	srv := dovecottest.Start(t, dovecottest.Options{Users: []dovecottest.User{
		{Address: "john@example.com", Password: "secret", QuotaBytes: 100000},
	}})
	a, err := New(Options{Root: srv.MailRoot, UID: srv.UID, GID: srv.GID, Hostname: "mx.example"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	second := strings.Replace(testBody, "Subject: hello", "Subject: second", 1)
	for _, body := range []string{testBody, second} {
		res := a.Deliver(ctx, "", message(t, "alice@example.net", body), []deliver.Recipient{rcpt("john@example.com", ptr(100000))})
		wantStatus(t, res[0], deliver.Delivered, 250, "2.0.0")
	}
	msgs, err := srv.Fetch(ctx, "john@example.com", "secret")
	if err != nil {
		t.Fatalf("%v\n%s", err, srv.Log())
	}
	if len(msgs) != 2 {
		t.Fatalf("IMAP INBOX has %d messages; want 2", len(msgs))
	}
	for i, body := range []string{testBody, second} {
		// Dovecot serves CRLF; the lone CR stays as it was.
		want := "Return-Path: <alice@example.net>\r\nDelivered-To: john@example.com\r\n" + body
		if string(msgs[i]) != want {
			t.Errorf("message %d over IMAP:\n%q\nwant:\n%q", i+1, msgs[i], want)
		}
	}

	// Dovecot's maildir quota backend reads the agent's maildirsize.
	out, err := exec.CommandContext(ctx, "doveadm", "-c", srv.Config, "quota", "get", "-u", "john@example.com").CombinedOutput()
	if err != nil {
		t.Fatalf("doveadm quota get: %v\n%s", err, out)
	}
	md := filepath.Join(srv.MailRoot, "example.com", "john")
	data, err := os.ReadFile(filepath.Join(md, "maildirsize"))
	if err != nil {
		t.Fatal(err)
	}
	m, _, _ := parseMaildirsize(data)
	var storage string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 6 && f[len(f)-4] == "STORAGE" {
			storage = f[len(f)-3]
		}
	}
	if want := strconv.FormatInt((m.bytes+1023)/1024, 10); storage != want && storage != strconv.FormatInt(m.bytes/1024, 10) {
		t.Errorf("doveadm says STORAGE %s KiB; maildirsize says %d bytes\n%s", storage, m.bytes, out)
	}
}

// TestIOFailureReplies: the errors an operator causes map to temporary
// replies (DESIGN.md, Replies: storage full or unwritable 452 4.3.1).
func TestIOFailureReplies(t *testing.T) {
	a := newAgent(t, t.TempDir(), nil)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tt := range []struct {
		err  error
		code int
		es   string
	}{
		{&fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}, 452, "4.3.1"},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.EACCES}, 452, "4.3.1"},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.EPERM}, 452, "4.3.1"},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.EROFS}, 452, "4.3.1"},
		{&os.LinkError{Op: "link", Old: "a", New: "b", Err: syscall.EDQUOT}, 452, "4.2.2"},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.ENOTDIR}, 451, "4.3.0"},
		{fmt.Errorf("copy message: %w", syscall.EIO), 451, "4.3.0"},
	} {
		r := a.ioFailure(log, "test", tt.err)
		wantStatus(t, r, deliver.Deferred, tt.code, tt.es)
		if strings.Contains(r.Reply.Text, "x") && strings.Contains(r.Reply.Text, "/") {
			t.Errorf("reply %q leaks a path", r.Reply.Text)
		}
	}
}
