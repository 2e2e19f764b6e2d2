package lookups_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/facteur/facteur/lookups"
)

// BenchmarkResolveCached measures a cached RCPT lookup (target: over
// 1,000,000 per second per core).
func BenchmarkResolveCached(b *testing.B) {
	_, st := newFixture(b)
	r := lookups.New(st, testOptions())
	ctx := context.Background()
	addrs := []string{"john+tag@example.test", "sales@example.test", "nobody@example.test", "Someone@Remote.test"}
	for _, a := range addrs {
		if _, _, err := r.Resolve(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, _, err := r.Resolve(ctx, addrs[i%len(addrs)]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if s := r.Stats(); s.Misses != uint64(len(addrs)) {
		b.Fatalf("stats %+v: the loop missed the cache", s)
	}
}

// BenchmarkResolveCachedParallel is BenchmarkResolveCached on every core.
func BenchmarkResolveCachedParallel(b *testing.B) {
	_, st := newFixture(b)
	r := lookups.New(st, testOptions())
	ctx := context.Background()
	addrs := []string{"john+tag@example.test", "sales@example.test", "nobody@example.test", "Someone@Remote.test"}
	for _, a := range addrs {
		if _, _, err := r.Resolve(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, _, err := r.Resolve(ctx, addrs[i%len(addrs)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkResolveUncached measures a cache miss: a new address each time,
// one round trip to PostgreSQL (over its unix socket here).
func BenchmarkResolveUncached(b *testing.B) {
	_, st := newFixture(b)
	r := lookups.New(st, testOptions())
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		res, found, err := r.Resolve(ctx, "john+"+strconv.Itoa(i)+"@example.test")
		if err != nil || !found || len(res.Recipients) != 1 {
			b.Fatalf("found %v, err %v", found, err)
		}
	}
	b.StopTimer()
	if s := r.Stats(); s.Hits != 0 {
		b.Fatalf("stats %+v: the loop hit the cache", s)
	}
}

// BenchmarkResolveUncachedAlias is a miss on a 1:3 alias (four round trips).
func BenchmarkResolveUncachedAlias(b *testing.B) {
	_, st := newFixture(b)
	r := lookups.New(st, testOptions())
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		res, found, err := r.Resolve(ctx, "sales+"+strconv.Itoa(i)+"@example.test")
		if err != nil || !found || len(res.Recipients) != 3 {
			b.Fatalf("found %v, err %v", found, err)
		}
	}
}
