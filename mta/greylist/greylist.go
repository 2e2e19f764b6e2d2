// Package greylist defers mail from unknown (client network, sender,
// recipient) triplets with 451 4.7.1, and accepts it when the client
// retries after a delay and within a retry window, as postgrey does.
// Clients that retried properly AutoAllowAfter times are no longer
// greylisted; state expires after Expiry without traffic. Greylisting
// applies to the recipient domains whose domain_policy says so.
//
// State lives in PostgreSQL (store: greylist, greylist_client), so every
// MX node shares it and a retry may reach another node. The clock is
// injected.
//
// The smtpd wiring, at RCPT TO, after the recipient is known to be local
// and after DNSBL:
//
//	v, err := g.Check(ctx, greylist.Request{Client: ip, Sender: mailFrom, Recipient: rcpt,
//		Exempt: permitRelay || dnsblVerdict.Allowlisted || authenticated})
//	if err != nil { return envelope.LookupFailed() }            // 451 4.3.0
//	if r, deferred := v.Reply(); deferred { return r }          // 451 4.7.1
//
// SECURITY: sender and recipient come from the network; they are only
// stored (lower-cased, bounded) and compared, never interpreted. A client
// can make the table grow by one row per triplet it tries, until Expiry
// (rate limits bound that).
package greylist

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
)

// Store keeps the state. *store.Store satisfies it.
type Store interface {
	EffectiveDomainPolicy(ctx context.Context, domain string) (store.DomainPolicy, error)
	GreylistUpdate(ctx context.Context, key store.GreylistKey, now time.Time,
		decide func(cur store.GreylistEntry, isNew bool) store.GreylistDecision) (store.GreylistDecision, error)
	GreylistClientState(ctx context.Context, client netip.Prefix) (store.GreylistClient, bool, error)
	TouchGreylistClient(ctx context.Context, client netip.Prefix, now time.Time) error
	ExpireGreylist(ctx context.Context, before time.Time) (int64, error)
}

// Options configures a Greylister. The zero value gives postgrey-like
// defaults.
type Options struct {
	// Delay is how long a new triplet is deferred (default 300 s).
	Delay time.Duration
	// RetryWindow is how long after the first attempt a retry is
	// accepted (default 4 h); a later retry starts over.
	RetryWindow time.Duration
	// Expiry forgets triplets and clients not seen for this long (default
	// 35 days).
	Expiry time.Duration
	// AutoAllowAfter is the number of triplets a client network must pass
	// by retrying before it is no longer greylisted (default 5, as
	// postgrey's --auto-whitelist-clients); negative turns it off.
	AutoAllowAfter int
	// IPv4Prefix and IPv6Prefix are the client networks a triplet is kept
	// for (default /24 and /64): a pool of outbound servers retries from
	// another address of the same network.
	IPv4Prefix, IPv6Prefix int
	// ExpireEvery is how often Check deletes expired state (default 1 h;
	// negative: never, call Expire yourself).
	ExpireEvery time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives expiry failures (default: discard).
	Logger *slog.Logger
}

// Request is one attempt: a client, a sender and one recipient.
type Request struct {
	Client    netip.Addr
	Sender    string // the envelope sender, "" for <>
	Recipient string // a local recipient, local@domain
	// Exempt skips greylisting: client_access permit_relay networks,
	// authenticated clients, DNSWL-allowlisted clients (the caller knows).
	Exempt bool
}

// Reasons a Verdict gives.
const (
	ReasonExempt      = "exempt"             // Request.Exempt
	ReasonNotEnabled  = "not enabled"        // the recipient's domain does not greylist
	ReasonAllowlisted = "client allowlisted" // the network retried properly often enough
	ReasonNew         = "new"                // first attempt (or first after the window or expiry)
	ReasonEarly       = "too early"          // a retry before the delay
	ReasonRetried     = "retried"            // the first retry after the delay: passed now
	ReasonKnown       = "known"              // a triplet that passed before
)

// Verdict is the outcome of a check.
type Verdict struct {
	Pass   bool
	Reason string // one of the Reason constants
	// RetryAfter is how long until a retry can pass (when deferred).
	RetryAfter time.Duration
}

// Reply returns 451 4.7.1 for a deferred attempt (RFC 6647 2.1: a
// temporary failure; X.7.1, delivery not authorised, as Postfix and
// postgrey send it).
func (v Verdict) Reply() (envelope.Reply, bool) {
	if v.Pass {
		return envelope.Reply{}, false
	}
	secs := int((v.RetryAfter + time.Second - 1) / time.Second)
	return envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 7, 1},
		Text: fmt.Sprintf("Greylisted: this host has not seen mail from your server to this recipient; please try again in %d seconds", secs)}, true
}

// Greylister checks attempts. It is safe for concurrent use.
type Greylister struct {
	st   Store
	opts Options

	mu         sync.Mutex
	lastExpire time.Time
}

// New returns a Greylister.
func New(st Store, opts Options) *Greylister {
	if opts.Delay <= 0 {
		opts.Delay = 300 * time.Second
	}
	if opts.RetryWindow <= 0 {
		opts.RetryWindow = 4 * time.Hour
	}
	if opts.RetryWindow < opts.Delay {
		opts.RetryWindow = opts.Delay
	}
	if opts.Expiry <= 0 {
		opts.Expiry = 35 * 24 * time.Hour
	}
	if opts.AutoAllowAfter == 0 {
		opts.AutoAllowAfter = 5
	}
	if opts.IPv4Prefix <= 0 || opts.IPv4Prefix > 32 {
		opts.IPv4Prefix = 24
	}
	if opts.IPv6Prefix <= 0 || opts.IPv6Prefix > 128 {
		opts.IPv6Prefix = 64
	}
	if opts.ExpireEvery == 0 {
		opts.ExpireEvery = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Greylister{st: st, opts: opts}
}

// Check decides about one attempt and records it. err means the database
// could not answer: the caller answers 451 4.3.0 (or lets the mail in, by
// its own policy), never treats it as a pass or a greylisting.
func (g *Greylister) Check(ctx context.Context, r Request) (Verdict, error) {
	if r.Exempt {
		return Verdict{Pass: true, Reason: ReasonExempt}, nil
	}
	rcpt := strings.ToLower(r.Recipient)
	at := strings.LastIndexByte(rcpt, '@')
	if at < 0 {
		return Verdict{Pass: true, Reason: ReasonNotEnabled}, nil
	}
	pol, err := g.st.EffectiveDomainPolicy(ctx, rcpt[at+1:])
	if err != nil {
		return Verdict{}, fmt.Errorf("greylist: %w", err)
	}
	if !pol.Greylisting {
		return Verdict{Pass: true, Reason: ReasonNotEnabled}, nil
	}
	now := g.opts.Now()
	g.expire(ctx, now)
	client := g.network(r.Client)

	if g.opts.AutoAllowAfter > 0 {
		c, found, err := g.st.GreylistClientState(ctx, client)
		if err != nil {
			return Verdict{}, fmt.Errorf("greylist: %w", err)
		}
		if found && c.Passes >= g.opts.AutoAllowAfter && now.Sub(c.LastSeen) < g.opts.Expiry {
			if err := g.st.TouchGreylistClient(ctx, client, now); err != nil {
				return Verdict{}, fmt.Errorf("greylist: %w", err)
			}
			return Verdict{Pass: true, Reason: ReasonAllowlisted}, nil
		}
	}

	key := store.GreylistKey{Client: client, Sender: normSender(r.Sender), Recipient: bound(rcpt)}
	var v Verdict
	_, err = g.st.GreylistUpdate(ctx, key, now, func(cur store.GreylistEntry, isNew bool) store.GreylistDecision {
		var d store.GreylistDecision
		v, d = g.decide(cur, isNew, now)
		return d
	})
	if err != nil {
		return Verdict{}, fmt.Errorf("greylist: %w", err)
	}
	return v, nil
}

// decide is the policy: a pure function of the triplet's state and the
// time.
func (g *Greylister) decide(cur store.GreylistEntry, isNew bool, now time.Time) (Verdict, store.GreylistDecision) {
	e := cur
	e.LastSeen = now
	e.Count = cur.Count + 1
	restart := func() (Verdict, store.GreylistDecision) {
		e.FirstSeen, e.PassedAt, e.Count = now, nil, 1
		return Verdict{Reason: ReasonNew, RetryAfter: g.opts.Delay}, store.GreylistDecision{Entry: e}
	}
	switch {
	case isNew:
		return restart()
	case now.Sub(cur.LastSeen) >= g.opts.Expiry:
		// Forgotten: as if new (the sweep had not yet deleted it).
		return restart()
	case cur.PassedAt != nil:
		return Verdict{Pass: true, Reason: ReasonKnown}, store.GreylistDecision{Entry: e}
	case now.Before(cur.FirstSeen.Add(g.opts.Delay)):
		return Verdict{Reason: ReasonEarly, RetryAfter: cur.FirstSeen.Add(g.opts.Delay).Sub(now)},
			store.GreylistDecision{Entry: e}
	case now.After(cur.FirstSeen.Add(g.opts.RetryWindow)):
		// The retry came too late: start over.
		return restart()
	}
	e.PassedAt = &now
	return Verdict{Pass: true, Reason: ReasonRetried}, store.GreylistDecision{Entry: e, ClientPassed: true}
}

// network returns the client's network as greylisting keys it.
func (g *Greylister) network(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := g.opts.IPv6Prefix
	if ip.Is4() {
		bits = g.opts.IPv4Prefix
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.PrefixFrom(ip, ip.BitLen())
	}
	return p
}

// Expire deletes state not seen for Expiry, and returns how many rows went.
func (g *Greylister) Expire(ctx context.Context) (int64, error) {
	return g.st.ExpireGreylist(ctx, g.opts.Now().Add(-g.opts.Expiry))
}

// expire runs Expire at most once per ExpireEvery per process; a failure
// is logged, not returned (the state is only kept longer).
func (g *Greylister) expire(ctx context.Context, now time.Time) {
	if g.opts.ExpireEvery < 0 {
		return
	}
	g.mu.Lock()
	due := now.Sub(g.lastExpire) >= g.opts.ExpireEvery
	if due {
		g.lastExpire = now
	}
	g.mu.Unlock()
	if !due {
		return
	}
	if n, err := g.st.ExpireGreylist(ctx, now.Add(-g.opts.Expiry)); err != nil {
		g.opts.Logger.Warn("greylist: expire", "err", err)
	} else if n > 0 {
		g.opts.Logger.Debug("greylist: expired", "rows", n)
	}
}

// normSender lower-cases the sender and removes the parts that change from
// one message to the next: a BATV tag ("prvs=1234abcd=user@d" is
// "user@d") — otherwise every message of a bounce-protected sender would be
// a new triplet.
func normSender(s string) string {
	s = strings.ToLower(s)
	if at := strings.LastIndexByte(s, '@'); at > 0 {
		local, domain := s[:at], s[at:]
		for _, p := range []string{"prvs=", "msprvs1="} {
			if rest, ok := strings.CutPrefix(local, p); ok {
				if _, user, ok := strings.Cut(rest, "="); ok && user != "" {
					local = user
				}
				break
			}
		}
		s = local + domain
	}
	return bound(s)
}

// bound cuts an address to the 254 octets of a path (RFC 5321 4.5.3.1.3),
// so a client cannot store more.
func bound(s string) string {
	if len(s) > 254 {
		return s[:254]
	}
	return s
}
