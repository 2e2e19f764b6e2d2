// Package cleanup is the only way into the queue (Postfix's cleanup(8)):
// smtpd, pickup and the DSN generator hand it a message, and it answers with a
// queue id only once the message is durably queued.
//
// Enqueue expands every envelope recipient through lookups into final
// recipients with their next hops, streams the message into a spool file
// while editing its header block (facteur's Received: first, Return-Path:
// removed, Message-ID: and Date: added for submitted mail), enforces the size
// limit and the hop count, then, in this order (DESIGN.md, "Durability
// rules"): fsync the file, rename it into place, fsync the directory, insert
// queue_message, queue_recipient and accepted_log in one transaction, commit,
// wake the queue manager. A failure before COMMIT is sent leaves nothing: the
// spool file is removed. A failure after COMMIT was sent, when its outcome is
// unknown, keeps the file and still answers 451; the reconciler (Reconcile)
// settles such cases later, on every node, by removing old spool files that
// no committed row references and holding rows whose file is missing.
//
// The body is never parsed as MIME: only the header block is read, line by
// line, and the rest is copied as it is. Authentication-Results fields that
// claim this host (Options.Hostname is the authserv-id) and
// X-Facteur-Quarantine fields are removed from every message (RFC 8601 5).
//
// A Message may carry a Check (inbound: SPF, DKIM and DMARC; submitted mail:
// DKIM signing): it reads the message as it is spooled, through a tee, and
// returns header fields to prepend to it — known only once the whole
// message has been read, when the spool file already starts with
// Received:. They are kept in queue_message.prepend, and delivery sends them
// first (mta/deliver, Message.Open), so the message is written once.
//
// A Message may also carry a Filter (smtpd's milters), which runs once the
// message is complete in its temp file, before the commit, and reads it back
// from there (nothing is held in memory). It may discard the message, queue
// it held, add header fields (to the prepend: still one write), change the
// envelope (the recipients are expanded again) or rewrite the message (a
// header field changed or deleted, the body replaced): only then is the
// message written a second time, to a new temp file committed instead of
// the first.
//
// SECURITY: cleanup is not exposed to the network itself, but everything it
// reads comes from untrusted clients through smtpd or pickup: the message,
// the HELO name, the AUTH identity, the envelope addresses. Values placed in
// the Received: header are cleaned (no CR, LF or other control character,
// no comment or address delimiter, bounded length) so that no client can add
// a header field, and the message's own line ends are checked: a bare CR or
// LF is refused (550 5.5.2) and never written to the spool. Memory use is
// bounded whatever the input (a few buffers per message, one header field
// name at a time). It writes only spool files through store/spool (keys are
// queue ids it makes itself) and queue rows through store.
package cleanup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
)

// Defaults of Options.
const (
	DefaultMaxMessageBytes = 50 << 20
	DefaultMaxHops         = 50
	DefaultNotifyInterval  = 20 * time.Millisecond
	DefaultDBTimeout       = 30 * time.Second
	DefaultReconcileAge    = time.Hour
	DefaultMaxReceiveTime  = 2 * time.Hour
)

// Options configure a Cleanup. Zero values take the defaults.
type Options struct {
	// Hostname is this host's name, in Received: and in the Message-ID:
	// cleanup adds, and the authserv-id whose Authentication-Results
	// fields cleanup removes from every message (smtpd adds its own under
	// the same name).
	Hostname string
	// Node names this node: its spool's files are referenced by queue rows
	// carrying this name.
	Node string
	// MaxMessageBytes is the largest message accepted (50 MiB). A local
	// recipient domain's max_message_bytes lowers it for its messages.
	MaxMessageBytes int64
	// MaxHops is the largest number of Received: fields a message may carry
	// (50); more is a mail loop: 554 5.4.6.
	MaxHops int
	// Wake, if set, is called after each commit: the in-process queue
	// manager's wake-up. It must not block.
	Wake func()
	// NotifyQueue sends NOTIFY facteur_queue (payload: Node) after commits,
	// outside the transaction and at most once per NotifyInterval, for queue
	// managers in other processes.
	NotifyQueue    bool
	NotifyInterval time.Duration // 20 ms
	// DBTimeout bounds the enqueue transaction before COMMIT (30 s);
	// COMMIT itself has its own bound of 30 s in the store. Together they
	// bound how long a committed spool file can stay unreferenced by a
	// live enqueue, so the reconciler's age must exceed them.
	DBTimeout time.Duration
	// ReconcileAge is the age past which RunReconciler treats a spool file
	// as settled (1 h); never less than MinReconcileAge.
	ReconcileAge time.Duration
	// MaxReceiveTime is the longest a message may take to arrive (2 h): the
	// reconciler removes temp files older than this (or than its age, if
	// larger), left by a crash.
	MaxReceiveTime time.Duration
	// Metrics, if set, counts each message queued and its size
	// (internal/metrics' *Metrics).
	Metrics Metrics
}

// Metrics receives a count per message queued, after its commit.
type Metrics interface {
	Accepted(size int64)
}

// Client describes where a message came from, for Received:, the queue row
// and the log.
type Client struct {
	Addr      string // client IP address; "" for local submission (pickup)
	Name      string // the client's verified reverse DNS name; "" is "unknown"
	Helo      string // HELO/EHLO argument as the client sent it
	Protocol  string // ESMTP, ESMTPS, ESMTPSA, QMQP, local
	TLS       string // e.g. "TLSv1.3 TLS_AES_128_GCM_SHA256"; "" without TLS
	AuthUser  string // the SASL identity, "" if none
	LocalUser string // the local user of a pickup submission, "" if none
	// Submission asks for Message-ID: and Date: when the message has none
	// (submitted mail, RFC 6409 8.2 and 8.3). Local submission (Protocol
	// "local") gets them too, as Postfix's pickup does.
	Submission bool
}

// Message is what to enqueue besides the body.
type Message struct {
	Envelope envelope.Envelope
	Client   Client
	// ReceivedFor is the address for the "for" clause of Received:; when
	// "", the one envelope recipient if there is exactly one (as Postfix).
	ReceivedFor string
	// Kind is the queue_message kind: "" (mail), "dsn", "double-bounce",
	// "auto-reply", so that a failed notification is not answered with
	// another.
	Kind string
	// Check, if set, reads the message as it is queued (facteur's
	// Received: first, the header edits done, lines ending in CRLF) while
	// Enqueue spools it, in its own goroutine, and returns header fields to
	// prepend to it: complete fields, each line ending in CRLF, or "". An
	// error refuses the message and nothing is queued: a Reply (errors.As)
	// is answered as it is (550 5.7.1 for a DMARC reject, 553 5.7.1 for a
	// From: the user may not use), anything else with 451 4.3.0. Check may
	// stop reading early; it is not called for a message refused before
	// its end (size, hops, bare line ends).
	Check func(ctx context.Context, msg io.Reader) (prepend string, err error)
	// Filter, if set, runs once the whole message is in its spool temp
	// file and Check has answered, before the file is committed: smtpd's
	// milters. It reads the spooled message (Spooled) and decides (nil: no
	// change; see Filtered): discard, hold, new prepended fields, a
	// rewritten message, a new envelope. An error refuses the message as a
	// Check's does. It is not called for a message refused before
	// (size, hops, bare line ends, Check).
	Filter func(ctx context.Context, msg *Spooled) (*Filtered, error)
}

// Cleanup enqueues messages. It is safe for concurrent use.
type Cleanup struct {
	st   *store.Store
	sp   *spool.Spool
	res  *lookups.Resolver
	opts Options
	log  *slog.Logger

	ids     idGen
	notify  notifier
	readers sync.Pool // *bufio.Reader
}

// New returns a Cleanup writing bodies to sp and rows to st, expanding
// recipients with res.
func New(st *store.Store, sp *spool.Spool, res *lookups.Resolver, opts Options, log *slog.Logger) *Cleanup {
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.MaxHops <= 0 {
		opts.MaxHops = DefaultMaxHops
	}
	if opts.NotifyInterval <= 0 {
		opts.NotifyInterval = DefaultNotifyInterval
	}
	if opts.DBTimeout <= 0 {
		opts.DBTimeout = DefaultDBTimeout
	}
	if opts.ReconcileAge <= 0 {
		opts.ReconcileAge = DefaultReconcileAge
	}
	if opts.MaxReceiveTime <= 0 {
		opts.MaxReceiveTime = DefaultMaxReceiveTime
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cleanup{st: st, sp: sp, res: res, opts: opts, log: log}
	c.notify = notifier{st: st, node: opts.Node, interval: opts.NotifyInterval, log: log}
	c.readers.New = func() any { return bufio.NewReaderSize(nil, readBufSize) }
	return c
}

const readBufSize = 64 << 10

// NewQueueID returns a new queue id: 12 characters of [0-9A-Za-z], a
// time-ordered prefix and a random suffix (see QueueIDTime).
func (c *Cleanup) NewQueueID() string { return c.ids.next(time.Now()) }

// Enqueue streams body (the message as received: CRLF lines, dot-unstuffed)
// into the spool and queues it for every final recipient of m's envelope. It
// returns the queue id only after the rows are committed. Errors carry an
// envelope Reply (errors.As; envelope.Funnel keeps it): 451 4.3.0 when the
// database or a lookup fails, 452 4.3.1 when the spool cannot be written,
// 552 5.3.4 over the size limit, 554 5.4.6 past the hop limit, 550 5.5.2 for
// a bare CR or LF, 550 5.1.1 when no recipient remains after expansion.
// Except after a bare CR or LF, body is read to its end whatever happens, so
// that the SMTP session stays in step with the client.
func (c *Cleanup) Enqueue(ctx context.Context, m *Message, body io.Reader) (queueID string, err error) {
	id := c.NewQueueID()
	log := c.log.With("queue_id", id)
	drain := func() {
		if _, derr := io.Copy(io.Discard, body); derr != nil {
			log.Debug("drain message", "err", derr)
		}
	}

	rcpts, limit, err := c.expand(ctx, log, m)
	if err != nil {
		drain()
		return "", err
	}

	w, err := c.sp.Create(ctx, id)
	if err != nil {
		drain()
		log.Error("create spool file", "err", err)
		return "", fmt.Errorf("%w: %w", envelope.StorageFull(), err)
	}
	defer w.Abort() // removes the temp file unless committed

	rcptFor := m.ReceivedFor
	if rcptFor == "" && len(m.Envelope.Recipients) == 1 {
		rcptFor = m.Envelope.Recipients[0].Address
	}
	now := time.Now()
	var out io.Writer = w
	var chk *checkRun
	if m.Check != nil {
		chk = startCheck(ctx, m.Check)
		defer chk.abort() // ends the check's input unless finished
		out = teeWriter{w: w, chk: chk}
	}
	if _, err := io.WriteString(out, receivedHeader(c.opts.Hostname, id, &m.Client, rcptFor, m.Envelope.SMTPUTF8, now)); err != nil {
		drain()
		log.Error("write spool file", "err", err)
		return "", fmt.Errorf("%w: %w", envelope.StorageFull(), err)
	}
	params := copyParams{limit: limit, maxHops: c.opts.MaxHops, authservID: c.opts.Hostname}
	if m.Client.Submission || strings.EqualFold(m.Client.Protocol, "local") {
		params.messageID = func() string { return "Message-ID: <" + id + "@" + clean(c.opts.Hostname, 255, false, false) + ">\r\n" }
		params.date = func() string { return "Date: " + now.Format(rfc5322Date) + "\r\n" }
	}
	br := c.readers.Get().(*bufio.Reader)
	br.Reset(body)
	cres, err := copyMessage(br, out, params)
	if err != nil {
		_ = w.Abort() // stop writing now; nothing of it is kept
		var re *readError
		var we *writeError
		switch {
		case errors.Is(err, errBareCR), errors.Is(err, errBareLF):
			// RFC 5321 2.3.8: no bare CR or LF in SMTP data. The session
			// is closed after this reply: do not read on.
			c.putReader(br)
			log.Warn("message rejected", "reason", err.Error(), "client", m.Client.Addr)
			return "", fmt.Errorf("%w: %w", envelope.BareLineEnding(), err)
		case errors.As(err, &re):
			c.putReader(br)
			log.Info("message not received", "err", err, "client", m.Client.Addr)
			return "", err
		}
		// Read to the end, so that the reply comes after the message.
		if _, derr := io.Copy(io.Discard, br); derr != nil {
			c.putReader(br)
			log.Info("message not received", "err", derr, "client", m.Client.Addr)
			return "", &readError{derr}
		}
		c.putReader(br)
		switch {
		case errors.Is(err, errTooBig):
			log.Info("message rejected", "reason", "size limit", "limit", limit, "size", cres.size, "client", m.Client.Addr)
			return "", fmt.Errorf("%w: %w", envelope.MessageTooBig(), err)
		case errors.Is(err, errTooManyHops):
			log.Info("message rejected", "reason", "too many hops", "received", cres.received, "client", m.Client.Addr)
			return "", fmt.Errorf("%w: %w", envelope.TooManyHops(), err)
		case errors.As(err, &we):
			log.Error("write spool file", "err", err)
			return "", fmt.Errorf("%w: %w", envelope.StorageFull(), err)
		}
		log.Error("copy message", "err", err)
		return "", fmt.Errorf("%w: %w", envelope.InternalError(id), err)
	}
	c.putReader(br)
	if cres.forged > 0 {
		log.Info("forged Authentication-Results removed", "fields", cres.forged, "client", m.Client.Addr)
	}

	prepend := ""
	if chk != nil {
		prepend, err = chk.finish()
		if err == nil {
			err = validPrepend(prepend)
		}
		if err != nil {
			_ = w.Abort()
			var rep envelope.Reply
			if errors.As(err, &rep) {
				log.Info("message rejected", "reply", rep.String(), "client", m.Client.Addr)
				return "", err
			}
			log.Error("message check failed", "err", err)
			return "", fmt.Errorf("%w: %w", envelope.InternalError(id), err)
		}
	}

	hold := ""
	if m.Filter != nil {
		fo, err := c.runFilter(ctx, log, id, m, w, prepend)
		if err != nil {
			_ = w.Abort()
			if errors.Is(err, ErrDiscarded) {
				return id, err
			}
			return "", err
		}
		if fo.w != nil {
			defer fo.w.Abort() // removes the rewritten temp file unless committed
			_ = w.Abort()
			w = fo.w
		}
		m, prepend, hold = fo.m, fo.prepend, fo.hold
		if fo.rcpts != nil {
			rcpts = fo.rcpts
		}
	}

	// Durable body first: fsync, rename, fsync the directory.
	if err := w.Commit(); err != nil {
		log.Error("commit spool file", "err", err)
		if errors.Is(err, spool.ErrExists) {
			return "", fmt.Errorf("%w: %w", envelope.InternalError(id), err)
		}
		return "", fmt.Errorf("%w: %w", envelope.StorageFull(), err)
	}

	qm, acc := c.rows(id, m, w.Size()+int64(len(prepend)), cres.messageID)
	qm.Prepend = prepend
	if hold != "" {
		qm.Held, qm.HoldReason = true, optText(hold)
		log.Info("message held", "reason", hold)
	}
	dctx, cancel := context.WithTimeout(ctx, c.opts.DBTimeout)
	err = c.st.Enqueue(dctx, qm, rcpts, acc)
	cancel()
	if err != nil {
		if errors.Is(err, store.ErrCommitUnknown) {
			// The rows may exist: keep the body they would refer to. The
			// reconciler removes it later if they do not.
			log.Error("enqueue outcome unknown; spool file kept for the reconciler", "err", err)
			return "", fmt.Errorf("%w: %w", envelope.InternalError(id), err)
		}
		log.Error("enqueue failed; spool file removed", "err", err)
		if rerr := c.sp.Remove(id); rerr != nil {
			log.Error("remove spool file", "err", rerr)
		}
		return "", fmt.Errorf("%w: %w", envelope.InternalError(id), err)
	}

	if c.opts.Wake != nil {
		c.opts.Wake()
	}
	if c.opts.NotifyQueue {
		c.notify.kick()
	}
	c.logAccepted(log, id, m, qm, len(rcpts))
	if c.opts.Metrics != nil {
		c.opts.Metrics.Accepted(qm.Size)
	}
	return id, nil
}

func (c *Cleanup) putReader(br *bufio.Reader) {
	br.Reset(nil)
	c.readers.Put(br)
}

func (c *Cleanup) logAccepted(log *slog.Logger, id string, m *Message, qm store.QueueMessage, nrcpt int) {
	client := m.Client.Addr
	if client != "" {
		name := m.Client.Name
		if name == "" {
			name = "unknown"
		}
		client = name + "[" + client + "]"
	} else {
		client = "local"
	}
	attrs := []any{
		"from", qm.Sender, "size", qm.Size, "nrcpt", nrcpt, "client", client,
		"helo", m.Client.Helo, "protocol", m.Client.Protocol, "tls", m.Client.TLS,
		"auth_user", m.Client.AuthUser, "message_id", qm.MessageID,
	}
	if m.Client.LocalUser != "" {
		attrs = append(attrs, "local_user", m.Client.LocalUser)
	}
	log.Info(fmt.Sprintf("%s: from=<%s>, size=%d, nrcpt=%d", id, qm.Sender, qm.Size, nrcpt), attrs...)
}

// rows builds the queue_message and accepted_log rows.
func (c *Cleanup) rows(id string, m *Message, size int64, messageID string) (store.QueueMessage, store.AcceptedLog) {
	env := &m.Envelope
	qm := store.QueueMessage{
		ID:         id,
		Node:       c.opts.Node,
		SpoolKey:   id,
		Sender:     dbText(env.Sender, 1000),
		Size:       size,
		MessageID:  dbText(messageID, 1000),
		ClientAddr: dbText(m.Client.Addr, 100),
		ClientHelo: dbText(m.Client.Helo, 255),
		Protocol:   dbText(m.Client.Protocol, 32),
		AuthUser:   optText(m.Client.AuthUser),
		LocalUser:  optText(m.Client.LocalUser),
		DSNRet:     optText(strings.ToUpper(env.DSNRet)),
		DSNEnvID:   optText(env.DSNEnvID),
		BodyType:   strings.ToUpper(env.BodyType),
		SMTPUTF8:   env.SMTPUTF8,
		Kind:       m.Kind,
	}
	return qm, store.AcceptedLog{TLS: dbText(m.Client.TLS, 200)}
}

// dbText makes a client-supplied string storable in a PostgreSQL text
// column: valid UTF-8, no NUL, at most max bytes.
func dbText(s string, max int) string {
	s = strings.ToValidUTF8(s, "?")
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "?")
	}
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return s
}

func optText(s string) *string {
	if s == "" {
		return nil
	}
	t := dbText(s, 1000)
	return &t
}

// Transports given to recipients whose expansion failed for good, so that the
// queue manager bounces them with a DSN (Postfix does the same: a forwarding
// loop is a bounce, not a rejection of the whole message).
const (
	transportLoop    = "error:5.4.6 mail forwarding loop"
	transportTooMany = "error:5.2.4 alias expansion gives too many recipients"
	transportBadAddr = "error:5.1.3 bad recipient address syntax"
)

// expand resolves every envelope recipient into final recipients with their
// next hops, and computes the size limit of the message: the smallest of
// Options.MaxMessageBytes and the limits of the recipients' domains.
//
//   - A temporary lookup error fails the whole message: 451 4.3.0.
//   - A loop, a chain too deep or too many recipients (lookups.Permanent)
//     queues that recipient on an error transport, so it bounces with a DSN
//     while the others are delivered.
//   - An address of one of our domains that resolves to nothing (smtpd
//     accepted it, but the data changed since) is logged and dropped; if no
//     recipient remains the message gets 550 5.1.1.
//   - Final recipients that repeat (same address and transport) are kept
//     once, with the DSN parameters of the first envelope recipient that led
//     to them.
func (c *Cleanup) expand(ctx context.Context, log *slog.Logger, m *Message) ([]store.QueueRecipient, int64, error) {
	limit := c.opts.MaxMessageBytes
	env := &m.Envelope
	out := make([]store.QueueRecipient, 0, len(env.Recipients))
	type key struct{ addr, transport string }
	seen := make(map[key]bool, len(env.Recipients))
	dropped := ""
	for _, r := range env.Recipients {
		orig := dbText(r.Original(), 1000)
		var notify *string
		if len(r.DSNNotify) > 0 {
			notify = optText(strings.ToUpper(strings.Join(r.DSNNotify, ",")))
		}
		orcpt := optText(r.DSNORcpt)
		add := func(addr, domain, transport string) {
			k := key{addr, transport}
			if seen[k] {
				return
			}
			seen[k] = true
			out = append(out, store.QueueRecipient{
				Address: dbText(addr, 1000), OrigAddress: orig, Domain: dbText(domain, 255),
				Transport: transport, DSNNotify: notify, DSNOrcpt: orcpt,
			})
		}

		res, found, err := c.res.Resolve(ctx, r.Address)
		if err != nil {
			if !lookups.Permanent(err) {
				log.Warn("recipient lookup failed", "rcpt", r.Address, "err", err)
				return nil, 0, fmt.Errorf("%w: resolve %s: %w", envelope.LookupFailed(), r.Address, err)
			}
			transport := transportLoop
			switch {
			case errors.Is(err, lookups.ErrTooMany):
				transport = transportTooMany
			case errors.Is(err, lookups.ErrBadAddress):
				transport = transportBadAddr
			}
			log.Warn("recipient expansion failed; it will bounce", "rcpt", r.Address, "err", err, "transport", transport)
			add(strings.ToLower(r.Address), domainOf(r.Address), transport)
			continue
		}
		if !found && res.Domain != lookups.DomainRemote {
			log.Warn("recipient unknown now; dropped", "rcpt", r.Address, "domain_class", res.Domain.String())
			dropped = r.Address
			continue
		}
		// The domain's limit applies to the whole message (RFC 1870 6:
		// one size for the transaction).
		if res.MaxMessageBytes > 0 && res.MaxMessageBytes < limit {
			limit = res.MaxMessageBytes
		}
		for _, fr := range res.Recipients {
			dom := domainOf(fr.Address)
			if dom == "" {
				dom = res.DomainName // commands, files: the domain they came from
			}
			add(fr.Address, dom, fr.Transport)
		}
	}
	if len(out) == 0 {
		if dropped != "" {
			return nil, 0, fmt.Errorf("%w: no recipient left after expansion", envelope.UnknownUser(dropped))
		}
		return nil, 0, fmt.Errorf("%w: no recipients", envelope.UnknownUser(""))
	}
	return out, limit, nil
}

// domainOf returns the lower-cased domain of an address ("" if none).
func domainOf(addr string) string {
	if strings.HasPrefix(addr, "|") || strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, ":") {
		return ""
	}
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	d := strings.ToLower(addr[i+1:])
	if strings.HasPrefix(d, "[") {
		return d // address literal
	}
	return strings.TrimSuffix(d, ".")
}
