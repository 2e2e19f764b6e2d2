package cleanup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/store/storetest"
)

// env is one test's world: a fresh database with a few domains, a spool in
// a temp directory with a fault-injection hook, a real resolver, and a
// Cleanup over them whose log goes to a buffer.
type env struct {
	t    testing.TB
	db   *storetest.DB
	st   *store.Store
	dir  string
	sp   *spool.Spool
	res  *lookups.Resolver
	c    *cleanup.Cleanup
	opts cleanup.Options
	logs *syncBuffer
	hook atomic.Pointer[func(spool.Step, string) error]
	wake atomic.Int32
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

const seedSQL = `
INSERT INTO domain (name) VALUES ('example.com'), ('other.example');
INSERT INTO domain (name, max_message_bytes) VALUES ('small.example', 2000);
INSERT INTO mailbox (address, local_part, domain, maildir) VALUES
	('bob@example.com', 'bob', 'example.com', ''),
	('carol@example.com', 'carol', 'example.com', ''),
	('erin@other.example', 'erin', 'other.example', ''),
	('tiny@small.example', 'tiny', 'small.example', '');
INSERT INTO alias (address, local_part, domain, destinations) VALUES
	('team@example.com', 'team', 'example.com', ARRAY['bob@example.com', 'carol@example.com', 'dave@remote.test']),
	('all@other.example', 'all', 'other.example', ARRAY['team@example.com', 'erin@other.example', 'BOB@example.com']),
	('loop1@example.com', 'loop1', 'example.com', ARRAY['loop2@example.com']),
	('loop2@example.com', 'loop2', 'example.com', ARRAY['loop1@example.com']);
`

func newEnv(t testing.TB, mod func(*cleanup.Options)) *env {
	t.Helper()
	e := &env{t: t, db: storetest.New(t), dir: t.TempDir(), logs: &syncBuffer{}}
	e.st = store.New(e.db.Pool)
	if _, err := e.db.Pool.Exec(context.Background(), seedSQL); err != nil {
		t.Fatalf("seed: %v", err)
	}
	sp, err := spool.Open(filepath.Join(e.dir, "spool"), spool.Options{Hooks: spool.Hooks{
		Before: func(step spool.Step, key string) error {
			if h := e.hook.Load(); h != nil {
				return (*h)(step, key)
			}
			return nil
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	e.sp = sp
	e.res = lookups.New(e.st, lookups.Options{Hostname: "mx.example.com", CacheTTL: -1})
	if _, ok := t.(*testing.B); ok {
		e.res = lookups.New(e.st, lookups.Options{Hostname: "mx.example.com"}) // cached, as in production
	}
	e.opts = cleanup.Options{Hostname: "mx.example.com", Node: "node1", Wake: func() { e.wake.Add(1) }}
	if mod != nil {
		mod(&e.opts)
	}
	e.c = cleanup.New(e.st, e.sp, e.res, e.opts, slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return e
}

func (e *env) setHook(h func(spool.Step, string) error) {
	if h == nil {
		e.hook.Store(nil)
		return
	}
	e.hook.Store(&h)
}

// eofReader records whether its reader was read to the end.
type eofReader struct {
	r   io.Reader
	eof bool
}

func (r *eofReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err == io.EOF {
		r.eof = true
	}
	return n, err
}

func rcpts(addrs ...string) []envelope.Recipient {
	var out []envelope.Recipient
	for _, a := range addrs {
		out = append(out, envelope.Recipient{Address: a})
	}
	return out
}

func smtpClient() cleanup.Client {
	return cleanup.Client{Addr: "192.0.2.10", Name: "mail.sender.test", Helo: "mail.sender.test", Protocol: "ESMTPS",
		TLS: "TLSv1.3 TLS_AES_128_GCM_SHA256"}
}

func simpleMessage(bodyBytes int) string {
	var b strings.Builder
	b.WriteString("From: Alice <alice@sender.test>\r\nTo: bob@example.com\r\nSubject: test\r\n")
	b.WriteString("Message-ID: <orig@sender.test>\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n\r\n")
	line := strings.Repeat("0123456789", 7) + "\r\n"
	for b.Len() < bodyBytes {
		b.WriteString(line)
	}
	return b.String()
}

func (e *env) enqueue(m *cleanup.Message, body string) (string, *eofReader, error) {
	r := &eofReader{r: strings.NewReader(body)}
	id, err := e.c.Enqueue(context.Background(), m, r)
	return id, r, err
}

// wantReply checks that err carries the reply code and enhanced status, and
// that envelope.Funnel gives the client the same.
func wantReply(t *testing.T, err error, code int, enhanced string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %d %s", code, enhanced)
	}
	var r envelope.Reply
	if !errors.As(err, &r) {
		t.Fatalf("error %v carries no reply; want %d %s", err, code, enhanced)
	}
	if r.Code != code || r.Enhanced.String() != enhanced {
		t.Fatalf("reply %s; want %d %s (error: %v)", r, code, enhanced, err)
	}
	if se := envelope.Funnel(err, "sess"); se.Code != code {
		t.Fatalf("Funnel gives %d; want %d", se.Code, code)
	}
}

// spoolFiles lists the files in the spool: committed bodies by key, and
// anything left in incoming/.
func (e *env) spoolFiles() (committed, incoming []string) {
	e.t.Helper()
	root := e.sp.Dir()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasPrefix(rel, "incoming"+string(filepath.Separator)) {
			incoming = append(incoming, rel)
		} else {
			committed = append(committed, filepath.Base(p))
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	sort.Strings(committed)
	return committed, incoming
}

func (e *env) rowCounts() (msgs, rcpts, acc int) {
	e.t.Helper()
	err := e.db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM queue_message),
		(SELECT count(*) FROM queue_recipient), (SELECT count(*) FROM accepted_log)`).Scan(&msgs, &rcpts, &acc)
	if err != nil {
		e.t.Fatal(err)
	}
	return
}

// wantNothingQueued checks that a failed enqueue left neither files nor rows.
func (e *env) wantNothingQueued() {
	e.t.Helper()
	committed, incoming := e.spoolFiles()
	if len(committed)+len(incoming) != 0 {
		e.t.Errorf("spool files left: committed %v, incoming %v", committed, incoming)
	}
	if m, r, a := e.rowCounts(); m+r+a != 0 {
		e.t.Errorf("rows left: %d messages, %d recipients, %d accepted", m, r, a)
	}
	if n := e.wake.Load(); n != 0 {
		e.t.Errorf("queue woken %d times for nothing", n)
	}
}

func (e *env) readSpool(id string) string {
	e.t.Helper()
	f, err := e.sp.Open(id)
	if err != nil {
		e.t.Fatalf("open spool file: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

type rcptRow struct{ Address, Orig, Domain, Transport, Notify, ORcpt string }

func (e *env) recipients(id string) []rcptRow {
	e.t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), `SELECT address, orig_address, domain, transport,
		coalesce(dsn_notify, ''), coalesce(dsn_orcpt, '') FROM queue_recipient WHERE queue_id = $1 ORDER BY address, transport`, id)
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[rcptRow])
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func TestEnqueueSubmissionAddsHeadersAndQueues(t *testing.T) {
	e := newEnv(t, nil)
	body := "Return-Path: <forged@evil.test>\r\n\t<folded@evil.test>\r\nFrom: alice@example.com\r\nTo: bob@example.com\r\n" +
		"Subject: hello\r\n\r\nHello Bob.\r\nReturn-Path: <in-body@kept.test>\r\n"
	m := &cleanup.Message{
		Envelope: envelope.Envelope{Sender: "alice@example.com", Recipients: []envelope.Recipient{{Address: "Bob@Example.COM",
			DSNNotify: []string{"success", "failure"}, DSNORcpt: "rfc822;Bob@Example.COM"}},
			DSNRet: "hdrs", DSNEnvID: "env42", BodyType: "8bitmime"},
		Client: cleanup.Client{Addr: "192.0.2.10", Name: "client.test", Helo: "client.test", Protocol: "ESMTPSA",
			TLS: "TLSv1.3 TLS_AES_128_GCM_SHA256", AuthUser: "alice@example.com", Submission: true},
	}
	id, r, err := e.enqueue(m, body)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if !r.eof {
		t.Errorf("body not read to the end")
	}
	if !regexp.MustCompile(`^[0-9A-Za-z]{12}$`).MatchString(id) {
		t.Errorf("queue id %q", id)
	}
	got := e.readSpool(id)
	hdr, rest, _ := strings.Cut(got, "\r\n\r\n")
	wantRecv := regexp.MustCompile(`^Received: from client\.test \(client\.test \[192\.0\.2\.10\]\)\r\n` +
		`\t\(using TLSv1\.3 with cipher TLS_AES_128_GCM_SHA256\)\r\n` +
		`\t\(Authenticated sender: alice@example\.com\)\r\n` +
		`\tby mx\.example\.com \(facteur\) with ESMTPSA id ` + id + `\r\n` +
		`\tfor <Bob@Example\.COM>; [A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n`)
	if !wantRecv.MatchString(got) {
		t.Errorf("Received: not first or not in Postfix's form:\n%s", got)
	}
	if strings.Contains(hdr, "Return-Path") {
		t.Errorf("Return-Path: left in the header:\n%s", hdr)
	}
	if !strings.Contains(hdr, "\r\nMessage-ID: <"+id+"@mx.example.com>") {
		t.Errorf("Message-ID: not added:\n%s", hdr)
	}
	if !regexp.MustCompile(`\r\nDate: [A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$`).MatchString(hdr) {
		t.Errorf("Date: not added at the end of the header:\n%s", hdr)
	}
	if rest != "Hello Bob.\r\nReturn-Path: <in-body@kept.test>\r\n" {
		t.Errorf("body changed: %q", rest)
	}

	var (
		node, key, sender, msgid, helo, proto, bodyType string
		size                                            int64
		ret, envid, auth                                *string
	)
	err = e.db.Pool.QueryRow(context.Background(), `SELECT node, spool_key, sender, size, message_id, client_helo,
		protocol, body_type, dsn_ret, dsn_envid, auth_user FROM queue_message WHERE id = $1`, id).
		Scan(&node, &key, &sender, &size, &msgid, &helo, &proto, &bodyType, &ret, &envid, &auth)
	if err != nil {
		t.Fatal(err)
	}
	if node != "node1" || key != id || sender != "alice@example.com" || size != int64(len(got)) ||
		msgid != "<"+id+"@mx.example.com>" || helo != "client.test" || proto != "ESMTPSA" || bodyType != "8BITMIME" ||
		ret == nil || *ret != "HDRS" || envid == nil || *envid != "env42" || auth == nil || *auth != "alice@example.com" {
		t.Errorf("queue_message: %q %q %q %d(file %d) %q %q %q %q %v %v %v", node, key, sender, size, len(got), msgid,
			helo, proto, bodyType, ret, envid, auth)
	}
	want := []rcptRow{{"bob@example.com", "Bob@Example.COM", "example.com", "maildir", "SUCCESS,FAILURE", "rfc822;Bob@Example.COM"}}
	if got := e.recipients(id); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recipients %v; want %v", got, want)
	}
	var tls string
	var nrcpt int
	if err := e.db.Pool.QueryRow(context.Background(), "SELECT tls, recipients FROM accepted_log WHERE queue_id = $1", id).Scan(&tls, &nrcpt); err != nil {
		t.Fatal(err)
	}
	if tls != "TLSv1.3 TLS_AES_128_GCM_SHA256" || nrcpt != 1 {
		t.Errorf("accepted_log tls %q recipients %d", tls, nrcpt)
	}
	if e.wake.Load() != 1 {
		t.Errorf("Wake called %d times; want 1", e.wake.Load())
	}
}

func TestEnqueueRelayedMailKeepsItsHeaders(t *testing.T) {
	e := newEnv(t, nil)
	body := "From: a@sender.test\r\nSubject: no id, no date\r\n\r\nx\r\n"
	id, _, err := e.enqueue(&cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")},
		Client: smtpClient()}, body)
	if err != nil {
		t.Fatal(err)
	}
	got := e.readSpool(id)
	if strings.Contains(got, "Message-ID:") || strings.Contains(got, "\r\nDate:") {
		t.Errorf("fields added to relayed (non-submission) mail:\n%s", got)
	}
	if !strings.HasSuffix(got, "\r\n"+body) {
		t.Errorf("original message not kept after Received:\n%s", got)
	}
	// A submitted message that has both keeps them and gets no second one.
	body2 := simpleMessage(100)
	id2, _, err := e.enqueue(&cleanup.Message{Envelope: envelope.Envelope{Sender: "a@example.com", Recipients: rcpts("bob@example.com")},
		Client: cleanup.Client{Protocol: "local", LocalUser: "www-data", Submission: true}}, body2)
	if err != nil {
		t.Fatal(err)
	}
	got2 := e.readSpool(id2)
	if strings.Count(got2, "Message-ID:") != 1 || strings.Count(got2, "\r\nDate:") != 1 || !strings.HasSuffix(got2, body2) {
		t.Errorf("submitted message with its own Message-ID and Date changed:\n%s", got2)
	}
	if !strings.HasPrefix(got2, "Received: by mx.example.com (facteur, from user www-data)\r\n\tid "+id2) {
		t.Errorf("local Received: %q", got2[:100])
	}
	var mid string
	if err := e.db.Pool.QueryRow(context.Background(), "SELECT message_id FROM queue_message WHERE id = $1", id2).Scan(&mid); err != nil || mid != "<orig@sender.test>" {
		t.Errorf("message_id column %q, %v; want the message's own", mid, err)
	}
	// Local pickup gets them when missing, even without the Submission flag.
	id3, _, err := e.enqueue(&cleanup.Message{Envelope: envelope.Envelope{Sender: "root@mx.example.com", Recipients: rcpts("bob@example.com")},
		Client: cleanup.Client{Protocol: "local", LocalUser: "root"}}, "Subject: cron\r\n\r\noutput\r\n")
	if err != nil {
		t.Fatal(err)
	}
	got3 := e.readSpool(id3)
	if !strings.Contains(got3, "\r\nSubject: cron\r\nMessage-ID: <"+id3+"@mx.example.com>\r\nDate: ") || !strings.HasSuffix(got3, "\r\n\r\noutput\r\n") {
		t.Errorf("picked-up message without Message-ID/Date:\n%s", got3)
	}
}

func TestEnqueueReceivedIsSanitised(t *testing.T) {
	e := newEnv(t, nil)
	cl := smtpClient()
	cl.Helo = "evil.test\r\nX-Injected: helo"
	cl.AuthUser = "mallory)\r\nBcc: victim@example.com\r\nX-Injected: auth"
	cl.Name = "rdns\nX-Injected: name"
	id, _, err := e.enqueue(&cleanup.Message{Envelope: envelope.Envelope{Sender: "m@sender.test", Recipients: rcpts("bob@example.com")},
		Client: cl, ReceivedFor: "bob@example.com>\r\nX-Injected: for"}, simpleMessage(200))
	if err != nil {
		t.Fatal(err)
	}
	got := e.readSpool(id)
	hdr, _, _ := strings.Cut(got, "\r\n\r\n")
	for _, line := range strings.Split(hdr, "\r\n") {
		if strings.HasPrefix(strings.ToLower(line), "x-injected") || strings.HasPrefix(strings.ToLower(line), "bcc") {
			t.Errorf("header injected through a client value: %q\n%s", line, hdr)
		}
	}
	recv, _, _ := strings.Cut(got, "\r\nFrom:")
	if strings.Count(recv, "(") != 4 || strings.Count(recv, ")") != 4 || strings.Count(recv, ";") != 1 {
		t.Errorf("delimiters from client values survived in:\n%s", recv)
	}
	var helo string
	if err := e.db.Pool.QueryRow(context.Background(), "SELECT client_helo FROM queue_message WHERE id = $1", id).Scan(&helo); err != nil {
		t.Fatal(err)
	}
	if helo != cl.Helo {
		t.Errorf("client_helo column %q; want the HELO as sent (the column is data, not a header)", helo)
	}
}

func TestEnqueueSizeLimit(t *testing.T) {
	e := newEnv(t, func(o *cleanup.Options) { o.MaxMessageBytes = 10000 })
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")}, Client: smtpClient()}
	_, r, err := e.enqueue(m, simpleMessage(50000))
	wantReply(t, err, 552, "5.3.4")
	if !r.eof {
		t.Errorf("the rest of an oversized message was not drained: the SMTP session would lose step")
	}
	e.wantNothingQueued()

	// Just under the global limit: accepted.
	if _, _, err := e.enqueue(m, simpleMessage(9000)); err != nil {
		t.Fatalf("message under the limit: %v", err)
	}
}

func TestEnqueueDomainSizeLimit(t *testing.T) {
	e := newEnv(t, nil) // global 50 MiB; small.example allows 2000 bytes
	msg := simpleMessage(3000)
	mk := func(to ...string) *cleanup.Message {
		return &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts(to...)}, Client: smtpClient()}
	}
	for _, to := range [][]string{{"tiny@small.example"}, {"bob@example.com", "tiny@small.example"}} {
		_, r, err := e.enqueue(mk(to...), msg)
		wantReply(t, err, 552, "5.3.4")
		if !r.eof {
			t.Errorf("%v: not drained", to)
		}
		e.wantNothingQueued()
	}
	if _, _, err := e.enqueue(mk("bob@example.com"), msg); err != nil {
		t.Errorf("the same message to a domain without a limit: %v", err)
	}
	if _, _, err := e.enqueue(mk("tiny@small.example"), simpleMessage(1500)); err != nil {
		t.Errorf("a message under the domain's limit: %v", err)
	}
}

func TestEnqueueHopLimit(t *testing.T) {
	e := newEnv(t, nil)
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")}, Client: smtpClient()}
	hops := func(n int) string {
		return strings.Repeat("Received: from a by b; Mon, 2 Mar 2026 10:00:00 +0000\r\n", n) + simpleMessage(500)
	}
	_, r, err := e.enqueue(m, hops(51))
	wantReply(t, err, 554, "5.4.6")
	if !r.eof {
		t.Errorf("not drained")
	}
	e.wantNothingQueued()
	if _, _, err := e.enqueue(m, hops(50)); err != nil {
		t.Errorf("50 Received: fields (the limit): %v", err)
	}
}

func TestEnqueueRejectsBareLineEnds(t *testing.T) {
	e := newEnv(t, nil)
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")}, Client: smtpClient()}
	for _, body := range []string{
		"Subject: x\r\n\r\nline\n.\r\nMAIL FROM:<evil@x>\r\n",
		"Subject: x\r\n\r\nline\r\n.\rRCPT TO:<evil@x>\r\n",
		"Subject: x\nTo: y\r\n\r\n",
		simpleMessage(100000) + "tail\n",
	} {
		_, _, err := e.enqueue(m, body)
		wantReply(t, err, 550, "5.5.2")
		e.wantNothingQueued()
	}
}

func TestEnqueueExpandsAliases(t *testing.T) {
	e := newEnv(t, nil)
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: []envelope.Recipient{
		{Address: "team@example.com", DSNNotify: []string{"FAILURE"}, DSNORcpt: "rfc822;team@example.com"},
		{Address: "all@other.example"},  // team again, erin, and BOB (a duplicate)
		{Address: "bob@example.com"},    // a duplicate of team's bob
		{Address: "nobody@example.com"}, // unknown now: dropped, the others stay
		{Address: "x@remote2.test"},
	}}, Client: smtpClient()}
	id, _, err := e.enqueue(m, simpleMessage(500))
	if err != nil {
		t.Fatal(err)
	}
	want := []rcptRow{
		{"bob@example.com", "team@example.com", "example.com", "maildir", "FAILURE", "rfc822;team@example.com"},
		{"carol@example.com", "team@example.com", "example.com", "maildir", "FAILURE", "rfc822;team@example.com"},
		{"dave@remote.test", "team@example.com", "remote.test", "smtp", "FAILURE", "rfc822;team@example.com"},
		{"erin@other.example", "all@other.example", "other.example", "maildir", "", ""},
		{"x@remote2.test", "x@remote2.test", "remote2.test", "smtp", "", ""},
	}
	got := e.recipients(id)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recipients:\n%v\nwant:\n%v", got, want)
	}
	if !strings.Contains(e.logs.String(), "nobody@example.com") {
		t.Errorf("dropped recipient not logged:\n%s", e.logs)
	}
	// The Received: field names no recipient when there are several.
	if strings.Contains(e.readSpool(id), "\tfor <") {
		t.Errorf("Received: names a recipient of a multi-recipient message")
	}
}

func TestEnqueueLoopBouncesThatRecipient(t *testing.T) {
	e := newEnv(t, nil)
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("loop1@example.com", "bob@example.com")},
		Client: smtpClient()}
	id, _, err := e.enqueue(m, simpleMessage(500))
	if err != nil {
		t.Fatal(err)
	}
	want := []rcptRow{
		{"bob@example.com", "bob@example.com", "example.com", "maildir", "", ""},
		{"loop1@example.com", "loop1@example.com", "example.com", "error:5.4.6 mail forwarding loop", "", ""},
	}
	if got := e.recipients(id); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recipients:\n%v\nwant:\n%v", got, want)
	}
}

func TestEnqueueNoRecipientLeftIs550(t *testing.T) {
	e := newEnv(t, nil)
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("gone@example.com", "gone2@other.example")},
		Client: smtpClient()}
	_, r, err := e.enqueue(m, simpleMessage(500))
	wantReply(t, err, 550, "5.1.1")
	if !r.eof {
		t.Errorf("not drained")
	}
	e.wantNothingQueued()
}

func TestEnqueueLookupFailureIs451(t *testing.T) {
	e := newEnv(t, nil)
	pool, err := pgxpool.New(context.Background(), e.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pool.Close() // the resolver's database is gone
	res := lookups.New(store.New(pool), lookups.Options{CacheTTL: -1})
	c := cleanup.New(e.st, e.sp, res, e.opts, slog.New(slog.NewTextHandler(e.logs, nil)))
	r := &eofReader{r: strings.NewReader(simpleMessage(500))}
	_, err = c.Enqueue(context.Background(), &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test",
		Recipients: rcpts("bob@example.com")}, Client: smtpClient()}, r)
	wantReply(t, err, 451, "4.3.0")
	if !r.eof {
		t.Errorf("not drained")
	}
	e.wantNothingQueued()
}

// TestEnqueueSpoolFaults makes each step of writing the body fail, with a
// full disk and with an I/O error: the reply is 452 4.3.1, and neither a
// file nor a row is left.
func TestEnqueueSpoolFaults(t *testing.T) {
	e := newEnv(t, nil)
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")}, Client: smtpClient()}
	for _, step := range []spool.Step{spool.StepCreate, spool.StepWrite, spool.StepSyncFile, spool.StepLink, spool.StepSyncDir} {
		for _, errno := range []error{syscall.ENOSPC, syscall.EIO} {
			var hit atomic.Int32
			e.setHook(func(s spool.Step, _ string) error {
				if s == step {
					hit.Add(1)
					return errno
				}
				return nil
			})
			_, r, err := e.enqueue(m, simpleMessage(200000)) // big enough to flush mid-copy
			if hit.Load() == 0 {
				t.Fatalf("%v: the step never ran", step)
			}
			t.Run(fmt.Sprintf("%v/%v", step, errno), func(t *testing.T) {
				wantReply(t, err, 452, "4.3.1")
				if !r.eof {
					t.Errorf("not drained")
				}
			})
			e.wantNothingQueued()
		}
	}
	e.setHook(nil)
	if _, _, err := e.enqueue(m, simpleMessage(1000)); err != nil {
		t.Errorf("after the faults: %v", err)
	}
}

// TestEnqueueBodyDurableBeforeRows checks the order: when the directory is
// fsynced, the body is already at its final name and no row exists yet; the
// rows appear only after that, and then the queue is woken.
func TestEnqueueBodyDurableBeforeRows(t *testing.T) {
	e := newEnv(t, nil)
	var checked atomic.Bool
	e.setHook(func(s spool.Step, key string) error {
		if s != spool.StepSyncDir {
			return nil
		}
		if _, err := os.Stat(e.sp.Path(key)); err != nil {
			t.Errorf("at the directory fsync the body is not at its final name: %v", err)
		}
		if m, _, _ := e.rowCounts(); m != 0 {
			t.Errorf("queue rows exist before the body is durable")
		}
		if e.wake.Load() != 0 {
			t.Errorf("queue woken before the commit")
		}
		checked.Store(true)
		return nil
	})
	id, _, err := e.enqueue(&cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")},
		Client: smtpClient()}, simpleMessage(1000))
	if err != nil {
		t.Fatal(err)
	}
	if !checked.Load() {
		t.Fatal("directory fsync hook never ran")
	}
	if committed, incoming := e.spoolFiles(); fmt.Sprint(committed) != fmt.Sprint([]string{id}) || len(incoming) != 0 {
		t.Errorf("spool files %v %v; want just %s", committed, incoming, id)
	}
	if m, r, a := e.rowCounts(); m != 1 || r != 1 || a != 1 {
		t.Errorf("rows %d %d %d; want 1 1 1", m, r, a)
	}
	if e.wake.Load() != 1 {
		t.Errorf("queue woken %d times; want 1", e.wake.Load())
	}
}

func TestEnqueueDatabaseFailureBeforeCommit(t *testing.T) {
	e := newEnv(t, nil)
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com", "carol@example.com")},
		Client: smtpClient()}
	// A trigger that fails the recipients' insert: the message row, sent in
	// the same batch, must go too, and so must the body.
	if _, err := e.db.Pool.Exec(context.Background(), `CREATE FUNCTION fail_rcpt() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
		CREATE TRIGGER fail_rcpt BEFORE INSERT ON queue_recipient FOR EACH ROW EXECUTE FUNCTION fail_rcpt()`); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.enqueue(m, simpleMessage(1000))
	wantReply(t, err, 451, "4.3.0")
	e.wantNothingQueued()
	if strings.Contains(envelope.Funnel(err, "s").Message, "injected") {
		t.Errorf("internal error text reaches the client: %q", envelope.Funnel(err, "s").Message)
	}

	// The database going away altogether (the resolver still answers from
	// its own connection).
	if _, err := e.db.Pool.Exec(context.Background(), "DROP TRIGGER fail_rcpt ON queue_recipient"); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), e.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	c := cleanup.New(store.New(pool), e.sp, e.res, e.opts, slog.New(slog.NewTextHandler(e.logs, nil)))
	_, err = c.Enqueue(context.Background(), m, strings.NewReader(simpleMessage(1000)))
	wantReply(t, err, 451, "4.3.0")
	e.wantNothingQueued()
}

// TestEnqueueLogs checks the one line per accepted message and that every
// line of a message's life carries its queue id.
func TestEnqueueLogs(t *testing.T) {
	e := newEnv(t, nil)
	cl := smtpClient()
	cl.AuthUser = "alice@example.com"
	id, _, err := e.enqueue(&cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test",
		Recipients: rcpts("team@example.com", "nobody@example.com")}, Client: cl}, simpleMessage(1000))
	if err != nil {
		t.Fatal(err)
	}
	var accepted int
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["queue_id"] != id {
			t.Errorf("log line without the queue id: %s", line)
		}
		msg, _ := rec["msg"].(string)
		if strings.HasPrefix(msg, id+": from=<a@sender.test>, size=") {
			accepted++
			if !strings.HasSuffix(msg, ", nrcpt=3") || rec["client"] != "mail.sender.test[192.0.2.10]" ||
				rec["tls"] != "TLSv1.3 TLS_AES_128_GCM_SHA256" || rec["auth_user"] != "alice@example.com" || rec["nrcpt"] != 3.0 {
				t.Errorf("accepted line incomplete: %s", line)
			}
		}
	}
	if accepted != 1 {
		t.Errorf("%d accepted lines; want 1:\n%s", accepted, e.logs)
	}
}

func TestEnqueueNotifiesQueueCoalesced(t *testing.T) {
	e := newEnv(t, func(o *cleanup.Options) { o.NotifyQueue = true })
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "LISTEN "+store.QueueChannel); err != nil {
		t.Fatal(err)
	}
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")}, Client: smtpClient()}
	start := time.Now()
	const n = 40
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n / 4 {
				if _, err := e.c.Enqueue(ctx, m, strings.NewReader(simpleMessage(500))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	got := 0
	for {
		wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		nt, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			break
		}
		if nt.Channel != store.QueueChannel || nt.Payload != "node1" {
			t.Errorf("notification %q %q", nt.Channel, nt.Payload)
		}
		got++
	}
	maxN := int(elapsed/(20*time.Millisecond)) + 2
	t.Logf("%d messages in %v gave %d notifications (at most %d allowed)", n, elapsed, got, maxN)
	if got < 1 || got > maxN || got >= n {
		t.Errorf("%d notifications for %d messages in %v; want between 1 and %d", got, n, elapsed, min(maxN, n-1))
	}
	if e.wake.Load() != n {
		t.Errorf("Wake called %d times; want %d", e.wake.Load(), n)
	}
}
