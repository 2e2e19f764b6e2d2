package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrCommitUnknown means that COMMIT was sent to the database but no answer
// came back (the connection broke, or timed out): the transaction may or may
// not have been committed. The caller must keep whatever the rows refer to
// (the spool file) and answer with a temporary error; the reconciler settles
// it later (DESIGN.md, "Unknown COMMIT outcome"). Any other error from
// Enqueue means that nothing was committed.
var ErrCommitUnknown = errors.New("commit outcome unknown")

// QueueMessage is a row of queue_message. Zero values of the optional
// columns (BodyType, Kind) take the column default; ArrivedAt is set by the
// database (the transaction's time).
type QueueMessage struct {
	ID         string // queue id, 8 to 32 ASCII letters and digits
	Node       string // the node whose spool holds the body
	SpoolKey   string
	Sender     string // "" is the null sender <>
	Size       int64
	ArrivedAt  time.Time // read-only: set by the database
	MessageID  string
	ClientAddr string
	ClientHelo string
	Protocol   string // ESMTP, ESMTPS, ESMTPSA, QMQP, local
	AuthUser   *string
	LocalUser  *string
	DSNRet     *string // RFC 3461 RET: FULL or HDRS
	DSNEnvID   *string // RFC 3461 ENVID
	BodyType   string  // 7BIT (""), 8BITMIME, BINARYMIME
	SMTPUTF8   bool
	Kind       string // mail (""), dsn, double-bounce, auto-reply
	Held       bool
	HoldReason *string
	// Prepend is header fields to send before the spool file's contents
	// (complete fields, CRLF line ends; "" for none): facteur's
	// Authentication-Results or DKIM-Signature, computed once the message
	// was read (migrations/00011_prepend.sql). Size includes them.
	Prepend string
}

// QueueRecipient is a row of queue_recipient as cleanup writes it; the
// delivery state columns take their defaults (queued, due now).
type QueueRecipient struct {
	Address     string  // final recipient after expansion
	OrigAddress string  // the RCPT TO this came from
	Domain      string  // Address's domain
	Transport   string  // next hop: maildir, smtp:[mx]:25, lmtp:unix:/p, error:5.x.x text, ...
	DSNNotify   *string // RFC 3461 NOTIFY (nil: default)
	DSNOrcpt    *string // RFC 3461 ORCPT as given
}

// AcceptedLog is a row of accepted_log, the envelope summary kept after the
// message leaves the queue tables. Enqueue fills the columns that repeat
// queue_message (queue id, node, sender, size, message id, client address,
// protocol, auth and local user) from the message when they are left zero,
// and Recipients from the number of recipient rows when it is 0.
type AcceptedLog struct {
	QueueID    string
	Node       string
	Sender     string
	Recipients int
	Size       int64
	MessageID  string
	ClientAddr string
	Protocol   string
	AuthUser   *string
	LocalUser  *string
	TLS        string // e.g. "TLSv1.3 TLS_AES_128_GCM_SHA256", "" without TLS
}

const (
	sqlInsertQueueMessage = `INSERT INTO queue_message (id, node, spool_key, sender, size, message_id,
	client_addr, client_helo, protocol, auth_user, local_user, dsn_ret, dsn_envid, body_type, smtputf8,
	kind, held, hold_reason, prepend)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, coalesce(nullif($14, ''), '7BIT'), $15,
	coalesce(nullif($16, ''), 'mail'), $17, $18, $19)`

	// All recipients in one statement, whatever their number: one
	// prepared statement, one round trip with the rest of the batch.
	sqlInsertQueueRecipients = `INSERT INTO queue_recipient (queue_id, address, orig_address, domain,
	transport, dsn_notify, dsn_orcpt)
SELECT $1, r.address, r.orig_address, r.domain, r.transport, r.dsn_notify, r.dsn_orcpt
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
	AS r (address, orig_address, domain, transport, dsn_notify, dsn_orcpt)`

	sqlInsertAcceptedLog = `INSERT INTO accepted_log (queue_id, node, sender, recipients, size,
	message_id, client_addr, protocol, auth_user, local_user, tls)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`

	// The same three for any number of messages (a group commit): one
	// statement each, the columns as arrays.
	sqlInsertQueueMessages = `INSERT INTO queue_message (id, node, spool_key, sender, size, message_id,
	client_addr, client_helo, protocol, auth_user, local_user, dsn_ret, dsn_envid, body_type, smtputf8,
	kind, held, hold_reason, prepend)
SELECT m.id, m.node, m.spool_key, m.sender, m.size, m.message_id, m.client_addr, m.client_helo, m.protocol,
	m.auth_user, m.local_user, m.dsn_ret, m.dsn_envid, coalesce(nullif(m.body_type, ''), '7BIT'), m.smtputf8,
	coalesce(nullif(m.kind, ''), 'mail'), m.held, m.hold_reason, m.prepend
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[],
	$9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::boolean[], $16::text[],
	$17::boolean[], $18::text[], $19::text[])
	AS m (id, node, spool_key, sender, size, message_id, client_addr, client_helo, protocol, auth_user,
	      local_user, dsn_ret, dsn_envid, body_type, smtputf8, kind, held, hold_reason, prepend)`

	sqlInsertQueueRecipientsOfMessages = `INSERT INTO queue_recipient (queue_id, address, orig_address, domain,
	transport, dsn_notify, dsn_orcpt)
SELECT r.queue_id, r.address, r.orig_address, r.domain, r.transport, r.dsn_notify, r.dsn_orcpt
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
	AS r (queue_id, address, orig_address, domain, transport, dsn_notify, dsn_orcpt)`

	sqlInsertAcceptedLogs = `INSERT INTO accepted_log (queue_id, node, sender, recipients, size,
	message_id, client_addr, protocol, auth_user, local_user, tls)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::bigint[], $6::text[], $7::text[],
	$8::text[], $9::text[], $10::text[], $11::text[])`
)

// Enqueue inserts a message, its recipients and its accepted_log row in one
// transaction. The rows must only be written once the body they refer to is
// durable in the spool.
//
// Concurrent calls share transactions (group commit, bench/PROFILING.md
// attempt 2): a call that finds no transaction of the group forming sends
// its own at once, and the calls that arrive while a transaction commits
// go together into the next one, one statement per table for all of them,
// and one COMMIT, so one WAL flush and one pooled connection for all. Each
// call still returns only after that COMMIT. At most enqueueLimits.running
// transactions of the group run at once.
//
// Each transaction takes two round trips: BEGIN and the three INSERTs go as
// one pipelined batch, then COMMIT on its own, so that the moment COMMIT is
// sent is known. An error that wraps ErrCommitUnknown means COMMIT was sent
// and its outcome is unknown (for every message of the transaction); any
// other error means nothing was committed (the database rolled the
// transaction back, or never saw it). When a shared transaction fails
// before or at COMMIT, each of its messages is tried again in a
// transaction of its own, so that one bad message fails alone.
//
// Once a call's message is in a transaction that is being sent, the call
// waits for its outcome even if ctx ends (it cannot be taken back); until
// then, ctx ending makes it return at once, nothing committed.
func (s *Store) Enqueue(ctx context.Context, msg QueueMessage, rcpts []QueueRecipient, acc AcceptedLog) error {
	if len(rcpts) == 0 {
		return &Error{Kind: ErrInvalid, Message: "enqueue " + msg.ID + ": no recipients"}
	}
	fillAccepted(&acc, &msg, len(rcpts))
	err := s.enq.do(ctx, enqueueLimits, "", len(rcpts), enqueueItem{msg: msg, rcpts: rcpts, acc: acc}, s.enqueueGroupTx)
	if err != nil && err == ctx.Err() { // never sent
		return fmt.Errorf("enqueue %s: %w", msg.ID, err)
	}
	return err
}

// enqueueLimits bound the group commit of Enqueue: two transactions at
// once, at most 100 messages and 5000 recipients in one.
var enqueueLimits = groupLimits{running: 2, calls: 100, weight: 5000}

// enqueueItem is one message of an Enqueue call.
type enqueueItem struct {
	msg   QueueMessage
	rcpts []QueueRecipient
	acc   AcceptedLog
}

// enqueueGroupTx commits one transaction of the group and answers its
// calls.
func (s *Store) enqueueGroupTx(batch []*groupCall[enqueueItem]) {
	if len(batch) == 1 {
		c := batch[0]
		c.done <- s.enqueueTx(c.ctx, batch)
		return
	}
	ctx, cancel := groupContext(batch, commitTimeout)
	err := s.enqueueTx(ctx, batch)
	cancel()
	switch {
	case err == nil:
		for _, c := range batch {
			c.done <- nil
		}
	case errors.Is(err, ErrCommitUnknown):
		for _, c := range batch {
			c.done <- fmt.Errorf("enqueue %s (with %d others): %w", c.item.msg.ID, len(batch)-1, err)
		}
	default:
		// Nothing was committed: each message on its own now, so that a
		// message that cannot be queued fails alone.
		var wg sync.WaitGroup
		for _, c := range batch {
			wg.Go(func() { c.done <- s.enqueueTx(c.ctx, []*groupCall[enqueueItem]{c}) })
		}
		wg.Wait()
	}
}

// enqueueTx inserts the rows of the messages of batch in one transaction.
func (s *Store) enqueueTx(ctx context.Context, batch []*groupCall[enqueueItem]) error {
	id := batch[0].item.msg.ID
	if len(batch) > 1 {
		id = fmt.Sprintf("%s and %d others", id, len(batch)-1)
	}
	n, nr := len(batch), 0
	for _, c := range batch {
		nr += len(c.item.rcpts)
	}
	var (
		ids, nodes, keys, senders, msgIDs, addrs, helos, protos = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		authUsers, localUsers, rets, envids, holdReasons        = make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
		bodyTypes, kinds, prepends                              = make([]string, n), make([]string, n), make([]string, n)
		sizes                                                   = make([]int64, n)
		utf8s, helds                                            = make([]bool, n), make([]bool, n)

		rQueue, rAddr, rOrig, rDomain, rTransport = make([]string, 0, nr), make([]string, 0, nr), make([]string, 0, nr), make([]string, 0, nr), make([]string, 0, nr)
		rNotify, rOrcpt                           = make([]*string, 0, nr), make([]*string, 0, nr)

		aQueue, aNode, aSender, aMsgID, aAddr, aProto, aTLS = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		aAuth, aLocal                                       = make([]*string, n), make([]*string, n)
		aRcpts                                              = make([]int32, n)
		aSize                                               = make([]int64, n)
	)
	for i, c := range batch {
		m, a := &c.item.msg, &c.item.acc
		ids[i], nodes[i], keys[i], senders[i], sizes[i], msgIDs[i] = m.ID, m.Node, m.SpoolKey, m.Sender, m.Size, m.MessageID
		addrs[i], helos[i], protos[i], authUsers[i], localUsers[i] = m.ClientAddr, m.ClientHelo, m.Protocol, m.AuthUser, m.LocalUser
		rets[i], envids[i], bodyTypes[i], utf8s[i], kinds[i] = m.DSNRet, m.DSNEnvID, m.BodyType, m.SMTPUTF8, m.Kind
		helds[i], holdReasons[i], prepends[i] = m.Held, m.HoldReason, m.Prepend
		for _, rc := range c.item.rcpts {
			rQueue, rAddr, rOrig = append(rQueue, m.ID), append(rAddr, rc.Address), append(rOrig, rc.OrigAddress)
			rDomain, rTransport = append(rDomain, rc.Domain), append(rTransport, rc.Transport)
			rNotify, rOrcpt = append(rNotify, rc.DSNNotify), append(rOrcpt, rc.DSNOrcpt)
		}
		aQueue[i], aNode[i], aSender[i], aRcpts[i], aSize[i], aMsgID[i] = a.QueueID, a.Node, a.Sender, int32(a.Recipients), a.Size, a.MessageID
		aAddr[i], aProto[i], aAuth[i], aLocal[i], aTLS[i] = a.ClientAddr, a.Protocol, a.AuthUser, a.LocalUser, a.TLS
	}

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("enqueue %s: acquire connection: %w", id, err)
	}
	// A connection left inside a transaction (an error below) is destroyed
	// by Release rather than returned to the pool.
	defer conn.Release()

	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(sqlInsertQueueMessages, ids, nodes, keys, senders, sizes, msgIDs, addrs, helos, protos, authUsers,
		localUsers, rets, envids, bodyTypes, utf8s, kinds, helds, holdReasons, prepends)
	b.Queue(sqlInsertQueueRecipientsOfMessages, rQueue, rAddr, rOrig, rDomain, rTransport, rNotify, rOrcpt)
	b.Queue(sqlInsertAcceptedLogs, aQueue, aNode, aSender, aRcpts, aSize, aMsgID, aAddr, aProto, aAuth, aLocal, aTLS)
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		// COMMIT was not sent: the transaction is rolled back, by the
		// ROLLBACK below or by the server when the connection is gone.
		if conn.Conn().PgConn().TxStatus() != 'I' && !conn.Conn().IsClosed() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = conn.Exec(rctx, "ROLLBACK")
			cancel()
		}
		return fmt.Errorf("enqueue %s: %w", id, MapError(err))
	}

	// The client may go away now, but a COMMIT cut short by a cancelled
	// context would only turn a clear outcome into an unknown one: let it
	// finish, within a bound.
	if conn.Conn().IsClosed() {
		return fmt.Errorf("enqueue %s: connection closed before commit", id)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if _, err := conn.Exec(cctx, "COMMIT"); err != nil {
		return commitError(id, err)
	}
	return nil
}

// commitTimeout bounds the wait for the answer to COMMIT.
const commitTimeout = 30 * time.Second

// commitError classifies an error from COMMIT. Only an ERROR the server sent
// in answer (a deferred constraint, a serialization failure) proves that the
// transaction was rolled back. Anything else leaves the outcome unknown: a
// broken connection, a timeout, or a FATAL, which can follow a commit that
// is already durable (a terminated wait for synchronous replication). pgx's
// SafeToRetry is no help here: once a read fails, the error it reports may
// be a "conn closed" that claims nothing was sent.
func commitError(id string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.SeverityUnlocalized == "ERROR" || pe.SeverityUnlocalized == "" && pe.Severity == "ERROR") {
		return fmt.Errorf("enqueue %s: commit: %w", id, MapError(err))
	}
	return fmt.Errorf("enqueue %s: commit: %w: %w", id, ErrCommitUnknown, err)
}

func fillAccepted(acc *AcceptedLog, msg *QueueMessage, nrcpt int) {
	if acc.QueueID == "" {
		acc.QueueID = msg.ID
	}
	if acc.Node == "" {
		acc.Node = msg.Node
	}
	if acc.Sender == "" {
		acc.Sender = msg.Sender
	}
	if acc.Recipients == 0 {
		acc.Recipients = nrcpt
	}
	if acc.Size == 0 {
		acc.Size = msg.Size
	}
	if acc.MessageID == "" {
		acc.MessageID = msg.MessageID
	}
	if acc.ClientAddr == "" {
		acc.ClientAddr = msg.ClientAddr
	}
	if acc.Protocol == "" {
		acc.Protocol = msg.Protocol
	}
	if acc.AuthUser == nil {
		acc.AuthUser = msg.AuthUser
	}
	if acc.LocalUser == nil {
		acc.LocalUser = msg.LocalUser
	}
}

// QueueMessageExists reports whether a queue_message row with this id exists.
func (s *Store) QueueMessageExists(ctx context.Context, id string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM queue_message WHERE id = $1)", id).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("queue message %s exists: %w", id, err)
	}
	return ok, nil
}

// SpoolKeysReferenced returns which of keys a committed queue_message row of
// node refers to (key → true; keys not referenced are absent). The
// reconciler removes spool files that no row references.
func (s *Store) SpoolKeysReferenced(ctx context.Context, node string, keys []string) (map[string]bool, error) {
	out := make(map[string]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx,
		"SELECT DISTINCT spool_key FROM queue_message WHERE node = $1 AND spool_key = ANY ($2::text[])", node, keys)
	if err != nil {
		return nil, fmt.Errorf("spool keys referenced: %w", err)
	}
	keysFound, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("spool keys referenced: %w", err)
	}
	for _, k := range keysFound {
		out[k] = true
	}
	return out, nil
}

// QueueSpoolRef is a message's id and the spool key of its body.
type QueueSpoolRef struct {
	ID       string
	SpoolKey string
}

// QueueSpoolRefs calls fn for each message of node that is not held and
// arrived before the given time, with its id and spool key, for the
// reconciler to check that the body exists. The rows are read in pages by
// id, so fn runs outside any query and may write.
func (s *Store) QueueSpoolRefs(ctx context.Context, node string, arrivedBefore time.Time, fn func(QueueSpoolRef) error) error {
	const page = 1000
	after := ""
	for {
		rows, err := s.pool.Query(ctx, `SELECT id, spool_key FROM queue_message
WHERE node = $1 AND NOT held AND arrived_at < $2 AND id > $3 ORDER BY id LIMIT $4`, node, arrivedBefore, after, page)
		if err != nil {
			return fmt.Errorf("list queue spool keys: %w", err)
		}
		refs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[QueueSpoolRef])
		if err != nil {
			return fmt.Errorf("list queue spool keys: %w", err)
		}
		for _, r := range refs {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(refs) < page {
			return nil
		}
		after = refs[len(refs)-1].ID
	}
}

// HoldMissingBody holds a message whose spool file is missing, with the
// reason, so that no delivery is tried and an operator can look at it. The
// row is never deleted. A message already held keeps its reason (an
// operator's hold is not overwritten); ErrNotFound if the message is gone.
func (s *Store) HoldMissingBody(ctx context.Context, id, reason string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE queue_message
SET held = true, hold_reason = CASE WHEN held THEN hold_reason ELSE $2 END
WHERE id = $1`, id, reason)
	if err != nil {
		return fmt.Errorf("hold %s: %w", id, MapError(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("hold %s: %w", id, ErrNotFound)
	}
	return nil
}

// QueueChannel is the NOTIFY channel that announces new mail to the queue
// managers; the payload is the node name.
const QueueChannel = "facteur_queue"

// NotifyQueue sends NOTIFY facteur_queue with the node as payload, outside
// any transaction (a NOTIFY inside one takes a database-wide lock until
// commit). It is a hint: queue managers also poll.
func (s *Store) NotifyQueue(ctx context.Context, node string) error {
	if _, err := s.pool.Exec(ctx, "SELECT pg_notify($1, $2)", QueueChannel, node); err != nil {
		return fmt.Errorf("notify queue: %w", err)
	}
	return nil
}
