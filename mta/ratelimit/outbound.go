package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
)

// Counters keeps the outbound limits and counts. *store.Store satisfies it
// (store/msgauth.go: mailbox_policy, domain_policy, send_counter).
type Counters interface {
	SendStatus(ctx context.Context, mailbox string, now time.Time) (store.SendStatus, error)
	CountSend(ctx context.Context, mailbox string, recipients int, now time.Time) error
	PruneSendCounters(ctx context.Context, before time.Time) (int64, error)
}

// OutboundOptions configures an Outbound. The zero value is usable.
type OutboundOptions struct {
	// PruneEvery is how often Record deletes counters older than a day
	// (default 1 h; negative: never).
	PruneEvery time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives pruning failures (default: discard).
	Logger *slog.Logger
}

// Outbound enforces the per-mailbox and per-domain limits of submitted
// mail. The domain's limits count all its mailboxes together; both apply.
// It is safe for concurrent use.
//
// Counts are kept in 5-minute buckets (store.SendBucket) and a window is
// rounded outwards to whole buckets, so a limit may hold a little longer
// than an hour or a day, never shorter. Mail is counted once queued
// (Record); messages being received in parallel at the moment a limit is
// reached may each still pass, so a limit can be exceeded by the number of
// concurrent sessions of the mailbox, never more.
type Outbound struct {
	st   Counters
	opts OutboundOptions

	mu        sync.Mutex
	lastPrune time.Time
}

// NewOutbound returns an Outbound over st.
func NewOutbound(st Counters, opts OutboundOptions) *Outbound {
	if opts.PruneEvery == 0 {
		opts.PruneEvery = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Outbound{st: st, opts: opts}
}

// Transaction is one mail transaction of a submitting mailbox, between MAIL
// FROM and the end of DATA.
type Transaction struct {
	mailbox    string
	maxRcpt    int // 0: unlimited
	recipients int
}

// LimitExceeded is 450 4.7.1 for a mailbox or domain over an outbound limit
// (what says which).
func LimitExceeded(what string) envelope.Reply {
	return envelope.Reply{Code: 450, Enhanced: envelope.Status{4, 7, 1}, Text: "Sending limit exceeded: " + what}
}

// Mail checks, at MAIL FROM, that mailbox (the authenticated submitter,
// local@domain) and its domain are under their limits of messages per hour
// and per day. It returns the transaction to count recipients on, or
// LimitExceeded, or an error when the database could not answer (451
// 4.3.0: never send unlimited when the limits are unknown).
func (o *Outbound) Mail(ctx context.Context, mailbox string) (*Transaction, error) {
	st, err := o.st.SendStatus(ctx, mailbox, o.opts.Now())
	if err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	if r, over := Evaluate(st); over {
		return nil, r
	}
	return &Transaction{mailbox: st.Mailbox, maxRcpt: minLimit(st.MailboxLimits.RecipientsPerMessage, st.DomainLimits.RecipientsPerMessage)}, nil
}

// Evaluate is the MAIL FROM decision on a status, without the database:
// LimitExceeded for the first limit reached (the mailbox's before the
// domain's, the hour before the day).
func Evaluate(st store.SendStatus) (envelope.Reply, bool) {
	for _, c := range []struct {
		who   string
		limit *int
		sent  int
		per   string
	}{
		{st.Mailbox, st.MailboxLimits.MessagesPerHour, st.MailboxSent.LastHour, "hour"},
		{st.Mailbox, st.MailboxLimits.MessagesPerDay, st.MailboxSent.LastDay, "day"},
		{"domain " + st.Domain, st.DomainLimits.MessagesPerHour, st.DomainSent.LastHour, "hour"},
		{"domain " + st.Domain, st.DomainLimits.MessagesPerDay, st.DomainSent.LastDay, "day"},
	} {
		if c.limit != nil && c.sent >= *c.limit {
			return LimitExceeded(fmt.Sprintf("%s may send %d messages per %s; try again later", c.who, *c.limit, c.per)), true
		}
	}
	return envelope.Reply{}, false
}

// Rcpt counts one more recipient of the transaction, or returns
// LimitExceeded past the recipients-per-message limit (the recipient is
// not counted; the client may send it in another transaction).
func (t *Transaction) Rcpt() error {
	if t.maxRcpt > 0 && t.recipients >= t.maxRcpt {
		return LimitExceeded(fmt.Sprintf("%s may send to %d recipients per message", t.mailbox, t.maxRcpt))
	}
	t.recipients++
	return nil
}

// Recipients returns the recipients counted.
func (t *Transaction) Recipients() int { return t.recipients }

// Record counts a message of mailbox with recipients recipients, once it is
// queued. An error means it was not counted (log it; the message is
// queued all the same).
func (o *Outbound) Record(ctx context.Context, mailbox string, recipients int) error {
	now := o.opts.Now()
	if err := o.st.CountSend(ctx, mailbox, recipients, now); err != nil {
		return fmt.Errorf("ratelimit: %w", err)
	}
	o.prune(ctx, now)
	return nil
}

// prune deletes counters older than the day window, at most once per
// PruneEvery per process.
func (o *Outbound) prune(ctx context.Context, now time.Time) {
	if o.opts.PruneEvery < 0 {
		return
	}
	o.mu.Lock()
	due := now.Sub(o.lastPrune) >= o.opts.PruneEvery
	if due {
		o.lastPrune = now
	}
	o.mu.Unlock()
	if !due {
		return
	}
	if _, err := o.st.PruneSendCounters(ctx, now.Add(-24*time.Hour-2*store.SendBucket)); err != nil {
		o.opts.Logger.Warn("ratelimit: prune send counters", "err", err)
	}
}

func minLimit(a, b *int) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return *b
	case b == nil:
		return *a
	}
	return min(*a, *b)
}
