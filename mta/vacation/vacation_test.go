package vacation_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/vacation"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/store/storetest"
)

// The real types satisfy the consumer-side interfaces, so cmd/facteur can
// pass them as they are.
var (
	_ vacation.VacationStore = (*store.Store)(nil)
	_ vacation.Submitter     = (*cleanup.Cleanup)(nil)
)

// seedSQL: alice is on vacation; bob is not. alice's addresses: sales@ (an
// alias to her), info@ (an alias to sales@), team@ (a group alias), and all
// of them @example.net (an alias domain). old@ is an inactive alias.
const seedSQL = `
INSERT INTO domain (name) VALUES ('example.com');
INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('example.net', 'example.com');
INSERT INTO mailbox (address, name) VALUES ('alice@example.com', 'Alice Martin'), ('bob@example.com', 'Bob');
INSERT INTO alias (address, destinations) VALUES
	('sales@example.com', ARRAY['alice@example.com']),
	('info@example.com', ARRAY['sales@example.com']),
	('team@example.com', ARRAY['alice@example.com', 'bob@example.com']),
	('loop1@example.com', ARRAY['loop2@example.com', 'alice@example.com']),
	('loop2@example.com', ARRAY['loop1@example.com']);
INSERT INTO alias (address, destinations, active) VALUES ('old@example.com', ARRAY['alice@example.com'], false);
INSERT INTO vacation (mailbox, subject, body) VALUES
	('alice@example.com', 'Away: $SUBJECT', E'I am away until Monday.\nÇa ira mieux après.\n');
`

// captured is one reply handed to the Submitter.
type captured struct {
	m    *cleanup.Message
	body []byte
}

// capture is a Submitter that keeps what it is given: the boundary to
// cleanup, whose durable enqueue has its own tests (TestReplyQueuedByCleanup
// goes through the real one).
type capture struct {
	mu      sync.Mutex
	replies []captured
	fail    atomic.Bool
}

func (c *capture) Enqueue(ctx context.Context, m *cleanup.Message, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	if c.fail.Load() {
		return "", errors.New("spool full")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.replies = append(c.replies, captured{m: m, body: b})
	return fmt.Sprintf("REPLY%d", len(c.replies)), nil
}

func (c *capture) take() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.replies
	c.replies = nil
	return r
}

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

type env struct {
	t    *testing.T
	db   *storetest.DB
	st   *store.Store
	sub  *capture
	r    *vacation.Responder
	logs *syncBuffer
	dir  string
	n    atomic.Int64
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, db: storetest.New(t), sub: &capture{}, logs: &syncBuffer{}, dir: t.TempDir()}
	e.st = store.New(e.db.Pool)
	e.exec(seedSQL)
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.r = vacation.New(e.st, e.sub, vacation.Options{Hostname: "mx.example.com"}, log)
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

const defaultHeader = "From: Friend <friend@remote.test>\r\n" +
	"To: Alice <alice@example.com>\r\n" +
	"Subject: Lunch\r\n" +
	"Message-ID: <m1@remote.test>\r\n" +
	"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n"

// message writes a spooled body (facteur's Received: first, then hdr, then
// a body) to a real file and returns the delivered message over it.
func (e *env) message(sender, hdr string) *deliver.Message {
	e.t.Helper()
	id := fmt.Sprintf("Q%06d", e.n.Add(1))
	body := "Received: from mail.remote.test (mail.remote.test [192.0.2.7])\r\n" +
		"\tby mx.example.com (facteur) with ESMTP id " + id + "\r\n" +
		"\tfor <alice@example.com>; Mon, 2 Mar 2026 10:00:01 +0000\r\n" +
		hdr + "\r\n" +
		"Hello Alice,\r\nList-Id: <not.a.header>\r\nPrecedence: bulk\r\n"
	path := filepath.Join(e.dir, id)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return &deliver.Message{
		QueueID: id, Sender: sender, Size: int64(len(body)), ArrivedAt: time.Now(), Kind: "mail",
		Open: func() (io.ReadCloser, error) { return os.Open(path) },
	}
}

// deliver reports msg delivered to rcpt and returns the replies queued and
// the skip reason logged ("" when a reply was logged).
func (e *env) deliver(msg *deliver.Message, rcpt string) ([]captured, string) {
	e.t.Helper()
	if err := e.r.Delivered(context.Background(), msg, deliver.Recipient{ID: 1, Address: rcpt, Orig: rcpt}); err != nil {
		e.t.Fatalf("Delivered: %v", err)
	}
	return e.sub.take(), e.outcome(msg.QueueID)
}

// outcome returns the reason of the one log line about queueID, "" if it
// says a reply was queued.
func (e *env) outcome(queueID string) string {
	e.t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(e.logs.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			e.t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["queue_id"] == queueID {
			lines = append(lines, m)
		}
	}
	if len(lines) != 1 {
		e.t.Fatalf("%d log lines for %s, want 1:\n%s", len(lines), queueID, e.logs.String())
	}
	switch lines[0]["msg"] {
	case "vacation: reply queued":
		return ""
	case "vacation: no reply":
		if lines[0]["level"] != "DEBUG" {
			e.t.Errorf("skip logged at %v, want DEBUG", lines[0]["level"])
		}
		return lines[0]["reason"].(string)
	}
	e.t.Fatalf("unexpected log line %v", lines[0])
	return ""
}

// parse reads a captured reply as a message.
func parse(t *testing.T, c captured) *mail.Message {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(c.body))
	if err != nil {
		t.Fatalf("reply does not parse: %v\n%s", err, c.body)
	}
	return m
}

func TestReplyGoesToEnvelopeSenderFromTheNullSender(t *testing.T) {
	e := newEnv(t)
	hdr := "From: Someone Else <from-header@elsewhere.test>\r\n" +
		"To: Alice <alice@example.com>, Carol <carol@remote.test>\r\n" +
		"Subject: =?iso-8859-1?q?D=E9jeuner?= demain\r\n" +
		"Message-ID: <m1@remote.test>\r\n" +
		"References: <root@remote.test>\r\n <parent@remote.test>\r\n"
	replies, reason := e.deliver(e.message("Friend@Remote.test", hdr), "alice@example.com")
	if reason != "" || len(replies) != 1 {
		t.Fatalf("replies %d, reason %q; want one reply", len(replies), reason)
	}
	c := replies[0]
	env := c.m.Envelope
	if env.Sender != "" || len(env.Recipients) != 1 || env.Recipients[0].Address != "Friend@remote.test" {
		t.Fatalf("envelope %+v; want <> → <Friend@remote.test>", env)
	}
	if c.m.Kind != "auto-reply" {
		t.Errorf("kind %q", c.m.Kind)
	}
	if !bytes.Contains(c.body, []byte("\r\n\r\n")) || bytes.Contains(bytes.ReplaceAll(c.body, []byte("\r\n"), nil), []byte("\n")) {
		t.Errorf("reply lines do not all end in CRLF:\n%q", c.body)
	}
	m := parse(t, c)
	want := map[string]string{
		"From":                      `"Alice Martin" <alice@example.com>`,
		"To":                        "<Friend@remote.test>",
		"Auto-Submitted":            "auto-replied",
		"In-Reply-To":               "<m1@remote.test>",
		"References":                "<root@remote.test> <parent@remote.test> <m1@remote.test>",
		"Content-Type":              "text/plain; charset=utf-8",
		"Content-Transfer-Encoding": "quoted-printable",
		"MIME-Version":              "1.0",
	}
	for k, v := range want {
		if got := m.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil || subject != "Away: Déjeuner demain" {
		t.Errorf("Subject %q (%v), want the configured one with the decoded original", subject, err)
	}
	if d, err := m.Header.Date(); err != nil || time.Since(d) > time.Minute {
		t.Errorf("Date %q: %v", m.Header.Get("Date"), err)
	}
	if id := m.Header.Get("Message-ID"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@mx.example.com>") {
		t.Errorf("Message-ID %q", id)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(m.Body))
	if err != nil || string(body) != "I am away until Monday.\r\nÇa ira mieux après.\r\n" {
		t.Errorf("body %q (%v)", body, err)
	}
	// The reply is recorded against the sender, lower-cased.
	n, err := e.st.GetVacationNotified(context.Background(), "alice@example.com", "friend@remote.test")
	if err != nil || time.Since(n.NotifiedAt) > time.Minute {
		t.Errorf("vacation_notified: %+v, %v", n, err)
	}
}

// TestNeverReply covers each rule that forbids a reply. Every case differs
// from a message that gets a reply by one thing only, and each uses its own
// sender, so the interval plays no part.
func TestNeverReply(t *testing.T) {
	e := newEnv(t)
	with := func(extra string) string { return defaultHeader + extra }
	cases := []struct {
		name   string
		sender string // "-" for the null sender; "" for a fresh one
		kind   string
		hdr    string
		rcpt   string
		want   string // skip reason; "" means a reply
	}{
		{name: "control: plain message", hdr: defaultHeader},
		{name: "null sender", sender: "-", hdr: defaultHeader, want: vacation.SkipNullSender},
		{name: "an automatic reply", kind: "auto-reply", hdr: defaultHeader, want: vacation.SkipNotification},
		{name: "a DSN", kind: "dsn", hdr: defaultHeader, want: vacation.SkipNotification},
		{name: "List-Id", hdr: with("List-Id: Friends <friends.remote.test>\r\n"), want: vacation.SkipList},
		{name: "List-Unsubscribe", hdr: with("List-Unsubscribe: <mailto:leave@remote.test>\r\n"), want: vacation.SkipList},
		{name: "list-post lower case", hdr: with("list-post: <mailto:friends@remote.test>\r\n"), want: vacation.SkipList},
		{name: "Precedence: bulk", hdr: with("Precedence: bulk\r\n"), want: vacation.SkipPrecedence},
		{name: "Precedence: list", hdr: with("Precedence: List\r\n"), want: vacation.SkipPrecedence},
		{name: "Precedence: junk", hdr: with("Precedence:  junk (spam)\r\n"), want: vacation.SkipPrecedence},
		{name: "control: Precedence: first-class", hdr: with("Precedence: first-class\r\n")},
		{name: "Auto-Submitted: auto-generated", hdr: with("Auto-Submitted: auto-generated\r\n"), want: vacation.SkipAutoSubmitted},
		{name: "Auto-Submitted: auto-replied", hdr: with("Auto-Submitted: Auto-Replied (vacation); owner-email=x@y\r\n"), want: vacation.SkipAutoSubmitted},
		{name: "Auto-Submitted folded", hdr: with("Auto-Submitted:\r\n auto-notified\r\n"), want: vacation.SkipAutoSubmitted},
		{name: "control: Auto-Submitted: no", hdr: with("Auto-Submitted: no\r\n")},
		{name: "X-Auto-Response-Suppress: OOF", hdr: with("X-Auto-Response-Suppress: DR, OOF\r\n"), want: vacation.SkipSuppressed},
		{name: "X-Auto-Response-Suppress: All", hdr: with("X-Auto-Response-Suppress: All\r\n"), want: vacation.SkipSuppressed},
		{name: "own address as sender", sender: "alice@example.com", hdr: defaultHeader, want: vacation.SkipOwnAddress},
		{name: "own address with a tag as sender", sender: "Alice+out@Example.com", hdr: defaultHeader, want: vacation.SkipOwnAddress},
		{name: "own alias as sender", sender: "sales@example.com", hdr: defaultHeader, want: vacation.SkipOwnAddress},
		{name: "own alias-domain address as sender", sender: "alice@example.net", hdr: defaultHeader, want: vacation.SkipOwnAddress},
		{name: "MAILER-DAEMON", sender: "MAILER-DAEMON@remote.test", hdr: defaultHeader, want: vacation.SkipMachineSender},
		{name: "postmaster", sender: "postmaster@remote.test", hdr: defaultHeader, want: vacation.SkipMachineSender},
		{name: "noreply", sender: "noreply@remote.test", hdr: defaultHeader, want: vacation.SkipMachineSender},
		{name: "no-reply", sender: "no-reply@remote.test", hdr: defaultHeader, want: vacation.SkipMachineSender},
		{name: "do_not_reply", sender: "billing.do_not_reply@remote.test", hdr: defaultHeader, want: vacation.SkipMachineSender},
		{name: "owner-", sender: "owner-friends@remote.test", hdr: defaultHeader, want: vacation.SkipMachineSender},
		{name: "-request", sender: "friends-request@remote.test", hdr: defaultHeader, want: vacation.SkipMachineSender},
		{name: "mailman VERP bounces", sender: "friends-bounces+alice=example.com@remote.test", hdr: defaultHeader, want: vacation.SkipMachineSender},
		{name: "listserv", sender: "LISTSERV@remote.test", hdr: defaultHeader, want: vacation.SkipMachineSender},
		{name: "majordomo", sender: "majordomo@remote.test", hdr: defaultHeader, want: vacation.SkipMachineSender},
		{name: "Bcc: mailbox not in To or Cc",
			hdr: "From: friend@remote.test\r\nTo: carol@remote.test\r\nCc: Bob <bob@example.com>\r\nSubject: hi\r\n", want: vacation.SkipNotAddressed},
		{name: "address only in a display name",
			hdr: "From: friend@remote.test\r\nTo: \"alice@example.com\" <carol@remote.test>\r\nSubject: hi\r\n", want: vacation.SkipNotAddressed},
		{name: "inactive alias in To",
			hdr: "From: friend@remote.test\r\nTo: old@example.com\r\nSubject: hi\r\n", want: vacation.SkipNotAddressed},
		{name: "no To at all", hdr: "From: friend@remote.test\r\nSubject: hi\r\n", want: vacation.SkipNotAddressed},
		{name: "control: alias in Cc",
			hdr: "From: friend@remote.test\r\nTo: carol@remote.test\r\nCc: Sales <Sales@Example.com>\r\nSubject: hi\r\n"},
		{name: "control: alias of an alias in To",
			hdr: "From: friend@remote.test\r\nTo: info@example.com\r\nSubject: hi\r\n"},
		{name: "control: alias in a cycle in To",
			hdr: "From: friend@remote.test\r\nTo: loop2@example.com\r\nSubject: hi\r\n"},
		{name: "control: group alias in To",
			hdr: "From: friend@remote.test\r\nTo: team@example.com\r\nSubject: hi\r\n"},
		{name: "control: alias domain in To",
			hdr: "From: friend@remote.test\r\nTo: ALICE@example.net\r\nSubject: hi\r\n"},
		{name: "control: +tag in To",
			hdr: "From: friend@remote.test\r\nTo: <alice+news@example.com>\r\nSubject: hi\r\n"},
		{name: "control: in a group, folded, second To",
			hdr: "From: friend@remote.test\r\nTo: x@remote.test\r\nTo: friends: carol@remote.test,\r\n\talice@example.com;\r\nSubject: hi\r\n"},
		{name: "control: unparsable To read leniently",
			hdr: "From: friend@remote.test\r\nTo: Alice Martin, PhD <alice@example.com>, bad@@x\r\nSubject: hi\r\n"},
		{name: "control: delivered to a tagged address", rcpt: "alice+news@example.com", hdr: defaultHeader},
		{name: "delivered to another mailbox", rcpt: "bob@example.com", hdr: defaultHeader, want: vacation.SkipNoVacation},
		{name: "delivered to a remote address", rcpt: "carol@remote.test", hdr: defaultHeader, want: vacation.SkipNoMailbox},
		{name: "delivered to a command", rcpt: "|/usr/bin/true", hdr: defaultHeader, want: vacation.SkipNoMailbox},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			sender := c.sender
			switch sender {
			case "":
				sender = fmt.Sprintf("friend%d@remote.test", i)
			case "-":
				sender = ""
			}
			msg := e.message(sender, c.hdr)
			if c.kind != "" {
				msg.Kind = c.kind
			}
			rcpt := c.rcpt
			if rcpt == "" {
				rcpt = "alice@example.com"
			}
			replies, reason := e.deliver(msg, rcpt)
			if reason != c.want {
				t.Fatalf("reason %q, want %q", reason, c.want)
			}
			if wantN := map[bool]int{true: 1, false: 0}[c.want == ""]; len(replies) != wantN {
				t.Fatalf("%d replies, want %d", len(replies), wantN)
			}
			if c.want == "" {
				if got := parse(t, replies[0]).Header.Get("From"); got != `"Alice Martin" <alice@example.com>` {
					t.Errorf("From %q", got)
				}
			}
		})
	}
}

func TestVacationStateAndWindow(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cases := []struct {
		name  string
		setup string
		want  string
	}{
		{"inactive vacation", `UPDATE vacation SET active = false`, vacation.SkipInactive},
		{"not started", `UPDATE vacation SET active_from = now() + interval '1 hour', active_until = NULL`, vacation.SkipNotStarted},
		{"ended", `UPDATE vacation SET active_from = now() - interval '2 days', active_until = now() - interval '1 second'`, vacation.SkipEnded},
		{"inside the window", `UPDATE vacation SET active_from = now() - interval '1 hour', active_until = now() + interval '1 hour'`, ""},
		{"mailbox inactive", `UPDATE mailbox SET active = false WHERE address = 'alice@example.com'`, vacation.SkipMailboxOff},
		{"domain inactive", `UPDATE domain SET active = false`, vacation.SkipMailboxOff},
		{"no vacation row", `DELETE FROM vacation`, vacation.SkipNoVacation},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			if _, err := e.db.Pool.Exec(ctx, c.setup); err != nil {
				t.Fatal(err)
			}
			// Each case starts from an active vacation: undo its change.
			t.Cleanup(func() {
				e.exec(`UPDATE mailbox SET active = true; UPDATE domain SET active = true`)
				e.exec(`DELETE FROM vacation`)
				e.exec(`INSERT INTO vacation (mailbox, subject, body) VALUES ('alice@example.com', 'Away', 'Back soon.')`)
			})
			replies, reason := e.deliver(e.message(fmt.Sprintf("w%d@remote.test", i), defaultHeader), "alice@example.com")
			if reason != c.want || len(replies) != map[bool]int{true: 1, false: 0}[c.want == ""] {
				t.Fatalf("reason %q with %d replies, want %q", reason, len(replies), c.want)
			}
		})
	}
}

func TestOneReplyPerSenderPerInterval(t *testing.T) {
	e := newEnv(t)
	e.exec(`UPDATE vacation SET interval_seconds = 7 * 86400`)
	send := func(sender string) string {
		replies, reason := e.deliver(e.message(sender, defaultHeader), "alice@example.com")
		if (reason == "") != (len(replies) == 1) || len(replies) > 1 {
			t.Fatalf("reason %q with %d replies", reason, len(replies))
		}
		return reason
	}
	if r := send("friend@remote.test"); r != "" {
		t.Fatalf("first message: %q, want a reply", r)
	}
	if r := send("Friend@remote.test"); r != vacation.SkipAlreadyReplied {
		t.Fatalf("second message within the interval: %q, want %q", r, vacation.SkipAlreadyReplied)
	}
	if r := send("other@remote.test"); r != "" {
		t.Fatalf("another sender: %q, want a reply", r)
	}
	// Not quite a week later: still nothing.
	e.exec(`UPDATE vacation_notified SET notified_at = now() - interval '6 days 23 hours' WHERE sender = 'friend@remote.test'`)
	if r := send("friend@remote.test"); r != vacation.SkipAlreadyReplied {
		t.Fatalf("just within the interval: %q, want %q", r, vacation.SkipAlreadyReplied)
	}
	// A week and a minute later: a new reply, and a new record.
	e.exec(`UPDATE vacation_notified SET notified_at = now() - interval '7 days 1 minute' WHERE sender = 'friend@remote.test'`)
	if r := send("friend@remote.test"); r != "" {
		t.Fatalf("after the interval: %q, want a reply", r)
	}
	if r := send("friend@remote.test"); r != vacation.SkipAlreadyReplied {
		t.Fatalf("right after the new reply: %q, want %q", r, vacation.SkipAlreadyReplied)
	}
}

func TestConcurrentDeliveriesReplyOnce(t *testing.T) {
	e := newEnv(t)
	const n = 16
	msgs := make([]*deliver.Message, n)
	for i := range msgs {
		msgs[i] = e.message("friend@remote.test", defaultHeader)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Half by the recipient's address, half by its tagged form: the
			// same mailbox either way.
			rcpt := "alice@example.com"
			if i%2 == 1 {
				rcpt = "alice+x@example.com"
			}
			errs <- e.r.Delivered(context.Background(), msgs[i], deliver.Recipient{ID: int64(i), Address: rcpt})
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := len(e.sub.take()); got != 1 {
		t.Fatalf("%d replies from %d concurrent deliveries, want 1", got, n)
	}
	skipped := 0
	for _, m := range msgs {
		if e.outcome(m.QueueID) == vacation.SkipAlreadyReplied {
			skipped++
		}
	}
	if skipped != n-1 {
		t.Fatalf("%d deliveries skipped as already answered, want %d", skipped, n-1)
	}
}

func TestFailedSubmitLetsTheNextMessageReply(t *testing.T) {
	e := newEnv(t)
	e.sub.fail.Store(true)
	msg := e.message("friend@remote.test", defaultHeader)
	err := e.r.Delivered(context.Background(), msg, deliver.Recipient{Address: "alice@example.com"})
	if err == nil || !strings.Contains(err.Error(), "spool full") {
		t.Fatalf("Delivered: %v, want the submitter's error", err)
	}
	if _, err := e.st.GetVacationNotified(context.Background(), "alice@example.com", "friend@remote.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("vacation_notified after a failed reply: %v, want none", err)
	}
	e.sub.fail.Store(false)
	if replies, reason := e.deliver(e.message("friend@remote.test", defaultHeader), "alice@example.com"); reason != "" || len(replies) != 1 {
		t.Fatalf("next message: reason %q, %d replies", reason, len(replies))
	}
}

func TestRecipientDelimiterSetting(t *testing.T) {
	e := newEnv(t)
	e.exec(`INSERT INTO setting (key, value) VALUES ('recipient_delimiter', '-')`)
	hdr := func(to string) string { return "From: friend@remote.test\r\nTo: " + to + "\r\nSubject: hi\r\n" }
	if _, reason := e.deliver(e.message("a@remote.test", hdr("alice-news@example.com")), "alice-news@example.com"); reason != "" {
		t.Fatalf("alice-news with delimiter '-': %q, want a reply", reason)
	}
	if _, reason := e.deliver(e.message("b@remote.test", hdr("alice+news@example.com")), "alice@example.com"); reason != vacation.SkipNotAddressed {
		t.Fatalf("alice+news with delimiter '-': %q, want %q", reason, vacation.SkipNotAddressed)
	}
}

func TestHeaderInjectionAndLimits(t *testing.T) {
	e := newEnv(t)
	// An encoded CR LF in the subject must not become a field of the reply.
	hdr := "From: friend@remote.test\r\nTo: alice@example.com\r\n" +
		"Subject: =?utf-8?q?hi=0D=0ABcc:_victim@remote.test?=\r\n" +
		"Message-ID: <evil\r\n Bcc: x@y>\r\n"
	replies, reason := e.deliver(e.message("friend@remote.test", hdr), "alice@example.com")
	if reason != "" || len(replies) != 1 {
		t.Fatalf("reason %q, %d replies", reason, len(replies))
	}
	m := parse(t, replies[0])
	if m.Header.Get("Bcc") != "" || m.Header.Get("In-Reply-To") != "" {
		t.Fatalf("reply header %v", m.Header)
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if subject != "Away: hi Bcc: victim@remote.test" {
		t.Errorf("subject %q", subject)
	}

	// A header block past the limit gets no reply (and no error).
	big := defaultHeader + "X-Filler: " + strings.Repeat("x", vacation.DefaultMaxHeaderBytes) + "\r\n"
	if _, reason := e.deliver(e.message("other@remote.test", big), "alice@example.com"); reason != vacation.SkipHeaderTooBig {
		t.Fatalf("huge header: %q", reason)
	}
}

// TestReplyQueuedByCleanup goes through the real cleanup, spool and
// resolver: the reply is queued from <> with kind auto-reply to the remote
// sender.
func TestReplyQueuedByCleanup(t *testing.T) {
	e := newEnv(t)
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	res := lookups.New(e.st, lookups.Options{Hostname: "mx.example.com", CacheTTL: -1})
	c := cleanup.New(e.st, sp, res, cleanup.Options{Hostname: "mx.example.com", Node: "node1"}, nil)
	r := vacation.New(e.st, c, vacation.Options{Hostname: "mx.example.com"},
		slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

	msg := e.message("friend@remote.test", defaultHeader)
	if err := r.Delivered(context.Background(), msg, deliver.Recipient{Address: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	var logged struct {
		ID string `json:"reply_queue_id"`
	}
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, `"vacation: reply queued"`) {
			if err := json.Unmarshal([]byte(l), &logged); err != nil {
				t.Fatal(err)
			}
		}
	}
	if logged.ID == "" {
		t.Fatalf("no reply logged:\n%s", e.logs.String())
	}
	var kind, sender, rcpt, transport string
	err = e.db.Pool.QueryRow(context.Background(), `
		SELECT m.kind, m.sender, r.address, r.transport
		FROM queue_message m JOIN queue_recipient r ON r.queue_id = m.id WHERE m.id = $1`, logged.ID).
		Scan(&kind, &sender, &rcpt, &transport)
	if err != nil {
		t.Fatalf("queued reply %s: %v", logged.ID, err)
	}
	if kind != "auto-reply" || sender != "" || rcpt != "friend@remote.test" || transport != "smtp" {
		t.Fatalf("queued kind=%q sender=%q rcpt=%q transport=%q", kind, sender, rcpt, transport)
	}
	f, err := sp.Open(logged.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	qm, err := mail.ReadMessage(f)
	if err != nil {
		t.Fatal(err)
	}
	if qm.Header.Get("Received") == "" || qm.Header.Get("Auto-Submitted") != "auto-replied" ||
		qm.Header.Get("To") != "<friend@remote.test>" || qm.Header.Get("In-Reply-To") != "<m1@remote.test>" {
		t.Fatalf("spooled reply header %v", qm.Header)
	}
}

func TestHeaderLimitEndingOnALineEnd(t *testing.T) {
	e := newEnv(t)
	msg := e.message("friend@remote.test", defaultHeader+"List-Id: <friends.remote.test>\r\n")
	f, err := msg.Open()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(f)
	f.Close()
	// The limit falls just before List-Id:, on a line end: what was read
	// looks like a whole header block, but is not.
	limit := bytes.Index(raw, []byte("List-Id:"))
	r := vacation.New(e.st, e.sub, vacation.Options{MaxHeaderBytes: limit},
		slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err := r.Delivered(context.Background(), msg, deliver.Recipient{Address: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	if reason := e.outcome(msg.QueueID); reason != vacation.SkipHeaderTooBig || len(e.sub.take()) != 0 {
		t.Fatalf("reason %q, want %q and no reply", reason, vacation.SkipHeaderTooBig)
	}
}

func TestPlainASCIIReplyAndDefaultSubject(t *testing.T) {
	e := newEnv(t)
	e.exec(`UPDATE vacation SET subject = '', body = E'Back soon.\r\n\r\n-- \nAlice'`)
	replies, reason := e.deliver(e.message("friend@remote.test", defaultHeader), "alice@example.com")
	if reason != "" || len(replies) != 1 {
		t.Fatalf("reason %q, %d replies", reason, len(replies))
	}
	if env := replies[0].m.Envelope; env.SMTPUTF8 || env.BodyType != "" {
		t.Errorf("ASCII reply with SMTPUTF8=%v BODY=%q", env.SMTPUTF8, env.BodyType)
	}
	m := parse(t, replies[0])
	body, _ := io.ReadAll(m.Body)
	if m.Header.Get("Subject") != "Auto: Lunch" || m.Header.Get("Content-Transfer-Encoding") != "7bit" ||
		string(body) != "Back soon.\r\n\r\n-- \r\nAlice\r\n" {
		t.Fatalf("subject %q, encoding %q, body %q", m.Header.Get("Subject"), m.Header.Get("Content-Transfer-Encoding"), body)
	}
}

func TestUTF8SenderNeedsSMTPUTF8(t *testing.T) {
	e := newEnv(t)
	replies, reason := e.deliver(e.message("josé@remote.test", defaultHeader), "alice@example.com")
	if reason != "" || len(replies) != 1 {
		t.Fatalf("reason %q, %d replies", reason, len(replies))
	}
	env := replies[0].m.Envelope
	if !env.SMTPUTF8 || env.BodyType != "8BITMIME" || env.Recipients[0].Address != "josé@remote.test" {
		t.Fatalf("envelope %+v", env)
	}
}

// TestDeliveredAllOnceForOneMailbox: the queue manager's hook gets every
// delivered recipient of a message; two of them reaching one mailbox give
// one reply, and the others none.
func TestDeliveredAllOnceForOneMailbox(t *testing.T) {
	e := newEnv(t)
	msg := e.message("friend@remote.test", "From: friend@remote.test\r\nTo: team@example.com\r\nSubject: all\r\n")
	e.r.DeliveredAll(context.Background(), msg, []deliver.Recipient{
		{ID: 1, Address: "alice@example.com"}, {ID: 2, Address: "bob@example.com"},
		{ID: 3, Address: "alice+x@example.com"}, {ID: 4, Address: "carol@remote.test"},
	})
	if n := len(e.sub.take()); n != 1 {
		t.Fatalf("%d replies, want 1\n%s", n, e.logs.String())
	}
}
