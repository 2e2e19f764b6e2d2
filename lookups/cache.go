package lookups

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// cacheShards spreads the cache over several locks so that lookups on many
// cores do not contend on one.
const cacheShards = 16

// cache is a size-bounded map with a TTL and a generation: drop empties it
// and starts a new generation, and put refuses a value computed in an older
// generation (a lookup that began before an invalidation must not store its
// possibly stale answer after it).
type cache[V any] struct {
	ttl      time.Duration
	perShard int
	seed     maphash.Seed
	gen      atomic.Uint64
	drops    atomic.Uint64
	shards   [cacheShards]cacheShard[V]
}

type cacheShard[V any] struct {
	mu sync.RWMutex
	m  map[string]cacheEntry[V]
	_  [40]byte // keep shards on separate cache lines
}

type cacheEntry[V any] struct {
	v       V
	expires int64 // unix nanoseconds
}

// newCache returns a cache of at most size entries kept for ttl; size 0 is a
// cache that stores nothing.
func newCache[V any](size int, ttl time.Duration) *cache[V] {
	c := &cache[V]{ttl: ttl, seed: maphash.MakeSeed()}
	if size > 0 {
		c.perShard = max(1, (size+cacheShards-1)/cacheShards)
	}
	for i := range c.shards {
		c.shards[i].m = make(map[string]cacheEntry[V])
	}
	return c
}

func (c *cache[V]) shard(key string) *cacheShard[V] {
	return &c.shards[maphash.String(c.seed, key)%cacheShards]
}

func (c *cache[V]) enabled() bool { return c.perShard > 0 }

func (c *cache[V]) get(key string) (V, bool) {
	var zero V
	if !c.enabled() {
		return zero, false
	}
	s := c.shard(key)
	s.mu.RLock()
	e, ok := s.m[key]
	s.mu.RUnlock()
	if !ok || time.Now().UnixNano() >= e.expires {
		return zero, false
	}
	return e.v, true
}

// generation returns the current generation, to pass to put.
func (c *cache[V]) generation() uint64 { return c.gen.Load() }

// put stores v under key unless the cache was dropped since gen was read.
func (c *cache[V]) put(key string, v V, gen uint64) {
	if !c.enabled() {
		return
	}
	s := c.shard(key)
	now := time.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Checked under the shard lock: drop bumps the generation before it
	// clears the shards, so a put that sees the old generation here finishes
	// before that shard is cleared.
	if c.gen.Load() != gen {
		return
	}
	if _, exists := s.m[key]; !exists && len(s.m) >= c.perShard {
		// Full: look at a few entries from a random place (map iteration
		// order) and remove the expired ones, or else the first of them.
		n, victim := 0, ""
		for k, e := range s.m {
			if n == 0 {
				victim = k
			}
			if now >= e.expires {
				delete(s.m, k)
			}
			if n++; n == 8 {
				break
			}
		}
		if len(s.m) >= c.perShard {
			delete(s.m, victim)
		}
	}
	s.m[key] = cacheEntry[V]{v: v, expires: now + int64(c.ttl)}
}

// drop empties the cache and starts a new generation.
func (c *cache[V]) drop() {
	c.gen.Add(1)
	c.drops.Add(1)
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

func (c *cache[V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
