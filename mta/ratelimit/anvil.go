// Package ratelimit limits how much a client may do: inbound, per client
// address and in memory, as Postfix's anvil(8) (connection count and rate
// → 421 4.7.0, message rate → 450 4.7.1); outbound, per submitting mailbox
// and per domain, in PostgreSQL so that every node counts the same mail
// (messages per hour and per day, recipients per message → 450 4.7.1).
//
// The smtpd wiring:
//
//	// port 25 and submission, at connection:
//	release, err := anvil.Connect(ip); if err != nil { return err }   // 421 4.7.0, then close
//	defer release()
//	// at MAIL FROM:
//	if err := anvil.Message(ip); err != nil { return err }            // 450 4.7.1
//	// submission, at MAIL FROM of an authenticated user:
//	tx, err := outbound.Mail(ctx, authUser)                           // 450 4.7.1, or a DB error (451 4.3.0)
//	// at each RCPT TO:
//	if err := tx.Rcpt(); err != nil { return err }                    // 450 4.7.1
//	// after cleanup answered 250 (queued):
//	outbound.Record(ctx, authUser, tx.Recipients())
//
// Errors that refuse are envelope.Reply values; any other error means the
// database could not answer.
//
// SECURITY: the inbound state is keyed by the client's address (IPv6 by
// its /64) and bounded (MaxClients, idle eviction), so a flood of addresses
// cannot exhaust memory. The outbound counters are keyed by the
// authenticated mailbox, never by anything the client claims.
package ratelimit

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/facteur/facteur/mta/envelope"
)

// AnvilOptions configures an Anvil. Limits of 0 are off.
type AnvilOptions struct {
	// ConnectionCount is the most simultaneous connections from one
	// client (smtpd_client_connection_count_limit).
	ConnectionCount int
	// ConnectionRate is the most connections one client may open per
	// Window (smtpd_client_connection_rate_limit).
	ConnectionRate int
	// MessageRate is the most MAIL FROM commands one client may send per
	// Window (smtpd_client_message_rate_limit).
	MessageRate int
	// Window is the time unit of the rates (default 60 s,
	// anvil_rate_time_unit). Rates are token buckets: a client may use a
	// whole Window's worth at once, then one more every Window/rate.
	Window time.Duration
	// IPv6Prefix groups IPv6 clients (default /64: one host usually holds
	// the whole prefix).
	IPv6Prefix int
	// Exempt lists networks no limit applies to
	// (smtpd_client_event_limit_exceptions). Empty by default.
	Exempt []netip.Prefix
	// MaxClients bounds the clients tracked (default 100000); past it, idle
	// clients are dropped first, then the oldest state.
	MaxClients int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Anvil keeps the inbound per-client state. It is safe for concurrent use.
type Anvil struct {
	opts AnvilOptions

	mu        sync.Mutex
	clients   map[netip.Prefix]*client
	lastSweep time.Time
}

type client struct {
	conns    int
	connRate *rate.Limiter
	msgRate  *rate.Limiter
	lastUsed time.Time
}

// NewAnvil returns an Anvil.
func NewAnvil(opts AnvilOptions) *Anvil {
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	if opts.IPv6Prefix <= 0 || opts.IPv6Prefix > 128 {
		opts.IPv6Prefix = 64
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = 100000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Anvil{opts: opts, clients: map[netip.Prefix]*client{}}
}

// TooManyConnections is 421 4.7.0 (Postfix's wording); the server closes
// the connection after it.
func TooManyConnections(ip netip.Addr) envelope.Reply {
	return envelope.Reply{Code: 421, Enhanced: envelope.Status{4, 7, 0},
		Text: fmt.Sprintf("Error: too many connections from %s", ip)}
}

// TooMuchMail is 450 4.7.1 for a client over its message rate (Postfix's
// wording).
func TooMuchMail(ip netip.Addr) envelope.Reply {
	return envelope.Reply{Code: 450, Enhanced: envelope.Status{4, 7, 1},
		Text: fmt.Sprintf("Error: too much mail from %s", ip)}
}

// Connect counts a new connection from ip. It returns a function to call
// when the connection ends (exactly once; further calls do nothing), or
// TooManyConnections when the client is over its connection count or rate
// (then there is nothing to release).
func (a *Anvil) Connect(ip netip.Addr) (release func(), err error) {
	ip = ip.Unmap()
	if a.exempt(ip) {
		return func() {}, nil
	}
	now := a.opts.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	key := a.key(ip)
	c := a.client(key, now)
	if a.opts.ConnectionCount > 0 && c.conns >= a.opts.ConnectionCount {
		return nil, TooManyConnections(ip)
	}
	if c.connRate != nil && !c.connRate.AllowN(now, 1) {
		return nil, TooManyConnections(ip)
	}
	c.conns++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			c.conns--
			c.lastUsed = a.opts.Now()
		})
	}, nil
}

// Message counts a MAIL FROM from ip, or returns TooMuchMail when the
// client is over its message rate (the attempt is not counted).
func (a *Anvil) Message(ip netip.Addr) error {
	ip = ip.Unmap()
	if a.opts.MessageRate <= 0 || a.exempt(ip) {
		return nil
	}
	now := a.opts.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.client(a.key(ip), now)
	if !c.msgRate.AllowN(now, 1) {
		return TooMuchMail(ip)
	}
	return nil
}

// Clients returns the number of clients tracked (for metrics).
func (a *Anvil) Clients() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.clients)
}

func (a *Anvil) exempt(ip netip.Addr) bool {
	for _, p := range a.opts.Exempt {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (a *Anvil) key(ip netip.Addr) netip.Prefix {
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, err := ip.Prefix(a.opts.IPv6Prefix)
	if err != nil {
		return netip.PrefixFrom(ip, ip.BitLen())
	}
	return p
}

// client returns the state of key, creating it. a.mu is held.
func (a *Anvil) client(key netip.Prefix, now time.Time) *client {
	if now.Sub(a.lastSweep) >= a.opts.Window || len(a.clients) >= a.opts.MaxClients {
		a.sweep(now)
	}
	c := a.clients[key]
	if c == nil {
		c = &client{}
		if a.opts.ConnectionRate > 0 {
			c.connRate = rate.NewLimiter(rate.Every(a.opts.Window/time.Duration(a.opts.ConnectionRate)), a.opts.ConnectionRate)
		}
		if a.opts.MessageRate > 0 {
			c.msgRate = rate.NewLimiter(rate.Every(a.opts.Window/time.Duration(a.opts.MessageRate)), a.opts.MessageRate)
		}
		a.clients[key] = c
	}
	c.lastUsed = now
	return c
}

// sweep drops the clients without connections whose buckets are full again
// (idle for a whole Window: forgetting them changes nothing). When the
// table is still full, connection-less clients are dropped at random down
// to 90% of MaxClients, so a flood of addresses costs one pass per tenth of
// the table, not one per connection. a.mu is held.
func (a *Anvil) sweep(now time.Time) {
	a.lastSweep = now
	for k, c := range a.clients {
		if c.conns == 0 && now.Sub(c.lastUsed) >= a.opts.Window {
			delete(a.clients, k)
		}
	}
	if len(a.clients) < a.opts.MaxClients {
		return
	}
	target := a.opts.MaxClients * 9 / 10
	for k, c := range a.clients { // map order is random
		if len(a.clients) <= target {
			break
		}
		if c.conns == 0 {
			delete(a.clients, k)
		}
	}
}
