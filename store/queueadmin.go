package store

// Operator access to the queue (facteur queue …, facteur log): listings,
// the queue's shape, the logs, and the actions of postsuper and postqueue
// (hold, release, flush, delete, expire, requeue) as transactions on queue
// rows.
//
// # Safe while the queue manager runs
//
// Every action takes the same locks, in the same order, so that it never
// breaks the lease protocol of queue.go and never deadlocks with it:
//
//  1. the message rows, FOR UPDATE in queue id order (waiting): no
//     FinishMessages, no other operator action on those messages meanwhile
//     (FinishMessages skips locked messages; two operator actions queue up);
//  2. their recipient rows, FOR UPDATE SKIP LOCKED (never waiting): a row
//     that a claim or a settlement holds at that moment is skipped, and so
//     is every row in delivering. Such recipients are "busy": the action
//     leaves them alone, their attempt finishes and settles as usual, and
//     the action reports them so that the operator can run it again.
//
// Because an action never waits for a recipient row while holding a message
// row, it cannot deadlock with a settlement (which locks recipients, then
// possibly their message). A claim that locks a recipient after an action
// changed it re-checks its WHERE clause on the new row (state, due time); a
// claim that had read the message as not held just before a hold committed
// may still take its recipients, exactly as if they had been delivering when
// the hold came: hold stops new attempts, it never interrupts one.
//
// Delete never removes a body that a recipient may still need: a message
// with a busy recipient is not deleted but held ("delete pending"), its
// other recipients removed; once the busy recipients settle, the message
// either finishes by itself (the queue manager removes it and its body) or
// the next delete removes it. The body of a deleted message is removed
// after COMMIT, by the caller on the node that holds the spool, or else by
// that node's reconciler (a spool file no row refers to).
//
// Every action writes one audit_log row per message it changed, in the same
// transaction: table_name 'queue_message', the queue id as row_key, the
// actor from WithActor (else the database session user), old = the message
// row before, new = {"action": …} with what changed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// QueueEntry is a message in the queue with its recipients, as the operator
// tools show it.
type QueueEntry struct {
	ID          string    `json:"queue_id"`
	Node        string    `json:"node"`
	SpoolKey    string    `json:"spool_key"`
	Sender      string    `json:"sender"` // "" is <>
	Size        int64     `json:"size"`
	ArrivedAt   time.Time `json:"arrived_at"`
	MessageID   string    `json:"message_id,omitempty"`
	ClientAddr  string    `json:"client_addr,omitempty"`
	ClientHelo  string    `json:"client_helo,omitempty"`
	Protocol    string    `json:"protocol,omitempty"`
	AuthUser    string    `json:"auth_user,omitempty"`
	LocalUser   string    `json:"local_user,omitempty"`
	DSNRet      string    `json:"dsn_ret,omitempty"`
	DSNEnvID    string    `json:"dsn_envid,omitempty"`
	BodyType    string    `json:"body_type"`
	SMTPUTF8    bool      `json:"smtputf8"`
	Kind        string    `json:"kind"`
	Held        bool      `json:"held"`
	HoldReason  string    `json:"hold_reason,omitempty"`
	DelayWarned bool      `json:"delay_warned"`
	// Prepend is the header fields sent before the spool file (see
	// QueueMessage.Prepend).
	Prepend string `json:"prepend,omitempty"`

	Recipients []QueueEntryRecipient `json:"recipients"`
}

// QueueEntryRecipient is one recipient row of a QueueEntry.
type QueueEntryRecipient struct {
	ID             int64     `json:"id"`
	Address        string    `json:"address"`
	OrigAddress    string    `json:"orig_address"`
	Domain         string    `json:"domain"`
	Transport      string    `json:"transport"`
	DSNNotify      string    `json:"dsn_notify,omitempty"`
	DSNOrcpt       string    `json:"dsn_orcpt,omitempty"`
	Status         string    `json:"status"`
	Attempts       int       `json:"attempts"`
	NextAttemptAt  time.Time `json:"next_attempt_at"`
	LastAttemptAt  time.Time `json:"last_attempt_at,omitzero"`
	LastReply      string    `json:"last_reply,omitempty"`
	LastDSN        string    `json:"last_dsn,omitempty"`
	LastRelay      string    `json:"last_relay,omitempty"`
	LeaseOwner     string    `json:"lease_owner,omitempty"`
	LeaseExpiresAt time.Time `json:"lease_expires_at,omitzero"`
	DSNPending     bool      `json:"dsn_pending"`
	DSNAction      string    `json:"dsn_action,omitempty"`
	DelayNotified  bool      `json:"delay_notified"`
}

// Final reports whether the recipient is in a final state.
func (r *QueueEntryRecipient) Final() bool {
	switch r.Status {
	case RcptDelivered, RcptBounced, RcptExpired:
		return true
	}
	return false
}

// QueueFilter selects messages. Zero fields select everything. The
// recipient filters (Domain, Recipient, Status when it names a recipient
// state) match a message when one recipient matches all of them; without
// Status they look at recipients not yet delivered.
type QueueFilter struct {
	// IDs limits the selection to these messages (nil: any).
	IDs  []string
	Node string
	// Sender is an address ("user@example.com", case-insensitive), a
	// domain ("example.com": any sender of that domain), or "<>" for the
	// null sender.
	Sender string
	// Recipient is an address or a domain, as Sender.
	Recipient string
	// Domain is a recipient domain.
	Domain string
	// Status is a recipient state (queued, delivering, deferred,
	// delivered, bounced, expired), or "held" for held messages, or
	// "active" (a recipient is delivering).
	Status string
	// OlderThan keeps messages that arrived at least this long ago (by the
	// database's clock).
	OlderThan time.Duration
	// LocalUser keeps the messages that this local user submitted through
	// sendmail (queue_message.local_user).
	LocalUser string
}

// queueStatuses are the values QueueFilter.Status accepts.
var queueStatuses = []string{RcptQueued, RcptDelivering, RcptDeferred, RcptDelivered, RcptBounced, RcptExpired, "held", "active"}

// Validate checks the filter's values.
func (f *QueueFilter) Validate() error {
	if f.Status != "" && !slices.Contains(queueStatuses, f.Status) {
		return &Error{Kind: ErrInvalid, Message: fmt.Sprintf("unknown status %q (use %s)", f.Status, strings.Join(queueStatuses, ", "))}
	}
	if f.OlderThan < 0 {
		return &Error{Kind: ErrInvalid, Message: "older-than must not be negative"}
	}
	return nil
}

// where returns the WHERE clause over queue_message m selecting f, and its
// arguments, numbered from $1.
func (f *QueueFilter) where() (string, []any) {
	var conds []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.IDs != nil {
		conds = append(conds, "m.id = ANY ("+arg(f.IDs)+"::text[])")
	}
	if f.Node != "" {
		conds = append(conds, "m.node = "+arg(f.Node))
	}
	if f.Sender != "" {
		conds = append(conds, addressMatch("m.sender", f.Sender, arg))
	}
	if f.OlderThan > 0 {
		conds = append(conds, "m.arrived_at <= now() - "+arg(f.OlderThan.Microseconds())+"::bigint * interval '1 microsecond'")
	}
	if f.LocalUser != "" {
		conds = append(conds, "m.local_user = "+arg(f.LocalUser))
	}
	var rc []string
	switch f.Status {
	case "held":
		conds = append(conds, "m.held")
	case "active":
		rc = append(rc, "r.status = 'delivering'")
	case "":
		if f.Domain != "" || f.Recipient != "" {
			rc = append(rc, "r.status <> 'delivered'")
		}
	default:
		rc = append(rc, "r.status = "+arg(f.Status))
	}
	if f.Domain != "" {
		rc = append(rc, "r.domain = "+arg(strings.ToLower(strings.TrimSuffix(f.Domain, "."))))
	}
	if f.Recipient != "" {
		rc = append(rc, addressMatch("r.address", f.Recipient, arg))
	}
	if len(rc) > 0 {
		conds = append(conds, "EXISTS (SELECT 1 FROM queue_recipient r WHERE r.queue_id = m.id AND "+strings.Join(rc, " AND ")+")")
	}
	if len(conds) == 0 {
		return "true", args
	}
	return strings.Join(conds, " AND "), args
}

// addressMatch is the condition that col matches an address, a domain, or
// "<>" (the empty address).
func addressMatch(col, v string, arg func(any) string) string {
	v = strings.TrimSpace(v)
	switch {
	case v == "<>":
		return col + " = ''"
	case strings.Contains(v, "@"):
		return "lower(" + col + ") = " + arg(strings.ToLower(strings.Trim(v, "<>")))
	default:
		d := strings.ToLower(strings.TrimPrefix(strings.TrimSuffix(v, "."), "@"))
		return "lower(" + col + ") LIKE " + arg("%@"+escapeLike(d))
	}
}

const sqlQueueEntryColumns = `m.id, m.node, m.spool_key, m.sender, m.size, m.arrived_at, m.message_id, m.client_addr,
	m.client_helo, m.protocol, coalesce(m.auth_user, ''), coalesce(m.local_user, ''), coalesce(m.dsn_ret, ''),
	coalesce(m.dsn_envid, ''), m.body_type, m.smtputf8, m.kind, m.held, coalesce(m.hold_reason, ''), m.delay_warned,
	m.prepend`

func scanQueueEntry(row pgx.Row, e *QueueEntry) error {
	return row.Scan(&e.ID, &e.Node, &e.SpoolKey, &e.Sender, &e.Size, &e.ArrivedAt, &e.MessageID, &e.ClientAddr,
		&e.ClientHelo, &e.Protocol, &e.AuthUser, &e.LocalUser, &e.DSNRet, &e.DSNEnvID, &e.BodyType, &e.SMTPUTF8,
		&e.Kind, &e.Held, &e.HoldReason, &e.DelayWarned, &e.Prepend)
}

const (
	sqlQueueRecipientSelect = `SELECT r.queue_id, r.id, r.address, r.orig_address, r.domain, r.transport,
	coalesce(r.dsn_notify, ''), coalesce(r.dsn_orcpt, ''), r.status, r.attempts, r.next_attempt_at, r.last_attempt_at,
	r.last_reply, r.last_dsn, r.last_relay, coalesce(r.lease_owner, ''), r.lease_expires_at, r.dsn_pending,
	coalesce(r.dsn_action, ''), r.delay_notified
FROM queue_recipient r WHERE r.queue_id = ANY ($1::text[])`
	sqlQueueRecipients = sqlQueueRecipientSelect + ` ORDER BY r.queue_id, r.id`
	// sqlLockFreeRecipients locks the recipient rows no one else holds
	// now, never waiting (see the file comment).
	sqlLockFreeRecipients = sqlQueueRecipientSelect + ` ORDER BY r.id FOR UPDATE SKIP LOCKED`
)

// queueRecipientsOf reads the recipients of the messages ids, by message.
func queueRecipientsOf(ctx context.Context, q Querier, ids []string) (map[string][]QueueEntryRecipient, error) {
	rows, err := q.Query(ctx, sqlQueueRecipients, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string][]QueueEntryRecipient, len(ids))
	for rows.Next() {
		var qid string
		var r QueueEntryRecipient
		var last, lease *time.Time
		if err := rows.Scan(&qid, &r.ID, &r.Address, &r.OrigAddress, &r.Domain, &r.Transport, &r.DSNNotify, &r.DSNOrcpt,
			&r.Status, &r.Attempts, &r.NextAttemptAt, &last, &r.LastReply, &r.LastDSN, &r.LastRelay, &r.LeaseOwner,
			&lease, &r.DSNPending, &r.DSNAction, &r.DelayNotified); err != nil {
			return nil, err
		}
		if last != nil {
			r.LastAttemptAt = *last
		}
		if lease != nil {
			r.LeaseExpiresAt = *lease
		}
		out[qid] = append(out[qid], r)
	}
	return out, rows.Err()
}

// queueListPage is how many messages ListQueue reads per query.
const queueListPage = 500

// ListQueue calls fn for each message that f selects, with all its
// recipients, oldest first (arrival time, then queue id). Messages are read
// in pages, so a large queue is never held in memory; a message that
// arrives or leaves during the listing may or may not be seen. An error
// from fn stops the listing and is returned as it is.
func (s *Store) ListQueue(ctx context.Context, f QueueFilter, fn func(*QueueEntry) error) error {
	if err := f.Validate(); err != nil {
		return err
	}
	where, args := f.where()
	n := len(args)
	q := fmt.Sprintf(`SELECT %s FROM queue_message m
WHERE (%s) AND (m.arrived_at, m.id) > ($%d, $%d)
ORDER BY m.arrived_at, m.id LIMIT %d`, sqlQueueEntryColumns, where, n+1, n+2, queueListPage)
	afterAt, afterID := time.Time{}, ""
	for {
		rows, err := s.pool.Query(ctx, q, append(args, afterAt, afterID)...)
		if err != nil {
			return fmt.Errorf("list queue: %w", err)
		}
		var page []*QueueEntry
		for rows.Next() {
			e := &QueueEntry{}
			if err := scanQueueEntry(rows, e); err != nil {
				rows.Close()
				return fmt.Errorf("list queue: %w", err)
			}
			page = append(page, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list queue: %w", err)
		}
		if len(page) == 0 {
			return nil
		}
		ids := make([]string, len(page))
		for i, e := range page {
			ids[i] = e.ID
		}
		rc, err := queueRecipientsOf(ctx, s.pool, ids)
		if err != nil {
			return fmt.Errorf("list queue recipients: %w", err)
		}
		for _, e := range page {
			e.Recipients = rc[e.ID]
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(page) < queueListPage {
			return nil
		}
		afterAt, afterID = page[len(page)-1].ArrivedAt, page[len(page)-1].ID
	}
}

// QueueEntryByID returns one message with its recipients; ErrNotFound if it
// is not in the queue.
func (s *Store) QueueEntryByID(ctx context.Context, id string) (*QueueEntry, error) {
	e := &QueueEntry{}
	err := scanQueueEntry(s.pool.QueryRow(ctx, "SELECT "+sqlQueueEntryColumns+" FROM queue_message m WHERE m.id = $1", id), e)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("queue message %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("queue message %s: %w", id, err)
	}
	rc, err := queueRecipientsOf(ctx, s.pool, []string{id})
	if err != nil {
		return nil, fmt.Errorf("queue message %s recipients: %w", id, err)
	}
	e.Recipients = rc[id]
	return e, nil
}

// SelectQueueIDs returns the ids of the messages f selects, oldest first.
func (s *Store) SelectQueueIDs(ctx context.Context, f QueueFilter) ([]string, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	where, args := f.where()
	rows, err := s.pool.Query(ctx, "SELECT m.id FROM queue_message m WHERE "+where+" ORDER BY m.arrived_at, m.id", args...)
	if err != nil {
		return nil, fmt.Errorf("select queue ids: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("select queue ids: %w", err)
	}
	return ids, nil
}

// ShapeBoundsMinutes are qshape's default age buckets: the upper bounds, in
// minutes, of all buckets but the last ("1280+").
var ShapeBoundsMinutes = []float64{5, 10, 20, 40, 80, 160, 320, 640, 1280}

// ShapeRow is one line of the queue's shape: a domain and its counts per
// age bucket (len(ShapeBoundsMinutes)+1 buckets, the last open-ended).
type ShapeRow struct {
	Domain string
	Total  int64
	Counts []int64
}

// ShapeQueues are the queue names QueueShape counts, as qshape's: incoming
// (queued recipients), active (delivering) and deferred recipients of
// messages not held, and hold (every waiting recipient of held messages).
var ShapeQueues = []string{"incoming", "active", "deferred", "hold"}

// ShapeOptions selects what QueueShape counts.
type ShapeOptions struct {
	// Queues names the queues counted (ShapeQueues); nil counts incoming,
	// active and deferred, as qshape's default leaves out the hold queue.
	Queues []string
	// BySender counts messages by sender domain instead of recipients by
	// recipient domain (qshape -s); the null sender is MAILER-DAEMON.
	BySender bool
	Node     string
}

// QueueShape counts the queue by domain and age (Postfix's qshape): one row
// per domain, largest first, with the age of each message from its arrival.
// The first row is TOTAL.
func (s *Store) QueueShape(ctx context.Context, o ShapeOptions) ([]ShapeRow, error) {
	queues := o.Queues
	if queues == nil {
		queues = []string{"incoming", "active", "deferred"}
	}
	var states []string
	hold := false
	for _, q := range queues {
		switch q {
		case "incoming":
			states = append(states, RcptQueued)
		case "active":
			states = append(states, RcptDelivering)
		case "deferred":
			states = append(states, RcptDeferred)
		case "hold":
			hold = true
		default:
			return nil, &Error{Kind: ErrInvalid, Message: fmt.Sprintf("unknown queue %q (use %s)", q, strings.Join(ShapeQueues, ", "))}
		}
	}
	key, count := "lower(r.domain)", "count(*)"
	if o.BySender {
		key = "CASE WHEN m.sender = '' THEN 'MAILER-DAEMON' ELSE lower(substr(m.sender, length(m.sender) - strpos(reverse(m.sender), '@') + 2)) END"
		count = "count(DISTINCT m.id)"
	}
	q := fmt.Sprintf(`SELECT %s AS k,
	width_bucket(extract(epoch FROM now() - m.arrived_at) / 60, $1::float8[]) AS b, %s
FROM queue_recipient r JOIN queue_message m ON m.id = r.queue_id
WHERE ((NOT m.held AND r.status = ANY ($2::text[]))
       OR ($3 AND m.held AND r.status IN ('queued', 'delivering', 'deferred')))
  AND ($4 = '' OR m.node = $4)
GROUP BY 1, 2`, key, count)
	rows, err := s.pool.Query(ctx, q, ShapeBoundsMinutes, states, hold, o.Node)
	if err != nil {
		return nil, fmt.Errorf("queue shape: %w", err)
	}
	defer rows.Close()
	nb := len(ShapeBoundsMinutes) + 1
	total := ShapeRow{Domain: "TOTAL", Counts: make([]int64, nb)}
	byDomain := map[string]*ShapeRow{}
	for rows.Next() {
		var k string
		var b int
		var n int64
		if err := rows.Scan(&k, &b, &n); err != nil {
			return nil, fmt.Errorf("queue shape: %w", err)
		}
		b = min(max(b, 0), nb-1)
		r := byDomain[k]
		if r == nil {
			r = &ShapeRow{Domain: k, Counts: make([]int64, nb)}
			byDomain[k] = r
		}
		r.Counts[b] += n
		r.Total += n
		total.Counts[b] += n
		total.Total += n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("queue shape: %w", err)
	}
	out := []ShapeRow{total}
	for _, r := range byDomain {
		out = append(out, *r)
	}
	slices.SortFunc(out[1:], func(a, b ShapeRow) int {
		if a.Total != b.Total {
			if a.Total > b.Total {
				return -1
			}
			return 1
		}
		if len(a.Domain) != len(b.Domain) {
			return len(a.Domain) - len(b.Domain)
		}
		return strings.Compare(a.Domain, b.Domain)
	})
	return out, nil
}

// QueueActionResult is what an operator action did to one message.
type QueueActionResult struct {
	ID    string `json:"queue_id"`
	Node  string `json:"node,omitempty"`
	Found bool   `json:"found"`
	// Changed counts what the action changed: recipients (flush, expire,
	// requeue, delete), or 1 for the message (hold, release, a delete
	// that removed it).
	Changed int `json:"changed"`
	// Busy counts recipients the action left alone because an attempt is
	// in flight (delivering, or locked by a worker at that moment). Their
	// attempt finishes and settles as usual; run the action again after it.
	Busy int `json:"busy"`
	// Deleted reports that the message's rows are gone (delete).
	Deleted bool `json:"deleted,omitempty"`
	// SpoolKey is, when Deleted, the body to remove from Node's spool.
	SpoolKey string `json:"spool_key,omitempty"`
	// Note says, for people, why less than asked was done.
	Note string `json:"note,omitempty"`
}

// lockedMessage is a message row locked by an action, with its recipients.
type lockedMessage struct {
	id, node, spoolKey, sender, kind string
	held                             bool
	holdReason                       string
	arrivedAt                        time.Time
	old                              json.RawMessage
	// rcpts are the recipient rows this action locked; busy counts the
	// others and the delivering ones.
	rcpts []QueueEntryRecipient
	busy  int
}

// lockMessages locks the messages ids and their free recipient rows (see
// the file comment for the order), inside tx.
func lockMessages(ctx context.Context, tx pgx.Tx, ids []string) ([]*lockedMessage, error) {
	rows, err := tx.Query(ctx, `SELECT m.id, m.node, m.spool_key, m.sender, m.kind, m.held, coalesce(m.hold_reason, ''),
	m.arrived_at, to_jsonb(m)
FROM queue_message m WHERE m.id = ANY ($1::text[]) ORDER BY m.id FOR UPDATE`, ids)
	if err != nil {
		return nil, fmt.Errorf("lock messages: %w", err)
	}
	var msgs []*lockedMessage
	byID := map[string]*lockedMessage{}
	for rows.Next() {
		m := &lockedMessage{}
		if err := rows.Scan(&m.id, &m.node, &m.spoolKey, &m.sender, &m.kind, &m.held, &m.holdReason, &m.arrivedAt, &m.old); err != nil {
			rows.Close()
			return nil, fmt.Errorf("lock messages: %w", err)
		}
		msgs = append(msgs, m)
		byID[m.id] = m
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock messages: %w", err)
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	locked := make([]string, len(msgs))
	for i, m := range msgs {
		locked[i] = m.id
	}
	// Free recipient rows: skip those a claim or settlement holds now.
	rows, err = tx.Query(ctx, sqlLockFreeRecipients, locked)
	if err != nil {
		return nil, fmt.Errorf("lock recipients: %w", err)
	}
	got := map[string]int{}
	for rows.Next() {
		var qid string
		var r QueueEntryRecipient
		var last, lease *time.Time
		if err := rows.Scan(&qid, &r.ID, &r.Address, &r.OrigAddress, &r.Domain, &r.Transport, &r.DSNNotify, &r.DSNOrcpt,
			&r.Status, &r.Attempts, &r.NextAttemptAt, &last, &r.LastReply, &r.LastDSN, &r.LastRelay, &r.LeaseOwner,
			&lease, &r.DSNPending, &r.DSNAction, &r.DelayNotified); err != nil {
			rows.Close()
			return nil, fmt.Errorf("lock recipients: %w", err)
		}
		if last != nil {
			r.LastAttemptAt = *last
		}
		if lease != nil {
			r.LeaseExpiresAt = *lease
		}
		m := byID[qid]
		got[qid]++
		if r.Status == RcptDelivering {
			m.busy++
			continue
		}
		m.rcpts = append(m.rcpts, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock recipients: %w", err)
	}
	// Rows skipped because locked elsewhere are busy too. No row can be
	// added or removed meanwhile: that needs the message lock we hold.
	rows, err = tx.Query(ctx, `SELECT queue_id, count(*) FROM queue_recipient WHERE queue_id = ANY ($1::text[]) GROUP BY 1`, locked)
	if err != nil {
		return nil, fmt.Errorf("count recipients: %w", err)
	}
	for rows.Next() {
		var qid string
		var n int
		if err := rows.Scan(&qid, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count recipients: %w", err)
		}
		byID[qid].busy += n - got[qid]
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count recipients: %w", err)
	}
	return msgs, nil
}

// auditRow is one audit_log row of a queue action.
type auditRow struct {
	op  string // UPDATE or DELETE
	key string
	old json.RawMessage
	new map[string]any
}

func writeQueueAudit(ctx context.Context, tx pgx.Tx, actor string, rows []auditRow) error {
	if len(rows) == 0 {
		return nil
	}
	ops, keys, olds, news := make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows))
	for i, r := range rows {
		b, err := json.Marshal(r.new)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		ops[i], keys[i], olds[i], news[i] = r.op, r.key, string(r.old), string(b)
	}
	_, err := tx.Exec(ctx, `INSERT INTO audit_log (actor, operation, table_name, row_key, old, new)
SELECT coalesce(nullif($1, ''), session_user::text), a.op, 'queue_message', a.key, a.old::jsonb, a.new::jsonb
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS a (op, key, old, new)`, actor, ops, keys, olds, news)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// queueActionChunk is how many messages one action transaction covers.
const queueActionChunk = 200

// queueAction runs apply on the messages ids, locked, in transactions of at
// most chunk messages, and returns one result per id, in the order given
// (unknown ids: Found false). Duplicate ids are acted on once.
func (s *Store) queueAction(ctx context.Context, name string, ids []string, chunk int,
	apply func(ctx context.Context, tx pgx.Tx, msgs []*lockedMessage, res map[string]*QueueActionResult) ([]auditRow, error)) ([]QueueActionResult, error) {
	ids = dedupe(ids)
	res := make(map[string]*QueueActionResult, len(ids))
	for _, id := range ids {
		res[id] = &QueueActionResult{ID: id}
	}
	actor := ActorFrom(ctx)
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		err := s.WithTx(ctx, func(tx pgx.Tx) error {
			msgs, err := lockMessages(ctx, tx, part)
			if err != nil {
				return err
			}
			for _, m := range msgs {
				r := res[m.id]
				*r = QueueActionResult{ID: m.id, Node: m.node, Found: true, Busy: m.busy}
			}
			audit, err := apply(ctx, tx, msgs, res)
			if err != nil {
				return err
			}
			return writeQueueAudit(ctx, tx, actor, audit)
		})
		if err != nil {
			// Results of committed chunks stand; this chunk's are undone.
			for _, id := range part {
				res[id] = &QueueActionResult{ID: id}
			}
			return collectResults(ids, res), fmt.Errorf("queue %s: %w", name, err)
		}
	}
	return collectResults(ids, res), nil
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func collectResults(ids []string, res map[string]*QueueActionResult) []QueueActionResult {
	out := make([]QueueActionResult, len(ids))
	for i, id := range ids {
		out[i] = *res[id]
	}
	return out
}

// HoldMessages holds the messages ids (postsuper -h): no recipient of a held
// message is claimed. Recipients in delivering finish their attempt; if it
// defers them, they wait until the message is released. A message already
// held keeps its reason. reason "" is "held by <actor>".
func (s *Store) HoldMessages(ctx context.Context, ids []string, reason string) ([]QueueActionResult, error) {
	if reason == "" {
		reason = "held by " + actorOr(ctx)
	}
	return s.queueAction(ctx, "hold", ids, queueActionChunk, func(ctx context.Context, tx pgx.Tx, msgs []*lockedMessage, res map[string]*QueueActionResult) ([]auditRow, error) {
		var hold []string
		var audit []auditRow
		for _, m := range msgs {
			if m.held {
				res[m.id].Note = "already held: " + m.holdReason
				continue
			}
			hold = append(hold, m.id)
			res[m.id].Changed = 1
			audit = append(audit, auditRow{op: "UPDATE", key: m.id, old: m.old,
				new: map[string]any{"action": "hold", "held": true, "hold_reason": reason, "busy": m.busy}})
		}
		if len(hold) > 0 {
			if _, err := tx.Exec(ctx, "UPDATE queue_message SET held = true, hold_reason = $2 WHERE id = ANY ($1::text[])", hold, reason); err != nil {
				return nil, fmt.Errorf("hold: %w", err)
			}
		}
		return audit, nil
	})
}

// ReleaseMessages releases held messages (postsuper -H). Their waiting
// recipients keep their next attempt time (flush makes them due now); a
// pending delete is cancelled.
func (s *Store) ReleaseMessages(ctx context.Context, ids []string) ([]QueueActionResult, error) {
	return s.queueAction(ctx, "release", ids, queueActionChunk, func(ctx context.Context, tx pgx.Tx, msgs []*lockedMessage, res map[string]*QueueActionResult) ([]auditRow, error) {
		var rel []string
		var audit []auditRow
		for _, m := range msgs {
			if !m.held {
				res[m.id].Note = "not held"
				continue
			}
			rel = append(rel, m.id)
			res[m.id].Changed = 1
			audit = append(audit, auditRow{op: "UPDATE", key: m.id, old: m.old,
				new: map[string]any{"action": "release", "held": false}})
		}
		if len(rel) > 0 {
			if _, err := tx.Exec(ctx, "UPDATE queue_message SET held = false, hold_reason = NULL WHERE id = ANY ($1::text[])", rel); err != nil {
				return nil, fmt.Errorf("release: %w", err)
			}
		}
		return audit, nil
	})
}

// FlushMessages makes the waiting recipients (queued, deferred) of the
// messages ids due now (postqueue -f, -i); with domain, only the recipients
// of that domain (postqueue -s). Held messages are left alone (release
// them first). The caller wakes the queue managers of the nodes in the
// results (NotifyQueue), after this returns.
func (s *Store) FlushMessages(ctx context.Context, ids []string, domain string) ([]QueueActionResult, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	return s.queueAction(ctx, "flush", ids, queueActionChunk, func(ctx context.Context, tx pgx.Tx, msgs []*lockedMessage, res map[string]*QueueActionResult) ([]auditRow, error) {
		var due []int64
		count := map[string]int{}
		var audit []auditRow
		for _, m := range msgs {
			if m.held {
				res[m.id].Note = "held: release it first"
				continue
			}
			for _, r := range m.rcpts {
				if (r.Status == RcptQueued || r.Status == RcptDeferred) && (domain == "" || r.Domain == domain) {
					due = append(due, r.ID)
					count[m.id]++
				}
			}
		}
		if len(due) == 0 {
			return nil, nil
		}
		rows, err := tx.Query(ctx, `UPDATE queue_recipient SET next_attempt_at = now(), updated_at = now()
WHERE id = ANY ($1::bigint[]) AND next_attempt_at > now() RETURNING queue_id`, due)
		if err != nil {
			return nil, fmt.Errorf("flush: %w", err)
		}
		changed, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("flush: %w", err)
		}
		for _, qid := range changed {
			res[qid].Changed++
		}
		for _, m := range msgs {
			if res[m.id].Changed > 0 {
				audit = append(audit, auditRow{op: "UPDATE", key: m.id, old: m.old,
					new: map[string]any{"action": "flush", "domain": domain, "recipients": res[m.id].Changed, "busy": m.busy}})
			} else if count[m.id] > 0 {
				res[m.id].Note = "already due"
			}
		}
		return audit, nil
	})
}

// DeleteMessages deletes messages (postsuper -d): no DSN, no further
// attempt. A message none of whose recipients is busy leaves the queue
// tables at once (Deleted, with the SpoolKey to remove from its node's
// spool) and its accepted_log row is marked finished. A message with busy
// recipients is held with the reason "delete pending" and loses every
// other recipient; its busy recipients finish their attempt (a delivery in
// flight cannot be called back), after which the message finishes by
// itself or the next DeleteMessages removes it. No body is ever removed
// while a recipient may still read it.
func (s *Store) DeleteMessages(ctx context.Context, ids []string) ([]QueueActionResult, error) {
	actor := actorOr(ctx)
	return s.queueAction(ctx, "delete", ids, queueActionChunk, func(ctx context.Context, tx pgx.Tx, msgs []*lockedMessage, res map[string]*QueueActionResult) ([]auditRow, error) {
		var gone []string
		var pending []string
		var drop []int64
		var audit []auditRow
		for _, m := range msgs {
			r := res[m.id]
			if m.busy == 0 {
				gone = append(gone, m.id)
				r.Changed, r.Deleted, r.SpoolKey = 1, true, m.spoolKey
				audit = append(audit, auditRow{op: "DELETE", key: m.id, old: m.old,
					new: map[string]any{"action": "delete", "recipients": len(m.rcpts)}})
				continue
			}
			pending = append(pending, m.id)
			for _, rc := range m.rcpts {
				drop = append(drop, rc.ID)
			}
			r.Changed = len(m.rcpts)
			r.Note = "delete pending: the message is held and leaves the queue after the attempt in flight"
			audit = append(audit, auditRow{op: "UPDATE", key: m.id, old: m.old,
				new: map[string]any{"action": "delete", "pending": true, "busy": m.busy, "recipients_removed": len(m.rcpts)}})
		}
		if len(gone) > 0 {
			if _, err := tx.Exec(ctx, `WITH del AS (DELETE FROM queue_message WHERE id = ANY ($1::text[]) RETURNING id)
UPDATE accepted_log a SET finished_at = now() FROM del WHERE a.queue_id = del.id AND a.finished_at IS NULL`, gone); err != nil {
				return nil, fmt.Errorf("delete: %w", err)
			}
		}
		if len(pending) > 0 {
			if _, err := tx.Exec(ctx, "UPDATE queue_message SET held = true, hold_reason = $2 WHERE id = ANY ($1::text[])",
				pending, "delete pending (requested by "+actor+")"); err != nil {
				return nil, fmt.Errorf("delete: hold: %w", err)
			}
			if _, err := tx.Exec(ctx, "DELETE FROM queue_recipient WHERE id = ANY ($1::bigint[])", drop); err != nil {
				return nil, fmt.Errorf("delete: recipients: %w", err)
			}
		}
		return audit, nil
	})
}

// ExpireReply is the reason given to an expired recipient that had no
// reply yet.
const ExpireReply = "message administratively expired"

// ExpireMessages expires the waiting recipients (queued, deferred) of the
// messages ids (postsuper -e): each becomes expired, owes a failure DSN as
// the queue's policy says (never to the null sender unless the message is
// itself a DSN, never with NOTIFY without FAILURE), keeps its last reply as
// the diagnostic (or ExpireReply), and gets a delivery_log row with status
// expired. The queue manager sends the DSNs (its periodic sweep) and then
// finishes the message. Busy recipients finish their attempt first.
func (s *Store) ExpireMessages(ctx context.Context, ids []string) ([]QueueActionResult, error) {
	return s.queueAction(ctx, "expire", ids, queueActionChunk, func(ctx context.Context, tx pgx.Tx, msgs []*lockedMessage, res map[string]*QueueActionResult) ([]auditRow, error) {
		var exp []int64
		for _, m := range msgs {
			for _, r := range m.rcpts {
				if r.Status == RcptQueued || r.Status == RcptDeferred {
					exp = append(exp, r.ID)
				}
			}
		}
		if len(exp) == 0 {
			for _, m := range msgs {
				res[m.id].Note = "no waiting recipient"
			}
			return nil, nil
		}
		rows, err := tx.Query(ctx, `WITH p AS (
	SELECT r.id, CASE
	           WHEN m.sender = '' THEN m.kind = 'dsn'
	           WHEN coalesce(btrim(r.dsn_notify), '') = '' THEN true
	           ELSE 'FAILURE' = ANY (string_to_array(upper(replace(r.dsn_notify, ' ', '')), ','))
	       END AS owed
	FROM queue_recipient r JOIN queue_message m ON m.id = r.queue_id
	WHERE r.id = ANY ($1::bigint[]) AND r.status IN ('queued', 'deferred')
), x AS (
	UPDATE queue_recipient r
	SET status = 'expired',
	    dsn_pending = p.owed, dsn_action = CASE WHEN p.owed THEN 'failed' END,
	    last_dsn = CASE WHEN r.last_dsn ~ '^[245]\.[0-9]{1,3}\.[0-9]{1,3}$' THEN '5' || substr(r.last_dsn, 2) ELSE '5.4.7' END,
	    last_reply = CASE WHEN r.last_reply <> '' THEN r.last_reply ELSE $2 END,
	    last_relay = CASE WHEN r.last_relay <> '' THEN r.last_relay ELSE 'none' END,
	    updated_at = now()
	FROM p, queue_message m
	WHERE r.id = p.id AND m.id = r.queue_id
	RETURNING r.queue_id, m.node, m.sender, m.arrived_at, r.address, r.orig_address, r.domain, r.transport,
	          r.last_relay, r.last_dsn, r.last_reply
), log AS (
	INSERT INTO delivery_log (queue_id, node, sender, recipient, orig_recipient, domain, transport, relay,
		delay_seconds, dsn, status, reply)
	SELECT queue_id, node, sender, address, orig_address, domain, transport, last_relay,
		extract(epoch FROM now() - arrived_at), last_dsn, 'expired', last_reply
	FROM x
)
SELECT queue_id FROM x`, exp, ExpireReply)
		if err != nil {
			return nil, fmt.Errorf("expire: %w", err)
		}
		changed, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("expire: %w", err)
		}
		for _, qid := range changed {
			res[qid].Changed++
		}
		var audit []auditRow
		for _, m := range msgs {
			if n := res[m.id].Changed; n > 0 {
				audit = append(audit, auditRow{op: "UPDATE", key: m.id, old: m.old,
					new: map[string]any{"action": "expire", "recipients": n, "busy": m.busy}})
			} else {
				res[m.id].Note = "no waiting recipient"
			}
		}
		return audit, nil
	})
}

// RequeueResolver resolves an original recipient address (as given in RCPT
// TO) into its final recipients now (Address, Domain and Transport set);
// it is the expansion cleanup performs. An error means the resolution could
// not be made (the database is unreachable): the message is left as it is.
type RequeueResolver func(ctx context.Context, orig string) ([]QueueRecipient, error)

// RequeueMessages re-resolves the waiting recipients of the messages ids
// (postsuper -r): the recipients that came from one original address are
// replaced by that address's expansion now, with their transports
// recomputed, and are due at once. Per original address:
//
//   - if any of its recipients is busy, none of them changes (the attempt
//     in flight might deliver to one of them: no duplicate);
//   - an expanded address that already reached a final state (delivered,
//     bounced, expired) is not added again;
//   - a waiting recipient whose address is still in the expansion keeps
//     its row (attempts, DSN state), with the new transport and due now;
//   - a new address gets a new queued row with the original's DSN
//     parameters; a waiting recipient no longer in the expansion is
//     removed (the alias no longer leads there).
//
// The caller wakes the queue managers (NotifyQueue) afterwards.
func (s *Store) RequeueMessages(ctx context.Context, ids []string, resolve RequeueResolver) ([]QueueActionResult, error) {
	cache := map[string][]QueueRecipient{}
	return s.queueAction(ctx, "requeue", ids, 1, func(ctx context.Context, tx pgx.Tx, msgs []*lockedMessage, res map[string]*QueueActionResult) ([]auditRow, error) {
		var audit []auditRow
		for _, m := range msgs {
			a, err := requeueOne(ctx, tx, m, res[m.id], resolve, cache)
			if err != nil {
				return nil, err
			}
			if a != nil {
				audit = append(audit, *a)
			}
		}
		return audit, nil
	})
}

func requeueOne(ctx context.Context, tx pgx.Tx, m *lockedMessage, res *QueueActionResult, resolve RequeueResolver,
	cache map[string][]QueueRecipient) (*auditRow, error) {
	// Group the rows by original address; a group with a busy row is left.
	type group struct {
		rows []QueueEntryRecipient
	}
	groups := map[string]*group{}
	var order []string
	for _, r := range m.rcpts {
		g := groups[r.OrigAddress]
		if g == nil {
			g = &group{}
			groups[r.OrigAddress] = g
			order = append(order, r.OrigAddress)
		}
		g.rows = append(g.rows, r)
	}
	// Busy rows were not returned by lockMessages: find their groups.
	busyOrigs := map[string]bool{}
	if m.busy > 0 {
		rows, err := tx.Query(ctx, `SELECT DISTINCT orig_address FROM queue_recipient
WHERE queue_id = $1 AND NOT (id = ANY ($2::bigint[]))`, m.id, rcptIDs(m.rcpts))
		if err != nil {
			return nil, fmt.Errorf("requeue %s: %w", m.id, err)
		}
		origs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("requeue %s: %w", m.id, err)
		}
		for _, o := range origs {
			busyOrigs[o] = true
		}
	}
	var (
		update                 []int64
		updTransport, updDom   []string
		remove                 []int64
		addAddr, addDom, addTr []string
		addOrig                []string
		addNotify, addOrcpt    []*string
		added, removed         []string
	)
	for _, orig := range order {
		g := groups[orig]
		waiting := 0
		for _, r := range g.rows {
			if r.Status == RcptQueued || r.Status == RcptDeferred {
				waiting++
			}
		}
		if waiting == 0 {
			continue
		}
		if busyOrigs[orig] {
			res.Note = "recipients being delivered were left for after their attempt"
			continue
		}
		exp, ok := cache[orig]
		if !ok {
			var err error
			exp, err = resolve(ctx, orig)
			if err != nil {
				return nil, fmt.Errorf("requeue %s: resolve %s: %w", m.id, orig, err)
			}
			cache[orig] = exp
		}
		final := map[string]bool{}
		free := map[string][]QueueEntryRecipient{}
		for _, r := range g.rows {
			if r.Final() {
				final[strings.ToLower(r.Address)] = true
			} else {
				k := strings.ToLower(r.Address)
				free[k] = append(free[k], r)
			}
		}
		first := g.rows[0]
		for _, e := range exp {
			k := strings.ToLower(e.Address)
			if final[k] {
				continue
			}
			if rs := free[k]; len(rs) > 0 {
				update = append(update, rs[0].ID)
				updTransport = append(updTransport, e.Transport)
				updDom = append(updDom, e.Domain)
				free[k] = rs[1:]
				continue
			}
			final[k] = true // no second row for a repeated address
			addAddr, addDom, addTr, addOrig = append(addAddr, e.Address), append(addDom, e.Domain), append(addTr, e.Transport), append(addOrig, orig)
			addNotify, addOrcpt = append(addNotify, optional(first.DSNNotify)), append(addOrcpt, optional(first.DSNOrcpt))
			added = append(added, e.Address+" "+e.Transport)
		}
		for _, rs := range free {
			for _, r := range rs {
				remove = append(remove, r.ID)
				removed = append(removed, r.Address+" "+r.Transport)
			}
		}
	}
	if len(update) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE queue_recipient r SET transport = u.transport, domain = u.domain,
	next_attempt_at = now(), updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u (id, transport, domain) WHERE r.id = u.id`, update, updTransport, updDom); err != nil {
			return nil, fmt.Errorf("requeue %s: %w", m.id, MapError(err))
		}
	}
	if len(remove) > 0 {
		if _, err := tx.Exec(ctx, "DELETE FROM queue_recipient WHERE id = ANY ($1::bigint[])", remove); err != nil {
			return nil, fmt.Errorf("requeue %s: %w", m.id, err)
		}
	}
	if len(addAddr) > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport, dsn_notify, dsn_orcpt)
SELECT $1, a.address, a.orig, a.domain, a.transport, a.notify, a.orcpt
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS a (address, orig, domain, transport, notify, orcpt)`,
			m.id, addAddr, addOrig, addDom, addTr, addNotify, addOrcpt); err != nil {
			return nil, fmt.Errorf("requeue %s: %w", m.id, MapError(err))
		}
	}
	res.Changed = len(update) + len(remove) + len(addAddr)
	if res.Changed == 0 {
		if res.Note == "" {
			res.Note = "no waiting recipient"
		}
		return nil, nil
	}
	slices.Sort(added)
	slices.Sort(removed)
	return &auditRow{op: "UPDATE", key: m.id, old: m.old, new: map[string]any{"action": "requeue",
		"requeued": len(update), "added": added, "removed": removed, "busy": m.busy}}, nil
}

func rcptIDs(rs []QueueEntryRecipient) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func actorOr(ctx context.Context) string {
	if a := ActorFrom(ctx); a != "" {
		return a
	}
	return "an operator"
}

// DeliveryLogEntry is a row of delivery_log.
type DeliveryLogEntry struct {
	ID            int64     `json:"id"`
	At            time.Time `json:"time"`
	QueueID       string    `json:"queue_id"`
	Node          string    `json:"node"`
	Sender        string    `json:"sender"`
	Recipient     string    `json:"recipient"`
	OrigRecipient string    `json:"orig_recipient,omitempty"`
	Domain        string    `json:"domain"`
	Transport     string    `json:"transport"`
	Relay         string    `json:"relay"`
	DelaySeconds  float64   `json:"delay"`
	DSN           string    `json:"dsn"`
	Status        string    `json:"status"`
	Reply         string    `json:"reply"`
}

// AcceptedLogEntry is a row of accepted_log.
type AcceptedLogEntry struct {
	QueueID    string     `json:"queue_id"`
	At         time.Time  `json:"time"`
	Node       string     `json:"node"`
	Sender     string     `json:"sender"`
	Recipients int        `json:"nrcpt"`
	Size       int64      `json:"size"`
	MessageID  string     `json:"message_id,omitempty"`
	ClientAddr string     `json:"client_addr,omitempty"`
	Protocol   string     `json:"protocol,omitempty"`
	AuthUser   string     `json:"auth_user,omitempty"`
	LocalUser  string     `json:"local_user,omitempty"`
	TLS        string     `json:"tls,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// LogFilter selects log rows. Zero fields select everything.
type LogFilter struct {
	QueueID string
	// Address matches the sender, the recipient or the original
	// recipient: an address, a domain, or "<>", as QueueFilter.Sender.
	Address string
	// Domain is a recipient domain (delivery rows) or sender domain
	// (accepted rows whose message has no delivery row of that domain).
	Domain string
	Since  time.Time
	Until  time.Time
	// Status is a delivery_log status: sent, deferred, bounced, expired.
	Status string
	// AfterID keeps delivery rows with a larger id (following the log).
	AfterID int64
	Limit   int
}

// LogStatuses are the delivery_log statuses.
var LogStatuses = []string{"sent", "deferred", "bounced", "expired"}

// deliveryConds returns the conditions over delivery_log l selecting f;
// arg numbers the arguments.
func (f *LogFilter) deliveryConds(arg func(any) string) []string {
	var conds []string
	if f.QueueID != "" {
		conds = append(conds, "l.queue_id = "+arg(f.QueueID))
	}
	if f.Address != "" {
		conds = append(conds, "("+addressMatch("l.sender", f.Address, arg)+" OR "+addressMatch("l.recipient", f.Address, arg)+
			" OR "+addressMatch("l.orig_recipient", f.Address, arg)+")")
	}
	if f.Domain != "" {
		conds = append(conds, "l.domain = "+arg(strings.ToLower(strings.TrimSuffix(f.Domain, "."))))
	}
	if !f.Since.IsZero() {
		conds = append(conds, "l.at >= "+arg(f.Since))
	}
	if !f.Until.IsZero() {
		conds = append(conds, "l.at < "+arg(f.Until))
	}
	if f.Status != "" {
		conds = append(conds, "l.status = "+arg(f.Status))
	}
	if f.AfterID > 0 {
		conds = append(conds, "l.id > "+arg(f.AfterID))
	}
	if len(conds) == 0 {
		conds = append(conds, "true")
	}
	return conds
}

// argList numbers query arguments.
type argList struct{ args []any }

func (a *argList) add(v any) string {
	a.args = append(a.args, v)
	return fmt.Sprintf("$%d", len(a.args))
}

// DeliveryLog returns the delivery_log rows f selects, in time order (then
// id).
func (s *Store) DeliveryLog(ctx context.Context, f LogFilter) ([]DeliveryLogEntry, error) {
	if f.Status != "" && !slices.Contains(LogStatuses, f.Status) {
		return nil, &Error{Kind: ErrInvalid, Message: fmt.Sprintf("unknown log status %q (use %s)", f.Status, strings.Join(LogStatuses, ", "))}
	}
	var al argList
	where := strings.Join(f.deliveryConds(al.add), " AND ")
	args := al.args
	q := `SELECT l.id, l.at, l.queue_id, l.node, l.sender, l.recipient, l.orig_recipient, l.domain, l.transport, l.relay,
	l.delay_seconds, l.dsn, l.status, l.reply
FROM delivery_log l WHERE ` + where + ` ORDER BY l.at, l.id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("delivery log: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[DeliveryLogEntry])
	if err != nil {
		return nil, fmt.Errorf("delivery log: %w", err)
	}
	return out, nil
}

// AcceptedLog returns the accepted_log rows of the messages f selects, in
// time order: by queue id, by sender (Address), by sender domain (Domain),
// and the messages that have delivery_log rows f selects. Status filters
// out accepted rows whose message has no delivery row of that status.
func (s *Store) AcceptedLog(ctx context.Context, f LogFilter) ([]AcceptedLogEntry, error) {
	var al argList
	arg := al.add
	var conds []string
	if f.QueueID != "" {
		conds = append(conds, "a.queue_id = "+arg(f.QueueID))
	}
	if !f.Since.IsZero() {
		conds = append(conds, "(a.at >= "+arg(f.Since)+" OR a.finished_at >= "+arg(f.Since)+")")
	}
	if !f.Until.IsZero() {
		conds = append(conds, "a.at < "+arg(f.Until))
	}
	// The message must match the address, domain and status filters,
	// through its sender or through its delivery rows.
	if f.Address != "" || f.Domain != "" || f.Status != "" {
		df := LogFilter{Address: f.Address, Domain: f.Domain, Status: f.Status, QueueID: f.QueueID}
		dwhere := strings.Join(df.deliveryConds(arg), " AND ")
		alt := []string{"a.queue_id IN (SELECT l.queue_id FROM delivery_log l WHERE " + dwhere + ")"}
		if f.Status == "" {
			var sc []string
			if f.Address != "" {
				sc = append(sc, addressMatch("a.sender", f.Address, arg))
			}
			if f.Domain != "" {
				sc = append(sc, addressMatch("a.sender", f.Domain, arg))
			}
			alt = append(alt, "("+strings.Join(sc, " AND ")+")")
		}
		conds = append(conds, "("+strings.Join(alt, " OR ")+")")
	}
	where := "true"
	if len(conds) > 0 {
		where = strings.Join(conds, " AND ")
	}
	q := `SELECT a.queue_id, a.at, a.node, a.sender, a.recipients, a.size, a.message_id, a.client_addr, a.protocol,
	coalesce(a.auth_user, ''), coalesce(a.local_user, ''), a.tls, a.finished_at
FROM accepted_log a WHERE ` + where + ` ORDER BY a.at, a.queue_id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.pool.Query(ctx, q, al.args...)
	if err != nil {
		return nil, fmt.Errorf("accepted log: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[AcceptedLogEntry])
	if err != nil {
		return nil, fmt.Errorf("accepted log: %w", err)
	}
	return out, nil
}

// DatabaseNow returns the database's clock.
func (s *Store) DatabaseNow(ctx context.Context) (time.Time, error) {
	var t time.Time
	if err := s.pool.QueryRow(ctx, "SELECT now()").Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("database time: %w", err)
	}
	return t, nil
}
