package queue

import (
	"strings"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/store"
)

// Policy defaults, as Postfix's (postconf(5)).
const (
	DefaultMinBackoff          = 300 * time.Second  // minimal_backoff_time
	DefaultMaxBackoff          = 4000 * time.Second // maximal_backoff_time
	DefaultMaxQueueLifetime    = 5 * 24 * time.Hour // maximal_queue_lifetime
	DefaultBounceQueueLifetime = 5 * 24 * time.Hour // bounce_queue_lifetime
	DefaultDelayWarningTime    = 4 * time.Hour      // delay_warning_time
)

// PolicyConfig is the retry policy (DefaultPolicy gives Postfix's).
type PolicyConfig struct {
	MinBackoff          time.Duration // 0: DefaultMinBackoff
	MaxBackoff          time.Duration // 0: DefaultMaxBackoff
	MaxQueueLifetime    time.Duration // for mail; 0: DefaultMaxQueueLifetime
	BounceQueueLifetime time.Duration // for DSNs and double bounces; 0: DefaultBounceQueueLifetime
	DelayWarningTime    time.Duration // 0 (or less): no delay notices
}

// DefaultPolicy returns the default policy, delay notices after 4 hours
// included.
func DefaultPolicy() PolicyConfig {
	return PolicyConfig{DelayWarningTime: DefaultDelayWarningTime}.WithDefaults()
}

// WithDefaults fills the zero durations with the defaults, except
// DelayWarningTime, whose zero means "off".
func (c PolicyConfig) WithDefaults() PolicyConfig {
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.MaxQueueLifetime <= 0 {
		c.MaxQueueLifetime = DefaultMaxQueueLifetime
	}
	if c.BounceQueueLifetime <= 0 {
		c.BounceQueueLifetime = DefaultBounceQueueLifetime
	}
	return c
}

// Message kinds (queue_message.kind).
const (
	KindMail         = "mail"
	KindDSN          = "dsn"
	KindDoubleBounce = "double-bounce"
	KindAutoReply    = "auto-reply"
)

// Attempt is what the policy knows of one attempt for one recipient.
type Attempt struct {
	Result  deliver.Status // the agent's verdict
	Relayed bool           // delivered to a next hop that does not speak DSN
	Age     time.Duration  // of the message, at the end of the attempt
	Kind    string         // the message's kind
	Sender  string         // "" is the null sender
	// Notify is the recipient's RFC 3461 NOTIFY ("" when not given, else
	// a comma-separated list such as "SUCCESS,FAILURE" or "NEVER").
	Notify string
	// DelayNotified reports that a delay notice was already given.
	DelayNotified bool
}

// Decision is the transition an attempt causes.
type Decision struct {
	// Status is the recipient's new state: store.RcptDelivered,
	// store.RcptDeferred, store.RcptBounced or store.RcptExpired.
	Status string
	// RetryIn is, when deferred, how long until the next attempt.
	RetryIn time.Duration
	// DSN is the notice the recipient now owes (store.DSNFailed,
	// store.DSNDelayed, store.DSNDelivered, store.DSNRelayed) or "". For a
	// DSN that failed it is store.DSNFailed: the notice goes to the
	// postmaster as a double bounce.
	DSN string
	// NoDSN says why a failure owes no DSN ("" when it owes one or is no
	// failure), for the log: the null sender, NOTIFY=NEVER, a failed
	// double bounce.
	NoDSN string
}

// Decide is the queue's retry policy, a pure function (Postfix's qmgr and
// bounce(8) rules):
//
//   - Delivered: final; a success notice when NOTIFY has SUCCESS ("relayed"
//     when the next hop does not speak DSN, RFC 3461 4.1 and 6.2.3).
//   - Bounced: final, with a failure notice.
//   - Deferred: the next attempt waits as long as the message's age,
//     clamped to [MinBackoff, MaxBackoff] (Postfix's backoff); once the
//     message is older than its lifetime (MaxQueueLifetime, or
//     BounceQueueLifetime for DSNs and double bounces) the recipient
//     expires instead, with a failure notice (RFC 3464 status 4.4.7). A
//     delay notice is due once, on a deferral of a message older than
//     DelayWarningTime, for mail to a non-null sender (RFC 3461: NOTIFY
//     default or with DELAY).
//
// Notices never go to the null sender (RFC 3461 6.2, RFC 5321 4.5.5): a
// failed DSN owes a failure notice that the DSN step sends to the
// postmaster as a double bounce, once; a failed double bounce, or any other
// null-sender mail, owes nothing. NOTIFY=NEVER owes nothing (RFC 3461 4.1).
func Decide(cfg PolicyConfig, a Attempt) Decision {
	switch a.Result {
	case deliver.Delivered:
		d := Decision{Status: store.RcptDelivered}
		if a.Sender != "" && notifies(a.Notify, "SUCCESS", false) {
			d.DSN = store.DSNDelivered
			if a.Relayed {
				d.DSN = store.DSNRelayed
			}
		}
		return d
	case deliver.Bounced:
		return failure(store.RcptBounced, a)
	}

	// Deferred (and any unknown verdict: an outcome we cannot vouch for is
	// temporary).
	lifetime := cfg.MaxQueueLifetime
	if a.Kind == KindDSN || a.Kind == KindDoubleBounce {
		lifetime = cfg.BounceQueueLifetime
	}
	if a.Age >= lifetime {
		return failure(store.RcptExpired, a)
	}
	d := Decision{Status: store.RcptDeferred, RetryIn: Backoff(cfg, a.Age)}
	if cfg.DelayWarningTime > 0 && a.Age >= cfg.DelayWarningTime && !a.DelayNotified &&
		a.Sender != "" && a.Kind != KindDSN && a.Kind != KindDoubleBounce && notifies(a.Notify, "DELAY", true) {
		d.DSN = store.DSNDelayed
	}
	return d
}

// failure decides the notice of a final failure.
func failure(status string, a Attempt) Decision {
	d := Decision{Status: status}
	switch {
	case a.Sender == "" && a.Kind == KindDSN:
		// Our own DSN could not be delivered: the postmaster gets it,
		// once (its notice is of kind double-bounce, which owes nothing).
		d.DSN = store.DSNFailed
	case a.Sender == "" && a.Kind == KindDoubleBounce:
		d.NoDSN = "double bounce dropped"
	case a.Sender == "":
		d.NoDSN = "no DSN to the null sender"
	case !notifies(a.Notify, "FAILURE", true):
		d.NoDSN = "NOTIFY=NEVER"
	default:
		d.DSN = store.DSNFailed
	}
	return d
}

// Backoff is Postfix's retry delay: the message's age, clamped to
// [MinBackoff, MaxBackoff].
func Backoff(cfg PolicyConfig, age time.Duration) time.Duration {
	return min(max(age, cfg.MinBackoff), cfg.MaxBackoff)
}

// notifies reports whether an RFC 3461 NOTIFY value asks for kind
// (SUCCESS, FAILURE, DELAY); def is the answer when NOTIFY was not given
// (RFC 3461 4.1: failures and, at the MTA's choice, delays).
func notifies(notify, kind string, def bool) bool {
	if strings.TrimSpace(notify) == "" {
		return def
	}
	for v := range strings.SplitSeq(notify, ",") {
		if strings.EqualFold(strings.TrimSpace(v), kind) {
			return true
		}
	}
	return false
}
