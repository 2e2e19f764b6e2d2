package store

// The queue state machine, in SQL (DESIGN.md, "The queue state machine lives
// in three places"). A recipient moves
//
//	queued ──claim──> delivering ──settle──> delivered | deferred | bounced | expired
//	deferred ──claim──> delivering           (a retry)
//	delivering ──lease runs out──> deferred  (ReleaseExpiredLeases; due at once)
//	delivering ──unclaim──> queued | deferred (the attempt was not made)
//
// Every transition out of delivering names the expected state and the lease
// owner in its WHERE clause: a worker whose lease was taken from it changes
// nothing and gets ErrLeaseLost. Holding is a flag on the message (held
// messages are never claimed); a final recipient may still owe a DSN
// (dsn_pending), and a message leaves the hot tables only once every
// recipient is final and no DSN is owed (FinishMessages).

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Recipient states (queue_recipient.status).
const (
	RcptQueued     = "queued"
	RcptDelivering = "delivering"
	RcptDelivered  = "delivered"
	RcptDeferred   = "deferred"
	RcptBounced    = "bounced"
	RcptExpired    = "expired"
)

// DSN actions of a pending notice (queue_recipient.dsn_action, RFC 3464
// 2.3.3).
const (
	DSNFailed    = "failed"
	DSNDelayed   = "delayed"
	DSNDelivered = "delivered"
	DSNRelayed   = "relayed"
)

// ClaimedMessage is what a delivery needs of a claimed recipient's message.
type ClaimedMessage struct {
	ID        string
	Node      string
	SpoolKey  string
	Sender    string // "" is <>
	Size      int64
	ArrivedAt time.Time
	MessageID string
	BodyType  string // 7BIT, 8BITMIME, BINARYMIME
	SMTPUTF8  bool
	DSNRet    string // FULL, HDRS or ""
	DSNEnvID  string
	Kind      string // mail, dsn, double-bounce, auto-reply
	// Prepend is sent before the spool file (QueueMessage.Prepend).
	Prepend string
}

// ClaimedRecipient is a recipient moved to delivering by Claim.
type ClaimedRecipient struct {
	ID            int64
	Address       string
	OrigAddress   string
	Domain        string
	Transport     string
	DSNNotify     string // "" when not given
	DSNOrcpt      string
	Attempts      int // including this one
	DelayNotified bool
	// LeaseExpiresAt is the lease's end and ClaimedAt the claim's time,
	// both by the database's clock.
	LeaseExpiresAt time.Time
	ClaimedAt      time.Time
	Message        ClaimedMessage
}

// sqlClaim moves due recipients of unheld messages of one node to
// delivering, oldest due first, in one statement (riverqueue's
// JobGetAvailable): the CTE locks the rows it picks with SKIP LOCKED, so
// concurrent claimers never pick the same row nor wait for each other, and a
// row updated meanwhile is re-checked against the WHERE clause.
//
// The inner scan walks the partial index queue_recipient_due (its predicate
// is the status test here, word for word) in next_attempt_at order, joins
// each row to its message by primary key and stops after $4 rows: the
// ORDER BY must be the index's column alone, or the whole due set would be
// sorted at each claim. The message's columns are carried from that join to
// RETURNING, so no second join is made. TestClaimUsesDueIndex checks the
// plan with EXPLAIN.
//
// The message is looked up in a LATERAL subquery behind OFFSET 0, which the
// planner keeps as it is: one lookup per recipient, by primary key (or a
// scan of a table of a few pages). As a plain join, a planner that takes the
// hot queue tables for nearly empty (ANALYZE ran between bursts, and the
// default selectivity for node) may choose a nested loop that scans every
// message for each due recipient, quadratic in the backlog: 20–30 ms per
// claim in bench/ (bench/PROFILING.md, attempt 1).
const sqlClaim = `WITH due AS (
	SELECT r.id, m.node, m.spool_key, m.sender, m.size, m.arrived_at, m.message_id, m.body_type,
	       m.smtputf8, coalesce(m.dsn_ret, '') AS dsn_ret, coalesce(m.dsn_envid, '') AS dsn_envid, m.kind,
	       m.prepend
	FROM queue_recipient r
	CROSS JOIN LATERAL (SELECT * FROM queue_message m
	                    WHERE m.id = r.queue_id AND m.node = $1 AND NOT m.held OFFSET 0) m
	WHERE r.status IN ('queued', 'deferred') AND r.next_attempt_at <= now()
	ORDER BY r.next_attempt_at
	LIMIT $4
	FOR UPDATE OF r SKIP LOCKED
)
UPDATE queue_recipient r
SET status = 'delivering', attempts = r.attempts + 1, lease_owner = $2,
    lease_expires_at = now() + $3::bigint * interval '1 microsecond',
    last_attempt_at = now(), updated_at = now()
FROM due
WHERE r.id = due.id
RETURNING r.id, r.queue_id, r.address, r.orig_address, r.domain, r.transport,
          coalesce(r.dsn_notify, ''), coalesce(r.dsn_orcpt, ''), r.attempts, r.delay_notified,
          r.lease_expires_at, now(), due.node, due.spool_key, due.sender, due.size, due.arrived_at,
          due.message_id, due.body_type, due.smtputf8, due.dsn_ret, due.dsn_envid, due.kind, due.prepend`

// Claim moves at most limit due recipients (queued or deferred, next attempt
// time passed) of node's unheld messages to delivering, with attempts + 1
// and a lease for owner that runs for lease, and returns them with what
// delivering them needs of their messages, grouped by message (ordered by
// queue id, then recipient id). Recipients locked by a concurrent claim are
// skipped, never waited for.
func (s *Store) Claim(ctx context.Context, node, owner string, lease time.Duration, limit int) ([]ClaimedRecipient, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, sqlClaim, node, owner, lease.Microseconds(), limit)
	if err != nil {
		return nil, fmt.Errorf("claim due recipients: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ClaimedRecipient, error) {
		var c ClaimedRecipient
		m := &c.Message
		err := row.Scan(&c.ID, &m.ID, &c.Address, &c.OrigAddress, &c.Domain, &c.Transport,
			&c.DSNNotify, &c.DSNOrcpt, &c.Attempts, &c.DelayNotified, &c.LeaseExpiresAt, &c.ClaimedAt,
			&m.Node, &m.SpoolKey, &m.Sender, &m.Size, &m.ArrivedAt, &m.MessageID, &m.BodyType,
			&m.SMTPUTF8, &m.DSNRet, &m.DSNEnvID, &m.Kind, &m.Prepend)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim due recipients: %w", err)
	}
	slices.SortFunc(out, func(a, b ClaimedRecipient) int {
		if c := strings.Compare(a.Message.ID, b.Message.ID); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out, nil
}

// RenewLease extends owner's leases on the recipients ids to lease from now.
// Recipients no longer delivering under owner's lease are left alone; if
// there are any, the error wraps ErrLeaseLost (a *LeaseLostError naming
// them) and the others are renewed.
func (s *Store) RenewLease(ctx context.Context, owner string, ids []int64, lease time.Duration) error {
	if len(ids) == 0 {
		return nil
	}
	rows, err := s.pool.Query(ctx, `UPDATE queue_recipient
SET lease_expires_at = now() + $3::bigint * interval '1 microsecond'
WHERE id = ANY ($2::bigint[]) AND status = 'delivering' AND lease_owner = $1
RETURNING id`, owner, ids, lease.Microseconds())
	if err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}
	if lost := missing(ids, got); len(lost) > 0 {
		return fmt.Errorf("renew leases: %w", &LeaseLostError{IDs: lost})
	}
	return nil
}

// LeaseLostError names the recipients whose lease a transition found taken:
// not delivering any more, or leased by another owner. It wraps ErrLeaseLost.
type LeaseLostError struct {
	IDs []int64
}

func (e *LeaseLostError) Error() string {
	return fmt.Sprintf("%s: %d recipient(s) %v", ErrLeaseLost, len(e.IDs), e.IDs)
}

func (e *LeaseLostError) Unwrap() error { return ErrLeaseLost }

// LostIDs returns the recipients named by a *LeaseLostError in err's chain.
func LostIDs(err error) []int64 {
	var le *LeaseLostError
	if errors.As(err, &le) {
		return le.IDs
	}
	return nil
}

// missing returns the ids of want that are not in got.
func missing(want, got []int64) []int64 {
	if len(got) == len(want) {
		return nil
	}
	seen := make(map[int64]bool, len(got))
	for _, id := range got {
		seen[id] = true
	}
	var out []int64
	for _, id := range want {
		if !seen[id] {
			out = append(out, id)
		}
	}
	return out
}

// Settlement is the outcome of one attempt for one claimed recipient: its new
// state and its delivery_log row.
type Settlement struct {
	ID     int64
	Status string // RcptDelivered, RcptDeferred, RcptBounced or RcptExpired
	// RetryIn is, for RcptDeferred, how long from now (the database's
	// clock) until the next attempt.
	RetryIn time.Duration
	Reply   string // the reply as logged, "550 5.1.1 text"
	DSN     string // the enhanced status, "5.1.1"
	Relay   string // host[addr]:port, "maildir", "none"
	// DSNAction, when set, makes the recipient owe a DSN of that kind
	// (DSNFailed, DSNDelayed, DSNDelivered, DSNRelayed): dsn_pending is set
	// until ClearDSNPending. DSNDelayed also marks the delay notice as
	// given, so it is given once. Without it a final recipient owes no DSN
	// (a pending delay notice is dropped: it is moot), and a deferred one
	// keeps whatever delay notice it still owes.
	DSNAction string

	// The delivery_log row.
	QueueID       string
	Node          string
	Sender        string
	Recipient     string
	OrigRecipient string
	Domain        string
	Transport     string
	Delay         time.Duration // from arrival to the end of the attempt
}

// logStatus is the delivery_log status of a settlement.
func logStatus(status string) (string, error) {
	switch status {
	case RcptDelivered:
		return "sent", nil
	case RcptDeferred:
		return "deferred", nil
	case RcptBounced:
		return "bounced", nil
	case RcptExpired:
		return "expired", nil
	}
	return "", &Error{Kind: ErrInvalid, Message: "settle: not a final or deferred state: " + status}
}

// sqlSettle applies settlements and appends their delivery_log rows in one
// statement, hence one transaction. Only recipients still delivering under
// the owner's lease ($1) change; the log rows are written for every attempt
// (an attempt that happened is a fact, even if its worker lost the lease).
const sqlSettle = `WITH s AS (
	SELECT * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[])
		AS s (id, status, retry_us, reply, dsn, relay, dsn_action)
), upd AS (
	UPDATE queue_recipient r
	SET status = s.status,
	    next_attempt_at = CASE WHEN s.status = 'deferred'
	                           THEN now() + s.retry_us * interval '1 microsecond'
	                           ELSE r.next_attempt_at END,
	    last_reply = s.reply, last_dsn = s.dsn, last_relay = s.relay,
	    lease_owner = NULL, lease_expires_at = NULL,
	    dsn_pending = CASE WHEN s.dsn_action <> '' THEN true
	                       WHEN s.status = 'deferred' THEN r.dsn_pending
	                       ELSE false END,
	    dsn_action = CASE WHEN s.dsn_action <> '' THEN s.dsn_action
	                      WHEN s.status = 'deferred' THEN r.dsn_action
	                      ELSE NULL END,
	    delay_notified = r.delay_notified OR s.dsn_action = 'delayed',
	    updated_at = now()
	FROM s
	WHERE r.id = s.id AND r.status = 'delivering' AND r.lease_owner = $1
	RETURNING r.id, r.queue_id, s.dsn_action
), warned AS (
	UPDATE queue_message m SET delay_warned = true
	WHERE m.id IN (SELECT queue_id FROM upd WHERE dsn_action = 'delayed') AND NOT m.delay_warned
), log AS (
	INSERT INTO delivery_log (queue_id, node, sender, recipient, orig_recipient, domain, transport, relay,
		delay_seconds, dsn, status, reply)
	SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
		$15::text[], $7::text[], $16::double precision[], $6::text[], $17::text[], $5::text[])
)
SELECT id FROM upd`

// Settle records the outcome of one delivery: each recipient's new state,
// reply, relay and owed DSN, with the lease cleared, and one delivery_log row
// per attempt, all in one transaction. Recipients no longer delivering under
// owner's lease keep their state (their log rows are still written); if
// there are any, the error wraps ErrLeaseLost (a *LeaseLostError naming
// them) and the rest is committed.
//
// Concurrent calls for the same owner share transactions, as Enqueue's do
// (group commit, bench/PROFILING.md attempt 3): one statement and one
// COMMIT for the deliveries that end together. Each call returns once its
// settlements are committed, with its own lost recipients; when a shared
// statement fails, each call is tried again on its own, so that one bad
// settlement fails alone. Until its call is in a transaction being sent,
// ctx ending makes it return at once, nothing done.
func (s *Store) Settle(ctx context.Context, owner string, results ...Settlement) error {
	if len(results) == 0 {
		return nil
	}
	for _, r := range results {
		if _, err := logStatus(r.Status); err != nil {
			return err
		}
		switch r.DSNAction {
		case "", DSNFailed, DSNDelayed, DSNDelivered, DSNRelayed:
		default:
			return &Error{Kind: ErrInvalid, Message: "settle: unknown DSN action " + r.DSNAction}
		}
	}
	err := s.settles.do(ctx, settleLimits, owner, len(results), settleItem{owner: owner, results: results}, s.settleGroupTx)
	if err != nil && err == ctx.Err() { // never sent
		return fmt.Errorf("settle: %w", err)
	}
	return err
}

// settleLimits bound the group commit of Settle: two transactions at once,
// at most 100 deliveries and 2000 recipients in one.
var settleLimits = groupLimits{running: 2, calls: 100, weight: 2000}

// settleItem is the work of one Settle call.
type settleItem struct {
	owner   string
	results []Settlement
}

// settleGroupTx settles the calls of one transaction and answers them.
func (s *Store) settleGroupTx(batch []*groupCall[settleItem]) {
	if len(batch) == 1 {
		c := batch[0]
		c.done <- s.settleTx(c.ctx, c.item.owner, c.item.results)
		return
	}
	var all []Settlement
	for _, c := range batch {
		all = append(all, c.item.results...)
	}
	ctx, cancel := groupContext(batch, 30*time.Second)
	err := s.settleTx(ctx, batch[0].item.owner, all)
	cancel()
	lost := LostIDs(err)
	if err != nil && lost == nil {
		// Nothing was committed: each call on its own now, so that a
		// settlement that cannot be recorded fails alone.
		var wg sync.WaitGroup
		for _, c := range batch {
			wg.Go(func() { c.done <- s.settleTx(c.ctx, c.item.owner, c.item.results) })
		}
		wg.Wait()
		return
	}
	isLost := make(map[int64]bool, len(lost))
	for _, id := range lost {
		isLost[id] = true
	}
	for _, c := range batch {
		var mine []int64
		for _, r := range c.item.results {
			if isLost[r.ID] {
				mine = append(mine, r.ID)
			}
		}
		if len(mine) > 0 {
			c.done <- fmt.Errorf("settle: %w", &LeaseLostError{IDs: mine})
		} else {
			c.done <- nil
		}
	}
}

// settleTx applies settlements of owner in one statement.
func (s *Store) settleTx(ctx context.Context, owner string, results []Settlement) error {
	n := len(results)
	var (
		ids                                   = make([]int64, n)
		statuses, replies, dsns, relays, acts = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		retry                                 = make([]int64, n)
		qids, nodes, senders, rcpts, origs    = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		domains, transports, logStatuses      = make([]string, n), make([]string, n), make([]string, n)
		delays                                = make([]float64, n)
	)
	for i, r := range results {
		ls, err := logStatus(r.Status)
		if err != nil {
			return err
		}
		ids[i], statuses[i], replies[i], dsns[i], relays[i], acts[i] = r.ID, r.Status, r.Reply, r.DSN, r.Relay, r.DSNAction
		retry[i] = max(r.RetryIn, 0).Microseconds()
		qids[i], nodes[i], senders[i], rcpts[i], origs[i] = r.QueueID, r.Node, r.Sender, r.Recipient, r.OrigRecipient
		domains[i], transports[i], logStatuses[i] = r.Domain, r.Transport, ls
		delays[i] = r.Delay.Seconds()
	}
	rows, err := s.pool.Query(ctx, sqlSettle, owner, ids, statuses, retry, replies, dsns, relays, acts,
		qids, nodes, senders, rcpts, origs, domains, transports, delays, logStatuses)
	if err != nil {
		return fmt.Errorf("settle: %w", MapError(err))
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("settle: %w", MapError(err))
	}
	if lost := missing(ids, got); len(lost) > 0 {
		return fmt.Errorf("settle: %w", &LeaseLostError{IDs: lost})
	}
	return nil
}

// Unclaim gives back claimed recipients whose attempt was not made (the
// manager is stopping before starting it, or the body is missing and the
// message was held): back to queued, or deferred if they were tried before,
// with the claim's attempt uncounted and the next attempt after retryIn.
// Recipients no longer delivering under owner's lease are left alone (the
// error wraps ErrLeaseLost).
func (s *Store) Unclaim(ctx context.Context, owner string, ids []int64, retryIn time.Duration) error {
	if len(ids) == 0 {
		return nil
	}
	rows, err := s.pool.Query(ctx, `UPDATE queue_recipient
SET status = CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END,
    attempts = greatest(attempts - 1, 0),
    next_attempt_at = now() + $3::bigint * interval '1 microsecond',
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = ANY ($2::bigint[]) AND status = 'delivering' AND lease_owner = $1
RETURNING id`, owner, ids, max(retryIn, 0).Microseconds())
	if err != nil {
		return fmt.Errorf("unclaim: %w", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("unclaim: %w", err)
	}
	if lost := missing(ids, got); len(lost) > 0 {
		return fmt.Errorf("unclaim: %w", &LeaseLostError{IDs: lost})
	}
	return nil
}

// ReleaseExpiredLeases moves every delivering recipient whose lease has run
// out back to deferred, due now: its worker crashed or lost the database.
// The attempt stays counted; delivery is at-least-once. It returns how many
// recipients it released.
func (s *Store) ReleaseExpiredLeases(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE queue_recipient
SET status = 'deferred', next_attempt_at = now(), lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE status = 'delivering' AND lease_expires_at < now()`)
	if err != nil {
		return 0, fmt.Errorf("release expired leases: %w", err)
	}
	return tag.RowsAffected(), nil
}

// ReleaseNodeLeases moves node's delivering recipients whose lease is held
// by another owner than keep back to deferred, due now, whether or not the
// lease has run out. Only for a manager that knows it is the node's only
// one (it holds the lock of the node's spool): the other owners are
// processes of this node that are gone (kill -9, a crash), so their mail
// need not wait for their leases to run out. It returns how many
// recipients it released.
func (s *Store) ReleaseNodeLeases(ctx context.Context, node, keep string) (int64, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE queue_recipient r
SET status = 'deferred', next_attempt_at = now(), lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE r.status = 'delivering' AND r.lease_owner IS DISTINCT FROM $2
  AND EXISTS (SELECT 1 FROM queue_message m WHERE m.id = r.queue_id AND m.node = $1)`, node, keep)
	if err != nil {
		return 0, fmt.Errorf("release the leases of node %s: %w", node, err)
	}
	return tag.RowsAffected(), nil
}

// sqlNextDue walks the waiting recipients in next attempt order and looks
// up each one's message by primary key until one is of the node and not
// held (the first, but for other nodes' and held messages). The message test
// is a scalar subquery on purpose: as a join, a planner that takes the hot
// queue tables for nearly empty (ANALYZE ran between bursts, and a default
// selectivity for node) chooses a nested loop that scans every waiting
// recipient for each message of the node, quadratic in the backlog: 15–50
// ms per call under load in bench/ (bench/PROFILING.md, attempt 1).
const sqlNextDue = `SELECT r.next_attempt_at
FROM queue_recipient r
WHERE r.status IN ('queued', 'deferred')
  AND (SELECT m.node = $1 AND NOT m.held FROM queue_message m WHERE m.id = r.queue_id)
ORDER BY r.next_attempt_at LIMIT 1`

// NextDue returns the earliest next attempt time of a waiting recipient
// (queued or deferred) of node's unheld messages; ok is false when there is
// none. The time may be in the past: due now.
func (s *Store) NextDue(ctx context.Context, node string) (next time.Time, ok bool, err error) {
	err = s.pool.QueryRow(ctx, sqlNextDue, node).Scan(&next)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next due recipient: %w", err)
	}
	return next, true, nil
}

// FinishedMessage is a message that left the queue tables: its spool body
// may now be removed.
type FinishedMessage struct {
	ID       string
	SpoolKey string
}

// FinishMessages deletes the rows of node's messages whose recipients are
// all final (delivered, bounced, expired) and owe no DSN, and sets
// finished_at on their accepted_log rows, in one statement. ids limits it to
// those messages; nil looks at every message with a final recipient (at
// most limit of them, 0 meaning 1000). It returns the messages finished: the
// caller removes their spool bodies only after this returns, so that a body
// always outlives its rows ("a body is removed only after every recipient is
// final and any DSN for it is queued").
func (s *Store) FinishMessages(ctx context.Context, node string, ids []string, limit int) ([]FinishedMessage, error) {
	if ids != nil && len(ids) == 0 {
		return nil, nil
	}
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.pool.Query(ctx, `WITH cand AS (
	SELECT DISTINCT f.queue_id AS id
	FROM queue_recipient f JOIN queue_message fm ON fm.id = f.queue_id AND fm.node = $1
	WHERE f.status IN ('delivered', 'bounced', 'expired')
	  AND ($2::text[] IS NULL OR f.queue_id = ANY ($2::text[]))
	LIMIT $3
), done AS (
	SELECT m.id, m.spool_key
	FROM queue_message m JOIN cand ON cand.id = m.id
	WHERE m.node = $1
	  AND NOT EXISTS (SELECT 1 FROM queue_recipient r
	                  WHERE r.queue_id = m.id
	                    AND (r.status NOT IN ('delivered', 'bounced', 'expired') OR r.dsn_pending))
	FOR UPDATE OF m SKIP LOCKED
), del AS (
	DELETE FROM queue_message m USING done WHERE m.id = done.id
	RETURNING m.id, m.spool_key
), acc AS (
	UPDATE accepted_log a SET finished_at = now()
	FROM del WHERE a.queue_id = del.id AND a.finished_at IS NULL
)
SELECT id, spool_key FROM del ORDER BY id`, node, ids, limit)
	if err != nil {
		return nil, fmt.Errorf("finish messages: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[FinishedMessage])
	if err != nil {
		return nil, fmt.Errorf("finish messages: %w", err)
	}
	return out, nil
}

// DSNMessage is what a DSN needs of the original message.
type DSNMessage struct {
	ID        string
	SpoolKey  string
	Sender    string
	Size      int64
	ArrivedAt time.Time
	MessageID string
	BodyType  string
	SMTPUTF8  bool
	DSNRet    string
	DSNEnvID  string
	Kind      string
	Held      bool
	Prepend   string // sent before the spool file (QueueMessage.Prepend)
}

// DSNRecipient is a recipient that owes a DSN.
type DSNRecipient struct {
	ID            int64
	Action        string // the notice owed: DSNFailed, DSNDelayed, DSNDelivered, DSNRelayed
	Address       string
	OrigAddress   string
	DSNOrcpt      string
	Transport     string
	Status        string
	Attempts      int
	LastReply     string
	LastDSN       string
	LastRelay     string
	LastAttemptAt time.Time // zero if never tried
	NextAttemptAt time.Time
}

// PendingDSN is one DSN owed: one message, one kind of notice, every
// recipient of the message that owes a notice of that kind.
type PendingDSN struct {
	Message DSNMessage
	// Action is the kind of notice: DSNFailed, DSNDelayed, or DSNDelivered
	// for success notices (whose recipients may be DSNDelivered or
	// DSNRelayed).
	Action     string
	Recipients []DSNRecipient
}

// noticeKind groups actions into notices: delivered and relayed
// recipients share a success notice.
func noticeKind(action string) string {
	if action == DSNRelayed {
		return DSNDelivered
	}
	return action
}

// PendingDSNs returns the DSNs owed by node's messages, one per message and
// kind of notice (failure, delay, success), in queue id order: for the
// messages ids, or for at most limit messages (0 meaning 100) when ids is
// nil.
func (s *Store) PendingDSNs(ctx context.Context, node string, ids []string, limit int) ([]PendingDSN, error) {
	if ids != nil && len(ids) == 0 {
		return nil, nil
	}
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, `WITH cand AS (
	SELECT DISTINCT p.queue_id AS id
	FROM queue_recipient p JOIN queue_message pm ON pm.id = p.queue_id AND pm.node = $1
	WHERE p.dsn_pending AND ($2::text[] IS NULL OR p.queue_id = ANY ($2::text[]))
	  -- One DSN per message per delivery pass (DESIGN): while another
	  -- recipient of the message is being delivered, its pass is not over;
	  -- the settlement of that attempt sends the DSN for both.
	  AND NOT EXISTS (SELECT 1 FROM queue_recipient d
	                  WHERE d.queue_id = p.queue_id AND d.status = 'delivering')
	LIMIT $3
)
SELECT m.id, m.spool_key, m.sender, m.size, m.arrived_at, m.message_id, m.body_type, m.smtputf8,
       coalesce(m.dsn_ret, ''), coalesce(m.dsn_envid, ''), m.kind, m.held, m.prepend,
       r.dsn_action, r.id, r.address, r.orig_address, coalesce(r.dsn_orcpt, ''), r.transport, r.status,
       r.attempts, r.last_reply, r.last_dsn, r.last_relay, r.last_attempt_at, r.next_attempt_at
FROM cand
JOIN queue_message m ON m.id = cand.id
JOIN queue_recipient r ON r.queue_id = m.id AND r.dsn_pending
WHERE m.node = $1
ORDER BY m.id, CASE r.dsn_action WHEN 'relayed' THEN 'delivered' ELSE r.dsn_action END, r.id`, node, ids, limit)
	if err != nil {
		return nil, fmt.Errorf("pending DSNs: %w", err)
	}
	defer rows.Close()
	var out []PendingDSN
	for rows.Next() {
		var m DSNMessage
		var r DSNRecipient
		var last *time.Time
		if err := rows.Scan(&m.ID, &m.SpoolKey, &m.Sender, &m.Size, &m.ArrivedAt, &m.MessageID, &m.BodyType, &m.SMTPUTF8,
			&m.DSNRet, &m.DSNEnvID, &m.Kind, &m.Held, &m.Prepend, &r.Action, &r.ID, &r.Address, &r.OrigAddress, &r.DSNOrcpt,
			&r.Transport, &r.Status, &r.Attempts, &r.LastReply, &r.LastDSN, &r.LastRelay, &last, &r.NextAttemptAt); err != nil {
			return nil, fmt.Errorf("pending DSNs: %w", err)
		}
		if last != nil {
			r.LastAttemptAt = *last
		}
		kind := noticeKind(r.Action)
		if k := len(out) - 1; k >= 0 && out[k].Message.ID == m.ID && out[k].Action == kind {
			out[k].Recipients = append(out[k].Recipients, r)
			continue
		}
		out = append(out, PendingDSN{Message: m, Action: kind, Recipients: []DSNRecipient{r}})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pending DSNs: %w", err)
	}
	return out, nil
}

// ClearDSNPending clears the owed DSN of exactly the recipients rcpts
// (PendingDSN.Recipients), each of which must still owe the notice of its
// Action, inside tx: the transaction that enqueues that DSN (EnqueueWith),
// so the DSN is queued if and only if the debt is cleared. If any of them
// does not owe it any more (another worker sent it, or a later settlement
// changed it), it returns an error wrapping ErrLeaseLost and the caller
// must roll back.
func ClearDSNPending(ctx context.Context, tx pgx.Tx, rcpts []DSNRecipient) error {
	if len(rcpts) == 0 {
		return nil
	}
	ids := make([]int64, len(rcpts))
	actions := make([]string, len(rcpts))
	for i, r := range rcpts {
		ids[i], actions[i] = r.ID, r.Action
	}
	rows, err := tx.Query(ctx, `UPDATE queue_recipient r SET dsn_pending = false, dsn_action = NULL, updated_at = now()
FROM unnest($1::bigint[], $2::text[]) AS o (id, action)
WHERE r.id = o.id AND r.dsn_pending AND r.dsn_action = o.action
RETURNING r.id`, ids, actions)
	if err != nil {
		return fmt.Errorf("clear pending DSN: %w", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("clear pending DSN: %w", err)
	}
	if lost := missing(ids, got); len(lost) > 0 {
		return fmt.Errorf("clear pending DSN: %w", &LeaseLostError{IDs: lost})
	}
	return nil
}

// EnqueueWith is Enqueue with one more step inside its transaction: fn runs
// after the rows are inserted and before COMMIT, and if it returns an error
// nothing is committed. The DSN generator uses it to clear the debt of the
// recipients a DSN reports on in the transaction that queues the DSN
// (DESIGN.md, "DSNs are never lost or doubled").
//
// Errors are those of Enqueue: one wrapping ErrCommitUnknown means COMMIT was
// sent and its outcome is unknown (keep the spool file; the reconciler
// settles it); any other error means nothing was committed.
func (s *Store) EnqueueWith(ctx context.Context, msg QueueMessage, rcpts []QueueRecipient, acc AcceptedLog,
	fn func(ctx context.Context, tx pgx.Tx) error) error {
	if len(rcpts) == 0 {
		return &Error{Kind: ErrInvalid, Message: "enqueue " + msg.ID + ": no recipients"}
	}
	fillAccepted(&acc, &msg, len(rcpts))
	n := len(rcpts)
	addrs, origs, domains, transports := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	notify, orcpt := make([]*string, n), make([]*string, n)
	for i, r := range rcpts {
		addrs[i], origs[i], domains[i], transports[i] = r.Address, r.OrigAddress, r.Domain, r.Transport
		notify[i], orcpt[i] = r.DSNNotify, r.DSNOrcpt
	}

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("enqueue %s: begin: %w", msg.ID, err)
	}
	// After a successful Commit this is a no-op; after a failed one the
	// connection is closed or idle.
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck

	b := &pgx.Batch{}
	b.Queue(sqlInsertQueueMessage, msg.ID, msg.Node, msg.SpoolKey, msg.Sender, msg.Size, msg.MessageID,
		msg.ClientAddr, msg.ClientHelo, msg.Protocol, msg.AuthUser, msg.LocalUser, msg.DSNRet, msg.DSNEnvID,
		msg.BodyType, msg.SMTPUTF8, msg.Kind, msg.Held, msg.HoldReason, msg.Prepend)
	b.Queue(sqlInsertQueueRecipients, msg.ID, addrs, origs, domains, transports, notify, orcpt)
	b.Queue(sqlInsertAcceptedLog, acc.QueueID, acc.Node, acc.Sender, acc.Recipients, acc.Size, acc.MessageID,
		acc.ClientAddr, acc.Protocol, acc.AuthUser, acc.LocalUser, acc.TLS)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("enqueue %s: %w", msg.ID, MapError(err))
	}
	if fn != nil {
		if err := fn(ctx, tx); err != nil {
			return fmt.Errorf("enqueue %s: %w", msg.ID, MapError(err))
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if err := tx.Commit(cctx); err != nil {
		return commitError(msg.ID, err)
	}
	return nil
}
