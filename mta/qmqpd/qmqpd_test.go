package qmqpd_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/qmqpd"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/store/storetest"
)

// No real QMQP client is installed here: nullmailer's qmqp remote cannot be
// installed next to Postfix (the packages conflict), and qmail's
// qmail-qmqpc is not packaged. The client side below is written from the
// protocol's definition (https://cr.yp.to/proto/qmqp.html), and
// TestQMQPWithNullmailer runs nullmailer's client when it is there.

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
INSERT INTO domain (name) VALUES ('example.com');
INSERT INTO mailbox (address, local_part, domain, maildir) VALUES ('bob@example.com', 'bob', 'example.com', '');
INSERT INTO client_access (network, action, description) VALUES ('127.0.0.1/32', 'permit_qmqp', 'the web host');
`

type env struct {
	t    *testing.T
	db   *storetest.DB
	st   *store.Store
	sp   *spool.Spool
	logs *syncBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, db: storetest.New(t), logs: &syncBuffer{}}
	e.st = store.New(e.db.Pool)
	if _, err := e.db.Pool.Exec(context.Background(), seedSQL); err != nil {
		t.Fatalf("seed: %v", err)
	}
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	e.sp = sp
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", e.logs.String())
		}
	})
	return e
}

// serve starts a QMQP server over st (with its own resolver and cleanup)
// and returns its address.
func (e *env) serve(st *store.Store, res *lookups.Resolver, opts qmqpd.Options) string {
	e.t.Helper()
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cl := cleanup.New(st, e.sp, res, cleanup.Options{Hostname: "mx.example.com", Node: "node1"}, log)
	opts.TempDir = e.t.TempDir()
	srv := qmqpd.New(opts, qmqpd.Deps{Cleanup: cl, Lookups: res, Log: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Serve: %v", err)
		}
		// The message's temporary file is unlinked at once.
		if left, _ := os.ReadDir(opts.TempDir); len(left) != 0 {
			e.t.Errorf("temporary files left: %v", left)
		}
	})
	return ln.Addr().String()
}

func (e *env) start(opts qmqpd.Options) string {
	return e.serve(e.st, lookups.New(e.st, lookups.Options{Hostname: "mx.example.com", CacheTTL: -1}), opts)
}

func ns(s string) string { return fmt.Sprintf("%d:%s,", len(s), s) }

// qmqp sends one message as a QMQP client does and returns the server's
// answer (the content of its netstring).
func qmqp(t *testing.T, addr, message, sender string, rcpts ...string) string {
	t.Helper()
	inner := ns(message) + ns(sender)
	for _, r := range rcpts {
		inner += ns(r)
	}
	return send(t, addr, ns(inner))
}

func send(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Logf("write: %v (reading the answer anyway)", err)
	}
	resp, err := io.ReadAll(c)
	if err != nil && len(resp) == 0 {
		t.Fatalf("read answer: %v", err)
	}
	s := string(resp)
	i := strings.IndexByte(s, ':')
	if i < 0 {
		t.Fatalf("answer %q is not a netstring", s)
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil || len(s) != i+1+n+1 || s[len(s)-1] != ',' {
		t.Fatalf("answer %q is not a netstring", s)
	}
	return s[i+1 : i+1+n]
}

func (e *env) count() int {
	e.t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM queue_message").Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestQMQPAcceptsAndConvertsLineEnds(t *testing.T) {
	e := newEnv(t)
	addr := e.start(qmqpd.Options{})
	msg := "From: app@web.test\nTo: bob@example.com\nSubject: order 42\n\nh\xc3\xa9llo\r\nlast line without LF"
	ans := qmqp(t, addr, msg, "app@web.test", "bob@example.com", "partner@remote.test")
	if !strings.HasPrefix(ans, "K2.0.0 Ok: queued as ") {
		t.Fatalf("answer %q, want K", ans)
	}
	id := strings.TrimPrefix(ans, "K2.0.0 Ok: queued as ")
	var sender, proto, client, body string
	var rcpts []string
	err := e.db.Pool.QueryRow(context.Background(), `
		SELECT m.sender, m.protocol, m.client_addr, m.body_type, array_agg(r.address ORDER BY r.address)
		FROM queue_message m JOIN queue_recipient r ON r.queue_id = m.id WHERE m.id = $1 GROUP BY m.id`, id).
		Scan(&sender, &proto, &client, &body, &rcpts)
	if err != nil {
		t.Fatal(err)
	}
	// Relaying to another domain is allowed: QMQP clients are trusted.
	if sender != "app@web.test" || proto != "QMQP" || client != "127.0.0.1" || body != "8BITMIME" ||
		!slices.Equal(rcpts, []string{"bob@example.com", "partner@remote.test"}) {
		t.Fatalf("row: %q %q %q %q %v", sender, proto, client, body, rcpts)
	}
	f, err := e.sp.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	got := string(b)
	want := "From: app@web.test\r\nTo: bob@example.com\r\nSubject: order 42\r\n\r\nh\xc3\xa9llo\r\nlast line without LF\r\n"
	if !strings.HasSuffix(got, want) {
		t.Fatalf("spool file:\n%q\nwant it to end with\n%q", got, want)
	}
	if !strings.HasPrefix(got, "Received: from unknown (unknown [127.0.0.1])") || !strings.Contains(got, "with QMQP id "+id) {
		t.Fatalf("Received: header:\n%s", got)
	}
}

func TestQMQPRefusals(t *testing.T) {
	e := newEnv(t)
	addr := e.start(qmqpd.Options{MaxMessageBytes: 2000})
	tests := []struct {
		name   string
		answer func() string
		want   string
	}{
		{"unknown local user", func() string {
			return qmqp(t, addr, "Subject: x\n\nx\n", "app@web.test", "partner@remote.test", "nosuch@example.com")
		}, "D5.1.1 <nosuch@example.com>: Recipient address rejected: User unknown"},
		{"malformed recipient", func() string { return qmqp(t, addr, "x\n", "", "no-domain") }, "D5.1.3 "},
		{"routing", func() string { return qmqp(t, addr, "x\n", "", "user%other@example.com") }, "D5.7.1 "},
		{"address literal", func() string { return qmqp(t, addr, "x\n", "", "x@[192.0.2.1]") }, "D5.7.1 "},
		{"bad sender", func() string { return qmqp(t, addr, "x\n", "no-domain", "bob@example.com") }, "D5.1.7 "},
		{"no recipient", func() string { return qmqp(t, addr, "x\n", "a@b.test") }, "D5.5.1 "},
		{"bare CR", func() string { return qmqp(t, addr, "Subject: x\n\na\rb\n", "", "bob@example.com") }, "D5.5.2 "},
		{"too big", func() string { return qmqp(t, addr, strings.Repeat("x", 2001), "", "bob@example.com") }, "D5.3.4 "},
		{"malformed netstring", func() string { return send(t, addr, "12:3:abc,0:,;;;;,") }, "D5.5.2 "},
		{"bad length", func() string { return send(t, addr, "x:") }, "D5.5.2 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.answer(); !strings.HasPrefix(got, tt.want) {
				t.Fatalf("answer %q, want %q", got, tt.want)
			}
		})
	}
	if n := e.count(); n != 0 {
		t.Fatalf("%d messages queued, want 0", n)
	}
}

func TestQMQPRefusesUnauthorizedNetworks(t *testing.T) {
	e := newEnv(t)
	addr := e.start(qmqpd.Options{})
	ctx := context.Background()
	for _, change := range []string{
		`DELETE FROM client_access`,
		`INSERT INTO client_access (network, action) VALUES ('127.0.0.0/8', 'permit_qmqp'), ('127.0.0.1/32', 'permit_relay')`,
		`INSERT INTO client_access (network, action) VALUES ('127.0.0.1/32', 'permit_qmqp'), ('127.0.0.1/32', 'reject')`,
	} {
		if _, err := e.db.Pool.Exec(ctx, `DELETE FROM client_access; `+change); err != nil {
			t.Fatal(err)
		}
		if ans := qmqp(t, addr, "Subject: x\n\n"+strings.Repeat("body\n", 20000), "", "bob@example.com"); !strings.HasPrefix(ans, "D5.7.1 ") {
			t.Errorf("after %q: answer %q, want D5.7.1", change, ans)
		}
	}
	if n := e.count(); n != 0 {
		t.Fatalf("%d messages queued, want 0", n)
	}
}

func TestQMQPDatabaseFailureIsTemporary(t *testing.T) {
	e := newEnv(t)
	// The server's own pool, closed half-way: the database is gone.
	pool, err := pgxpool.New(context.Background(), e.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool)
	// Cached lookups, as in production: client_access stays answered from
	// the cache, a new recipient needs the database.
	addr := e.serve(st, lookups.New(st, lookups.Options{Hostname: "mx.example.com"}), qmqpd.Options{})
	if ans := qmqp(t, addr, "Subject: one\n\nx\n", "", "bob@example.com"); !strings.HasPrefix(ans, "K") {
		t.Fatalf("first message: %q", ans)
	}
	pool.Close()
	if ans := qmqp(t, addr, "Subject: two\n\nx\n", "", "other@remote.test"); !strings.HasPrefix(ans, "Z4.3.0 ") {
		t.Fatalf("recipient lookup with the database down: %q, want Z4.3.0", ans)
	}
	// Nothing cached at all: client_access itself fails.
	addr2 := e.serve(st, lookups.New(st, lookups.Options{Hostname: "mx.example.com", CacheTTL: -1}), qmqpd.Options{})
	if ans := qmqp(t, addr2, "Subject: three\n\nx\n", "", "bob@example.com"); !strings.HasPrefix(ans, "Z4.3.0 ") {
		t.Fatalf("client_access with the database down: %q, want Z4.3.0", ans)
	}
	if n := e.count(); n != 1 {
		t.Fatalf("%d messages queued, want 1", n)
	}
}

func TestQMQPWithNullmailer(t *testing.T) {
	// nullmailer conflicts with postfix, which other tests need, so CI
	// does not install it: .ci/run extracts its QMQP client from the Debian
	// package (apt-get download; dpkg -x) and names it in
	// FACTEUR_NULLMAILER_QMQP.
	client := os.Getenv("FACTEUR_NULLMAILER_QMQP")
	if client == "" {
		client = "/usr/lib/nullmailer/qmqp"
	}
	if _, err := os.Stat(client); err != nil {
		msg := fmt.Sprintf("nullmailer's QMQP client %s is missing (apt-get download nullmailer && dpkg -x it, then set FACTEUR_NULLMAILER_QMQP)", client)
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	e := newEnv(t)
	addr := e.start(qmqpd.Options{})
	host, port, _ := net.SplitHostPort(addr)
	// nullmailer 2.x: the remote's options on standard input, the queued
	// message on descriptor 3 (sender, recipients, an empty line, then the
	// message).
	mail, err := os.CreateTemp(t.TempDir(), "msg")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mail.WriteString("app@web.test\nbob@example.com\n\nSubject: nullmailer\n\nhello\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := mail.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	defer mail.Close()
	cmd := exec.Command(client)
	cmd.Stdin = strings.NewReader("host=" + host + "\nport=" + port + "\n")
	cmd.ExtraFiles = []*os.File{mail}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nullmailer qmqp: %v\n%s", err, out)
	}
	if n := e.count(); n != 1 {
		t.Fatalf("%d messages queued, want 1", n)
	}
}

// countingMetrics counts Connection calls and the sessions still open.
type countingMetrics struct {
	mu          sync.Mutex
	conns, open map[string]int
}

func (m *countingMetrics) Connection(listener string) func() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns[listener]++
	m.open[listener]++
	return func() {
		m.mu.Lock()
		m.open[listener]--
		m.mu.Unlock()
	}
}

func TestQMQPCountsConnections(t *testing.T) {
	e := newEnv(t)
	m := &countingMetrics{conns: map[string]int{}, open: map[string]int{}}
	addr := e.start(qmqpd.Options{Metrics: m})
	for range 2 {
		if ans := qmqp(t, addr, "Subject: x\n\nx\n", "app@web.test", "bob@example.com"); !strings.HasPrefix(ans, "K") {
			t.Fatalf("answer %q", ans)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		conns, open := m.conns["qmqp"], m.open["qmqp"]
		m.mu.Unlock()
		if conns == 2 && open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qmqp connections %d, open %d; want 2 and 0", conns, open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
