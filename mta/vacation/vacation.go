// Package vacation sends the automatic replies of mailboxes on vacation
// (RFC 3834), natively at delivery time: after a message is finally
// delivered into a virtual mailbox (by the Maildir or the LMTP agent), the
// queue manager calls Responder.Delivered, which answers the message's
// envelope sender when the mailbox has an active vacation and every rule of
// RFC 3834 allows it. No alias is rewritten (PostfixAdmin's vacation.pl
// adds a copy to a vacation domain, and stale aliases stay behind when it
// fails); the vacation table is the whole state, with vacation_notified
// recording whom each mailbox answered, so that a sender gets at most one
// reply per interval, even from deliveries racing on several workers.
//
// A reply goes, through the Submitter (cleanup), to the envelope sender
// with the null reverse-path (MAIL FROM:<>, RFC 3834 3.3), so that nothing
// answers it back, and is queued with kind "auto-reply".
//
// SECURITY: the package is not exposed to the network, but everything it
// reads of a message comes from untrusted senders: the envelope sender and
// the header block (never the body, and at most Options.MaxHeaderBytes of
// it). A reply can be made to go to any address a sender puts in MAIL FROM,
// so the rules below keep it to one short message per sender per interval,
// and none to lists, mailers and other automatic mail. Values copied into
// the reply (the original subject, msg-ids, the recipient address) are
// decoded, checked and cleaned of control characters, so no sender can add
// a header field to it. It reads the vacation rows and writes
// vacation_notified through the store, and writes nothing else.
package vacation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"strings"
	"time"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
)

// VacationStore is what the responder needs of the database; *store.Store
// is one.
type VacationStore interface {
	// LookupVacation returns the mailbox with the canonical address
	// mailbox (Mailbox "" if none), its vacation, its own addresses and
	// the recipient_delimiter setting, in one round trip.
	LookupVacation(ctx context.Context, mailbox string) (store.VacationTarget, error)
	// NoteVacationReply records that mailbox answers sender at at, unless
	// it did within interval before; it reports whether it recorded, and
	// is atomic: of racing calls for one sender, one records.
	NoteVacationReply(ctx context.Context, mailbox, sender string, at time.Time, interval time.Duration) (bool, error)
	// ForgetVacationReply removes the record made at at, when the reply
	// could not be queued.
	ForgetVacationReply(ctx context.Context, mailbox, sender string, at time.Time) error
}

// Submitter queues a reply as cleanup does any message: it returns the
// queue id once the reply is durably queued. *cleanup.Cleanup is one.
type Submitter interface {
	Enqueue(ctx context.Context, m *cleanup.Message, body io.Reader) (queueID string, err error)
}

// SubmitterFunc adapts a function to the Submitter interface.
type SubmitterFunc func(ctx context.Context, m *cleanup.Message, body io.Reader) (string, error)

// Enqueue calls f.
func (f SubmitterFunc) Enqueue(ctx context.Context, m *cleanup.Message, body io.Reader) (string, error) {
	return f(ctx, m, body)
}

// KindAutoReply is the queue_message kind of replies.
const KindAutoReply = "auto-reply"

// Defaults of Options.
const (
	DefaultMaxHeaderBytes     = 256 << 10
	DefaultRecipientDelimiter = "+"
)

// maxSubjectRunes bounds the original subject copied into a reply.
const maxSubjectRunes = 200

// Options configure a Responder. Zero values take the defaults.
type Options struct {
	// Hostname is this host's name, in the Message-ID of replies
	// ("localhost").
	Hostname string
	// RecipientDelimiter is the set of characters that separate a user
	// from an address extension ("+"), the same as lookups.Options'; the
	// recipient_delimiter setting in the database overrides it ("" there
	// turns extensions off).
	RecipientDelimiter string
	// MaxHeaderBytes is how much of a message's header block is read (256
	// KiB); a message whose header block is longer gets no reply.
	MaxHeaderBytes int
}

// Responder answers delivered mail for mailboxes on vacation. It is safe
// for concurrent use.
type Responder struct {
	st   VacationStore
	sub  Submitter
	opts Options
	log  *slog.Logger
}

// New returns a Responder that reads vacations from st and queues replies
// through sub.
func New(st VacationStore, sub Submitter, opts Options, log *slog.Logger) *Responder {
	if opts.RecipientDelimiter == "" {
		opts.RecipientDelimiter = DefaultRecipientDelimiter
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	opts.Hostname = cleanHost(opts.Hostname)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Responder{st: st, sub: sub, opts: opts, log: log}
}

// cleanHost keeps the characters of a host name (letters, digits, '-', '.',
// '_'), so that the name cannot break the Message-ID field.
func cleanHost(h string) string {
	h = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
			return r
		}
		return -1
	}, h)
	if h == "" {
		return "localhost"
	}
	return h
}

// Skip reasons, logged (at debug level) as "reason" when no reply is sent.
const (
	SkipNullSender     = "null sender"
	SkipNotification   = "message is a notification"
	SkipNoMailbox      = "not a mailbox"
	SkipNoVacation     = "no vacation"
	SkipInactive       = "vacation inactive"
	SkipMailboxOff     = "mailbox inactive"
	SkipNotStarted     = "vacation not started"
	SkipEnded          = "vacation ended"
	SkipBadSender      = "sender address unusable"
	SkipOwnAddress     = "sender is the mailbox itself"
	SkipMachineSender  = "sender is a mailer, list or no-reply address"
	SkipHeaderTooBig   = "header block too big"
	SkipAutoSubmitted  = "message is auto-submitted"
	SkipList           = "message is from a list"
	SkipPrecedence     = "message has bulk precedence"
	SkipSuppressed     = "auto-responses suppressed"
	SkipNotAddressed   = "mailbox not in To or Cc"
	SkipAlreadyReplied = "sender answered within the interval"
)

// subjectMessage is a delivered message whose header block is read at most
// once, when a rule first needs it.
type subjectMessage struct {
	msg  *deliver.Message
	hdr  *header
	err  error
	read bool
}

func (s *subjectMessage) header(max int) (*header, error) {
	if !s.read {
		s.read = true
		s.hdr, s.err = readSubjectHeader(s.msg, max)
	}
	return s.hdr, s.err
}

func readSubjectHeader(msg *deliver.Message, max int) (*header, error) {
	if msg.Open == nil {
		return nil, errors.New("message body cannot be opened")
	}
	rc, err := msg.Open()
	if err != nil {
		return nil, fmt.Errorf("open message: %w", err)
	}
	defer rc.Close()
	return readHeader(rc, max)
}

// Delivered is called after msg was finally delivered to rcpt (a virtual
// mailbox; other recipients get no reply, at the cost of one query). It
// queues a vacation reply when every rule allows it, and returns an error
// only when it could not decide or could not queue one (the database or
// the spool failed); the delivery itself stands either way. It logs one
// line with the queue id: the reply, or (at debug level) why there is none.
func (r *Responder) Delivered(ctx context.Context, msg *deliver.Message, rcpt deliver.Recipient) error {
	return r.delivered(ctx, &subjectMessage{msg: msg}, rcpt)
}

// DeliveredAll calls Delivered for each recipient, reading the header
// block once, and logs errors (it has the shape of the queue manager's
// Delivered hook).
func (r *Responder) DeliveredAll(ctx context.Context, msg *deliver.Message, rcpts []deliver.Recipient) {
	sm := &subjectMessage{msg: msg}
	for _, rc := range rcpts {
		if err := r.delivered(ctx, sm, rc); err != nil {
			r.log.Warn("vacation: no reply after an error", "queue_id", msg.QueueID, "rcpt", rc.Address, "err", err)
		}
	}
}

func (r *Responder) delivered(ctx context.Context, sm *subjectMessage, rcpt deliver.Recipient) error {
	msg := sm.msg
	log := r.log.With("queue_id", msg.QueueID, "rcpt", rcpt.Address)
	skip := func(reason string, attrs ...any) error {
		log.Debug("vacation: no reply", append([]any{"reason", reason}, attrs...)...)
		return nil
	}

	// RFC 3834 2: never answer a message whose reverse-path is null, nor
	// a notification (a DSN, or another automatic reply).
	if msg.Sender == "" {
		return skip(SkipNullSender)
	}
	if msg.Kind != "" && msg.Kind != "mail" {
		return skip(SkipNotification, "kind", msg.Kind)
	}

	t, err := r.target(ctx, rcpt.Address)
	if err != nil {
		return fmt.Errorf("vacation for %s: %w", rcpt.Address, err)
	}
	switch {
	case t.Mailbox == "":
		return skip(SkipNoMailbox)
	case t.Vacation == nil:
		return skip(SkipNoVacation, "mailbox", t.Mailbox)
	case !t.Vacation.Active:
		return skip(SkipInactive, "mailbox", t.Mailbox)
	case !t.MailboxActive:
		return skip(SkipMailboxOff, "mailbox", t.Mailbox)
	}
	log = log.With("mailbox", t.Mailbox)
	now := time.Now().Truncate(time.Microsecond) // the database's precision
	v := t.Vacation
	if v.ActiveFrom != nil && now.Before(*v.ActiveFrom) {
		return skip(SkipNotStarted, "active_from", *v.ActiveFrom)
	}
	if v.ActiveUntil != nil && !now.Before(*v.ActiveUntil) {
		return skip(SkipEnded, "active_until", *v.ActiveUntil)
	}

	delim := r.opts.RecipientDelimiter
	if t.RecipientDelimiter != nil {
		delim = *t.RecipientDelimiter
	}
	own := make(map[string]bool, len(t.Addresses)+1)
	own[t.Mailbox] = true
	for _, a := range t.Addresses {
		own[a] = true
	}

	// The reply goes to the envelope sender, never to From: (RFC 3834 4).
	sender, err := address.Parse(msg.Sender)
	if err != nil {
		return skip(SkipBadSender, "sender", msg.Sender)
	}
	senderKey := sender.Canonical()
	log = log.With("sender", sender.String())
	if isOwn(own, sender, delim) {
		return skip(SkipOwnAddress)
	}
	// RFC 3834 2: not to mailers, list administrators and the like.
	if rule, ok := machineSender(sender.Local); ok {
		return skip(SkipMachineSender, "rule", rule)
	}

	hdr, err := sm.header(r.opts.MaxHeaderBytes)
	if errors.Is(err, errHeaderTooBig) {
		return skip(SkipHeaderTooBig)
	}
	if err != nil {
		return fmt.Errorf("vacation for %s: %w", rcpt.Address, err)
	}
	if reason, attrs := automatic(hdr); reason != "" {
		return skip(reason, attrs...)
	}
	// RFC 3834 2: a personal responder answers only mail that names the
	// recipient in a recipient field, so no Bcc and no list copy.
	if !addressed(hdr, own, delim) {
		return skip(SkipNotAddressed)
	}

	// RFC 3834 2 (and 4.1's suggestion of a week): at most one reply per
	// sender per interval. The record comes first, atomically, so that of
	// racing deliveries only one replies.
	interval := time.Duration(v.IntervalSeconds) * time.Second
	ok, err := r.st.NoteVacationReply(ctx, t.Mailbox, senderKey, now, interval)
	if err != nil {
		return fmt.Errorf("vacation for %s: %w", rcpt.Address, err)
	}
	if !ok {
		return skip(SkipAlreadyReplied, "interval", interval)
	}

	rp := r.reply(t, v, sender, hdr, now)
	id, err := r.submit(ctx, rp)
	if err != nil {
		// Let the sender's next message be answered instead.
		if ferr := r.st.ForgetVacationReply(context.WithoutCancel(ctx), t.Mailbox, senderKey, now); ferr != nil {
			log.Warn("vacation: forget unsent reply", "err", ferr)
		}
		return fmt.Errorf("vacation for %s: queue reply: %w", rcpt.Address, err)
	}
	log.Info("vacation: reply queued", "reply_queue_id", id, "to", rp.to)
	return nil
}

// target finds the mailbox that addr (a final recipient, canonical) is,
// trying the address itself, then the address without its extension.
func (r *Responder) target(ctx context.Context, addr string) (store.VacationTarget, error) {
	a, err := address.Parse(addr)
	if err != nil {
		// Not an address (a command or a file): not a mailbox.
		return store.VacationTarget{}, nil
	}
	key := a.Canonical()
	t, err := r.st.LookupVacation(ctx, key)
	if err != nil || t.Mailbox != "" {
		return t, err
	}
	delim := r.opts.RecipientDelimiter
	if t.RecipientDelimiter != nil {
		delim = *t.RecipientDelimiter
	}
	user, _ := address.SplitExtension(strings.ToLower(a.Local), delim)
	if user == strings.ToLower(a.Local) {
		return t, nil
	}
	return r.st.LookupVacation(ctx, address.Address{Local: user, Domain: a.Domain}.Canonical())
}

// isOwn reports whether a is one of the addresses in own, or is with its
// extension removed.
func isOwn(own map[string]bool, a address.Address, delim string) bool {
	if own[a.Canonical()] {
		return true
	}
	local := strings.ToLower(a.Local)
	user, _ := address.SplitExtension(local, delim)
	return user != local && own[address.Address{Local: user, Domain: a.Domain}.Canonical()]
}

// addressed reports whether a To: or Cc: address of hdr is one of own.
func addressed(hdr *header, own map[string]bool, delim string) bool {
	for _, s := range hdr.addresses() {
		a, err := address.Parse(s)
		if err != nil {
			continue
		}
		if isOwn(own, a, delim) {
			return true
		}
	}
	return false
}

// automatic returns why the header block marks the message as automatic
// or bulk mail, "" if it does not.
func automatic(hdr *header) (string, []any) {
	// RFC 3834 2 and 5: any Auto-Submitted value but "no".
	if v, ok := hdr.get("auto-submitted"); ok {
		if tok := firstToken(v); tok != "no" {
			return SkipAutoSubmitted, []any{"auto_submitted", tok}
		}
	}
	// RFC 3834 2: list mail (RFC 2369 and RFC 2919 List-* fields) ...
	if hdr.list != "" {
		return SkipList, []any{"field", hdr.list}
	}
	// ... and Precedence: bulk, list or junk (not standard, but common).
	if v, ok := hdr.get("precedence"); ok {
		switch tok := firstToken(v); tok {
		case "bulk", "list", "junk":
			return SkipPrecedence, []any{"precedence", tok}
		}
	}
	// Microsoft's X-Auto-Response-Suppress: All, or OOF (out of office).
	for _, v := range hdr.fields["x-auto-response-suppress"] {
		for _, w := range strings.Split(v, ",") {
			switch w = strings.ToLower(strings.TrimSpace(w)); w {
			case "all", "oof", "autoreply":
				return SkipSuppressed, []any{"suppress", w}
			}
		}
	}
	return "", nil
}

// firstToken returns a field value's first word, lower case, without
// comments and parameters ("Auto-Replied (vacation); x=y" → "auto-replied").
func firstToken(v string) string {
	v, _, _ = strings.Cut(v, ";")
	v, _, _ = strings.Cut(v, "(")
	f := strings.Fields(v)
	if len(f) == 0 {
		return ""
	}
	return strings.ToLower(f[0])
}

// reply builds the answer of mailbox t to sender for the subject message
// whose header block is hdr.
func (r *Responder) reply(t store.VacationTarget, v *store.Vacation, sender address.Address, hdr *header, now time.Time) *reply {
	orig := hdr.subject(maxSubjectRunes)
	// RFC 3834 3.1.5: the subject says it is an automatic reply and may
	// carry the original's; the configured subject may place it with
	// $SUBJECT.
	subject := cleanText(strings.ReplaceAll(v.Subject, "$SUBJECT", orig), 2*maxSubjectRunes)
	if subject == "" {
		subject = "Auto: out of office"
		if orig != "" {
			subject = "Auto: " + orig
		}
	}
	rp := &reply{
		from:     mail.Address{Name: cleanText(t.Name, 100), Address: t.Mailbox},
		to:       sender.String(),
		subject:  subject,
		body:     v.Body,
		hostname: r.opts.Hostname,
		now:      now,
	}
	if v, ok := hdr.get("message-id"); ok {
		if ids := msgIDs(v); len(ids) > 0 {
			rp.inReplyTo = ids[0]
			for _, f := range hdr.fields["references"] {
				rp.references = append(rp.references, msgIDs(f)...)
			}
		}
	}
	return rp
}

// submit queues rp from the null sender (RFC 3834 3.3: MAIL FROM:<>, so
// that no automatic reply or bounce comes back to it).
func (r *Responder) submit(ctx context.Context, rp *reply) (string, error) {
	utf8 := rp.needsSMTPUTF8()
	env := envelope.Envelope{
		Sender:     "",
		Recipients: []envelope.Recipient{{Address: rp.to}},
		SMTPUTF8:   utf8,
	}
	if utf8 {
		env.BodyType = envelope.Body8BitMIME
	}
	m := &cleanup.Message{
		Envelope: env,
		Client:   cleanup.Client{Protocol: "local"},
		Kind:     KindAutoReply,
	}
	return r.sub.Enqueue(ctx, m, bytes.NewReader(rp.bytes()))
}
