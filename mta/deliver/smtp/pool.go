package smtp

import (
	"slices"
	"sync"
	"time"
)

// pool keeps sessions that delivered a message, by destination, for the
// next message to the same destination (Postfix's scache, with
// smtp_connection_cache_time_limit). An idle session is closed after ttl; at
// most max sessions are idle at once. get and put may be called from any
// goroutine.
type pool struct {
	mu     sync.Mutex
	idle   map[string][]*session
	n      int
	max    int
	ttl    time.Duration
	closed bool
	quit   func(*session) // closes an expired session, outside the lock
}

func newPool(max int, ttl time.Duration, quit func(*session)) *pool {
	return &pool{idle: map[string][]*session{}, max: max, ttl: ttl, quit: quit}
}

// get takes the most recently used idle session of key, or returns nil.
func (p *pool) get(key string) *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.idle[key]
	if len(l) == 0 {
		return nil
	}
	s := l[len(l)-1]
	p.drop(key, len(l)-1)
	s.timer.Stop()
	s.timer = nil
	return s
}

// put keeps s for reuse and reports whether it did; when it did not (the
// pool is full or closed), the caller closes s.
func (p *pool) put(key string, s *session) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.max <= 0 || p.n >= p.max {
		return false
	}
	p.idle[key] = append(p.idle[key], s)
	p.n++
	s.timer = time.AfterFunc(p.ttl, func() {
		if p.remove(key, s) {
			p.quit(s)
		}
	})
	return true
}

// remove takes s out of the pool if it is still idle there.
func (p *pool) remove(key string, s *session) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.Index(p.idle[key], s)
	if i < 0 {
		return false
	}
	p.drop(key, i)
	s.timer = nil
	return true
}

// drop removes entry i of key; the lock is held.
func (p *pool) drop(key string, i int) {
	l := slices.Delete(p.idle[key], i, i+1)
	if len(l) == 0 {
		delete(p.idle, key)
	} else {
		p.idle[key] = l
	}
	p.n--
}

// closeAll empties the pool for good and returns the sessions that were in
// it, for the caller to close.
func (p *pool) closeAll() []*session {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var out []*session
	for _, l := range p.idle {
		for _, s := range l {
			s.timer.Stop()
			s.timer = nil
			out = append(out, s)
		}
	}
	p.idle = map[string][]*session{}
	p.n = 0
	return out
}

// idleCount returns the number of idle sessions (for tests and metrics).
func (p *pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
