package pipe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/deliver"
)

const testBody = "Received: from client.example by mx.example; Sat, 21 Nov 2026 10:00:00 +0000\r\n" +
	"From: Alice <alice@example.net>\r\n" +
	"Subject: to a pipe\r\n" +
	"\r\n" +
	"Line one.\r\n" +
	"a bare CR\rstays\r\n"

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func message(t testing.TB, sender, body string) *deliver.Message {
	return &deliver.Message{
		QueueID: "4PiPeTeSt", Sender: sender, Size: int64(len(body)), ArrivedAt: time.Now(),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
		Log:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("queue_id", "4PiPeTeSt"),
	}
}

// sharedDir is a directory that the user commands run as (nobody, when
// root) can read and write: scripts and their output live there.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fpipe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// argsScript writes its arguments after the first, one per line, to the
// file named by the first, its stdin to <file>.stdin and its uid to
// <file>.uid.
const argsScript = `out=$1; shift
for a in "$@"; do printf '%s\n' "$a"; done > "$out"
cat > "$out.stdin"
id -u > "$out.uid"
`

func newAgent(t *testing.T, o Options) *Agent {
	t.Helper()
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func want(t testing.TB, i int, r deliver.Result, st deliver.Status, code int, es string) {
	t.Helper()
	if r.Status != st || r.Reply.Code != code || r.Reply.Enhanced.String() != es {
		t.Errorf("recipient %d: %v %s; want %v %d %s", i, r.Status, r.Reply, st, code, es)
	}
	if r.Relay != "pipe" {
		t.Errorf("Relay %q", r.Relay)
	}
}

func TestMacrosAndStdin(t *testing.T) {
	dir := sharedDir(t)
	cmd := script(t, dir, "args.sh", argsScript)
	a := newAgent(t, Options{RecipientDelimiter: "+-"})
	tmpl := "flags=DRO argv=" + cmd + " " + dir + "/out.${recipient} ${sender} ${recipient} ${original_recipient} " +
		"${domain} ${user} ${extension} ${mailbox} ${queue_id} ${size} x${extension}y -f${sender}"
	msg := message(t, "alice@example.net", testBody)
	rc := deliver.Recipient{Address: "john+lists@example.com", Orig: "info@example.com"}
	res := a.Deliver(context.Background(), tmpl, msg, []deliver.Recipient{rc})
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")

	out := filepath.Join(dir, "out.john+lists@example.com")
	wantArgs := strings.Join([]string{"alice@example.net", "john+lists@example.com", "info@example.com",
		"example.com", "john", "lists", "john+lists", "4PiPeTeSt", strconv.Itoa(len(testBody)), "xlistsy", "-falice@example.net"}, "\n") + "\n"
	if got := read(t, out); got != wantArgs {
		t.Errorf("argv:\n%s\nwant:\n%s", got, wantArgs)
	}
	wantIn := "Return-Path: <alice@example.net>\nDelivered-To: john+lists@example.com\nX-Original-To: info@example.com\n" +
		strings.ReplaceAll(testBody, "\r\n", "\n")
	if got := read(t, out+".stdin"); got != wantIn {
		t.Errorf("stdin:\n%q\nwant:\n%q", got, wantIn)
	}

	// The null sender, no flags: the message as it is, with LF.
	res = a.Deliver(context.Background(), cmd+" "+dir+"/null ${sender}", message(t, "", testBody), []deliver.Recipient{rc})
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
	if got := read(t, filepath.Join(dir, "null")); got != "MAILER-DAEMON\n" {
		t.Errorf("${sender} for <> = %q", got)
	}
	if got := read(t, filepath.Join(dir, "null.stdin")); got != strings.ReplaceAll(testBody, "\r\n", "\n") {
		t.Errorf("stdin without flags: %q", got)
	}
}

// TestNoShell: shell metacharacters in the envelope reach argv literally.
func TestNoShell(t *testing.T) {
	dir := sharedDir(t)
	cmd := script(t, dir, "args.sh", argsScript)
	a := newAgent(t, Options{})
	pwned := filepath.Join(dir, "pwned")
	sender := "x;touch " + pwned + ";$(touch " + pwned + ")`touch " + pwned + "`|&>'\"*@example.net"
	res := a.Deliver(context.Background(), cmd+" "+dir+"/out ${sender}", message(t, sender, testBody),
		[]deliver.Recipient{{Address: "john@example.com"}})
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
	if got := read(t, filepath.Join(dir, "out")); got != sender+"\n" {
		t.Errorf("argv = %q; want %q", got, sender)
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("a shell ran the sender address")
	}
}

func TestLeadingDashRefused(t *testing.T) {
	dir := sharedDir(t)
	cmd := script(t, dir, "args.sh", argsScript)
	a := newAgent(t, Options{})
	msg := message(t, "-oQ/tmp/evil", testBody)
	rcpts := []deliver.Recipient{{Address: "john@example.com"}, {Address: "-rf@example.com"}}

	res := a.Deliver(context.Background(), cmd+" "+dir+"/out.${mailbox} -f ${sender} ${recipient}", msg, rcpts)
	want(t, 0, res[0], deliver.Bounced, 554, "5.3.0")
	want(t, 1, res[1], deliver.Bounced, 554, "5.3.0")
	if _, err := os.Stat(filepath.Join(dir, "out.john")); err == nil {
		t.Error("the command ran with an option-like argument")
	}

	// After "--" the same values are plain arguments.
	res = a.Deliver(context.Background(), cmd+" "+dir+"/out.${mailbox} -- ${sender} ${recipient}", msg, rcpts)
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
	want(t, 1, res[1], deliver.Delivered, 250, "2.0.0")
	if got := read(t, filepath.Join(dir, "out.-rf")); got != "--\n-oQ/tmp/evil\n-rf@example.com\n" {
		t.Errorf("argv = %q", got)
	}
	// A "-" that the template itself starts with is the template's.
	res = a.Deliver(context.Background(), cmd+" "+dir+"/out2 -f${sender}", msg, rcpts[:1])
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
}

func TestExitCodes(t *testing.T) {
	dir := sharedDir(t)
	cmd := script(t, dir, "exit.sh", `echo "output of $1" >&2; exit $1`)
	a := newAgent(t, Options{})
	for _, tt := range []struct {
		code int
		st   deliver.Status
		es   string
	}{
		{0, deliver.Delivered, "2.0.0"},
		{1, deliver.Bounced, "5.3.0"},
		{64, deliver.Bounced, "5.3.0"},
		{65, deliver.Bounced, "5.6.0"},
		{66, deliver.Bounced, "5.3.0"},
		{67, deliver.Bounced, "5.1.1"},
		{68, deliver.Bounced, "5.1.2"},
		{69, deliver.Bounced, "5.3.0"},
		{70, deliver.Bounced, "5.3.0"},
		{71, deliver.Deferred, "4.3.0"},
		{72, deliver.Bounced, "5.3.0"},
		{73, deliver.Bounced, "5.2.0"},
		{74, deliver.Bounced, "5.3.0"},
		{75, deliver.Deferred, "4.3.0"},
		{76, deliver.Bounced, "5.5.0"},
		{77, deliver.Bounced, "5.7.0"},
		{78, deliver.Bounced, "5.3.5"},
		{100, deliver.Bounced, "5.3.0"},
	} {
		res := a.Deliver(context.Background(), fmt.Sprintf("%s %d", cmd, tt.code), message(t, "a@example.net", testBody),
			[]deliver.Recipient{{Address: "john@example.com"}})
		code := 250
		switch tt.st {
		case deliver.Deferred:
			code = 451
		case deliver.Bounced:
			code = 550
		}
		want(t, tt.code, res[0], tt.st, code, tt.es)
		if tt.code != 0 {
			if !strings.Contains(res[0].Reply.Text, fmt.Sprintf("status %d", tt.code)) ||
				!strings.Contains(res[0].Reply.Text, fmt.Sprintf("Command output: output of %d", tt.code)) {
				t.Errorf("exit %d: reply %q lacks the status or the output", tt.code, res[0].Reply.Text)
			}
		}
	}
}

func TestOutputTruncated(t *testing.T) {
	dir := sharedDir(t)
	cmd := script(t, dir, "noisy.sh", `head -c 100000 /dev/zero | tr '\0' x; echo; echo second line; exit 1`)
	res := newAgent(t, Options{MaxOutput: 50}).Deliver(context.Background(), cmd, message(t, "a@example.net", testBody),
		[]deliver.Recipient{{Address: "john@example.com"}})
	want(t, 0, res[0], deliver.Bounced, 550, "5.3.0")
	if !strings.HasSuffix(res[0].Reply.Text, ": "+strings.Repeat("x", 50)+"...") {
		t.Errorf("reply %q", res[0].Reply.Text)
	}
}

func TestPerRecipientInvocations(t *testing.T) {
	dir := sharedDir(t)
	cmd := script(t, dir, "mda.sh", `case "$1" in bad@*) echo "no such user $1"; exit 67;; later@*) exit 75;; esac
cat > "`+dir+`/box.$1"
`)
	a := newAgent(t, Options{})
	rcpts := []deliver.Recipient{{Address: "a@example.com"}, {Address: "bad@example.com"}, {Address: "later@example.com"},
		{Address: "b@example.com"}, {Address: "a@example.com"}}
	res := a.Deliver(context.Background(), cmd+" ${recipient}", message(t, "s@example.net", testBody), rcpts)
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
	want(t, 1, res[1], deliver.Bounced, 550, "5.1.1")
	want(t, 2, res[2], deliver.Deferred, 451, "4.3.0")
	want(t, 3, res[3], deliver.Delivered, 250, "2.0.0")
	want(t, 4, res[4], deliver.Delivered, 250, "2.0.0")
	if !strings.Contains(res[1].Reply.Text, "no such user bad@example.com") {
		t.Errorf("reply %q", res[1].Reply.Text)
	}
	for _, box := range []string{"a@example.com", "b@example.com"} {
		if got := read(t, filepath.Join(dir, "box."+box)); got != strings.ReplaceAll(testBody, "\r\n", "\n") {
			t.Errorf("%s got %q", box, got)
		}
	}
}

func TestTimeoutAndSignalDefer(t *testing.T) {
	dir := sharedDir(t)
	slow := script(t, dir, "slow.sh", "sleep 30 &\nsleep 30\n")
	a := newAgent(t, Options{Timeout: 300 * time.Millisecond})
	start := time.Now()
	res := a.Deliver(context.Background(), slow, message(t, "a@example.net", testBody), []deliver.Recipient{{Address: "john@example.com"}})
	want(t, 0, res[0], deliver.Deferred, 451, "4.3.0")
	if !strings.Contains(res[0].Reply.Text, "time limit") {
		t.Errorf("reply %q", res[0].Reply.Text)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("a 300ms limit took %v (the background child kept the pipes?)", d)
	}

	killed := script(t, dir, "killed.sh", "kill -KILL $$\n")
	res = newAgent(t, Options{}).Deliver(context.Background(), killed, message(t, "a@example.net", testBody), []deliver.Recipient{{Address: "john@example.com"}})
	want(t, 0, res[0], deliver.Deferred, 451, "4.3.0")
	if !strings.Contains(res[0].Reply.Text, "signal 9") {
		t.Errorf("reply %q", res[0].Reply.Text)
	}

	// The caller's deadline (the queue's) also ends the command.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res = newAgent(t, Options{}).Deliver(ctx, slow, message(t, "a@example.net", testBody),
		[]deliver.Recipient{{Address: "john@example.com"}, {Address: "jane@example.com"}})
	want(t, 0, res[0], deliver.Deferred, 451, "4.4.7")
	want(t, 1, res[1], deliver.Deferred, 451, "4.4.7")
}

func TestCommandNotReadingStdin(t *testing.T) {
	dir := sharedDir(t)
	cmd := script(t, dir, "ignore.sh", "exit 0\n")
	big := testBody + strings.Repeat("0123456789abcdef\r\n", 1<<16) // 1 MiB: more than a pipe holds
	res := newAgent(t, Options{}).Deliver(context.Background(), cmd, message(t, "a@example.net", big), []deliver.Recipient{{Address: "john@example.com"}})
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
}

func TestBadTransportsDefer(t *testing.T) {
	dir := sharedDir(t)
	cmd := script(t, dir, "args.sh", argsScript)
	a := newAgent(t, Options{})
	for _, nh := range []string{
		"",
		"relative/cmd ${recipient}",
		cmd + " ${nosuch}",
		cmd + " ${recipient",
		"flags=X " + cmd,
		"colour=red " + cmd,
		"user=root " + cmd + " " + dir + "/root",
		"user=no-such-user-here " + cmd + " " + dir + "/x",
		dir + "/missing-command",
	} {
		res := a.Deliver(context.Background(), nh, message(t, "a@example.net", testBody), []deliver.Recipient{{Address: "john@example.com"}})
		if os.Geteuid() != 0 && strings.HasPrefix(nh, "user=") {
			// Not root: commands run as ourselves, whatever user= says.
			want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
			continue
		}
		if res[0].Status != deliver.Deferred || res[0].Reply.Code != 451 {
			t.Errorf("%q: %v %s; want deferred", nh, res[0].Status, res[0].Reply)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "root")); err == nil && os.Geteuid() == 0 {
		t.Error("ran as root")
	}
}

func TestParseTemplate(t *testing.T) {
	tm, err := ParseTemplate("flags=DR user=nobody argv=/usr/bin/procmail -d ${user}")
	if err != nil {
		t.Fatal(err)
	}
	if tm.Flags != "DR" || tm.User != "nobody" || strings.Join(tm.Argv, "|") != "/usr/bin/procmail|-d|${user}" {
		t.Errorf("%+v", tm)
	}
	tm, err = ParseTemplate("/usr/bin/cat\t-u")
	if err != nil || strings.Join(tm.Argv, "|") != "/usr/bin/cat|-u" || tm.Flags != "" || tm.User != "" {
		t.Errorf("%+v %v", tm, err)
	}
}

// TestRunsAsUnprivilegedUser: as root, commands run as Options.User
// (nobody by default) or the template's user=, never as root.
func TestRunsAsUnprivilegedUser(t *testing.T) {
	dir := sharedDir(t)
	cmd := script(t, dir, "args.sh", argsScript)
	if os.Geteuid() != 0 {
		res := newAgent(t, Options{}).Deliver(context.Background(), cmd+" "+dir+"/self", message(t, "a@example.net", testBody),
			[]deliver.Recipient{{Address: "john@example.com"}})
		want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
		if got := strings.TrimSpace(read(t, filepath.Join(dir, "self.uid"))); got != strconv.Itoa(os.Geteuid()) {
			t.Errorf("uid %s; want ours", got)
		}
		t.Skip("switching users needs root; ran as ourselves")
	}
	if _, err := New(Options{User: "root"}); err == nil {
		t.Error("New accepted root as the pipe user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	daemon, err := user.Lookup("daemon")
	if err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, Options{})
	for _, tt := range []struct{ tmpl, uid string }{
		{cmd + " " + dir + "/default", nobody.Uid},
		{"user=daemon " + cmd + " " + dir + "/daemon", daemon.Uid},
		{"user=" + daemon.Uid + " " + cmd + " " + dir + "/daemonid", daemon.Uid},
	} {
		res := a.Deliver(context.Background(), tt.tmpl, message(t, "a@example.net", testBody), []deliver.Recipient{{Address: "john@example.com"}})
		want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
		out := strings.Fields(tt.tmpl)[len(strings.Fields(tt.tmpl))-1]
		if got := strings.TrimSpace(read(t, out+".uid")); got != tt.uid {
			t.Errorf("%q ran as uid %s; want %s", tt.tmpl, got, tt.uid)
		}
	}
}
