package store

// The queue and the delivery log as the admin service shows them, scoped
// to an admin's domains in SQL: a domain admin sees the messages with at
// least one recipient in its domains, and of each message only the
// recipients in its domains; delivery_log rows by their recipient domain.
// The actions themselves are queueadmin.go's (HoldMessages, FlushMessages,
// …); QueueMessagesInScope tells the caller which of the messages it names
// a scope may act on before it calls them.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// AdminQueueFilter selects messages of the queue for a listing. The zero
// value lists every message.
type AdminQueueFilter struct {
	// Scope keeps the messages with a recipient in these domains and shows
	// only those recipients: nil is every domain, an empty non-nil slice
	// nothing (as ListOptions.Scope).
	Scope []string
	// Domain keeps the messages with a recipient (in scope) of this domain.
	Domain string
	// Search keeps the messages whose queue id or sender contains this
	// text, or that have a recipient in scope that does (case-insensitive).
	Search string
	// Status is "" (any), "held" (held messages), or a recipient state
	// (queued, delivering, deferred, delivered, bounced, expired) that a
	// recipient in scope is in; "active" is delivering.
	Status string
	// Limit is the page size (0: no limit); Offset skips that many
	// messages, newest first.
	Limit, Offset int
}

// adminQueueStatuses are the values AdminQueueFilter.Status accepts.
var adminQueueStatuses = []string{"held", "active", RcptQueued, RcptDelivering, RcptDeferred, RcptDelivered, RcptBounced, RcptExpired}

// where returns the WHERE clause over queue_message m and its arguments,
// numbered from $1.
func (f AdminQueueFilter) where() (string, []any, error) {
	var al argList
	arg := al.add
	// $1 is the scope: every recipient condition below names it.
	scope := arg(f.Scope)
	inScope := "(" + scope + "::text[] IS NULL OR r.domain = ANY (" + scope + "::text[]))"
	rc := []string{inScope}
	var conds []string
	switch f.Status {
	case "":
	case "held":
		conds = append(conds, "m.held")
	case "active":
		rc = append(rc, "r.status = 'delivering'")
	default:
		ok := false
		for _, s := range adminQueueStatuses {
			ok = ok || s == f.Status
		}
		if !ok {
			return "", nil, &Error{Kind: ErrInvalid, Message: fmt.Sprintf("unknown status %q (use %s)", f.Status, strings.Join(adminQueueStatuses, ", "))}
		}
		rc = append(rc, "r.status = "+arg(f.Status))
	}
	if f.Domain != "" {
		rc = append(rc, "r.domain = "+arg(strings.ToLower(strings.TrimSuffix(f.Domain, "."))))
	}
	conds = append(conds, "EXISTS (SELECT 1 FROM queue_recipient r WHERE r.queue_id = m.id AND "+strings.Join(rc, " AND ")+")")
	if f.Search != "" {
		p := arg("%" + escapeLike(f.Search) + "%")
		conds = append(conds, "(m.id ILIKE "+p+" OR m.sender ILIKE "+p+
			" OR EXISTS (SELECT 1 FROM queue_recipient r WHERE r.queue_id = m.id AND "+inScope+" AND r.address ILIKE "+p+"))")
	}
	return strings.Join(conds, " AND "), al.args, nil
}

// ListQueueIn returns one page of the messages f selects, newest first,
// each with its recipients in f.Scope only.
func (s *Store) ListQueueIn(ctx context.Context, f AdminQueueFilter) ([]*QueueEntry, error) {
	where, args, err := f.where()
	if err != nil {
		return nil, err
	}
	n := len(args)
	var limit *int
	if f.Limit > 0 {
		limit = &f.Limit
	}
	q := fmt.Sprintf(`SELECT %s FROM queue_message m WHERE %s ORDER BY m.arrived_at DESC, m.id DESC LIMIT $%d OFFSET $%d`,
		sqlQueueEntryColumns, where, n+1, n+2)
	rows, err := s.pool.Query(ctx, q, append(args, limit, max(f.Offset, 0))...)
	if err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	var out []*QueueEntry
	for rows.Next() {
		e := &QueueEntry{}
		if err := scanQueueEntry(rows, e); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list queue: %w", err)
		}
		out = append(out, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	ids := make([]string, len(out))
	for i, e := range out {
		ids[i] = e.ID
	}
	rc, err := queueRecipientsIn(ctx, s.pool, ids, f.Scope)
	if err != nil {
		return nil, fmt.Errorf("list queue recipients: %w", err)
	}
	for _, e := range out {
		e.Recipients = rc[e.ID]
	}
	return out, nil
}

// CountQueueIn counts what ListQueueIn lists, ignoring Limit and Offset.
func (s *Store) CountQueueIn(ctx context.Context, f AdminQueueFilter) (int64, error) {
	where, args, err := f.where()
	if err != nil {
		return 0, err
	}
	return s.count(ctx, "queue", "SELECT count(*) FROM queue_message m WHERE "+where, args...)
}

// QueueEntryIn returns the message id with its recipients in scope (nil:
// all); ErrNotFound when it is not in the queue or has no recipient in
// scope.
func (s *Store) QueueEntryIn(ctx context.Context, id string, scope []string) (*QueueEntry, error) {
	e := &QueueEntry{}
	err := scanQueueEntry(s.pool.QueryRow(ctx, "SELECT "+sqlQueueEntryColumns+` FROM queue_message m
WHERE m.id = $1 AND EXISTS (SELECT 1 FROM queue_recipient r
	WHERE r.queue_id = m.id AND ($2::text[] IS NULL OR r.domain = ANY ($2::text[])))`, id, scope), e)
	if err != nil {
		return nil, fmt.Errorf("queue message %s: %w", id, MapError(err))
	}
	rc, err := queueRecipientsIn(ctx, s.pool, []string{id}, scope)
	if err != nil {
		return nil, fmt.Errorf("queue message %s recipients: %w", id, err)
	}
	e.Recipients = rc[id]
	return e, nil
}

// queueRecipientsIn reads the recipients in scope (nil: all) of the
// messages ids, by message.
func queueRecipientsIn(ctx context.Context, q Querier, ids []string, scope []string) (map[string][]QueueEntryRecipient, error) {
	rows, err := q.Query(ctx, sqlQueueRecipientSelect+
		` AND ($2::text[] IS NULL OR r.domain = ANY ($2::text[])) ORDER BY r.queue_id, r.id`, ids, scope)
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

// QueueMessageScope is what a scope holds of one message in the queue.
type QueueMessageScope struct {
	ID   string
	Node string
	// Domains are the recipient domains of the message within the scope.
	Domains []string
	// Foreign reports a recipient outside the scope: an action on the
	// whole message (hold, release, delete) would touch another tenant's
	// mail.
	Foreign bool
}

// QueueMessagesInScope returns, of the messages ids, those with at least
// one recipient in scope (nil: every message in the queue), in queue id
// order. A message that is not in the queue or has no recipient in scope
// is left out, exactly alike. Recipients can change after this returns (a
// requeue); callers act on what it said at the time.
func (s *Store) QueueMessagesInScope(ctx context.Context, ids []string, scope []string) ([]QueueMessageScope, error) {
	rows, err := s.pool.Query(ctx, `
SELECT m.id, m.node,
       coalesce(array_agg(DISTINCT r.domain ORDER BY r.domain)
                FILTER (WHERE r.domain IS NOT NULL AND ($2::text[] IS NULL OR r.domain = ANY ($2::text[]))), '{}'),
       coalesce(bool_or($2::text[] IS NOT NULL AND NOT (r.domain = ANY ($2::text[]))), false)
FROM queue_message m LEFT JOIN queue_recipient r ON r.queue_id = m.id
WHERE m.id = ANY ($1::text[])
GROUP BY m.id, m.node
HAVING $2::text[] IS NULL OR coalesce(bool_or(r.domain = ANY ($2::text[])), false)
ORDER BY m.id`, ids, scope)
	if err != nil {
		return nil, fmt.Errorf("queue messages in scope: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (QueueMessageScope, error) {
		var q QueueMessageScope
		err := r.Scan(&q.ID, &q.Node, &q.Domains, &q.Foreign)
		return q, err
	})
	if err != nil {
		return nil, fmt.Errorf("queue messages in scope: %w", err)
	}
	return out, nil
}

// AdminLogFilter selects delivery_log rows for a listing.
type AdminLogFilter struct {
	// Scope keeps the rows whose recipient domain is one of these (nil:
	// every row; an empty non-nil slice: none).
	Scope []string
	// Domain keeps the rows of this recipient domain.
	Domain string
	// Search keeps the rows whose queue id, sender, recipient or original
	// recipient contains this text (case-insensitive).
	Search string
	// Status is a delivery_log status (sent, deferred, bounced, expired).
	Status string
	// Since and Until bound the time (Until exclusive); zero: unbounded.
	Since, Until time.Time
	// Limit is the page size (0: no limit); Offset skips that many rows,
	// newest first.
	Limit, Offset int
}

// ListDeliveryLogIn returns one page of the delivery_log rows f selects,
// newest first. It counts nothing: a log is paged by asking for one row
// more than is shown.
func (s *Store) ListDeliveryLogIn(ctx context.Context, f AdminLogFilter) ([]DeliveryLogEntry, error) {
	if f.Status != "" {
		ok := false
		for _, st := range LogStatuses {
			ok = ok || st == f.Status
		}
		if !ok {
			return nil, &Error{Kind: ErrInvalid, Message: fmt.Sprintf("unknown log status %q (use %s)", f.Status, strings.Join(LogStatuses, ", "))}
		}
	}
	var al argList
	arg := al.add
	scope := arg(f.Scope)
	conds := []string{"(" + scope + "::text[] IS NULL OR l.domain = ANY (" + scope + "::text[]))"}
	if f.Domain != "" {
		conds = append(conds, "l.domain = "+arg(strings.ToLower(strings.TrimSuffix(f.Domain, "."))))
	}
	if f.Search != "" {
		p := arg("%" + escapeLike(f.Search) + "%")
		conds = append(conds, "(l.queue_id ILIKE "+p+" OR l.sender ILIKE "+p+" OR l.recipient ILIKE "+p+" OR l.orig_recipient ILIKE "+p+")")
	}
	if f.Status != "" {
		conds = append(conds, "l.status = "+arg(f.Status))
	}
	if !f.Since.IsZero() {
		conds = append(conds, "l.at >= "+arg(f.Since))
	}
	if !f.Until.IsZero() {
		conds = append(conds, "l.at < "+arg(f.Until))
	}
	var limit *int
	if f.Limit > 0 {
		limit = &f.Limit
	}
	q := `SELECT l.id, l.at, l.queue_id, l.node, l.sender, l.recipient, l.orig_recipient, l.domain, l.transport, l.relay,
	l.delay_seconds, l.dsn, l.status, l.reply
FROM delivery_log l WHERE ` + strings.Join(conds, " AND ") + ` ORDER BY l.at DESC, l.id DESC LIMIT ` +
		arg(limit) + ` OFFSET ` + arg(max(f.Offset, 0))
	rows, err := s.pool.Query(ctx, q, al.args...)
	if err != nil {
		return nil, fmt.Errorf("delivery log: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[DeliveryLogEntry])
	if err != nil {
		return nil, fmt.Errorf("delivery log: %w", err)
	}
	return out, nil
}
