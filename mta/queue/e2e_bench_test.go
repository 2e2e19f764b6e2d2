package queue_test

// BenchmarkEndToEnd drives the whole mail path in one process, as
// `facteur serve --roles smtp,queue` wires it: a go-smtp client (one
// message per transaction, the next MAIL on the same connection, as
// bench/'s go loader) → smtpd → cleanup (spool file, fsyncs, enqueue
// transaction) → queue manager (claim, settle, finish) → the Maildir agent
// into real Maildirs, or the SMTP agent to an in-process sink (relay). It
// reports msgs/s end to end (first MAIL to the last delivery) and the
// accept-to-delivered latency p50/p99 (the client's 250 to the agent's
// Delivered result, which comes after the Maildir file is fsynced in
// new/, i.e. when bench/ sees it).
//
// The database is storetest's: its private cluster runs with fsync off, so
// point FACTEUR_TEST_DATABASE_URL at a cluster with fsync and
// synchronous_commit on for realistic figures (bench/PROFILING.md says
// how). b.N is the number of messages: run it with -benchtime=500x.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/maildir"
	smtpagent "github.com/facteur/facteur/mta/deliver/smtp"
	"github.com/facteur/facteur/mta/queue"
	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/store/storetest"
)

const (
	e2eDomains   = 100
	e2eMailboxes = 10 // per domain
	e2eRelay     = "relay.bench.test"
)

func BenchmarkEndToEnd(b *testing.B) {
	for _, c := range []struct {
		kase     string
		sessions int
	}{{"maildir", 1}, {"maildir", 10}, {"relay", 1}, {"relay", 10}} {
		b.Run(fmt.Sprintf("%s/sessions=%d", c.kase, c.sessions), func(b *testing.B) {
			benchEndToEnd(b, c.kase == "relay", c.sessions, 4096)
		})
	}
}

// e2eAgent records when each message's recipients were delivered.
type e2eAgent struct {
	inner deliver.Agent
	mu    sync.Mutex
	at    map[string]time.Time // delivered
	began map[string]time.Time // handed to the agent
	n     atomic.Int64
	fail  atomic.Int64
}

func (a *e2eAgent) Deliver(ctx context.Context, nexthop string, msg *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	began := time.Now()
	res := a.inner.Deliver(ctx, nexthop, msg, rcpts)
	now := time.Now()
	ok := 0
	for _, r := range res {
		if r.Status == deliver.Delivered {
			ok++
		} else {
			a.fail.Add(1)
		}
	}
	if ok > 0 {
		a.mu.Lock()
		a.at[msg.QueueID] = now
		a.began[msg.QueueID] = began
		a.mu.Unlock()
		a.n.Add(int64(ok))
	}
	return res
}

// nullResolver answers no DNS question: relay next hops are address
// literals.
type nullResolver struct{}

func (nullResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no DNS in the benchmark", Name: name, IsNotFound: true}
}

func (nullResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no DNS in the benchmark", Name: host, IsNotFound: true}
}

// sinkBackend is smtp-sink: it accepts every message and reads it to the
// end. It counts connections (the SMTP agent reuses them).
type sinkBackend struct{ conns *atomic.Int64 }

func (s sinkBackend) NewSession(*gosmtp.Conn) (gosmtp.Session, error) {
	s.conns.Add(1)
	return sinkSession{}, nil
}

type sinkSession struct{}

func (sinkSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (sinkSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (sinkSession) Reset()        {}
func (sinkSession) Logout() error { return nil }

func benchEndToEnd(b *testing.B, relay bool, sessions, size int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := storetest.New(b)
	// pgxpool's default size, as `facteur serve` opens it (max(4, CPUs));
	// E2E_POOL=n tries another.
	if n, _ := strconv.Atoi(os.Getenv("E2E_POOL")); n > 0 {
		cfg := db.Pool.Config()
		cfg.MaxConns = int32(n)
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer pool.Close()
		db.Pool = pool
	}
	st := store.New(db.Pool)
	log := slog.New(slog.DiscardHandler)
	mailRoot := b.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 65534, 65534 // never root (DESIGN "Mail ownership")
	}

	// The relay sink.
	sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var sinkConns atomic.Int64
	sink := gosmtp.NewServer(sinkBackend{conns: &sinkConns})
	sink.Domain = "sink.bench.test"
	sink.AllowInsecureAuth = true
	go sink.Serve(sinkLn) //nolint:errcheck
	defer sink.Close()

	// Data: domains with mailboxes (Maildirs made, as on a running host),
	// and a relay domain whose transport is the sink.
	var mailboxes []string
	var sql strings.Builder
	sql.WriteString("BEGIN;\n")
	for d := 1; d <= e2eDomains; d++ {
		dom := fmt.Sprintf("d%04d.bench.test", d)
		fmt.Fprintf(&sql, "INSERT INTO domain (name, description) VALUES ('%s', 'bench');\n", dom)
		for m := 1; m <= e2eMailboxes; m++ {
			local := fmt.Sprintf("u%05d", (d-1)*e2eMailboxes+m)
			addr := local + "@" + dom
			mailboxes = append(mailboxes, addr)
			fmt.Fprintf(&sql, "INSERT INTO mailbox (address, local_part, domain, maildir, name) VALUES ('%s', '%s', '%s', '%s/%s/', '%s');\n",
				addr, local, dom, dom, local, local)
			for _, sub := range []string{"", "/tmp", "/new", "/cur"} {
				p := filepath.Join(mailRoot, dom, local) + sub
				if err := os.MkdirAll(p, 0o700); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	fmt.Fprintf(&sql, "INSERT INTO domain (name, description, backup_mx) VALUES ('%s', 'bench relay', true);\n", e2eRelay)
	fmt.Fprintf(&sql, "INSERT INTO transport (key, nexthop, description) VALUES ('%s', 'smtp:[127.0.0.1]:%d', 'bench relay');\n",
		e2eRelay, sinkLn.Addr().(*net.TCPAddr).Port)
	sql.WriteString("COMMIT;\nANALYZE;\n")
	if _, err := db.Pool.Exec(ctx, sql.String()); err != nil {
		b.Fatal(err)
	}
	if uid != os.Getuid() {
		filepath.Walk(mailRoot, func(p string, _ os.FileInfo, err error) error { //nolint:errcheck
			if err == nil {
				err = os.Lchown(p, uid, gid)
			}
			return err
		})
	}

	// facteur, as serve wires it.
	res := lookups.New(st, lookups.Options{Hostname: "mx.bench.test", LocalUser: lookups.SystemUser, Logger: log})
	go res.Run(ctx) //nolint:errcheck
	sp, err := spool.Open(b.TempDir(), spool.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	var mgr atomic.Pointer[queue.Manager]
	cl := cleanup.New(st, sp, res, cleanup.Options{Hostname: "mx.bench.test", Node: "bench", NotifyQueue: true,
		Wake: func() {
			if m := mgr.Load(); m != nil {
				m.Wake()
			}
		}}, log)
	md, err := maildir.New(maildir.Options{Root: mailRoot, Hostname: "mx.bench.test", UID: uid, GID: gid})
	if err != nil {
		b.Fatal(err)
	}
	sa, err := smtpagent.New(smtpagent.Options{Hostname: "mx.bench.test", Resolver: nullResolver{},
		ListenPorts: []int{25}, Credentials: credsOf(st), Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	defer sa.Close()
	rec := &e2eAgent{inner: md, at: map[string]time.Time{}, began: map[string]time.Time{}}
	if relay {
		rec.inner = sa
	}
	m := queue.New(st, sp, queue.Options{Node: "bench", Hostname: "mx.bench.test",
		Agents:    map[string]deliver.Agent{queue.TransportMaildir: rec, queue.TransportSMTP: rec, queue.TransportRelay: rec},
		Mailboxes: queue.ResolverMailboxes{Resolver: res}, Log: log})
	mgr.Store(m)
	qdone := make(chan struct{})
	go func() { defer close(qdone); m.Run(ctx) }() //nolint:errcheck
	defer func() { cancel(); <-qdone }()

	srv := smtpd.New(smtpd.Options{Hostname: "mx.bench.test",
		Limits: smtpd.Limits{Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}},
		smtpd.Deps{Cleanup: cl, Lookups: res, Log: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ctx, smtpd.MX, ln) //nolint:errcheck

	// The plan: random recipients, seeded.
	rnd := rand.New(rand.NewPCG(1, uint64(b.N)))
	plan := make([]string, b.N)
	for i := range plan {
		if relay {
			plan[i] = fmt.Sprintf("r%05d@%s", rnd.IntN(100000), e2eRelay)
		} else {
			plan[i] = mailboxes[rnd.IntN(len(mailboxes))]
		}
	}
	body := []byte(strings.Repeat(strings.Repeat("x", 78)+"\r\n", size/80+1)[:size])

	// Warm up (caches, connections, prepared statements), then wait for
	// the queue to be idle.
	warm := e2eClient(b, ln.Addr().String())
	for i := range 5 {
		if _, err := e2eSend(warm, plan[i%len(plan)], body); err != nil {
			b.Fatal(err)
		}
	}
	warm.Quit() //nolint:errcheck
	waitFor(b, func() bool { return rec.n.Load() >= 5 })
	rec.n.Store(0)
	rec.mu.Lock()
	clear(rec.at)
	clear(rec.began)
	rec.mu.Unlock()

	accepted := make(map[string]time.Time, b.N)
	var amu sync.Mutex
	var next atomic.Int64
	var sendErr atomic.Value
	st0, conns0 := db.Pool.Stat(), sinkConns.Load()
	pgPid := postmasterPid(ctx, db.Pool)
	cpu0, pgcpu0 := selfCPU(), pgCPU(pgPid)
	// E2E_CPUPROFILE profiles the measured part only (without the setup
	// that -cpuprofile includes).
	if p := os.Getenv("E2E_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range sessions {
		wg.Go(func() {
			c := e2eClient(b, ln.Addr().String())
			defer c.Quit() //nolint:errcheck
			for {
				i := int(next.Add(1) - 1)
				if i >= len(plan) {
					return
				}
				id, err := e2eSend(c, plan[i], body)
				if err != nil {
					sendErr.Store(err)
					return
				}
				t := time.Now()
				amu.Lock()
				accepted[id] = t
				amu.Unlock()
			}
		})
	}
	wg.Wait()
	if err, _ := sendErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	received := time.Since(start)
	waitFor(b, func() bool { return rec.n.Load() >= int64(b.N) })
	b.StopTimer()
	cpu1, pgcpu1 := selfCPU(), pgCPU(pgPid)

	rec.mu.Lock()
	var last time.Time
	ms := func(d time.Duration) float64 { return float64(max(d, 0)) / float64(time.Millisecond) }
	var lat, wait, agent []float64
	for id, t := range accepted {
		d, ok := rec.at[id]
		if !ok {
			continue
		}
		if d.After(last) {
			last = d
		}
		lat = append(lat, ms(d.Sub(t)))
		wait = append(wait, ms(rec.began[id].Sub(t)))
		agent = append(agent, ms(d.Sub(rec.began[id])))
	}
	rec.mu.Unlock()
	for _, l := range [][]float64{lat, wait, agent} {
		slices.Sort(l)
	}
	pctOf := func(l []float64, p float64) float64 {
		if len(l) == 0 {
			return 0
		}
		return l[min(len(l)-1, int(p*float64(len(l))))]
	}
	pct := func(p float64) float64 { return pctOf(lat, p) }
	// Where the time goes: from the 250 to the agent's start (claim and
	// dispatch), and in the agent.
	b.ReportMetric(pctOf(wait, 0.5), "wait-p50-ms")
	b.ReportMetric(pctOf(agent, 0.5), "agent-p50-ms")
	b.ReportMetric(float64(b.N)/last.Sub(start).Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/received.Seconds(), "recv/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
	// Time spent waiting for a pooled connection, per message: the pool
	// is pgxpool's default size, as in production.
	st1 := db.Pool.Stat()
	b.ReportMetric(float64(st1.EmptyAcquireWaitTime()-st0.EmptyAcquireWaitTime())/float64(time.Millisecond)/float64(b.N), "poolwait-ms/msg")
	b.ReportMetric(float64(st1.AcquireCount()-st0.AcquireCount())/float64(b.N), "acquires/msg")
	if relay {
		b.ReportMetric(float64(sinkConns.Load()-conns0), "relay-conns")
	}
	// Messages per enqueue transaction (group commit): accepted_log rows
	// stay, with the xmin of the transaction that queued them.
	ids := slices.Collect(maps.Keys(accepted))
	var perTx float64
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*)::float8 / greatest(count(DISTINCT xmin::text), 1)
		FROM accepted_log WHERE queue_id = ANY ($1)`, ids).Scan(&perTx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(perTx, "msgs/enqueue-tx")
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*)::float8 / greatest(count(DISTINCT xmin::text), 1)
		FROM delivery_log WHERE queue_id = ANY ($1)`, ids).Scan(&perTx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(perTx, "msgs/settle-tx")
	// CPU per message: this process (the client and the sink too) and the
	// PostgreSQL cluster (when it runs here).
	b.ReportMetric(float64(cpu1-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/msg")
	if pgPid > 0 {
		b.ReportMetric(float64(pgcpu1-pgcpu0)/float64(time.Millisecond)/float64(b.N), "pg-cpu-ms/msg")
	}
	if f := rec.fail.Load(); f > 0 {
		b.Logf("%d recipients not delivered at the first attempt", f)
	}
}

func waitFor(b *testing.B, cond func() bool) {
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("timed out waiting for deliveries")
		}
		time.Sleep(time.Millisecond)
	}
}

func e2eClient(b *testing.B, addr string) *gosmtp.Client {
	c, err := gosmtp.Dial(addr)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Hello("client.bench.invalid"); err != nil {
		b.Fatal(err)
	}
	return c
}

// e2eSend sends one message and returns its queue id.
func e2eSend(c *gosmtp.Client, rcpt string, body []byte) (string, error) {
	const sender = "bench@client.bench.invalid"
	if err := c.Mail(sender, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: bench\r\nMessage-ID: <%d@client.bench.invalid>\r\n\r\n",
		sender, rcpt, rand.Int64())
	if _, err := w.Write(body); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	_, id, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		return "", fmt.Errorf("no queue id in %q", resp.StatusText)
	}
	return strings.TrimSpace(id), nil
}

func credsOf(st *store.Store) smtpagent.Credentials {
	if os.Getenv("E2E_NOCREDS") != "" {
		return nil
	}
	return st
}

// selfCPU returns this process's CPU time (user and system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postmasterPid returns the pid of the PostgreSQL postmaster when it runs on
// this machine (the parent of a backend), else 0.
func postmasterPid(ctx context.Context, pool *pgxpool.Pool) int {
	var backend int
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0
	}
	f, err := procStat(backend)
	if err != nil || len(f) < 4 {
		return 0
	}
	pid, _ := strconv.Atoi(f[1])
	return pid
}

// pgCPU returns the CPU time of the postmaster, its children and its
// exited children.
func pgCPU(postmaster int) time.Duration {
	if postmaster <= 0 {
		return 0
	}
	const tick = 10 * time.Millisecond // USER_HZ 100
	sum := func(f []string, from, to int) (n int64) {
		for i := from; i <= to && i < len(f); i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			n += v
		}
		return n
	}
	var total int64
	if f, err := procStat(postmaster); err == nil {
		total += sum(f, 11, 14) // utime stime cutime cstime
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := procStat(pid); err == nil && f[1] == strconv.Itoa(postmaster) {
			total += sum(f, 11, 12)
		}
	}
	return time.Duration(total) * tick
}

// procStat returns the fields of /proc/pid/stat after the command: state
// first, ppid second, utime is index 11.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}
