package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
)

// job is one delivery: recipients of one message for one destination.
type job struct {
	key       string // destination
	kind      string // transport kind
	nexthop   string
	transport string
	msg       store.ClaimedMessage
	rcpts     []store.ClaimedRecipient
	// dbOffset is the database's clock minus ours, at the claim.
	dbOffset time.Duration
	// leaseUntil is when the lease runs out, by our clock; guarded by
	// Manager.leaseMu (the renewer moves it).
	leaseUntil time.Time
	// suspended, when set, defers the delivery without an attempt: the
	// destination is dead for this reason.
	suspended string

	// Set by runJob for the loop.
	feedback int
	reason   string
	retryAt  time.Time      // earliest next attempt of a deferred recipient, our clock
	lostIDs  map[int64]bool // recipients whose result could not be recorded
	notice   bool           // a recipient is final or owes a DSN: look at the message
	took     time.Duration  // the attempt's duration (metrics)
}

// Destination feedback of a delivery.
const (
	feedbackNone = iota
	feedbackSuccess
	feedbackFailure
)

func (m *Manager) leaseEnd(j *job) time.Time {
	m.leaseMu.Lock()
	defer m.leaseMu.Unlock()
	return j.leaseUntil
}

// runJob makes one delivery and records its outcome; it always reports to
// the loop.
func (m *Manager) runJob(ctx context.Context, j *job) {
	defer func() { m.done <- j }()
	log := m.log.With("queue_id", j.msg.ID)
	began := time.Now()
	var results []deliver.Result
	var dmsg *deliver.Message
	var drcpts []deliver.Recipient
	if j.suspended != "" {
		results = make([]deliver.Result, len(j.rcpts))
		for i := range results {
			results[i] = deliver.Result{Status: deliver.Deferred, Relay: "none", Reply: envelope.Reply{
				Code: 450, Enhanced: envelope.Status{4, 4, 1}, Text: "delivery temporarily suspended: " + j.suspended}}
		}
	} else {
		if _, err := m.sp.Stat(j.msg.SpoolKey); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				m.holdMissing(ctx, j, log)
				return
			}
			log.Error("spool file unreadable; delivery deferred", "err", err)
			results = make([]deliver.Result, len(j.rcpts))
			for i := range results {
				results[i] = deliver.Result{Status: deliver.Deferred, Relay: "none", Reply: envelope.Reply{
					Code: 451, Enhanced: envelope.Status{4, 3, 0}, Text: "queue file unreadable"}}
			}
		} else {
			results, dmsg, drcpts = m.deliver(ctx, j, log)
		}
	}
	j.took = time.Since(began)
	m.settle(j, results, log)
	if m.opts.Delivered != nil && dmsg != nil {
		var got []deliver.Recipient
		for i, r := range drcpts {
			if results[i].Status == deliver.Delivered && !j.lost(r.ID) {
				got = append(got, r)
			}
		}
		if len(got) > 0 {
			m.opts.Delivered(ctx, dmsg, got)
		}
	}
}

// holdMissing holds a message whose body is gone (never deletes it: an
// operator looks) and gives its recipients back, uncounted.
func (m *Manager) holdMissing(ctx context.Context, j *job, log *slog.Logger) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	reason := "spool file " + j.msg.SpoolKey + " missing on node " + m.opts.Node
	if err := m.st.HoldMissingBody(dctx, j.msg.ID, reason); err != nil {
		log.Error("hold message with a missing body", "err", err)
	} else {
		log.Error(j.msg.ID+": held: "+reason, "reason", reason)
	}
	// Not due again before the backoff, should the hold have failed.
	if err := m.st.Unclaim(dctx, m.opts.Owner, j.ids(), m.policy.MinBackoff); err != nil {
		log.Warn("give back recipients of a held message", "err", err)
	}
}

func (j *job) ids() []int64 {
	out := make([]int64, len(j.rcpts))
	for i, c := range j.rcpts {
		out[i] = c.ID
	}
	return out
}

// lost reports whether this recipient's result could not be recorded.
func (j *job) lost(id int64) bool { return j.lostIDs[id] }

// deliver runs the agent under a deadline shorter than the lease.
func (m *Manager) deliver(ctx context.Context, j *job, log *slog.Logger) ([]deliver.Result, *deliver.Message, []deliver.Recipient) {
	dctx, cancel := context.WithTimeout(ctx, m.opts.DeliveryTimeout)
	defer cancel()
	go m.watchLease(dctx, j, cancel, log)

	key, prepend := j.msg.SpoolKey, j.msg.Prepend
	msg := &deliver.Message{
		QueueID: j.msg.ID, Sender: j.msg.Sender, Size: j.msg.Size, ArrivedAt: j.msg.ArrivedAt,
		BodyType: j.msg.BodyType, SMTPUTF8: j.msg.SMTPUTF8, DSNRet: j.msg.DSNRet, DSNEnvID: j.msg.DSNEnvID,
		Kind: j.msg.Kind, Log: log,
		Open: func() (io.ReadCloser, error) { return withPrepend(prepend, m.sp.Open)(key) },
	}
	results := make([]deliver.Result, len(j.rcpts))
	all := make([]deliver.Recipient, len(j.rcpts))
	var idx []int
	var rcpts []deliver.Recipient
	for i, c := range j.rcpts {
		r := deliver.Recipient{ID: c.ID, Address: c.Address, Orig: c.OrigAddress, DSNNotify: c.DSNNotify, DSNORcpt: c.DSNOrcpt}
		if j.kind == TransportMaildir && m.opts.Mailboxes != nil {
			mb, found, err := m.opts.Mailboxes.Mailbox(dctx, c.Address)
			switch {
			case err != nil:
				log.Warn("mailbox lookup failed", "rcpt", c.Address, "err", err)
				results[i] = deliver.Result{Status: deliver.Deferred, Relay: j.kind, Reply: envelope.LookupFailed()}
				all[i] = r
				continue
			case !found:
				results[i] = deliver.Result{Status: deliver.Bounced, Relay: j.kind, Reply: envelope.Reply{
					Code: 550, Enhanced: envelope.Status{5, 1, 1}, Text: "user unknown"}}
				all[i] = r
				continue
			}
			r.Mailbox = mb
		}
		all[i] = r
		idx = append(idx, i)
		rcpts = append(rcpts, r)
	}
	if len(rcpts) == 0 {
		return results, msg, all
	}
	got := m.runAgent(dctx, j, msg, rcpts, log)
	for k, i := range idx {
		results[i] = got[k]
	}
	if failed, why := connectionFailed(got); failed {
		j.feedback, j.reason = feedbackFailure, why
	} else {
		j.feedback = feedbackSuccess
	}
	return results, msg, all
}

// watchLease cancels a delivery shortly before its lease runs out: while the
// renewer extends the lease the delivery may take up to DeliveryTimeout,
// but if renewals fail (the database is unreachable) it ends before
// another worker may claim its recipients, so it is never made twice at
// once. It returns when ctx is done.
func (m *Manager) watchLease(ctx context.Context, j *job, cancel context.CancelFunc, log *slog.Logger) {
	margin := m.opts.Lease / 10
	for {
		d := time.Until(m.leaseEnd(j).Add(-margin))
		if d <= 0 {
			log.Warn("lease about to run out (renewals failing): delivery cancelled")
			cancel()
			return
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// runAgent calls the transport's agent and holds it to its contract: one
// result per recipient; a missing result, or a panic, is a deferral.
func (m *Manager) runAgent(ctx context.Context, j *job, msg *deliver.Message, rcpts []deliver.Recipient, log *slog.Logger) (got []deliver.Result) {
	agent := m.opts.Agents[j.kind]
	if agent == nil {
		log.Error("no delivery agent for transport", "transport", j.transport)
		return deliver.All(rcpts, deliver.Result{Status: deliver.Deferred, Relay: "none", Reply: envelope.Reply{
			Code: 451, Enhanced: envelope.Status{4, 3, 0}, Text: "mail transport unavailable"}})
	}
	defer func() {
		if p := recover(); p != nil {
			log.Error("delivery agent panicked; recipients deferred", "transport", j.transport, "panic", fmt.Sprint(p))
			got = deliver.All(rcpts, deliver.Result{Status: deliver.Deferred, Relay: "none", Reply: envelope.Reply{
				Code: 451, Enhanced: envelope.Status{4, 3, 0}, Text: "delivery agent failed"}})
		}
	}()
	got = agent.Deliver(ctx, j.nexthop, msg, rcpts)
	if len(got) != len(rcpts) {
		log.Error("delivery agent broke its contract: wrong number of results", "transport", j.transport,
			"results", len(got), "recipients", len(rcpts))
		fixed := make([]deliver.Result, len(rcpts))
		for i := range fixed {
			if i < len(got) {
				fixed[i] = got[i]
			} else {
				fixed[i] = deliver.Result{Status: deliver.Deferred, Relay: "none", Reply: envelope.Reply{
					Code: 451, Enhanced: envelope.Status{4, 3, 0}, Text: "no result from the delivery agent"}}
			}
		}
		got = fixed
	}
	return got
}

// settle decides each recipient's transition, records them with their
// delivery_log rows in one transaction, and logs one line per attempt.
func (m *Manager) settle(j *job, results []deliver.Result, log *slog.Logger) {
	local := time.Now()
	now := local.Add(j.dbOffset)
	age := max(now.Sub(j.msg.ArrivedAt), 0)
	sets := make([]store.Settlement, len(j.rcpts))
	decisions := make([]Decision, len(j.rcpts))
	for i, c := range j.rcpts {
		r := results[i]
		d := Decide(m.policy, Attempt{Result: r.Status, Relayed: r.Relayed, Age: age, Kind: j.msg.Kind,
			Sender: j.msg.Sender, Notify: c.DSNNotify, DelayNotified: c.DelayNotified})
		decisions[i] = d
		reply := r.Reply
		if reply.Code == 0 {
			switch r.Status {
			case deliver.Delivered:
				reply = envelope.Reply{Code: 250, Enhanced: envelope.Status{2, 0, 0}, Text: "delivered"}
			case deliver.Bounced:
				reply = envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 0, 0}, Text: "delivery failed"}
			default:
				reply = envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 0, 0}, Text: "delivery deferred"}
			}
		}
		dsn := reply.Enhanced
		if !dsn.Valid() {
			dsn = envelope.Status{reply.Code / 100, 0, 0}
			if !dsn.Valid() {
				dsn = envelope.Status{4, 0, 0}
			}
		}
		if d.Status == store.RcptExpired {
			// RFC 3464 2.3.4: a failure reports class 5; the last
			// temporary reason stays the diagnostic.
			dsn[0] = 5
			if reply.Enhanced.IsZero() {
				dsn = envelope.Status{5, 4, 7} // delivery time expired (RFC 3463 3.5)
			}
		}
		relay := r.Relay
		if relay == "" {
			relay = "none"
		}
		sets[i] = store.Settlement{
			ID: c.ID, Status: d.Status, RetryIn: d.RetryIn, Reply: reply.String(), DSN: dsn.String(), Relay: relay,
			DSNAction: d.DSN, QueueID: j.msg.ID, Node: m.opts.Node, Sender: j.msg.Sender, Recipient: c.Address,
			OrigRecipient: c.OrigAddress, Domain: c.Domain, Transport: j.transport, Delay: age,
		}
		if d.Status == store.RcptDeferred {
			if t := local.Add(d.RetryIn); j.retryAt.IsZero() || t.Before(j.retryAt) {
				j.retryAt = t
			}
		}
	}

	j.lostIDs = m.record(j, sets, log)
	notice := false
	var counts [4]int // by attemptResult's index
	for i, s := range sets {
		if j.lost(s.ID) {
			continue
		}
		m.logAttempt(log, j, s, decisions[i])
		if s.Status != store.RcptDeferred || s.DSNAction != "" {
			notice = true
		}
		_, k := attemptResult(s.Status)
		counts[k]++
	}
	j.notice = notice
	for k, n := range counts {
		if n > 0 {
			m.opts.Metrics.Delivered(j.kind, attemptResults[k], n, j.took)
		}
	}
}

// attemptResults are the results of an attempt, as the log line's status
// and the metrics' result label.
var attemptResults = [4]string{"sent", "deferred", "bounced", "expired"}

// attemptResult names the result of a settlement's status, and its index in
// attemptResults.
func attemptResult(status string) (string, int) {
	k := 0
	switch status {
	case store.RcptDeferred:
		k = 1
	case store.RcptBounced:
		k = 2
	case store.RcptExpired:
		k = 3
	}
	return attemptResults[k], k
}

// record calls Settle until it succeeds, the lease is lost, or the lease
// would run out (then the recipients are retried after it: at-least-once).
// It returns the recipients whose lease was lost.
func (m *Manager) record(j *job, sets []store.Settlement, log *slog.Logger) map[int64]bool {
	wait := 200 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := m.st.Settle(ctx, m.opts.Owner, sets...)
		cancel()
		if err == nil {
			return nil
		}
		if ids := store.LostIDs(err); len(ids) > 0 {
			lost := make(map[int64]bool, len(ids))
			for _, id := range ids {
				lost[id] = true
			}
			log.Warn("lease lost before the result was recorded; another attempt will be made",
				"recipients", ids)
			return lost
		}
		if time.Now().Add(wait).After(m.leaseEnd(j)) {
			log.Error("could not record delivery results; the recipients will be tried again after their lease",
				"err", err)
			all := make(map[int64]bool, len(sets))
			for _, s := range sets {
				all[s.ID] = true
			}
			return all
		}
		log.Warn("record delivery results; retrying", "err", err, "retry_in", wait)
		time.Sleep(wait)
		wait = min(2*wait, 5*time.Second)
	}
}

// logAttempt writes Postfix's one line per attempt.
func (m *Manager) logAttempt(log *slog.Logger, j *job, s store.Settlement, d Decision) {
	status, _ := attemptResult(s.Status)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: to=<%s>, ", j.msg.ID, s.Recipient)
	if s.OrigRecipient != "" && !strings.EqualFold(s.OrigRecipient, s.Recipient) {
		fmt.Fprintf(&b, "orig_to=<%s>, ", s.OrigRecipient)
	}
	fmt.Fprintf(&b, "relay=%s, delay=%s, dsn=%s, status=%s (%s)", s.Relay, formatDelay(s.Delay), s.DSN, status, s.Reply)
	attrs := []any{"to", s.Recipient, "orig_to", s.OrigRecipient, "relay", s.Relay, "delay", s.Delay.Seconds(),
		"dsn", s.DSN, "status", status, "reply", s.Reply, "transport", j.transport}
	if s.Status == store.RcptDeferred {
		attrs = append(attrs, "retry_in", s.RetryIn)
	}
	if d.NoDSN != "" {
		attrs = append(attrs, "no_dsn", d.NoDSN)
	}
	if s.DSNAction != "" {
		attrs = append(attrs, "dsn_owed", s.DSNAction)
	}
	log.Info(b.String(), attrs...)
	if d.NoDSN == "double bounce dropped" {
		log.Warn(j.msg.ID+": undeliverable double bounce to <"+s.Recipient+"> dropped", "to", s.Recipient)
	}
}

// formatDelay writes a delay in seconds as Postfix logs it: two decimals at
// most below 10 s ("0.02", "1.5"), whole seconds above.
func formatDelay(d time.Duration) string {
	sec := d.Seconds()
	if sec >= 10 {
		return strconv.FormatFloat(sec, 'f', 0, 64)
	}
	t := strings.TrimRight(strconv.FormatFloat(sec, 'f', 2, 64), "0")
	return strings.TrimSuffix(t, ".")
}

// withPrepend returns open with the header fields kept in
// queue_message.prepend (Authentication-Results, DKIM-Signature) in front
// of the spool file: the message as every agent sends it.
func withPrepend[F io.ReadCloser](prepend string, open func(key string) (F, error)) func(key string) (io.ReadCloser, error) {
	return func(key string) (io.ReadCloser, error) {
		f, err := open(key)
		if err != nil {
			return nil, err
		}
		if prepend == "" {
			return f, nil
		}
		return prependReader{Reader: io.MultiReader(strings.NewReader(prepend), f), Closer: f}, nil
	}
}

type prependReader struct {
	io.Reader
	io.Closer
}
