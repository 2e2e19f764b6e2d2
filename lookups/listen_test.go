package lookups_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/store"
)

// invalidationBound is how soon a change must reach the cache (DESIGN.md:
// within a second).
const invalidationBound = time.Second

// startRun runs r.Run until the test ends and waits for its first LISTEN.
func startRun(t *testing.T, r *lookups.Resolver) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	waitFor(t, 10*time.Second, "the first LISTEN", func() bool { return r.Stats().Connects >= 1 })
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("no %s after %v", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// cachedFound resolves addr twice and checks that the second answer came
// from the cache, so that only an invalidation can change it.
func cachedFound(t *testing.T, r *lookups.Resolver, addr string) bool {
	t.Helper()
	ctx := context.Background()
	_, found1, err := r.Resolve(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	hits := r.Stats().Hits
	_, found2, err := r.Resolve(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stats().Hits != hits+1 || found1 != found2 {
		t.Fatalf("%s was not served from the cache (stats %+v)", addr, r.Stats())
	}
	return found2
}

// updateElsewhere runs sql on a connection of its own, as another process
// would, and returns when it is committed.
func updateElsewhere(t *testing.T, url, sql string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

// seenWithin waits until Resolve(addr) reports want, and fails after
// invalidationBound.
func seenWithin(t *testing.T, r *lookups.Resolver, addr string, want bool) {
	t.Helper()
	took := waitFor(t, invalidationBound, "invalidation", func() bool {
		_, found, err := r.Resolve(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		return found == want
	})
	t.Logf("change seen after %v", took)
}

func TestCacheInvalidatedByNotify(t *testing.T) {
	db, st := newFixture(t)
	r := lookups.New(st, testOptions()) // TTL 60 s: only NOTIFY can refresh
	startRun(t, r)

	if !cachedFound(t, r, "john@example.test") {
		t.Fatal("john not found")
	}
	updateElsewhere(t, db.URL, "UPDATE mailbox SET active = false WHERE address = 'john@example.test'")
	seenWithin(t, r, "john@example.test", false)

	// Negative answers are cached and invalidated too.
	if cachedFound(t, r, "newbie@example.test") {
		t.Fatal("newbie found before it exists")
	}
	updateElsewhere(t, db.URL, "INSERT INTO mailbox (address) VALUES ('newbie@example.test')")
	seenWithin(t, r, "newbie@example.test", true)

	// Client access answers are dropped as well.
	ctx := context.Background()
	if relay, _, _, err := r.ClientAccess(ctx, mustAddr("203.0.113.9")); err != nil || relay {
		t.Fatalf("203.0.113.9 before: relay %v, err %v", relay, err)
	}
	updateElsewhere(t, db.URL, "INSERT INTO client_access (network, action) VALUES ('203.0.113.0/24', 'permit_relay')")
	waitFor(t, invalidationBound, "client access invalidation", func() bool {
		relay, _, _, err := r.ClientAccess(ctx, mustAddr("203.0.113.9"))
		return err == nil && relay
	})
}

func TestCacheReconnectsAfterBackendKilled(t *testing.T) {
	db, st := newFixture(t)
	r := lookups.New(st, testOptions())
	startRun(t, r)
	ctx := context.Background()

	if !cachedFound(t, r, "jane@example.test") {
		t.Fatal("jane not found")
	}
	var killed int
	err := db.Pool.QueryRow(ctx, `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, lookups.ListenerApplicationName).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminate the listener: %d killed, err %v", killed, err)
	}
	waitFor(t, 10*time.Second, "reconnection", func() bool { return r.Stats().Connects >= 2 })

	// The reconnection dropped the cache; fill it again and change the data.
	if !cachedFound(t, r, "jane@example.test") {
		t.Fatal("jane not found after reconnection")
	}
	updateElsewhere(t, db.URL, "UPDATE mailbox SET active = false WHERE address = 'jane@example.test'")
	seenWithin(t, r, "jane@example.test", false)
}

func TestCacheBypassedWhileListenerDown(t *testing.T) {
	db, st := newFixture(t)
	r := lookups.New(st, testOptions())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	waitFor(t, 10*time.Second, "the first LISTEN", func() bool { return r.Stats().Connects >= 1 })
	cancel()
	<-done
	// Run has returned: nobody hears about changes, so nothing is cached.
	_, _, _ = r.Resolve(context.Background(), "john@example.test")
	hits := r.Stats().Hits
	updateElsewhere(t, db.URL, "UPDATE mailbox SET active = false WHERE address = 'john@example.test'")
	if _, found, err := r.Resolve(context.Background(), "john@example.test"); err != nil || found {
		t.Fatalf("after Run returned: found %v, err %v (stale cache)", found, err)
	}
	if r.Stats().Hits != hits {
		t.Fatal("a lookup was served from the cache while nothing listened")
	}
}

func TestRunTwiceIsRefused(t *testing.T) {
	_, st := newFixture(t)
	r := lookups.New(st, testOptions())
	startRun(t, r)
	if err := r.Run(context.Background()); err == nil {
		t.Fatal("a second Run was accepted")
	}
}

func TestDatabaseErrorIsNotNotFound(t *testing.T) {
	db, _ := newFixture(t)
	pool, err := pgxpool.New(context.Background(), db.URL)
	if err != nil {
		t.Fatal(err)
	}
	r := lookups.New(store.New(pool), testOptions())
	pool.Close()
	ctx := context.Background()
	for _, a := range []string{"john@example.test", "nobody@example.test", "x@remote.test", "postmaster"} {
		res, found, err := r.Resolve(ctx, a)
		if err == nil || found || lookups.Permanent(err) || len(res.Recipients) != 0 {
			t.Errorf("Resolve(%q) on a closed pool = found %v, err %v, %d recipients; want a temporary error",
				a, found, err, len(res.Recipients))
		}
	}
	if _, err := r.SenderAllowed(ctx, "john@example.test", "john@example.test"); err == nil || lookups.Permanent(err) {
		t.Errorf("SenderAllowed on a closed pool: err = %v, want a temporary error", err)
	}
	if _, _, _, err := r.ClientAccess(ctx, mustAddr("10.0.0.1")); err == nil {
		t.Error("ClientAccess on a closed pool: no error")
	}

	// A cancelled context is an error too, never "not found".
	_, st := newFixture(t)
	r = lookups.New(st, testOptions())
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, found, err := r.Resolve(cctx, "nobody@example.test"); !errors.Is(err, context.Canceled) || found {
		t.Errorf("Resolve with a cancelled context: found %v, err %v", found, err)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestOnInvalidateHook checks that Options.OnInvalidate hears of every
// control-plane write made on another connection, split into table and key
// as facteur_changed announces them, and of each (re)connection.
func TestOnInvalidateHook(t *testing.T) {
	db, st := newFixture(t)
	type call struct{ table, key string }
	calls := make(chan call, 100)
	opts := testOptions()
	opts.OnInvalidate = func(table, key string) { calls <- call{table, key} }
	r := lookups.New(st, opts)
	startRun(t, r)
	next := func(want call) {
		t.Helper()
		select {
		case got := <-calls:
			if got != want {
				t.Fatalf("OnInvalidate(%q, %q), want (%q, %q)", got.table, got.key, want.table, want.key)
			}
		case <-time.After(invalidationBound):
			t.Fatalf("no OnInvalidate(%q, %q) within %v", want.table, want.key, invalidationBound)
		}
	}
	next(call{"", ""}) // the first LISTEN

	updateElsewhere(t, db.URL, `INSERT INTO dnsbl (zone, weight) VALUES ('zen.dnsbl.test', 3)`)
	next(call{"dnsbl", "zen.dnsbl.test"})
	updateElsewhere(t, db.URL, `INSERT INTO dkim_key (domain, selector, algorithm, private_key, public_key)
		VALUES ('example.test', 'sel1', 'ed25519-sha256', '-----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY-----', 'AAAA')`)
	next(call{"dkim_key", "sel1._domainkey.example.test"})
	updateElsewhere(t, db.URL, `UPDATE dkim_key SET active = false WHERE domain = 'example.test'`)
	next(call{"dkim_key", "sel1._domainkey.example.test"})
	// A key with colons (an IPv6 network) is split at the first one only.
	updateElsewhere(t, db.URL, `INSERT INTO client_access (network, action) VALUES ('2001:db8:1::/48', 'reject')`)
	next(call{"client_access", "2001:db8:1::/48"})

	// A lost connection may hide changes: the reconnection says so.
	var killed int
	err := db.Pool.QueryRow(context.Background(), `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, lookups.ListenerApplicationName).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminate the listener: %d killed, err %v", killed, err)
	}
	waitFor(t, 10*time.Second, "reconnection", func() bool { return r.Stats().Connects >= 2 })
	next(call{"", ""})
	select {
	case c := <-calls:
		t.Fatalf("unexpected OnInvalidate(%q, %q)", c.table, c.key)
	default:
	}
}
