package queue

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
)

// Defaults of Options.
const (
	DefaultLease                         = 10 * time.Minute
	DefaultDeliveryTimeout               = 6 * time.Minute
	DefaultClaimBatch                    = 200
	DefaultMaxActive                     = 10000
	DefaultConcurrency                   = 100
	DefaultDestinationConcurrency        = 20
	DefaultInitialDestinationConcurrency = 5
	DefaultRecipientLimit                = 50
	DefaultDeadTime                      = DefaultMinBackoff
	DefaultPollInterval                  = 30 * time.Second
	DefaultReturnLimit                   = 50000 // bytes of the original in a DSN (Postfix's bounce_size_limit)
	DefaultStopGrace                     = 10 * time.Second
)

// Options configure a Manager. Zero values take the defaults.
type Options struct {
	// Node is this node: only its messages (whose bodies are in its spool)
	// are claimed.
	Node string
	// Owner names this manager's leases (default: Node and a random
	// suffix, different at each start).
	Owner string
	// Hostname is this host's name in DSNs (default Node).
	Hostname string
	// Postmaster receives double bounces (default postmaster@Hostname).
	Postmaster string

	// Agents maps transport kinds ("smtp", "relay", "lmtp", "maildir",
	// "pipe", ...) to their agents. "discard" and "error" default to
	// DiscardAgent and ErrorAgent. A kind without an agent defers.
	Agents map[string]deliver.Agent
	// Mailboxes, if set, fills Recipient.Mailbox for maildir recipients; a
	// recipient whose mailbox is gone bounces (5.1.1).
	Mailboxes MailboxFinder
	// Submitter queues DSNs. Without one, DSNs stay owed (and their
	// messages in the queue) and an error is logged.
	Submitter Submitter
	// Delivered, if set, is called after delivered recipients are recorded
	// (vacation replies hook in here), with the message (its body still in
	// the spool) and those recipients. It must not keep msg after it
	// returns.
	Delivered func(ctx context.Context, msg *deliver.Message, rcpts []deliver.Recipient)

	// Policy is the retry policy (nil: DefaultPolicy()).
	Policy *PolicyConfig

	// Lease is how long a claim holds recipients (10 min); it is renewed
	// every Lease/3 while they are held.
	Lease time.Duration
	// DeliveryTimeout bounds one delivery (6 min). A delivery may outlast
	// the lease it was claimed with while the lease is renewed, but it is
	// cancelled shortly before the lease would run out, so a slow delivery
	// is never claimed twice.
	DeliveryTimeout time.Duration
	// ClaimBatch is the most recipients one claim takes (200).
	ClaimBatch int
	// MaxActive is the most recipients held at once, claimed but not yet
	// settled (10000), Postfix's active queue.
	MaxActive int
	// Concurrency is the most deliveries at once (100).
	Concurrency int
	// DestinationConcurrency is the most deliveries at once to one
	// destination (20), starting at InitialDestinationConcurrency (5).
	DestinationConcurrency        int
	InitialDestinationConcurrency int
	// RecipientLimit is the most recipients of one delivery (50);
	// RecipientLimits overrides it per transport kind.
	RecipientLimit  int
	RecipientLimits map[string]int
	// DeadTime is how long a destination that fails connections is left
	// alone (5 min).
	DeadTime time.Duration
	// SoleManager says that this manager is the only one of its node (the
	// caller holds the lock of the node's spool, as `facteur serve` does):
	// at start, leases of the node's recipients held by other owners were
	// left by processes that are gone, and are released at once instead
	// of when they run out.
	SoleManager bool
	// PollInterval is the safety poll (30 s): a claim pass, expired leases
	// released, owed DSNs and finished messages swept.
	PollInterval time.Duration
	// ReturnLimit is the largest original a DSN encloses whole (50000
	// bytes); larger ones get their header only.
	ReturnLimit int64
	// StopGrace is how long Run lets deliveries in flight finish once its
	// context is done (10 s); then they are cancelled (and deferred).
	StopGrace time.Duration

	// Metrics, if set, counts each delivery attempt per recipient by
	// transport kind and result, with its duration, and each DSN queued
	// (internal/metrics' *Metrics).
	Metrics Metrics

	Log *slog.Logger
}

// Metrics receives the queue manager's counts. Delivered is called once per
// attempt and result with the number of recipients that got it (result is
// "sent", "deferred", "bounced" or "expired", as the log line's status) and
// the attempt's duration; DSN once per DSN queued, with its action
// ("failed", "delayed", "delivered"). It must be safe for concurrent use.
type Metrics interface {
	Delivered(transport, result string, n int, d time.Duration)
	DSN(action string)
}

type noMetrics struct{}

func (noMetrics) Delivered(string, string, int, time.Duration) {}
func (noMetrics) DSN(string)                                   {}

// Manager is the queue manager of one node.
type Manager struct {
	st     *store.Store
	sp     *spool.Spool
	opts   Options
	policy PolicyConfig
	limits concurrencyLimits
	log    *slog.Logger

	wake chan struct{}

	// Work for the notices goroutine: messages touched by settlements,
	// and whether a full sweep is wanted.
	noticeMu    sync.Mutex
	noticeIDs   map[string]bool
	noticeSweep bool
	noticeKick  chan struct{}

	// Jobs holding leases (waiting or running), for the renewer.
	leaseMu sync.Mutex
	held    map[*job]struct{}

	done chan *job // finished jobs, to the loop

	// The loop's own state.
	dests    map[string]*destination
	ring     []*destination // destinations with waiting jobs, round robin
	inflight int
	active   int  // recipients held
	moreDue  bool // a claim may find due recipients
	nextWake time.Time
	timerSet bool
	// A claim runs in its own goroutine while the loop goes on (claiming
	// is set) and reports on claimed.
	claiming bool
	claimed  chan claimResult
	// Deliveries of each message held, and whether one of them left work
	// for the notices goroutine: a message's DSN is sent once none of its
	// deliveries of this pass is left, so it lists every recipient
	// finalised in the pass (Postfix's bounce(8)).
	msgJobs   map[string]int
	msgNotice map[string]bool

	listenConnects atomic.Int64
	running        atomic.Bool
}

// New returns a manager for st's queue rows of opts.Node and the bodies in
// sp.
func New(st *store.Store, sp *spool.Spool, opts Options) *Manager {
	if opts.Hostname == "" {
		opts.Hostname = opts.Node
	}
	if opts.Owner == "" {
		opts.Owner = opts.Node + ":" + randomID(8)
	}
	if opts.Postmaster == "" {
		opts.Postmaster = "postmaster@" + opts.Hostname
	}
	agents := map[string]deliver.Agent{TransportDiscard: DiscardAgent{}, TransportError: ErrorAgent{}}
	for k, a := range opts.Agents {
		agents[k] = a
	}
	opts.Agents = agents
	policy := DefaultPolicy()
	if opts.Policy != nil {
		policy = opts.Policy.WithDefaults()
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	if opts.DeliveryTimeout <= 0 {
		opts.DeliveryTimeout = DefaultDeliveryTimeout
	}
	if opts.ClaimBatch <= 0 {
		opts.ClaimBatch = DefaultClaimBatch
	}
	if opts.MaxActive <= 0 {
		opts.MaxActive = DefaultMaxActive
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.DestinationConcurrency <= 0 {
		opts.DestinationConcurrency = DefaultDestinationConcurrency
	}
	if opts.InitialDestinationConcurrency <= 0 {
		opts.InitialDestinationConcurrency = DefaultInitialDestinationConcurrency
	}
	opts.InitialDestinationConcurrency = min(opts.InitialDestinationConcurrency, opts.DestinationConcurrency)
	if opts.RecipientLimit <= 0 {
		opts.RecipientLimit = DefaultRecipientLimit
	}
	if opts.DeadTime <= 0 {
		opts.DeadTime = DefaultDeadTime
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.ReturnLimit <= 0 {
		opts.ReturnLimit = DefaultReturnLimit
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = DefaultStopGrace
	}
	if opts.Metrics == nil {
		opts.Metrics = noMetrics{}
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		st: st, sp: sp, opts: opts, policy: policy, log: log,
		limits: concurrencyLimits{max: opts.DestinationConcurrency, initial: opts.InitialDestinationConcurrency,
			cohortLimit: 1, deadTime: opts.DeadTime},
		wake:       make(chan struct{}, 1),
		noticeIDs:  map[string]bool{},
		noticeKick: make(chan struct{}, 1),
		held:       map[*job]struct{}{},
		done:       make(chan *job, 64),
		claimed:    make(chan claimResult, 1),
		dests:      map[string]*destination{},
		msgJobs:    map[string]int{},
		msgNotice:  map[string]bool{},
	}
}

// Owner returns the name of this manager's leases.
func (m *Manager) Owner() string { return m.opts.Owner }

// Wake asks for a claim pass: new mail was queued. It never blocks; wake-ups
// coalesce. Cleanup's Options.Wake calls it.
func (m *Manager) Wake() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// ListenConnects returns how many times the LISTEN connection connected.
func (m *Manager) ListenConnects() int64 { return m.listenConnects.Load() }

// Run manages the queue until ctx is done. At start it releases expired
// leases and sweeps owed DSNs and finished messages. When ctx is done it
// stops claiming, gives back recipients it claimed but has not started,
// lets deliveries in flight finish for StopGrace, then cancels them, records
// their results and returns nil. Only one Run may be active per Manager.
func (m *Manager) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("queue: Run is already active")
	}
	defer m.running.Store(false)
	m.log.Info("queue manager starting", "node", m.opts.Node, "owner", m.opts.Owner)
	if m.opts.SoleManager {
		n, err := m.st.ReleaseNodeLeases(ctx, m.opts.Node, m.opts.Owner)
		switch {
		case err != nil && ctx.Err() == nil:
			m.log.Error("release the leases of earlier processes of this node", "err", err)
		case n > 0:
			m.log.Info("released the leases of earlier processes of this node", "recipients", n)
		}
	}
	m.releaseExpired(ctx)

	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { m.listen(bg) })
	wg.Go(func() { m.renew(bg) })
	wg.Go(func() { m.notices(bg) })
	m.requestSweep()

	m.loop(ctx)

	stopBG()
	wg.Wait()
	m.log.Info("queue manager stopped", "node", m.opts.Node, "owner", m.opts.Owner)
	return nil
}

func (m *Manager) releaseExpired(ctx context.Context) {
	n, err := m.st.ReleaseExpiredLeases(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		m.log.Error("release expired leases", "err", err)
	case n > 0:
		m.log.Info("released expired leases", "recipients", n)
	}
}

// loop is the scheduler: it alone touches dests, ring, inflight, active,
// moreDue and nextWake.
func (m *Manager) loop(ctx context.Context) {
	// Deliveries run under jobsCtx, which outlives ctx by StopGrace; the
	// loop's own database work after ctx is done uses dbCtx.
	dbCtx := context.WithoutCancel(ctx)
	jobsCtx, cancelJobs := context.WithCancel(dbCtx)
	defer cancelJobs()
	poll := time.NewTicker(m.opts.PollInterval)
	defer poll.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var grace <-chan time.Time
	stop := ctx.Done()
	stopping := false
	m.moreDue = true

	for {
		if !stopping {
			m.claim(ctx)
			m.dispatch(jobsCtx)
			m.armTimer(timer)
		}
		if stopping && m.inflight == 0 {
			return
		}
		select {
		case <-stop:
			stop, stopping = nil, true
			if m.claiming {
				// Its recipients are given back with the others.
				m.claimDone(ctx, <-m.claimed)
			}
			m.dropPending(dbCtx)
			grace = time.After(m.opts.StopGrace)
			if m.inflight > 0 {
				m.log.Info("queue manager stopping; waiting for deliveries in flight", "deliveries", m.inflight)
			}
		case <-grace:
			cancelJobs()
			grace = nil
		case <-m.wake:
			m.moreDue = true
		case <-timer.C:
			m.nextWake, m.timerSet = time.Time{}, false
			m.moreDue = true
		case <-poll.C:
			m.moreDue = true
			m.releaseExpired(ctx)
			m.requestSweep()
			m.prune()
		case j := <-m.done:
			m.finished(j)
		case r := <-m.claimed:
			m.claimDone(ctx, r)
		}
	}
}

// claimResult is what a claim goroutine reports to the loop.
type claimResult struct {
	cs     []store.ClaimedRecipient
	err    error
	before time.Time // when the claim was sent, our clock
	limit  int
	// After a claim that left nothing due, NextDue's answer.
	next    time.Time
	nextOK  bool
	nextErr error
}

// claim starts a claim of due recipients while there is room and none is
// running. It runs in its own goroutine, so that the loop goes on
// dispatching and taking finished deliveries meanwhile (a claim waits for a
// pooled connection and a commit, bench/PROFILING.md, attempt 1); wake-ups
// that arrive in the meantime make the next claim, back to back, which
// takes everything they announced. A claim that leaves nothing due asks
// for the earliest next attempt too.
func (m *Manager) claim(ctx context.Context) {
	if m.claiming || !m.moreDue || m.active >= m.opts.MaxActive || m.inflight >= m.opts.Concurrency || ctx.Err() != nil {
		return
	}
	limit := min(m.opts.ClaimBatch, m.opts.MaxActive-m.active)
	m.claiming, m.moreDue = true, false
	go func() {
		r := claimResult{before: time.Now(), limit: limit}
		r.cs, r.err = m.st.Claim(ctx, m.opts.Node, m.opts.Owner, m.opts.Lease, limit)
		if r.err == nil && len(r.cs) < limit {
			r.next, r.nextOK, r.nextErr = m.st.NextDue(ctx, m.opts.Node)
		}
		m.claimed <- r
	}()
}

// claimDone takes a claim's result into the scheduler: its deliveries are
// queued on their destinations, and after a claim that left nothing due,
// the next wake-up is set from the earliest next attempt.
func (m *Manager) claimDone(ctx context.Context, r claimResult) {
	m.claiming = false
	switch {
	case r.err != nil:
		if ctx.Err() == nil {
			m.log.Error("claim", "err", r.err)
			m.wakeAt(time.Now().Add(time.Second)) // retry soon; the database may be back
		}
		return
	case len(r.cs) == r.limit:
		m.moreDue = true
	case r.nextErr != nil:
		if ctx.Err() == nil {
			m.log.Error("next due recipient", "err", r.nextErr)
		}
		m.wakeAt(time.Now().Add(time.Second))
	case r.nextOK:
		// The database's clock; a few milliseconds late is fine.
		m.wakeAt(r.next.Add(10 * time.Millisecond))
	}
	m.addJobs(r.cs, r.before)
}

// addJobs groups claimed recipients into deliveries: one per message and
// destination, at most the transport's recipient limit each.
func (m *Manager) addJobs(cs []store.ClaimedRecipient, before time.Time) {
	type groupKey struct{ msg, dest string }
	open := map[groupKey]*job{}
	var jobs []*job
	for i := range cs {
		c := &cs[i]
		key := destinationKey(c.Transport, c.Domain)
		kind, nexthop := SplitTransport(c.Transport)
		limit := m.opts.RecipientLimit
		if l, ok := m.opts.RecipientLimits[kind]; ok && l > 0 {
			limit = l
		}
		gk := groupKey{c.Message.ID, key}
		j := open[gk]
		if j == nil || len(j.rcpts) >= limit {
			j = &job{key: key, kind: kind, nexthop: nexthop, transport: c.Transport, msg: c.Message,
				dbOffset:   c.ClaimedAt.Sub(before),
				leaseUntil: before.Add(c.LeaseExpiresAt.Sub(c.ClaimedAt))}
			open[gk] = j
			jobs = append(jobs, j)
		}
		j.rcpts = append(j.rcpts, *c)
		m.active++
	}
	// Registered once complete: the renewer reads their recipients.
	for _, j := range jobs {
		m.queueJob(j)
	}
}

// queueJob puts a job on its destination and registers its lease.
func (m *Manager) queueJob(j *job) {
	d := m.dests[j.key]
	if d == nil {
		d = newDestination(j.key, m.limits)
		m.dests[j.key] = d
	}
	if len(d.pending) == 0 {
		m.ring = append(m.ring, d)
	}
	d.pending = append(d.pending, j)
	m.msgJobs[j.msg.ID]++
	m.leaseMu.Lock()
	m.held[j] = struct{}{}
	m.leaseMu.Unlock()
}

// dispatch starts waiting deliveries while the global and per-destination
// limits allow, one destination after the other (round robin). Deliveries
// to a dead destination are deferred without an attempt.
func (m *Manager) dispatch(ctx context.Context) {
	now := time.Now()
	for m.inflight < m.opts.Concurrency && len(m.ring) > 0 {
		started := false
		next := m.ring[:0]
		for _, d := range m.ring {
			switch {
			case len(d.pending) == 0:
				continue
			case d.dead(now):
				for _, j := range d.pending {
					j.suspended = d.deadReason
					m.start(ctx, j)
				}
				d.pending = nil
				continue
			case m.inflight < m.opts.Concurrency && d.room(now):
				j := d.pending[0]
				d.pending[0] = nil
				d.pending = d.pending[1:]
				d.inflight++
				m.start(ctx, j)
				started = true
			}
			if len(d.pending) > 0 {
				next = append(next, d)
			}
		}
		clear(m.ring[len(next):])
		m.ring = next
		if !started {
			return
		}
	}
}

func (m *Manager) start(ctx context.Context, j *job) {
	m.inflight++
	go m.runJob(ctx, j)
}

// finished takes a delivery's outcome back into the scheduler.
func (m *Manager) finished(j *job) {
	m.inflight--
	m.active -= len(j.rcpts)
	m.leaseMu.Lock()
	delete(m.held, j)
	m.leaseMu.Unlock()
	m.jobGone(j.msg.ID, j.notice)
	if !j.retryAt.IsZero() {
		m.wakeAt(j.retryAt)
	}
	if j.suspended != "" {
		return
	}
	d := m.dests[j.key]
	if d == nil {
		return
	}
	d.inflight--
	switch j.feedback {
	case feedbackSuccess:
		d.success(m.limits)
	case feedbackFailure:
		if d.failure(time.Now(), j.reason, m.limits) {
			m.log.Warn("destination unreachable; deliveries suspended", "destination", d.key,
				"for", m.opts.DeadTime, "reason", j.reason)
			m.wakeAt(d.deadUntil)
		}
	}
}

// jobGone counts a message's delivery out, and hands the message to the
// notices goroutine once its last delivery is done and one of them asked.
func (m *Manager) jobGone(id string, notice bool) {
	if notice {
		m.msgNotice[id] = true
	}
	if m.msgJobs[id]--; m.msgJobs[id] > 0 {
		return
	}
	delete(m.msgJobs, id)
	if m.msgNotice[id] {
		delete(m.msgNotice, id)
		m.noteMessage(id)
	}
}

// wakeAt makes the loop claim again at t at the latest.
func (m *Manager) wakeAt(t time.Time) {
	if m.nextWake.IsZero() || t.Before(m.nextWake) {
		m.nextWake = t
		m.timerSet = false
	}
}

// armTimer sets the timer for the next wake-up (wakeAt): the earliest next
// attempt, from the database after a claim that left nothing due and from
// what deliveries reported.
func (m *Manager) armTimer(timer *time.Timer) {
	if m.nextWake.IsZero() || m.timerSet {
		return
	}
	d := max(time.Until(m.nextWake), 20*time.Millisecond)
	timer.Reset(d)
	m.timerSet = true
}

// dropPending gives back the recipients of deliveries not yet started.
func (m *Manager) dropPending(ctx context.Context) {
	var ids []int64
	for _, d := range m.ring {
		for _, j := range d.pending {
			for _, c := range j.rcpts {
				ids = append(ids, c.ID)
			}
			m.active -= len(j.rcpts)
			m.leaseMu.Lock()
			delete(m.held, j)
			m.leaseMu.Unlock()
			m.jobGone(j.msg.ID, false)
		}
		d.pending = nil
	}
	m.ring = nil
	if len(ids) == 0 {
		return
	}
	uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.st.Unclaim(uctx, m.opts.Owner, ids, 0); err != nil {
		m.log.Warn("give back claimed recipients; their leases will run out", "recipients", len(ids), "err", err)
		return
	}
	m.log.Info("gave back claimed recipients not yet tried", "recipients", len(ids))
}

// prune forgets destinations that hold nothing.
func (m *Manager) prune() {
	now := time.Now()
	for k, d := range m.dests {
		if d.idle(now, m.limits) {
			delete(m.dests, k)
		}
	}
}

func randomID(n int) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
