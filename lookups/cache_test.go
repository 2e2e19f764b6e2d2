package lookups

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestCacheRefusesAnswerFromBeforeADrop(t *testing.T) {
	c := newCache[int](100, time.Minute)
	gen := c.generation()
	c.drop() // an invalidation while the lookup ran
	c.put("a", 1, gen)
	if _, ok := c.get("a"); ok {
		t.Fatal("a value computed before the drop was stored")
	}
	c.put("a", 2, c.generation())
	if v, ok := c.get("a"); !ok || v != 2 {
		t.Fatalf("get = %v, %v", v, ok)
	}
}

func TestCacheBoundAndTTL(t *testing.T) {
	c := newCache[int](64, time.Minute)
	for i := range 1000 {
		c.put(strconv.Itoa(i), i, c.generation())
	}
	if n := c.len(); n > 64 || n < 16 {
		t.Fatalf("%d entries for a bound of 64", n)
	}
	short := newCache[int](10, 20*time.Millisecond)
	short.put("k", 1, short.generation())
	if _, ok := short.get("k"); !ok {
		t.Fatal("fresh entry missing")
	}
	time.Sleep(30 * time.Millisecond)
	if _, ok := short.get("k"); ok {
		t.Fatal("entry outlived its TTL")
	}
	off := newCache[int](0, time.Minute)
	off.put("k", 1, off.generation())
	if _, ok := off.get("k"); ok {
		t.Fatal("a cache of size 0 stored an entry")
	}
}

// TestCacheConcurrentDrop checks, under -race too, that no value put with
// an old generation survives a drop that completed.
func TestCacheConcurrentDrop(t *testing.T) {
	c := newCache[int](1000, time.Minute)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := strconv.Itoa(w*1000 + i%100)
				c.put(k, int(c.generation()), c.generation())
				c.get(k)
			}
		}()
	}
	for range 200 {
		c.drop()
		after := int(c.generation())
		for i := range cacheShards {
			s := &c.shards[i]
			s.mu.RLock()
			for k, e := range s.m {
				if e.v < after-1 {
					s.mu.RUnlock()
					t.Fatalf("entry %s from generation %d survived the drop to %d", k, e.v, after)
				}
			}
			s.mu.RUnlock()
		}
	}
	close(stop)
	wg.Wait()
}
