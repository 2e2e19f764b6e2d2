package smtpd

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits are the per-client-address limits (Postfix's anvil and
// smtpd_*_error_limit). An IPv6 client is counted by its /64, since one host
// usually holds the whole prefix.
type Limits struct {
	// MaxConnsPerIP is the most concurrent connections from one address
	// (default 50); more get "421 4.7.0" at once.
	MaxConnsPerIP int
	// ConnRate is the sustained rate of new connections per second from one
	// address (default 5), with bursts of ConnBurst (default 50); beyond it
	// a connection gets "421 4.7.0".
	ConnRate  float64
	ConnBurst int
	// ErrorsBeforeDelay is how many errors (bad commands, failed AUTH) an
	// address may make before each further command waits (default 3).
	ErrorsBeforeDelay int
	// ErrorDelay is the first wait (default 1 s); it doubles with each
	// further error, up to MaxErrorDelay (default 16 s).
	ErrorDelay    time.Duration
	MaxErrorDelay time.Duration
	// ErrorLimit is the count at which the client gets "421 4.7.0" and is
	// disconnected, and new connections are refused (default 10).
	ErrorLimit int
	// ErrorWindow is how long an address's errors are remembered after its
	// last one (default 10 minutes).
	ErrorWindow time.Duration
	// Exempt lists networks no limit applies to. Empty by default.
	Exempt []netip.Prefix
}

func (l *Limits) setDefaults() {
	if l.MaxConnsPerIP == 0 {
		l.MaxConnsPerIP = 50
	}
	if l.ConnRate == 0 {
		l.ConnRate = 5
	}
	if l.ConnBurst == 0 {
		l.ConnBurst = 50
	}
	if l.ErrorsBeforeDelay == 0 {
		l.ErrorsBeforeDelay = 3
	}
	if l.ErrorDelay == 0 {
		l.ErrorDelay = time.Second
	}
	if l.MaxErrorDelay == 0 {
		l.MaxErrorDelay = 16 * time.Second
	}
	if l.ErrorLimit == 0 {
		l.ErrorLimit = 10
	}
	if l.ErrorWindow == 0 {
		l.ErrorWindow = 10 * time.Minute
	}
}

// limiter keeps the per-address state. Entries without connections are
// evicted once idle for longer than the error window.
type limiter struct {
	opts Limits
	now  func() time.Time

	mu        sync.Mutex
	clients   map[netip.Prefix]*clientState
	lastSweep time.Time
}

type clientState struct {
	conns     int
	rate      *rate.Limiter
	errors    int
	lastError time.Time
	lastSeen  time.Time
}

func newLimiter(opts Limits) *limiter {
	opts.setDefaults()
	return &limiter{opts: opts, now: time.Now, clients: map[netip.Prefix]*clientState{}}
}

func clientKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}

func (l *limiter) exempt(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range l.opts.Exempt {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// state returns the entry of ip, creating it; l.mu is held.
func (l *limiter) state(ip netip.Addr, now time.Time) *clientState {
	k := clientKey(ip)
	st := l.clients[k]
	if st == nil {
		st = &clientState{rate: rate.NewLimiter(rate.Limit(l.opts.ConnRate), l.opts.ConnBurst)}
		l.clients[k] = st
	}
	st.lastSeen = now
	if st.errors > 0 && now.Sub(st.lastError) > l.opts.ErrorWindow {
		st.errors = 0
	}
	return st
}

// sweep drops idle entries, at most once a minute; l.mu is held.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for k, st := range l.clients {
		if st.conns == 0 && now.Sub(st.lastSeen) > l.opts.ErrorWindow {
			delete(l.clients, k)
		}
	}
}

// Refusal reasons of admit.
const (
	admitOK = iota
	admitTooMany
	admitRate
	admitErrors
)

// admit counts a new connection from ip, or says why it is refused. A
// connection admitted must be released.
func (l *limiter) admit(ip netip.Addr) int {
	if l.exempt(ip) {
		return admitOK
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	st := l.state(ip, now)
	switch {
	case st.errors >= l.opts.ErrorLimit:
		return admitErrors
	case st.conns >= l.opts.MaxConnsPerIP:
		return admitTooMany
	case !st.rate.AllowN(now, 1):
		return admitRate
	}
	st.conns++
	return admitOK
}

// release gives back the connection slot taken by admit.
func (l *limiter) release(ip netip.Addr) {
	if l.exempt(ip) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.clients[clientKey(ip)]; st != nil && st.conns > 0 {
		st.conns--
		st.lastSeen = l.now()
	}
}

// recordError counts a bad command or a failed AUTH from ip.
func (l *limiter) recordError(ip netip.Addr) {
	if l.exempt(ip) {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(ip, now)
	st.errors++
	st.lastError = now
}

// errorDelay returns how long ip's next command waits, or refuse once it has
// reached the error limit.
func (l *limiter) errorDelay(ip netip.Addr) (delay time.Duration, refuse bool) {
	if l.exempt(ip) {
		return 0, false
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(ip, now)
	if st.errors >= l.opts.ErrorLimit {
		return 0, true
	}
	over := st.errors - l.opts.ErrorsBeforeDelay
	if over < 0 {
		return 0, false
	}
	delay = l.opts.ErrorDelay
	for i := 0; i < over && delay < l.opts.MaxErrorDelay; i++ {
		delay *= 2
	}
	return min(delay, l.opts.MaxErrorDelay), false
}
