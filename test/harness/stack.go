package harness

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/queue"
	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/store/storetest"
)

// The world of the in-process stack: one hosted domain with two mailboxes
// (their passwords below), and the foreign domain of everyone else.
const (
	Host        = "mx.example.test"
	LocalDomain = "example.test"
	Alice       = "alice@example.test"
	AlicePass   = "correct horse battery staple"
	Bob         = "bob@example.test"
	BobPass     = "bob's password"
)

// StackOptions configure an in-process stack.
type StackOptions struct {
	Smtpd smtpd.Options
	Spool spool.Options
	// SpoolDir is where the spool lives (default a temp directory): a
	// small tmpfs for the disk-full tests.
	SpoolDir string
	// Agents, when set, also runs a queue manager with these agents.
	Agents map[string]deliver.Agent
}

// Stack is smtpd, cleanup and a spool over a fresh database, in this
// process, listening on 127.0.0.1 (MX and submission, with STARTTLS).
type Stack struct {
	t      testing.TB
	DB     *storetest.DB
	Store  *store.Store
	Spool  *spool.Spool
	Res    *lookups.Resolver
	Clean  *cleanup.Cleanup
	Server *smtpd.Server
	Queue  *queue.Manager
	Hasher *passwd.Hasher
	Logs   *LogBuffer
	// MX and Submission are the listeners' addresses.
	MX, Submission string
}

// NewStack builds and starts an in-process stack.
func NewStack(t testing.TB, o StackOptions) *Stack {
	t.Helper()
	ctx := context.Background()
	db := storetest.New(t)
	st := store.New(db.Pool)
	hasher, err := passwd.New(passwd.CheapOptions())
	if err != nil {
		t.Fatal(err)
	}
	logs := &LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := &Stack{t: t, DB: db, Store: st, Hasher: hasher, Logs: logs}
	if _, err := st.CreateDomain(ctx, store.Domain{Name: LocalDomain, Active: true}); err != nil {
		t.Fatal(err)
	}
	s.Mailbox(Alice, AlicePass)
	s.Mailbox(Bob, BobPass)
	dir := o.SpoolDir
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "spool")
	}
	sp, err := spool.Open(dir, o.Spool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	s.Spool = sp
	s.Res = lookups.New(st, lookups.Options{Hostname: Host, CacheTTL: -1})
	copts := cleanup.Options{Hostname: Host, Node: "test"}
	copts.Wake = func() {
		if s.Queue != nil {
			s.Queue.Wake()
		}
	}
	s.Clean = cleanup.New(st, sp, s.Res, copts, log)
	certFile, keyFile := WriteCert(t, t.TempDir(), Host)
	cr, err := smtpd.NewCertReloader(certFile, keyFile, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	so := o.Smtpd
	so.Hostname = Host
	if so.SpaceCheck == nil && o.Spool.MinFree > 0 {
		// As serve wires it: MAIL is refused when the spool is below MinFree.
		so.SpaceCheck = smtpd.FreeSpaceCheck(sp.Free, o.Spool.MinFree)
	}
	if so.ShutdownTimeout == 0 {
		so.ShutdownTimeout = time.Second
	}
	if so.ReadTimeout == 0 {
		so.ReadTimeout = 30 * time.Second
	}
	s.Server = smtpd.New(so, smtpd.Deps{Cleanup: s.Clean, Lookups: s.Res,
		Auth: smtpd.NewMailboxAuth(st, hasher, 2, log), TLS: cr.TLSConfig(), Log: log})

	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if o.Agents != nil {
		s.Queue = queue.New(st, sp, queue.Options{Node: "test", Hostname: Host, Agents: o.Agents,
			Mailboxes: queue.ResolverMailboxes{Resolver: s.Res}, PollInterval: 500 * time.Millisecond,
			Policy: &queue.PolicyConfig{MinBackoff: time.Second, MaxBackoff: time.Second}, Log: log})
		wg.Go(func() { s.Queue.Run(sctx) }) //nolint:errcheck // ends with sctx
	}
	for _, k := range []smtpd.Kind{smtpd.MX, smtpd.Submission} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if k == smtpd.MX {
			s.MX = ln.Addr().String()
		} else {
			s.Submission = ln.Addr().String()
		}
		wg.Go(func() {
			if err := s.Server.Serve(sctx, k, ln); err != nil {
				t.Errorf("serve %s: %v", k, err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if t.Failed() {
			t.Logf("stack log (tail):\n%s", logs.Tail(80))
		}
	})
	return s
}

// Mailbox creates an active mailbox with a password.
func (s *Stack) Mailbox(addr, password string) {
	s.t.Helper()
	h, err := s.Hasher.Hash(password)
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.Store.CreateMailbox(context.Background(), store.Mailbox{Address: addr, Password: h, Active: true}); err != nil {
		s.t.Fatal(err)
	}
}

// Exec runs SQL on the stack's database.
func (s *Stack) Exec(sql string, args ...any) {
	s.t.Helper()
	if _, err := s.DB.Pool.Exec(context.Background(), sql, args...); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

// Count runs a SELECT count(*) … and returns the number.
func (s *Stack) Count(sql string, args ...any) int {
	s.t.Helper()
	var n int
	if err := s.DB.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// Queued returns the number of queue_message rows.
func (s *Stack) Queued() int { return s.Count("SELECT count(*) FROM queue_message") }

// SpoolFiles returns the number of files in the spool, committed or not.
func (s *Stack) SpoolFiles() int {
	n, _ := CountSpoolFiles(s.t, s.Spool.Dir())
	return n
}

// StoredBodies returns the contents of every committed spool file.
func (s *Stack) StoredBodies() []string {
	s.t.Helper()
	var out []string
	_, names := CountFiles(s.t, filepath.Join(s.Spool.Dir(), "q"))
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(s.Spool.Dir(), "q", n))
		if err != nil {
			s.t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// Greeted dials addr from a loopback address of its own (NextIP), so that
// the per-address limits of one test case do not spill into the next, and
// reads the greeting.
func (s *Stack) Greeted(t testing.TB, addr string) *Client {
	t.Helper()
	c := MustDial(t, addr, NextIP())
	c.Expect(t, "220 ")
	return c
}

var nextIP atomic.Uint32

// NextIP returns a loopback address not returned before by this process,
// in 127.100.0.0/16 (any 127/8 address is this host on Linux).
func NextIP() string {
	n := nextIP.Add(1) - 1
	return fmt.Sprintf("127.100.%d.%d", n/254%256, n%254+1)
}

// LogBuffer collects log output, safe for concurrent use.
type LogBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything logged.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Tail returns the last n lines.
func (l *LogBuffer) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
