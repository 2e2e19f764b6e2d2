package pickup_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
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

	"github.com/facteur/facteur/internal/mailqfmt"
	"github.com/facteur/facteur/internal/sendmailcli"
	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/pickup"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/store/storetest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const seedSQL = `
INSERT INTO domain (name) VALUES ('host.example'), ('example.com'), ('shop.example');
INSERT INTO mailbox (address, local_part, domain, maildir) VALUES
	('admin@example.com', 'admin', 'example.com', ''),
	('bob@example.com', 'bob', 'example.com', ''),
	('carol@example.com', 'carol', 'example.com', ''),
	('nobody@host.example', 'nobody', 'host.example', '');
INSERT INTO alias (address, local_part, domain, destinations) VALUES
	('root@host.example', 'root', 'host.example', ARRAY['admin@example.com']);
`

// env is one test's world: a fresh database, a spool and a pickup socket in
// a short temporary directory (a unix socket path holds at most 107 bytes),
// real lookups and cleanup, and a pickup server on the socket.
type env struct {
	t    *testing.T
	st   *store.Store
	sp   *spool.Spool
	dir  string
	sock string
	logs *syncBuffer
	// stop cancels the server's context and waits for Serve to return.
	stop func() error
}

func newEnv(t *testing.T) *env { return newEnvWith(t, nil) }

func newEnvWith(t *testing.T, mod func(*pickup.Options)) *env {
	t.Helper()
	return newEnvDeps(t, mod, nil)
}

// newEnvDeps is newEnvWith with a change to the server's Deps.
func newEnvDeps(t *testing.T, mod func(*pickup.Options), dmod func(*pickup.Deps)) *env {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "fp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	db := storetest.New(t)
	e := &env{t: t, st: store.New(db.Pool), dir: dir, sock: filepath.Join(dir, "pickup.sock"), logs: &syncBuffer{}}
	if _, err := db.Pool.Exec(context.Background(), seedSQL); err != nil {
		t.Fatalf("seed: %v", err)
	}
	e.sp, err = spool.Open(filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.sp.Close() })
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	res := lookups.New(e.st, lookups.Options{Hostname: "host.example", CacheTTL: -1})
	cl := cleanup.New(e.st, e.sp, res, cleanup.Options{Hostname: "host.example", Node: "node1"}, log)
	opts := pickup.Options{Path: e.sock, Hostname: "host.example", MyOrigin: "host.example", Node: "node1"}
	if mod != nil {
		mod(&opts)
	}
	deps := pickup.Deps{Store: e.st, Cleanup: cl, Lookups: res, Log: log}
	if dmod != nil {
		dmod(&deps)
	}
	srv := pickup.New(opts, deps)
	ln, err := pickup.Listen(e.sock, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	var serveErr error
	e.stop = func() error {
		once.Do(func() { cancel(); serveErr = <-done })
		return serveErr
	}
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("pickup log:\n%s", e.logs.String())
		}
	})
	return e
}

// sendmail runs the front end in process, as root (the test's user).
func (e *env) sendmail(stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = sendmailcli.Main(context.Background(), sendmailcli.Env{
		Args:   append([]string{"sendmail"}, args...),
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errb,
		Getenv: func(string) string { return "" },
		Socket: func(string) (string, error) { return e.sock, nil },
	})
	return code, out.String(), errb.String()
}

// queued is a queue_message row with its recipients.
type queued struct {
	id, sender, localUser, protocol, helo string
	size                                  int64
	rcpts                                 []string
}

func (e *env) queue() []queued {
	e.t.Helper()
	rows, err := e.st.Pool().Query(context.Background(), `
		SELECT m.id, m.sender, coalesce(m.local_user, ''), m.protocol, m.client_helo, m.size,
		       array_agg(r.address ORDER BY r.address)
		FROM queue_message m JOIN queue_recipient r ON r.queue_id = m.id
		GROUP BY m.id ORDER BY m.arrived_at, m.id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []queued
	for rows.Next() {
		var q queued
		if err := rows.Scan(&q.id, &q.sender, &q.localUser, &q.protocol, &q.helo, &q.size, &q.rcpts); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// body returns a queued message's spool file, checking that every line
// ends with CRLF (the spool format).
func (e *env) body(id string) string {
	e.t.Helper()
	f, err := e.sp.Open(id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		e.t.Fatal(err)
	}
	if n, m := bytes.Count(b, []byte("\n")), bytes.Count(b, []byte("\r\n")); n != m || bytes.Count(b, []byte("\r")) != m {
		e.t.Errorf("spool file %s: %d LF, %d CRLF: not CRLF only:\n%q", id, n, m, b)
	}
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		e.t.Errorf("spool file %s does not end with CRLF", id)
	}
	return string(b)
}

func headerBlock(msg string) string {
	h, _, _ := strings.Cut(msg, "\r\n\r\n")
	return h + "\r\n"
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "mail", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func currentUser(t *testing.T) *user.User {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestSendmailTQueuesRecipientsFromHeaders(t *testing.T) {
	e := newEnv(t)
	me := currentUser(t)
	code, _, stderr := e.sendmail(readTestdata(t, "cron-output.eml"), "-t", "-F", "Cron Daemon")
	if code != 0 {
		t.Fatalf("sendmail -t: exit %d: %s", code, stderr)
	}
	q := e.queue()
	if len(q) != 1 {
		t.Fatalf("queue has %d messages, want 1", len(q))
	}
	m := q[0]
	// root is qualified with myorigin and expanded by the alias; Bcc's
	// address is a recipient.
	want := []string{"admin@example.com", "bob@example.com", "carol@example.com", "dave@remote.test"}
	if !slices.Equal(m.rcpts, want) {
		t.Errorf("recipients = %v, want %v", m.rcpts, want)
	}
	if m.sender != me.Username+"@host.example" || m.localUser != me.Username || m.protocol != "local" {
		t.Errorf("sender %q, local user %q, protocol %q; want %s@host.example, %s, local", m.sender, m.localUser, m.protocol, me.Username, me.Username)
	}
	body := e.body(m.id)
	h := headerBlock(body)
	for _, want := range []string{
		"Received: by host.example (facteur, from user " + me.Username + ")",
		"\r\nFrom: \"Cron Daemon\" <" + me.Username + "@host.example>\r\n",
		"\r\nMessage-ID: <",
		"\r\nDate: ",
		"\r\nTo: Bob <bob@example.com>\r\n",
	} {
		if !strings.Contains(h, want) {
			t.Errorf("header lacks %q:\n%s", want, h)
		}
	}
	if strings.Contains(strings.ToLower(body), "bcc:") {
		t.Errorf("Bcc: left in the message:\n%s", body)
	}
	if !strings.Contains(body, "backup finished: 42 files\r\n") || strings.Contains(body, "follows a lone dot") {
		t.Errorf("body: want the text up to the lone dot only:\n%s", body)
	}
	if int64(len(body)) != m.size {
		t.Errorf("size = %d, spool file has %d bytes", m.size, len(body))
	}
}

func TestSendmailTUsesResentFields(t *testing.T) {
	e := newEnv(t)
	code, _, stderr := e.sendmail(readTestdata(t, "resent.eml"), "-t", "-oi")
	if code != 0 {
		t.Fatalf("sendmail -t: exit %d: %s", code, stderr)
	}
	q := e.queue()
	if len(q) != 1 || !slices.Equal(q[0].rcpts, []string{"carol@example.com"}) {
		t.Fatalf("queue = %+v, want one message for carol@example.com only", q)
	}
	h := headerBlock(e.body(q[0].id))
	if !strings.Contains(h, "\r\nFrom: Alice <alice@example.com>\r\n") || strings.Count(h, "\r\nFrom:") != 1 {
		t.Errorf("the message's own From: must stay alone:\n%s", h)
	}
	if strings.Contains(h, "Resent-Bcc") {
		t.Errorf("Resent-Bcc: left in the message:\n%s", h)
	}
}

func TestSendmailLoneDotEndsInputUnlessI(t *testing.T) {
	e := newEnv(t)
	msg := "Subject: dots\n\nline one\n.\nline two\n..double\n"
	if code, _, stderr := e.sendmail(msg, "bob@example.com"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if code, _, stderr := e.sendmail(msg, "-oi", "bob@example.com"); code != 0 {
		t.Fatalf("-oi: exit %d: %s", code, stderr)
	}
	if code, _, stderr := e.sendmail(msg, "-i", "bob@example.com"); code != 0 {
		t.Fatalf("-i: exit %d: %s", code, stderr)
	}
	q := e.queue()
	if len(q) != 3 {
		t.Fatalf("%d messages queued, want 3", len(q))
	}
	_, b0, _ := strings.Cut(e.body(q[0].id), "\r\n\r\n")
	if b0 != "line one\r\n" {
		t.Errorf("without -i: body %q, want it to end at the lone dot", b0)
	}
	for _, m := range q[1:] {
		_, b, _ := strings.Cut(e.body(m.id), "\r\n\r\n")
		// No dot-unstuffing on the command line: "..double" stays.
		if b != "line one\r\n.\r\nline two\r\n..double\r\n" {
			t.Errorf("with -i: body %q", b)
		}
	}
}

func TestSendmailQualifiesAndChecksRecipients(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"unknown local user", []string{"nosuch@example.com"}, sendmailcli.ExNoUser, "550 5.1.1 <nosuch@example.com>"},
		{"unqualified unknown", []string{"nosuch"}, sendmailcli.ExNoUser, "550 5.1.1 <nosuch@host.example>"},
		{"malformed", []string{"a b@@example.com"}, sendmailcli.ExDataErr, "501 5.1.3"},
		{"address literal", []string{"x@[192.0.2.1]"}, sendmailcli.ExNoPerm, "554 5.7.1"},
		{"bad sender syntax", []string{"-f", "a b c@", "bob@example.com"}, sendmailcli.ExDataErr, "501 5.1.7"},
		{"bad notify", []string{"-N", "success,never", "bob@example.com"}, 0, "bad -N option value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := e.sendmail("Subject: x\n\nx\n", tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tt.code, tt.want)
			}
		})
	}
	// Only the last (a warning) queued anything.
	if q := e.queue(); len(q) != 1 {
		t.Fatalf("%d messages queued, want 1", len(q))
	}
	// Unqualified: root@host.example, expanded by its alias.
	if code, _, stderr := e.sendmail("Subject: x\n\nx\n", "root"); code != 0 {
		t.Fatalf("root: exit %d: %s", code, stderr)
	}
	q := e.queue()
	if got := q[len(q)-1].rcpts; !slices.Equal(got, []string{"admin@example.com"}) {
		t.Fatalf("root: recipients %v", got)
	}
}

func TestSendmailLargeMessage(t *testing.T) {
	e := newEnv(t)
	line := strings.Repeat("0123456789", 7) + "\n"
	body := strings.Repeat(line, 3<<20/len(line))
	if code, _, stderr := e.sendmail("Subject: big\n\n"+body, "-i", "bob@example.com"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	q := e.queue()
	if len(q) != 1 {
		t.Fatalf("%d queued", len(q))
	}
	_, got, _ := strings.Cut(e.body(q[0].id), "\r\n\r\n")
	if got != strings.ReplaceAll(body, "\n", "\r\n") {
		t.Fatalf("body of %d bytes differs from the %d sent", len(got), len(body))
	}
}

func TestSendmailNullSenderAndEnvelopeOptions(t *testing.T) {
	e := newEnv(t)
	if code, _, stderr := e.sendmail("Subject: x\n\nx\n", "-f", "", "-N", "failure,delay", "-V", "env-42", "-B", "8BITMIME", "bob@example.com"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var sender, envid, body, notify string
	err := e.st.Pool().QueryRow(context.Background(), `SELECT m.sender, coalesce(m.dsn_envid, ''), m.body_type, coalesce(r.dsn_notify, '')
		FROM queue_message m JOIN queue_recipient r ON r.queue_id = m.id`).Scan(&sender, &envid, &body, &notify)
	if err != nil {
		t.Fatal(err)
	}
	if sender != "" || envid != "env-42" || body != "8BITMIME" || notify != "FAILURE,DELAY" {
		t.Fatalf("sender %q envid %q body %q notify %q", sender, envid, body, notify)
	}
}

func TestSendmailBSQueuesThroughSMTP(t *testing.T) {
	e := newEnv(t)
	me := currentUser(t)
	// LF line ends, as a script types them: the front end sends CRLF.
	session := "EHLO localhost\n" +
		"MAIL FROM:<" + me.Username + "@host.example>\n" +
		"RCPT TO:<bob@example.com>\n" +
		"RCPT TO:<nosuch@example.com>\n" +
		"DATA\n" +
		"Subject: via -bs\n\nhello\n..dot-stuffed\n.\n" +
		"QUIT\n"
	code, stdout, stderr := e.sendmail(session, "-bs")
	if code != 0 {
		t.Fatalf("sendmail -bs: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"220 host.example", "250 2.0.0 I'll make sure <bob@example.com>", "550 5.1.1 <nosuch@example.com>", "354", "250 2.0.0 Ok: queued as ", "221 "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("session lacks %q:\n%s", want, stdout)
		}
	}
	q := e.queue()
	if len(q) != 1 {
		t.Fatalf("%d messages queued, want 1\n%s", len(q), stdout)
	}
	if !strings.Contains(stdout, "queued as "+q[0].id) {
		t.Errorf("reply does not name queue id %s:\n%s", q[0].id, stdout)
	}
	if q[0].localUser != me.Username || q[0].protocol != "local" || q[0].helo != "localhost" || !slices.Equal(q[0].rcpts, []string{"bob@example.com"}) {
		t.Errorf("queued %+v", q[0])
	}
	body := e.body(q[0].id)
	if !strings.HasSuffix(body, "\r\n\r\nhello\r\n.dot-stuffed\r\n") || !strings.Contains(body, "\r\nMessage-ID: <") {
		t.Errorf("body:\n%q", body)
	}
}

// mailqLine is one message line of the listing (Postfix's L_SENDER_FORMAT).
var mailqLine = regexp.MustCompile(`^([0-9A-Za-z]{12})([*!]?#?) +(\d+) ([A-Z][a-z]{2} [A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d) (\S+)$`)

func TestMailqListsTheQueue(t *testing.T) {
	e := newEnv(t)
	code, out, stderr := e.sendmail("", "-bp")
	if code != 0 || out != "Mail queue is empty\n" {
		t.Fatalf("empty queue: exit %d, %q, %s", code, out, stderr)
	}
	me := currentUser(t)
	if code, _, stderr := e.sendmail("Subject: one\n\nfirst\n", "bob@example.com", "carol@example.com"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if code, _, stderr := e.sendmail("Subject: two\n\n"+strings.Repeat("x", 3000)+"\n", "-f", "<>", "dave@remote.test"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if code, _, stderr := e.sendmail("Subject: three\n\nthird\n", "erin@remote.test", "frank@remote.test"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	q := e.queue()
	if len(q) != 3 {
		t.Fatalf("%d queued", len(q))
	}
	// The first message: carol deferred with a reason, and held.
	ctx := context.Background()
	// The third: erin expired with her DSN still to send (listed, "#"),
	// frank queued again after a failed attempt (listed with its reason),
	// as `facteur queue list` shows them.
	if _, err := e.st.Pool().Exec(ctx, `UPDATE queue_recipient SET status = 'expired', attempts = 3, dsn_pending = true, dsn_action = 'failed',
		last_reply = '451 4.4.1 connection timed out' WHERE queue_id = $1 AND address = 'erin@remote.test'`, q[2].id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE queue_recipient SET attempts = 2,
		last_reply = '421 4.7.0 try later' WHERE queue_id = $1 AND address = 'frank@remote.test'`, q[2].id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE queue_recipient SET status = 'deferred', attempts = 1,
		last_reply = '451 4.2.0 mailbox busy' WHERE queue_id = $1 AND address = 'carol@example.com'`, q[0].id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE queue_message SET held = true WHERE id = $1`, q[0].id); err != nil {
		t.Fatal(err)
	}

	// Invoked as mailq, with no option.
	var outb, errb bytes.Buffer
	code = sendmailcli.Main(ctx, sendmailcli.Env{Args: []string{"/usr/bin/mailq"}, Stdin: strings.NewReader(""),
		Stdout: &outb, Stderr: &errb, Socket: func(string) (string, error) { return e.sock, nil }})
	if code != 0 {
		t.Fatalf("mailq: exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSuffix(outb.String(), "\n"), "\n")
	t.Logf("mailq:\n%s", outb.String())
	pad := strings.Repeat(" ", 47)
	reason := "(451 4.2.0 mailbox busy)"
	want := []string{
		"----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------",
		"MSG0",
		pad + "bob@example.com",
		strings.Repeat(" ", 76-len("451 4.2.0 mailbox busy")) + reason,
		pad + "carol@example.com",
		"",
		"MSG1",
		pad + "dave@remote.test",
		"",
		"MSG2",
		strings.Repeat(" ", 76-len("451 4.4.1 connection timed out")) + "(451 4.4.1 connection timed out)",
		pad + "erin@remote.test",
		strings.Repeat(" ", 76-len("421 4.7.0 try later")) + "(421 4.7.0 try later)",
		pad + "frank@remote.test",
		"",
		fmt.Sprintf("-- %d Kbytes in 3 Requests.", (q[0].size+q[1].size+q[2].size)/1024),
	}
	if len(lines) != len(want) {
		t.Fatalf("mailq gave %d lines, want %d", len(lines), len(want))
	}
	for i, w := range want {
		if k, ok := strings.CutPrefix(w, "MSG"); ok {
			m := mailqLine.FindStringSubmatch(lines[i])
			k, _ := strconv.Atoi(k)
			if m == nil {
				t.Errorf("line %d %q is not a message line", i, lines[i])
				continue
			}
			status, sender := "!", me.Username+"@host.example"
			switch k {
			case 1:
				status, sender = "", "MAILER-DAEMON"
			case 2:
				status = "#"
			}
			if m[1] != q[k].id || m[2] != status || m[3] != strconv.FormatInt(q[k].size, 10) || m[5] != sender {
				t.Errorf("line %d = %q: want id %s%s, size %d, sender %s", i, lines[i], q[k].id, status, q[k].size, sender)
			}
			if len(lines[i]) < 47 || lines[i][17] != ' ' || lines[i][26] != ' ' || lines[i][46] != ' ' {
				t.Errorf("line %d = %q: columns not at 18, 27 and 47", i, lines[i])
			}
			continue
		}
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i, lines[i], w)
		}
	}

	// The listing is `facteur queue list --node node1`'s, byte for byte:
	// the same store listing through the same formatter.
	var ql bytes.Buffer
	mq := mailqfmt.NewMailq(&ql, nil)
	if err := e.st.ListQueue(ctx, store.QueueFilter{Node: "node1"}, func(qe *store.QueueEntry) error {
		if m, ok := mailqfmt.FromQueueEntry(qe); ok {
			return mq.Add(&m)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := mq.Close(); err != nil {
		t.Fatal(err)
	}
	if ql.String() != outb.String() {
		t.Errorf("mailq differs from facteur queue list:\n%s\nqueue list:\n%s", outb.String(), ql.String())
	}
	// Monitoring reads it as Postfix's.
	if got := checkMailq(t, outb.String(), "-w", "2", "-c", "10"); !strings.HasPrefix(got, "WARNING: postfix mailq is 3 (threshold w = 2)") {
		t.Errorf("check_mailq: %s", got)
	}
}

// checkMailq runs Debian's check_mailq -M postfix (monitoring-plugins) on a
// mailq listing, as cmd/facteur's test does for `facteur queue list`; it
// skips when the plugin is missing, except under FACTEUR_REQUIRE_PEERS=1.
func checkMailq(t *testing.T, listing string, args ...string) string {
	t.Helper()
	const plugin = "/usr/lib/nagios/plugins/check_mailq"
	perl, perr := exec.LookPath("perl")
	if _, err := os.Stat(plugin); err != nil || perr != nil {
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatalf("check_mailq is required (apt-get install -y monitoring-plugins-standard): %v %v", err, perr)
		}
		t.Skipf("check_mailq not installed (apt-get install -y monitoring-plugins-standard): %v", err)
	}
	dir := t.TempDir()
	// The plugin runs $utils::PATH_TO_MAILQ from the utils.pm beside it:
	// copy both, pointing that path at a script that prints the listing.
	src, err := os.ReadFile(plugin)
	if err != nil {
		t.Fatal(err)
	}
	utils, err := os.ReadFile(filepath.Join(filepath.Dir(plugin), "utils.pm"))
	if err != nil {
		t.Fatal(err)
	}
	listPath, mailq := filepath.Join(dir, "listing"), filepath.Join(dir, "mailq")
	if err := os.WriteFile(listPath, []byte(listing), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mailq, []byte("#!/bin/sh\nexec cat "+listPath+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\$PATH_TO_MAILQ\s*=.*$`)
	if !re.Match(utils) {
		t.Fatal("utils.pm has no PATH_TO_MAILQ")
	}
	utils = re.ReplaceAll(utils, []byte(`$$PATH_TO_MAILQ = "`+mailq+`";`))
	if err := os.WriteFile(filepath.Join(dir, "utils.pm"), utils, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "check_mailq"), src, 0o755); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(perl, append([]string{filepath.Join(dir, "check_mailq"), "-M", "postfix"}, args...)...).CombinedOutput()
	return string(out)
}

func TestSubmitCutShortQueuesNothing(t *testing.T) {
	e := newEnv(t)
	c, err := net.Dial("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	fmt.Fprint(c, "SUBMIT\nrcpt bob@example.com\ndata\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "354 ") {
		t.Fatalf("reply %q, %v", line, err)
	}
	fmt.Fprint(c, "20\nSubject: half\n\nthe re") // the chunk is cut, no end mark
	c.Close()
	// A complete one after it, to know the first was handled.
	if code, _, stderr := e.sendmail("Subject: whole\n\nx\n", "carol@example.com"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.logs.String(), "message not received") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	q := e.queue()
	if len(q) != 1 || q[0].rcpts[0] != "carol@example.com" {
		t.Fatalf("queue = %+v, want only the complete message", q)
	}
	n := 0
	if err := e.sp.Keys(context.Background(), func(string, time.Time) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d spool files, want 1", n)
	}
}

func TestSubmitProtocolErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct{ send, want string }{
		{"HELLO\n", "500 5.5.1"},
		{"SUBMIT\nfrobnicate\n", "500 5.5.2"},
		{"SUBMIT\nrcpt bob@example.com\nbody 9BIT\n", "501 5.5.4"},
		{"SUBMIT\nrcpt bob@example.com\ndata\nxyz\n", "500 5.5.2"},
		{"SUBMIT\nsender bob@example.com\x01\n", "500 5.5.2"},
		{"SUBMIT\nextract\ndata\n" + chunk("A: b\n") + "0\n", "554 5.5.1"},
		{"SUBMIT\nrcpt bob@example.com\ndata\n" + chunk("Subject: x\r\n\r\na\rb\n") + "0\n", "550 5.5.2"},
		{"SUBMIT\nrcpt bob@example.com\ndata\n" + chunk("Subject: x\n"+strings.Repeat("X-Long: yyyyyyyyyyyyyyyyyyyy\n", 40000)) + "0\n", "552 5.3.4"},
	}
	for _, tt := range tests {
		c, err := net.Dial("unix", e.sock)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, tt.send)
		if tc, ok := c.(*net.UnixConn); ok {
			tc.CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		out, _ := io.ReadAll(c)
		c.Close()
		last := strings.TrimSpace(string(out))
		if i := strings.LastIndexByte(last, '\n'); i >= 0 {
			last = last[i+1:]
		}
		if !strings.HasPrefix(last, tt.want) {
			t.Errorf("%.80q: reply %q, want %s", tt.send, out, tt.want)
		}
	}
	if q := e.queue(); len(q) != 0 {
		t.Fatalf("queued %+v", q)
	}
}

// chunk frames s as one chunk of the SUBMIT protocol.
func chunk(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		n := min(len(s), 64<<10)
		fmt.Fprintf(&b, "%d\n%s", n, s[:n])
		s = s[n:]
	}
	return b.String()
}

// buildSendmail builds cmd/sendmail into a directory every user may read.
func buildSendmail(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(bin, "sendmail")
	cmd := exec.Command("go", "build", "-o", exe, "github.com/facteur/facteur/cmd/sendmail")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

func TestNonRootUserSenderPermission(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the client as nobody")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.ParseUint(nobody.Uid, 10, 32)
	gid, _ := strconv.ParseUint(nobody.Gid, 10, 32)
	e := newEnv(t)
	// The socket's directory was made searchable for other users.
	if fi, err := os.Stat(e.dir); err != nil || fi.Mode().Perm()&0o011 != 0o011 {
		t.Fatalf("socket directory mode: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(e.sock); err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	if err := os.Chmod(e.dir, 0o711); err != nil {
		t.Fatal(err)
	}
	exe := buildSendmail(t, e.dir)
	runAs := func(uid, gid uint64, stdin string, args ...string) (int, string, string) {
		cmd := exec.Command(exe, args...)
		cmd.Dir = "/"
		cmd.Env = []string{"FACTEUR_PICKUP=" + e.sock, "PATH=/usr/bin:/bin"}
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("run sendmail as nobody: %v", err)
		}
		return code, out.String(), errb.String()
	}
	run := func(stdin string, args ...string) (int, string, string) { return runAs(uid, gid, stdin, args...) }
	msg := "Subject: from the web server\n\nhi\n"

	// A uid with no name in the password database may not submit.
	if _, err := user.LookupId("54321"); err == nil {
		t.Fatal("uid 54321 exists here; pick another")
	}
	if code, _, stderr := runAs(54321, 54321, msg, "bob@example.com"); code != sendmailcli.ExNoPerm || !strings.Contains(stderr, "550 5.7.1 Local user id 54321 has no login name") {
		t.Fatalf("nameless uid: exit %d, %q", code, stderr)
	}

	// A hosted address, not granted: refused.
	code, _, stderr := run(msg, "-f", "orders@shop.example", "bob@example.com")
	if code != sendmailcli.ExNoPerm || !strings.Contains(stderr, "553 5.7.1 <orders@shop.example>") {
		t.Fatalf("claiming orders@shop.example: exit %d, %q; want 77 and 553 5.7.1", code, stderr)
	}
	// Its own address (the default sender, and with an extension): allowed.
	if code, _, stderr := run(msg, "bob@example.com"); code != 0 {
		t.Fatalf("default sender: exit %d: %s", code, stderr)
	}
	if code, _, stderr := run(msg, "-fnobody+web@host.example", "bob@example.com"); code != 0 {
		t.Fatalf("own address with extension: exit %d: %s", code, stderr)
	}
	// A local_sender grant for the domain: allowed; inactive: refused.
	ctx := context.Background()
	if _, err := e.st.Pool().Exec(ctx, `INSERT INTO local_sender (unix_user, sender) VALUES ('nobody', '@Shop.Example.')`); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := run(msg, "-f", "orders@shop.example", "bob@example.com"); code != 0 {
		t.Fatalf("granted @shop.example: exit %d: %s", code, stderr)
	}
	if code, _, stderr := run(msg, "-f", "orders@example.com", "bob@example.com"); code != sendmailcli.ExNoPerm {
		t.Fatalf("orders@example.com (not granted): exit %d: %s", code, stderr)
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE local_sender SET active = false`); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := run(msg, "-f", "orders@shop.example", "bob@example.com"); code != sendmailcli.ExNoPerm {
		t.Fatalf("inactive grant: exit %d, want 77", code)
	}
	var audited int
	if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE table_name = 'local_sender' AND domain = 'shop.example'`).Scan(&audited); err != nil || audited != 2 {
		t.Fatalf("audit rows for local_sender: %d, %v; want 2", audited, err)
	}

	q := e.queue()
	if len(q) != 3 {
		t.Fatalf("%d queued, want 3", len(q))
	}
	for _, m := range q {
		if m.localUser != "nobody" {
			t.Errorf("local user %q, want nobody", m.localUser)
		}
	}
	if q[0].sender != "nobody@host.example" || q[1].sender != "nobody+web@host.example" || q[2].sender != "orders@shop.example" {
		t.Errorf("senders %q %q %q", q[0].sender, q[1].sender, q[2].sender)
	}
	// -bs as nobody: the same permission in MAIL FROM.
	code, out, _ := run("HELO x\nMAIL FROM:<postmaster@example.com>\nQUIT\n", "-bs")
	if code != 0 || !strings.Contains(out, "553 5.7.1 <postmaster@example.com>") {
		t.Fatalf("-bs MAIL FROM as nobody: exit %d:\n%s", code, out)
	}
	// mailq as nobody lists nobody's messages only.
	if code, _, stderr := e.sendmail(msg, "carol@example.com"); code != 0 {
		t.Fatalf("root: exit %d: %s", code, stderr)
	}
	code, out, stderr = run("", "-bp")
	if code != 0 || !strings.Contains(out, "in 3 Requests.") || strings.Contains(out, "carol@example.com") {
		t.Fatalf("mailq as nobody: exit %d, %s:\n%s", code, stderr, out)
	}
	if _, out, _ := e.sendmail("", "-bp"); !strings.Contains(out, "in 4 Requests.") {
		t.Fatalf("mailq as root:\n%s", out)
	}
}

func TestDaemonDownIsTempFail(t *testing.T) {
	e := newEnv(t)
	for _, sock := range []string{filepath.Join(e.dir, "nosuch.sock"), staleSocket(t, e.dir)} {
		var errb bytes.Buffer
		code := sendmailcli.Main(context.Background(), sendmailcli.Env{Args: []string{"sendmail", "bob@example.com"},
			Stdin: strings.NewReader("x\n"), Stdout: io.Discard, Stderr: &errb,
			Socket: func(string) (string, error) { return sock, nil }})
		if code != sendmailcli.ExTempFail || !strings.Contains(errb.String(), "not running") {
			t.Errorf("%s: exit %d, %q; want 75", sock, code, errb.String())
		}
	}
}

// staleSocket leaves a socket file that nobody listens on.
func staleSocket(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	return p
}

func TestListenCreatesTheSocketSafely(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "fp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "pickup.sock")

	// A stale socket is replaced.
	staleSocket(t, dir)
	if err := os.Rename(filepath.Join(dir, "stale.sock"), sock); err != nil {
		t.Fatal(err)
	}
	ln, err := pickup.Listen(sock, nil)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	// A live one is not.
	if _, err := pickup.Listen(sock, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("over a live socket: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}
	// A regular file is never removed.
	if err := os.WriteFile(sock, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pickup.Listen(sock, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("over a file: %v", err)
	}
	os.Remove(sock)
	// A directory that others may write to is refused.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := pickup.Listen(sock, nil); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Fatalf("in a world-writable directory: %v", err)
	}
	// ... unless sticky, as /tmp.
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	ln, err = pickup.Listen(sock, nil)
	if err != nil {
		t.Fatalf("in a sticky directory: %v", err)
	}
	ln.Close()
	// Too long a path.
	long := filepath.Join(dir, strings.Repeat("x", 110))
	if _, err := pickup.Listen(long, nil); err == nil || !strings.Contains(err.Error(), "107") {
		t.Fatalf("long path: %v", err)
	}
}

func TestShutdownEndsIdleSessionsAfterTheGrace(t *testing.T) {
	e := newEnvWith(t, func(o *pickup.Options) { o.ShutdownGrace = 300 * time.Millisecond })
	c, err := net.Dial("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	io.WriteString(c, "SMTP\r\n")
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "220 host.example ESMTP") {
		t.Fatalf("greeting %q, %v", line, err)
	}
	start := time.Now()
	if err := e.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Serve took %v to return with an idle session", d)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(br); err != nil {
		t.Fatalf("the idle session was not closed: %v", err)
	}
	if _, err := os.Lstat(e.sock); !os.IsNotExist(err) {
		t.Fatalf("socket left: %v", err)
	}
}
