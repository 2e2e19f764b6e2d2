package cleanup_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
)

// pgProxy forwards PostgreSQL connections from 127.0.0.1 to the test server
// and, when armed, drops a connection right after forwarding the client's
// COMMIT: the server commits, the client never hears.
type pgProxy struct {
	ln            net.Listener
	network, addr string
	armed         atomic.Bool
	cuts          atomic.Int32
	wg            sync.WaitGroup
}

func startProxy(t *testing.T, network, addr string) *pgProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln, network: network, addr: addr}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *pgProxy) port() uint16 { return uint16(p.ln.Addr().(*net.TCPAddr).Port) }

func (p *pgProxy) handle(client net.Conn) {
	defer client.Close()
	server, err := net.Dial(p.network, p.addr)
	if err != nil {
		return
	}
	defer server.Close()
	go func() {
		_, _ = io.Copy(client, server)
		client.Close()
	}()
	r := bufio.NewReader(client)
	// Untyped messages first: SSLRequest or GSSENCRequest (answered by the
	// server through the other direction), then the StartupMessage or a
	// CancelRequest.
	for {
		msg, err := readUntyped(r)
		if err != nil {
			return
		}
		if _, err := server.Write(msg); err != nil {
			return
		}
		code := binary.BigEndian.Uint32(msg[4:8])
		if code != 80877103 && code != 80877104 { // not SSLRequest, GSSENCRequest
			break
		}
	}
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[1:]))
		if n < 4 {
			return
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		// A simple-protocol COMMIT ('Q'), which is how the store sends it.
		// Decided before it is forwarded, and the client's side closed
		// first: the answer to an earlier COMMIT lets the test arm the
		// proxy, so a check after forwarding could cut the wrong one, and
		// the answer to this one must never reach the client.
		if hdr[0] == 'Q' && strings.HasPrefix(strings.ToUpper(strings.TrimSpace(strings.TrimRight(string(body), "\x00"))), "COMMIT") &&
			p.armed.CompareAndSwap(true, false) {
			p.cuts.Add(1)
			client.Close()
			_, _ = server.Write(append(hdr[:], body...))
			return // closes the server side: it commits, then sees EOF
		}
		if _, err := server.Write(append(hdr[:], body...)); err != nil {
			return
		}
	}
}

func readUntyped(r *bufio.Reader) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(l[:]))
	if n < 8 || n > 1<<16 {
		return nil, errors.New("bad startup length")
	}
	msg := make([]byte, n)
	copy(msg, l[:])
	_, err := io.ReadFull(r, msg[4:])
	return msg, err
}

// proxiedStore returns a store whose connections go through a pgProxy.
func proxiedStore(t *testing.T, e *env) (*store.Store, *pgProxy) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(e.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	network, addr := "tcp", net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	if strings.HasPrefix(cfg.ConnConfig.Host, "/") {
		network, addr = "unix", filepath.Join(cfg.ConnConfig.Host, ".s.PGSQL."+strconv.Itoa(int(cfg.ConnConfig.Port)))
	}
	p := startProxy(t, network, addr)
	cfg.ConnConfig.Host = "127.0.0.1"
	cfg.ConnConfig.Port = p.port()
	cfg.ConnConfig.TLSConfig = nil // the proxy must see the messages
	cfg.ConnConfig.Fallbacks = nil
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return store.New(pool), p
}

func setOld(t *testing.T, path string, age time.Duration) {
	t.Helper()
	old := time.Now().Add(-age)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
}

// TestEnqueueConnectionCutAfterCommit cuts the database connection between
// COMMIT and its reply: the client gets 451, the body stays (the rows do
// exist), and the reconciler leaves both alone since the rows reference it.
func TestEnqueueConnectionCutAfterCommit(t *testing.T) {
	e := newEnv(t, nil)
	pst, proxy := proxiedStore(t, e)
	c := cleanup.New(pst, e.sp, e.res, e.opts, slog.New(slog.NewJSONHandler(e.logs, nil)))
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("team@example.com")}, Client: smtpClient()}
	ctx := context.Background()

	// Through the proxy, unarmed: a normal enqueue (and a warm connection).
	firstID, err := c.Enqueue(ctx, m, strings.NewReader(simpleMessage(500)))
	if err != nil {
		t.Fatalf("enqueue through the proxy: %v", err)
	}
	proxy.armed.Store(true)
	_, err = c.Enqueue(ctx, m, strings.NewReader(simpleMessage(500)))
	if proxy.cuts.Load() != 1 {
		t.Fatalf("the proxy did not see COMMIT (cuts %d); err %v", proxy.cuts.Load(), err)
	}
	wantReply(t, err, 451, "4.3.0")
	if !errors.Is(err, store.ErrCommitUnknown) {
		t.Errorf("error %v does not say the outcome is unknown", err)
	}
	committed, incoming := e.spoolFiles()
	if len(committed) != 2 || len(incoming) != 0 {
		t.Fatalf("spool files %v %v; want both bodies kept", committed, incoming)
	}
	cutID := committed[0]
	if cutID == firstID {
		cutID = committed[1]
	}
	if !strings.Contains(e.logs.String(), "outcome unknown") {
		t.Errorf("no log line for the unknown outcome:\n%s", e.logs)
	}
	// The server did commit: the rows appear (the backend may still be
	// finishing when the client gives up; on a loaded machine it may take
	// a while to be scheduled).
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, err := e.st.QueueMessageExists(ctx, cutID)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("row of %s never appeared: the COMMIT the proxy forwarded was lost", cutID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := e.recipients(cutID); len(got) != 3 {
		t.Errorf("recipients of the cut message: %v", got)
	}

	// Hours later the reconciler leaves both: rows reference the file.
	for _, id := range committed {
		setOld(t, e.sp.Path(id), 3*time.Hour)
	}
	if _, err := e.db.Pool.Exec(ctx, "UPDATE queue_message SET arrived_at = now() - interval '3 hours'"); err != nil {
		t.Fatal(err)
	}
	st, err := c.Reconcile(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st != (cleanup.ReconcileStats{}) {
		t.Errorf("reconciler acted on committed messages: %+v", st)
	}
	if after, _ := e.spoolFiles(); len(after) != 2 {
		t.Errorf("spool files after reconcile: %v", after)
	}
	var held int
	if err := e.db.Pool.QueryRow(ctx, "SELECT count(*) FROM queue_message WHERE held").Scan(&held); err != nil || held != 0 {
		t.Errorf("held messages %d, %v", held, err)
	}

	// And the pool recovers: the next message goes through the proxy again.
	if _, err := c.Enqueue(ctx, m, strings.NewReader(simpleMessage(500))); err != nil {
		t.Errorf("enqueue after the cut: %v", err)
	}
}

// TestReconcile: an old file that no row references is removed, a young one
// is kept; an old row whose file is missing is held with a reason, never
// deleted; an old temp file is swept, a young one is kept.
func TestReconcile(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()

	// Orphan bodies, as an unknown COMMIT that did not commit leaves them.
	orphan := func(key string, age time.Duration) {
		w, err := e.sp.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("Subject: orphan\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		setOld(t, e.sp.Path(key), age)
	}
	orphan("OldOrphan001", 2*time.Hour)
	orphan("NewOrphan001", time.Minute)

	// A queued message whose body has vanished, and one that is fine.
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")}, Client: smtpClient()}
	lost, _, err := e.enqueue(m, simpleMessage(500))
	if err != nil {
		t.Fatal(err)
	}
	kept, _, err := e.enqueue(m, simpleMessage(500))
	if err != nil {
		t.Fatal(err)
	}
	setOld(t, e.sp.Path(kept), 2*time.Hour)
	if err := os.Remove(e.sp.Path(lost)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Pool.Exec(ctx, "UPDATE queue_message SET arrived_at = now() - interval '2 hours'"); err != nil {
		t.Fatal(err)
	}
	// Another node's message is none of this node's business.
	other := store.QueueMessage{ID: "OtherNode001", Node: "node2", SpoolKey: "OtherNode001", Sender: "x@y.test", Size: 1}
	if err := e.st.Enqueue(ctx, other, []store.QueueRecipient{{Address: "bob@example.com", OrigAddress: "bob@example.com",
		Domain: "example.com", Transport: "maildir"}}, store.AcceptedLog{}); err != nil {
		t.Fatal(err)
	}

	// Temp files: one left by a crash long ago, one being written now.
	inc := filepath.Join(e.sp.Dir(), "incoming")
	for name, age := range map[string]time.Duration{"Crashed00001.1.1": 3 * time.Hour, "Writing00001.1.2": time.Second} {
		p := filepath.Join(inc, name)
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		setOld(t, p, age)
	}

	st, err := e.c.Reconcile(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := cleanup.ReconcileStats{Removed: 1, Swept: 1, Held: 1}
	if st != want {
		t.Errorf("stats %+v; want %+v", st, want)
	}
	committed, incoming := e.spoolFiles()
	wantFiles := []string{"NewOrphan001", kept}
	if strings.Join(committed, ",") != strings.Join(slices.Sorted(slices.Values(wantFiles)), ",") {
		t.Errorf("committed files %v; want %v", committed, wantFiles)
	}
	if len(incoming) != 1 || !strings.HasSuffix(incoming[0], "Writing00001.1.2") {
		t.Errorf("temp files %v; want only the young one", incoming)
	}
	var held bool
	var reason *string
	if err := e.db.Pool.QueryRow(ctx, "SELECT held, hold_reason FROM queue_message WHERE id = $1", lost).Scan(&held, &reason); err != nil {
		t.Fatalf("the row of the lost body: %v (it must be held, never deleted)", err)
	}
	if !held || reason == nil || !strings.Contains(*reason, "missing") {
		t.Errorf("row of the lost body: held %v reason %v", held, reason)
	}
	var otherHeld, keptHeld bool
	if err := e.db.Pool.QueryRow(ctx, "SELECT (SELECT held FROM queue_message WHERE id = 'OtherNode001'), (SELECT held FROM queue_message WHERE id = $1)", kept).
		Scan(&otherHeld, &keptHeld); err != nil {
		t.Fatal(err)
	}
	if otherHeld || keptHeld {
		t.Errorf("held another node's message (%v) or one with its body (%v)", otherHeld, keptHeld)
	}
	logs := e.logs.String()
	for _, wantLog := range []string{"OldOrphan001", lost, "stale temp files"} {
		if !strings.Contains(logs, wantLog) {
			t.Errorf("no log line for %s", wantLog)
		}
	}

	// A second pass finds nothing more to do.
	if st, err := e.c.Reconcile(ctx, time.Hour); err != nil || st != (cleanup.ReconcileStats{}) {
		t.Errorf("second pass: %+v, %v", st, err)
	}
}

// TestReconcileKeepsYoungFilesWhateverTheAge asks for a tiny age: files
// younger than MinReconcileAge are never touched, since their enqueue may be
// in flight.
func TestReconcileKeepsYoungFilesWhateverTheAge(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	w, err := e.sp.Create(ctx, "InFlight0001")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	setOld(t, e.sp.Path("InFlight0001"), time.Minute)
	st, err := e.c.Reconcile(ctx, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 0 {
		t.Errorf("removed a body younger than MinReconcileAge")
	}
}

func TestRunReconcilerStopsWithContext(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.c.RunReconciler(ctx, 10*time.Millisecond) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("RunReconciler returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunReconciler did not stop")
	}
}
