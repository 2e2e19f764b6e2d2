// Package deliver defines the contract between the queue manager and the
// delivery agents (smtp, lmtp, maildir, pipe, discard, error), Postfix's
// qmgr-to-agent protocol as a Go interface.
//
// SECURITY: this package only declares types; each agent documents what it
// exposes and touches.
package deliver

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/facteur/facteur/mta/envelope"
)

// Message is one queued message as the queue manager hands it to an agent.
//
// The body (Open) is the RFC 5322 message with CRLF line endings, no
// dot-stuffing, with facteur's trace headers first: the fields computed once
// the message was read (queue_message.prepend: Authentication-Results and
// the DMARC quarantine mark of inbound mail, the DKIM-Signature of submitted
// mail), then the spool file, which starts with facteur's Received:. Agents
// stream it as is (the Maildir agent converts line endings); Size counts
// all of it.
type Message struct {
	QueueID   string
	Sender    string // "" is the null sender <>
	Size      int64
	ArrivedAt time.Time
	BodyType  string // 7BIT, 8BITMIME, BINARYMIME
	SMTPUTF8  bool
	DSNRet    string // FULL, HDRS or ""
	DSNEnvID  string
	Kind      string // mail, dsn, double-bounce, auto-reply
	// Open returns a fresh reader over the message (trace headers, then the
	// spool file); agents may call it more than once (a retry to the next
	// MX, for example).
	Open func() (io.ReadCloser, error)
	Log  *slog.Logger // carries the queue id
}

// Recipient is one final recipient of the message for this next hop.
type Recipient struct {
	ID        int64  // queue_recipient.id, opaque to agents
	Address   string // final recipient (canonical form)
	Orig      string // the RCPT TO this came from (for ORCPT and Delivered-To)
	DSNNotify string // RFC 3461 NOTIFY as given ("" = default)
	DSNORcpt  string // RFC 3461 ORCPT as given
	// Mailbox is set for virtual mailbox recipients (maildir path relative to
	// the mail root, quota in bytes, nil = unlimited).
	Mailbox *Mailbox
}

// Mailbox is what the Maildir agent needs to know of a virtual mailbox.
type Mailbox struct {
	Maildir    string
	QuotaBytes *int64
}

// Status is the outcome for one recipient.
type Status int

const (
	// Delivered: the next hop accepted responsibility (2xx) or the file is
	// durably in new/.
	Delivered Status = iota
	// Deferred: a temporary failure; the queue retries later.
	Deferred
	// Bounced: a permanent failure; the queue returns a DSN to the sender.
	Bounced
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "sent"
	case Deferred:
		return "deferred"
	case Bounced:
		return "bounced"
	}
	return "unknown"
}

// Result is an agent's verdict for one recipient.
type Result struct {
	Status Status
	// Reply is the remote's reply (or the agent's own, in SMTP form): the
	// code, enhanced status and text end up in delivery_log and in DSNs.
	Reply envelope.Reply
	// Relay names the next hop as Postfix logs it: host[addr]:port, "maildir",
	// "pipe", "none".
	Relay string
	// Relayed is true when the next hop accepted the message but does not
	// speak DSN, so a requested success notification says "relayed"
	// (RFC 3461 4.2.1... 6.2.3).
	Relayed bool
	// RemoteMTA is the remote host's name for DSN Remote-MTA, if any.
	RemoteMTA string
}

// Agent delivers one message to a set of recipients that share a next hop.
//
// The contract:
//   - Deliver returns exactly one Result per recipient, in order. It never
//     returns early without results: a failure that affects every recipient
//     (connection refused, a timeout) is reported on each.
//   - An error whose outcome is unknown (the connection dropped after the
//     final dot) is Deferred: delivery is at-least-once, so a retry after a
//     crash or an unknown outcome must be safe; the remote may get the
//     message twice, never zero times.
//   - Deliver respects ctx: the queue manager's deadline is shorter than the
//     recipient's lease, so a slow delivery is never claimed twice.
//   - nexthop is the transport string after its kind, e.g. for
//     "smtp:[mx.example]:25" it is "[mx.example]:25"; for "maildir", "".
//   - Agents never touch the queue tables; the queue manager records results.
type Agent interface {
	Deliver(ctx context.Context, nexthop string, msg *Message, rcpts []Recipient) []Result
}

// AgentFunc adapts a function to the Agent interface.
type AgentFunc func(ctx context.Context, nexthop string, msg *Message, rcpts []Recipient) []Result

// Deliver calls f.
func (f AgentFunc) Deliver(ctx context.Context, nexthop string, msg *Message, rcpts []Recipient) []Result {
	return f(ctx, nexthop, msg, rcpts)
}

// All returns the same result for every recipient.
func All(rcpts []Recipient, r Result) []Result {
	out := make([]Result, len(rcpts))
	for i := range out {
		out[i] = r
	}
	return out
}
