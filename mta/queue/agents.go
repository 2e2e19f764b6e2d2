package queue

import (
	"context"
	"strings"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/envelope"
)

// Transport kinds (the part of a transport before the first ':').
const (
	TransportSMTP    = "smtp"
	TransportRelay   = "relay"
	TransportLMTP    = "lmtp"
	TransportMaildir = "maildir"
	TransportPipe    = "pipe"
	TransportDiscard = "discard"
	TransportError   = "error"
)

// SplitTransport splits a transport as stored on a recipient into its kind
// and the next hop given to the agent: "smtp:[mx.example]:25" gives "smtp"
// and "[mx.example]:25"; "lmtp:unix:/run/dovecot/lmtp" gives "lmtp" and
// "unix:/run/dovecot/lmtp"; "maildir" gives "maildir" and "".
func SplitTransport(t string) (kind, nexthop string) {
	kind, nexthop, _ = strings.Cut(t, ":")
	return strings.ToLower(strings.TrimSpace(kind)), nexthop
}

// destinationKey names the destination whose concurrency a recipient counts
// against: the next hop when the transport names one (a relay host, an LMTP
// socket), else the transport and the recipient's domain (MX delivery to
// that domain; local delivery into that domain's mailboxes). A delivery
// carries recipients of one destination only.
func destinationKey(transport, domain string) string {
	kind, nexthop := SplitTransport(transport)
	switch kind {
	case TransportSMTP, TransportRelay, TransportLMTP:
		if nexthop != "" {
			return transport
		}
	}
	return transport + "/" + domain
}

// DiscardAgent is the discard transport: every recipient is delivered, and
// the message goes nowhere (Postfix's discard(8)).
type DiscardAgent struct{}

// Deliver reports every recipient delivered.
func (DiscardAgent) Deliver(_ context.Context, nexthop string, _ *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	text := "discarded"
	if nexthop != "" {
		text += ": " + oneLine(nexthop)
	}
	return deliver.All(rcpts, deliver.Result{Status: deliver.Delivered, Relay: "none",
		Reply: envelope.Reply{Code: 250, Enhanced: envelope.Status{2, 0, 0}, Text: text}})
}

// ErrorAgent is the error transport, "error:5.x.x text" (Postfix's
// error(8)): every recipient bounces with that status and text, or defers
// when the status is 4.x.x. A next hop without a valid status bounces with
// 5.0.0.
type ErrorAgent struct{}

// Deliver reports every recipient bounced (or deferred) with the next hop's
// status and text.
func (ErrorAgent) Deliver(_ context.Context, nexthop string, _ *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	st, text, ok := envelope.ParseEnhanced(nexthop)
	if !ok || st[0] == 2 {
		st, text = envelope.Status{5, 0, 0}, strings.TrimSpace(nexthop)
	}
	if text == "" {
		text = "delivery refused"
	}
	res := deliver.Result{Status: deliver.Bounced, Relay: "none",
		Reply: envelope.Reply{Code: 550, Enhanced: st, Text: oneLine(text)}}
	if st[0] == 4 {
		res.Status = deliver.Deferred
		res.Reply.Code = 450
	}
	return deliver.All(rcpts, res)
}

// oneLine replaces control characters by spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
