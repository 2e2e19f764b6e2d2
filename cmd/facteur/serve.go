package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/spf13/cobra"

	"github.com/facteur/facteur/internal/health"
	"github.com/facteur/facteur/internal/metrics"
	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/migrations"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/lmtp"
	"github.com/facteur/facteur/mta/deliver/local"
	"github.com/facteur/facteur/mta/deliver/maildir"
	"github.com/facteur/facteur/mta/deliver/pipe"
	smtpagent "github.com/facteur/facteur/mta/deliver/smtp"
	"github.com/facteur/facteur/mta/queue"
	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/mta/vacation"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
)

// services is what every role of `facteur serve` receives: the parts built
// once per process and shared. Roles that need more shared parts (the
// lookups cache, cleanup, the spool, the TLS configuration, the metrics
// registry) add a field here and build it in newServices.
type services struct {
	cfg   *Config
	store *store.Store
	log   *slog.Logger

	// receive holds the parts of the SMTP roles, built by the first of
	// them to start.
	receiveOnce sync.Once
	receive     *receiveParts
	receiveErr  error

	// metrics is the process's Prometheus registry, built on first use
	// (metricsRegistry) by whichever part asks first: the receive parts,
	// the queue, pickup and qmqp count into it; the admin and metrics
	// roles serve it.
	metricsOnce sync.Once
	metrics     *metrics.Metrics
}

// receiveParts are shared by the smtp, submission and submissions roles:
// one lookups cache, one spool and cleanup, and one smtpd.Server, so that
// per-client limits span every port.
type receiveParts struct {
	res  *lookups.Resolver
	sp   *spool.Spool
	cl   *cleanup.Cleanup
	smtp *smtpd.Server
	// signer DKIM-signs submitted mail (smtpd and pickup).
	signer cleanup.Signer
	// wake holds this process's queue manager while the queue role runs.
	wake atomic.Pointer[queue.Manager]
}

func (s *services) receiveParts(ctx context.Context) (*receiveParts, error) {
	s.receiveOnce.Do(func() { s.receive, s.receiveErr = buildReceiveParts(ctx, s) })
	return s.receive, s.receiveErr
}

func buildReceiveParts(ctx context.Context, s *services) (*receiveParts, error) {
	cfg := s.cfg
	// The policy parts' caches (DKIM keys, DNSBL sites; built below) follow
	// the control plane through the resolver's listener.
	var polHook atomic.Pointer[policyParts]
	lo := lookups.Options{Hostname: cfg.Hostname, Postmaster: cfg.Postmaster,
		LocalUser: lookups.SystemUser, Logger: s.log, OnInvalidate: func(table, _ string) {
			if p := polHook.Load(); p != nil {
				p.invalidate(table)
			}
		}}
	if err := cfg.lookupsSRS(&lo); err != nil {
		return nil, err
	}
	res := lookups.New(s.store, lo)
	go func() {
		if err := res.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("lookups cache listener stopped", "err", err)
		}
	}()
	met := s.metricsRegistry()
	if err := met.WatchLookups(res.Stats); err != nil {
		s.log.Error("metrics collectors", "err", err)
	}
	minFree, err := cfg.spoolMinFree()
	if err != nil {
		return nil, err
	}
	// Below spool_min_free no spool file is created, and smtpd refuses MAIL
	// before the client sends the message (452 4.3.1).
	sp, err := spool.Open(cfg.SpoolDir, spool.Options{MinFree: minFree})
	if err != nil {
		return nil, err
	}
	parts := &receiveParts{res: res, sp: sp}
	parts.cl = cleanup.New(s.store, sp, res, cleanup.Options{Hostname: cfg.Hostname, Node: cfg.Node, NotifyQueue: true,
		Metrics: met, Wake: func() {
			if m := parts.wake.Load(); m != nil {
				m.Wake()
			}
		}}, s.log)
	hasher, err := cfg.hasher()
	if err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if cfg.TLS.CertFile != "" {
		cr, err := smtpd.NewCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, 0, s.log)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		tlsConf = cr.TLSConfig()
	}
	pol, err := buildPolicy(cfg, s.store, s.log)
	if err != nil {
		return nil, err
	}
	polHook.Store(pol)
	parts.signer = pol.signer
	deps := smtpd.Deps{
		Cleanup: parts.cl, Lookups: res, Auth: smtpd.NewMailboxAuth(s.store, hasher, 0, s.log), TLS: tlsConf, Log: s.log}
	pol.deps(&deps)
	if deps.Milters, err = buildMilters(cfg, s.log); err != nil {
		return nil, err
	}
	parts.smtp = smtpd.New(smtpd.Options{Hostname: cfg.Hostname, Postmaster: cfg.Postmaster,
		PregreetWait: cfg.Policy.PregreetWait.Duration, Metrics: met,
		SpaceCheck: smtpd.FreeSpaceCheck(sp.Free, minFree)}, deps)
	return parts, nil
}

// serveSMTP is the run function of an SMTP listener role.
func serveSMTP(kind smtpd.Kind, addr func(l *ListenConfig) string) func(ctx context.Context, s *services) error {
	return func(ctx context.Context, s *services) error {
		p, err := s.receiveParts(ctx)
		if err != nil {
			return err
		}
		return p.smtp.ListenAndServe(ctx, kind, addr(&s.cfg.Listen))
	}
}

// role is one entry of the role table.
type role struct {
	name string
	// configured reports whether the configuration turns the role on when
	// --roles is not given (for a listener: its address is set).
	configured func(cfg *Config) bool
	// setting names the configuration key that turns the role on, for
	// error messages ("" when the role needs no setting).
	setting string
	// run serves until ctx is cancelled, then releases what it holds and
	// returns nil. Any return before ctx is cancelled stops the process.
	// nil means the role is not built yet (its issue adds it).
	run func(ctx context.Context, s *services) error
}

func smtpAddr(l *ListenConfig) string        { return l.SMTP }
func submissionAddr(l *ListenConfig) string  { return l.Submission }
func submissionsAddr(l *ListenConfig) string { return l.Submissions }

// serveQueue is the run function of the queue role: the queue manager of
// this node with every delivery agent of this build, DSNs queued through the
// store (queue.StoreSubmitter, which clears the DSN debt in the enqueue
// transaction) and vacation replies after final deliveries. An agent that
// cannot be built is left out with an error in the log: its recipients are
// deferred ("mail transport unavailable"), never lost.
func serveQueue(ctx context.Context, s *services) error {
	p, err := s.receiveParts(ctx)
	if err != nil {
		return err
	}
	cfg := s.cfg
	dns, err := cfg.resolver()
	if err != nil {
		return err
	}
	agents := map[string]deliver.Agent{}
	so := smtpagent.Options{Hostname: cfg.Hostname, Resolver: dns, LocalAddrs: localAddrs(),
		ListenPorts: listenPorts(cfg.Listen.SMTP), Credentials: s.store, Logger: s.log}
	if r, err := cfg.srs(); err != nil {
		return err
	} else if r != nil {
		so.SRS, so.SRSDomain, so.Forwarded = r, cfg.srsDomain(), forwardedFrom(p.res)
	}
	if a, err := smtpagent.New(so); err != nil {
		s.log.Error("queue: smtp agent unavailable", "err", err)
	} else {
		defer a.Close()
		agents[queue.TransportSMTP], agents[queue.TransportRelay] = a, a
	}
	if a, err := lmtp.New(lmtp.Options{LocalName: cfg.Hostname, Resolver: dns}); err != nil {
		s.log.Error("queue: lmtp agent unavailable", "err", err)
	} else {
		agents[queue.TransportLMTP] = a
	}
	// DESIGN "Mail ownership": Maildirs belong to the mail owner, never root.
	uid, gid, err := cfg.mailOwner(os.Geteuid())
	if err != nil {
		return err
	}
	if err := ensureMailRoot(cfg.MailRoot, uid, gid); err != nil {
		return err
	}
	if a, err := maildir.New(maildir.Options{Root: cfg.MailRoot, Hostname: cfg.Hostname, UID: uid, GID: gid}); err != nil {
		s.log.Error("queue: maildir agent unavailable", "err", err)
	} else {
		agents[queue.TransportMaildir] = a
	}
	if a, err := pipe.New(pipe.Options{}); err != nil {
		s.log.Error("queue: pipe agent unavailable", "err", err)
	} else {
		agents[queue.TransportPipe] = a
	}
	// local(8): system users of local domains, .forward, alias commands
	// and files, each in a child process with the user's credentials.
	if a, err := local.New(local.Options{Hostname: cfg.Hostname}, p.cl); err != nil {
		s.log.Error("queue: local agent unavailable", "err", err)
	} else {
		agents["local"] = a
	}
	// One queue manager per spool: the lock lets it take back, at start,
	// the leases that earlier processes of this node left (kill -9).
	unlock, err := lockQueue(cfg.SpoolDir)
	if err != nil {
		return err
	}
	defer unlock()
	var m *queue.Manager
	sub := &queue.StoreSubmitter{Store: s.store, Spool: p.sp, Resolver: p.res, Node: cfg.Node, Hostname: cfg.Hostname,
		NewQueueID: p.cl.NewQueueID, Wake: func() { m.Wake() }, Log: s.log}
	vac := vacation.New(s.store, p.cl, vacation.Options{Hostname: cfg.Hostname}, s.log)
	q := cfg.Queue
	m = queue.New(s.store, p.sp, queue.Options{Node: cfg.Node, Hostname: cfg.Hostname, Postmaster: cfg.Postmaster,
		Agents: agents, Mailboxes: queue.ResolverMailboxes{Resolver: p.res}, Submitter: sub,
		Delivered: vacationHook(vac), Metrics: s.metricsRegistry(), Log: s.log,
		Policy: &queue.PolicyConfig{MinBackoff: q.MinBackoff.Duration, MaxBackoff: q.MaxBackoff.Duration,
			MaxQueueLifetime: q.MaxLifetime.Duration, BounceQueueLifetime: q.BounceLifetime.Duration,
			DelayWarningTime: delayWarning(q.DelayWarning.Duration)},
		Concurrency: q.Concurrency, DestinationConcurrency: q.DestinationConcurrency, PollInterval: q.PollInterval.Duration,
		SoleManager: true})
	// Mail accepted by this process wakes the manager at once; other
	// processes reach it through NOTIFY facteur_queue.
	p.wake.Store(m)
	defer p.wake.Store(nil)
	// The spool belongs to this node: reconcile it with the queue rows at
	// start and then periodically (DESIGN "Unknown COMMIT outcome").
	go p.cl.RunReconciler(ctx, 5*time.Minute)
	return m.Run(ctx)
}

// lockQueue takes the lock that makes this process the only queue manager
// of the spool in dir (<dir>/queue.lock, flock: the kernel drops it when
// the process dies). A second queue role on the same spool is refused.
func lockQueue(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, "queue.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("queue role: another running process manages the queue of the spool %s (%s is locked)", dir, path)
		}
		return nil, fmt.Errorf("queue lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// ensureMailRoot creates the mail root if it is missing, owned by the mail
// owner. An existing one is left as the operator made it.
func ensureMailRoot(root string, uid, gid int) error {
	if _, err := os.Stat(root); err == nil {
		return nil
	}
	if err := os.MkdirAll(root, 0o750); err != nil {
		return fmt.Errorf("mail root: %w", err)
	}
	if uid != 0 || gid != 0 {
		if err := os.Chown(root, uid, gid); err != nil {
			return fmt.Errorf("mail root: %w", err)
		}
	}
	return nil
}

// delayWarning maps the configured delay_warning (0: the default, negative:
// off) to the policy's (0: off).
func delayWarning(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return queue.DefaultDelayWarningTime
	case d < 0:
		return 0
	}
	return d
}

// vacationHook passes only mailbox deliveries to vacation: a recipient that
// left for another host has no vacation here.
func vacationHook(v *vacation.Responder) func(ctx context.Context, msg *deliver.Message, rcpts []deliver.Recipient) {
	return func(ctx context.Context, msg *deliver.Message, rcpts []deliver.Recipient) {
		local := rcpts[:0:0]
		for _, r := range rcpts {
			if r.Mailbox != nil {
				local = append(local, r)
			}
		}
		if len(local) > 0 {
			v.DeliveredAll(ctx, msg, local)
		}
	}
}

// roleTable lists every role of `facteur serve`, in start order. The issue
// that builds a role sets its run function here (and adds to services what
// the role shares with others).
func roleTable() []role {
	listen := func(f func(l *ListenConfig) string) func(*Config) bool {
		return func(c *Config) bool { return f(&c.Listen) != "" }
	}
	return []role{
		{name: "queue", configured: func(*Config) bool { return true }, run: serveQueue},
		{name: "smtp", setting: "listen.smtp", configured: listen(smtpAddr), run: serveSMTP(smtpd.MX, smtpAddr)},
		{name: "submission", setting: "listen.submission", configured: listen(submissionAddr), run: serveSMTP(smtpd.Submission, submissionAddr)},
		{name: "submissions", setting: "listen.submissions", configured: listen(submissionsAddr), run: serveSMTP(smtpd.Submissions, submissionsAddr)},
		{name: "qmqp", setting: "listen.qmqp", configured: listen(func(l *ListenConfig) string { return l.QMQP }), run: serveQMQP},
		{name: "pickup", setting: "listen.pickup", configured: listen(func(l *ListenConfig) string { return l.Pickup }), run: servePickup},
		{name: "admin", setting: "listen.admin", configured: listen(func(l *ListenConfig) string { return l.Admin }),
			run: serveAdmin},
		{name: "metrics", setting: "listen.metrics", configured: listen(func(l *ListenConfig) string { return l.Metrics }), run: serveMetrics},
	}
}

// selectRoles returns the roles of table to run: those named (each must be
// known and configured), or every configured role when names is empty.
func selectRoles(cfg *Config, table []role, names []string) ([]role, error) {
	if len(names) == 0 {
		var sel []role
		for _, r := range table {
			if r.configured(cfg) {
				sel = append(sel, r)
			}
		}
		return sel, nil
	}
	var sel []role
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		i := slices.IndexFunc(table, func(r role) bool { return r.name == n })
		if i < 0 {
			known := make([]string, len(table))
			for j, r := range table {
				known[j] = r.name
			}
			return nil, &exitError{code: exitUsage, err: fmt.Errorf("unknown role %q (roles: %s)", n, strings.Join(known, ", "))}
		}
		r := table[i]
		if !r.configured(cfg) {
			return nil, &exitError{code: exitUsage, err: fmt.Errorf("role %s is requested but %s is not set in the configuration", r.name, r.setting)}
		}
		if !slices.ContainsFunc(sel, func(s role) bool { return s.name == r.name }) {
			sel = append(sel, r)
		}
	}
	// Start order follows the table, whatever order the flag gave.
	slices.SortFunc(sel, func(a, b role) int {
		return slices.IndexFunc(table, func(r role) bool { return r.name == a.name }) -
			slices.IndexFunc(table, func(r role) bool { return r.name == b.name })
	})
	return sel, nil
}

// serveOptions are the flags of `facteur serve`; `facteur dev` passes its own.
type serveOptions struct {
	roles     []string // empty: every configured role
	noMigrate bool
	logFormat string // overrides log.format when set
	logLevel  string // overrides log.level when set
	logTo     io.Writer
	// ready, when set, is called once every available role has started,
	// with the names of the roles that run.
	ready func(running []string)
	// table replaces roleTable() (tests).
	table []role
}

// partitionEvery is how often serve creates the coming days' log partitions.
const partitionEvery = 24 * time.Hour

// shutdownGrace is how long serve waits for roles to return once cancelled.
const shutdownGrace = 30 * time.Second

func addServeCommands(root *cobra.Command, a *app) {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the mail roles (smtp, submission, submissions, qmqp, pickup, queue, admin, metrics)",
		Long: `serve runs the enabled roles in one process until it receives SIGINT or SIGTERM.

By default every role whose listen address is set in the configuration runs
(the queue always; qmqp only when listen.qmqp is set). --roles picks a subset,
so that MX receivers, queue workers and the admin service can run on separate
hosts sharing one PostgreSQL. The database is migrated at start unless
--no-migrate is given, in which case serve refuses to start on an outdated
schema.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.logTo = cmd.ErrOrStderr()
			return a.serve(cmd.Context(), o)
		},
	}
	addServeFlags(cmd, &o)
	cmd.Flags().BoolVar(&o.noMigrate, "no-migrate", false, "do not migrate the database at start (fail if it is not current)")
	root.AddCommand(cmd)
}

// addServeFlags adds the flags that serve and dev share.
func addServeFlags(cmd *cobra.Command, o *serveOptions) {
	cmd.Flags().StringSliceVar(&o.roles, "roles", nil, "comma-separated roles to run (default: every configured role)")
	cmd.Flags().StringVar(&o.logFormat, "log-format", "", "log format: text or json (default: log.format of the configuration)")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "", "log level: debug, info, warn or error (default: log.level of the configuration)")
}

// serveLogger builds the process logger from the configuration and flags.
func serveLogger(w io.Writer, lc LogConfig, format, level string) (*slog.Logger, error) {
	if format == "" {
		format = lc.Format
	}
	if level == "" {
		level = lc.Level
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("log level %q: use debug, info, warn or error", level)}
	}
	ho := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	default:
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("log format %q: use text or json", format)}
	}
}

// serve runs the selected roles until ctx is cancelled or a role fails.
func (a *app) serve(ctx context.Context, o serveOptions) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	if o.logTo == nil {
		o.logTo = io.Discard
	}
	log, err := serveLogger(o.logTo, cfg.Log, o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	a.log = log
	table := o.table
	if table == nil {
		table = roleTable()
	}
	selected, err := selectRoles(cfg, table, o.roles)
	if err != nil {
		return err
	}
	st, err := a.store(ctx)
	if err != nil {
		return err
	}
	if err := serveSchema(ctx, st, o.noMigrate, log); err != nil {
		return err
	}
	if _, err := st.Pool().Exec(ctx, "SELECT facteur_ensure_partitions(7)"); err != nil {
		return fmt.Errorf("create log partitions: %w", err)
	}
	s, err := newServices(ctx, cfg, st, log)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	stopped := map[string]bool{}
	var running []string
	for _, r := range selected {
		if r.run == nil {
			log.Warn(fmt.Sprintf("role %s not available in this build", r.name), "role", r.name)
			continue
		}
		running = append(running, r.name)
		wg.Go(func() {
			err := r.run(ctx, s)
			mu.Lock()
			stopped[r.name] = true
			mu.Unlock()
			switch {
			case ctx.Err() != nil && err == nil:
			case ctx.Err() != nil:
				log.Error("role stopped with an error", "role", r.name, "err", err)
			case err == nil:
				cancel(fmt.Errorf("role %s stopped unexpectedly", r.name))
			default:
				cancel(fmt.Errorf("role %s: %w", r.name, err))
			}
		})
	}
	wg.Go(func() { maintainPartitions(ctx, st, log) })
	log.Info("facteur serving", "node", cfg.Node, "roles", strings.Join(running, ","), "config", cfg.path)
	if o.ready != nil {
		o.ready(running)
	}

	<-ctx.Done()
	cause := context.Cause(ctx)
	if errors.Is(cause, context.Canceled) {
		cause = nil
	}
	log.Info("shutting down")
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
		mu.Lock()
		var stuck []string
		for _, n := range running {
			if !stopped[n] {
				stuck = append(stuck, n)
			}
		}
		mu.Unlock()
		return errors.Join(cause, fmt.Errorf("roles did not stop within %s: %s", shutdownGrace, strings.Join(stuck, ", ")))
	}
	if cause != nil {
		log.Error("stopped", "err", cause)
		return cause
	}
	log.Info("stopped")
	return nil
}

// newServices builds the parts that roles share.
func newServices(_ context.Context, cfg *Config, st *store.Store, log *slog.Logger) (*services, error) {
	return &services{cfg: cfg, store: st, log: log}, nil
}

// serveSchema migrates the database, or with noMigrate checks that it is current.
func serveSchema(ctx context.Context, st *store.Store, noMigrate bool, log *slog.Logger) error {
	db := stdlib.OpenDBFromPool(st.Pool())
	defer db.Close()
	if noMigrate {
		cur, target, err := migrations.Current(ctx, db)
		if err != nil {
			return err
		}
		if cur != target {
			return fmt.Errorf("database schema is at version %d, this build needs %d: run `facteur migrate up` or start without --no-migrate", cur, target)
		}
		return nil
	}
	res, err := migrations.Up(ctx, db)
	if err != nil {
		return err
	}
	for _, r := range res {
		log.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "took", r.Duration)
	}
	return nil
}

// maintainPartitions creates the coming days' partitions of the log tables
// every partitionEvery until ctx is cancelled. Failures are logged: the
// DEFAULT partitions catch rows meanwhile.
func maintainPartitions(ctx context.Context, st *store.Store, log *slog.Logger) {
	t := time.NewTicker(partitionEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := st.Pool().Exec(ctx, "SELECT facteur_ensure_partitions(7)"); err != nil && ctx.Err() == nil {
				log.Error("create log partitions", "err", err)
			}
		}
	}
}

// metricsRegistry returns the process's metrics, with the collectors read
// at scrape time: this node's queue, the database pool, and the free space
// of the spool and the mail root.
func (s *services) metricsRegistry() *metrics.Metrics {
	s.metricsOnce.Do(func() {
		m := metrics.New()
		cfg := s.cfg
		err := errors.Join(
			m.WatchQueue(s.store, metrics.QueueOptions{Node: cfg.Node}),
			m.WatchPool(s.store.Pool()),
			m.WatchDurability(s.store.Pool()),
			m.WatchFree("spool", func() (uint64, error) { return health.FreeBytes(cfg.SpoolDir) }),
			m.WatchFree("mail_root", func() (uint64, error) { return health.FreeBytes(cfg.MailRoot) }))
		if err != nil {
			s.log.Error("metrics collectors", "err", err)
		}
		s.metrics = m
	})
	return s.metrics
}

// serveMetrics is the metrics role: /metrics, /healthz and /readyz on
// listen.metrics, for nodes that do not run the admin service.
func serveMetrics(ctx context.Context, s *services) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metricsRegistry().Handler())
	health.New(health.Options{Store: s.store, SpoolDir: s.cfg.SpoolDir}).Register(mux)
	return metrics.Serve(ctx, s.cfg.Listen.Metrics, mux, s.log)
}

// forwardedFrom tells the smtp agent which deliveries forward mail (DESIGN
// "Forwarding"): a recipient that an address of ours expanded to (its RCPT
// differs from it), from a sender outside our domains. Mail of our own
// senders, and mail relayed as it came, keeps its envelope sender.
func forwardedFrom(res *lookups.Resolver) func(ctx context.Context, msg *deliver.Message, rcpts []deliver.Recipient) (bool, error) {
	return func(ctx context.Context, msg *deliver.Message, rcpts []deliver.Recipient) (bool, error) {
		expanded := false
		for _, rc := range rcpts {
			if rc.Orig != "" && !strings.EqualFold(rc.Orig, rc.Address) {
				expanded = true
				break
			}
		}
		if !expanded || msg.Sender == "" {
			return false, nil
		}
		r, _, err := res.Resolve(ctx, msg.Sender)
		if err != nil {
			if lookups.Permanent(err) {
				return true, nil // not an address of ours
			}
			return false, err
		}
		return r.Domain == lookups.DomainRemote, nil
	}
}
