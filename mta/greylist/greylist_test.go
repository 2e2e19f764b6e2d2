package greylist_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/greylist"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func setup(t *testing.T, opts greylist.Options) (*greylist.Greylister, *clock, *storetest.DB) {
	t.Helper()
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `
		INSERT INTO domain (name) VALUES ('grey.example'), ('plain.example');
		INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('alias.example', 'grey.example');`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutDomainPolicy(ctx, store.DomainPolicy{Domain: "grey.example", Greylisting: true, Active: true}); err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}
	opts.Now = c.now
	return greylist.New(st, opts), c, db
}

// step is one attempt of the timeline and what must come of it.
type step struct {
	after     time.Duration // since the previous step
	client    string
	sender    string
	rcpt      string
	pass      bool
	reason    string
	retryWait time.Duration // for deferrals
}

func run(t *testing.T, g *greylist.Greylister, c *clock, steps []step) {
	t.Helper()
	for i, s := range steps {
		c.advance(s.after)
		v, err := g.Check(context.Background(), greylist.Request{
			Client: netip.MustParseAddr(s.client), Sender: s.sender, Recipient: s.rcpt})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if v.Pass != s.pass || v.Reason != s.reason || (!s.pass && v.RetryAfter != s.retryWait) {
			t.Fatalf("step %d (%s %s -> %s at +%v): got %+v, want pass=%v %q retry %v",
				i, s.client, s.sender, s.rcpt, s.after, v, s.pass, s.reason, s.retryWait)
		}
		r, deferred := v.Reply()
		if deferred != !s.pass {
			t.Fatalf("step %d: reply %v", i, r)
		}
		if deferred && (r.Code != 451 || r.Enhanced != (envelope.Status{4, 7, 1}) || !strings.Contains(r.Text, "Greylisted")) {
			t.Fatalf("step %d: reply %v", i, r)
		}
	}
}

func TestGreylistTimeline(t *testing.T) {
	g, c, _ := setup(t, greylist.Options{Delay: 5 * time.Minute, RetryWindow: 4 * time.Hour, AutoAllowAfter: 3})
	const a, b = "a@sender.example", "b@sender.example"
	run(t, g, c, []step{
		{0, "192.0.2.10", a, "u@grey.example", false, greylist.ReasonNew, 5 * time.Minute},
		{time.Minute, "192.0.2.10", a, "u@grey.example", false, greylist.ReasonEarly, 4 * time.Minute},
		{3*time.Minute + 59*time.Second, "192.0.2.10", a, "U@Grey.Example", false, greylist.ReasonEarly, time.Second},
		// The retry after the delay passes, from another server of the /24.
		{time.Second, "192.0.2.99", a, "u@grey.example", true, greylist.ReasonRetried, 0},
		{time.Hour, "192.0.2.10", a, "u@grey.example", true, greylist.ReasonKnown, 0},
		// Another recipient, another sender, another network: new triplets.
		{0, "192.0.2.10", a, "v@grey.example", false, greylist.ReasonNew, 5 * time.Minute},
		{0, "192.0.2.10", b, "u@grey.example", false, greylist.ReasonNew, 5 * time.Minute},
		{0, "192.0.3.10", a, "u@grey.example", false, greylist.ReasonNew, 5 * time.Minute},
		// The null sender is a sender like any other.
		{0, "192.0.2.10", "", "u@grey.example", false, greylist.ReasonNew, 5 * time.Minute},
		{10 * time.Minute, "192.0.2.10", "", "u@grey.example", true, greylist.ReasonRetried, 0},
		// Domains without greylisting, alias domains of one with it.
		{0, "203.0.113.1", a, "u@plain.example", true, greylist.ReasonNotEnabled, 0},
		{0, "203.0.113.1", a, "u@alias.example", false, greylist.ReasonNew, 5 * time.Minute},
		// BATV tags change every message; the triplet does not.
		{0, "203.0.113.1", "prvs=0123abcd=news@list.example", "u@grey.example", false, greylist.ReasonNew, 5 * time.Minute},
		{6 * time.Minute, "203.0.113.1", "prvs=9999ffff=news@list.example", "u@grey.example", true, greylist.ReasonRetried, 0},
		// IPv6 clients are grouped by /64.
		{0, "2001:db8:1:2::25", a, "u@grey.example", false, greylist.ReasonNew, 5 * time.Minute},
		{5 * time.Minute, "2001:db8:1:2:ffff::1", a, "u@grey.example", true, greylist.ReasonRetried, 0},
	})
}

func TestRetryWindowAndExpiry(t *testing.T) {
	g, c, db := setup(t, greylist.Options{AutoAllowAfter: -1})
	const a = "a@sender.example"
	run(t, g, c, []step{
		{0, "192.0.2.10", a, "u@grey.example", false, greylist.ReasonNew, 300 * time.Second},
		// Past the 4 h window: the first attempt is forgotten and the delay
		// starts over.
		{4*time.Hour + time.Second, "192.0.2.10", a, "u@grey.example", false, greylist.ReasonNew, 300 * time.Second},
		{300 * time.Second, "192.0.2.10", a, "u@grey.example", true, greylist.ReasonRetried, 0},
		// Passed triplets stay passed while they are used...
		{34 * 24 * time.Hour, "192.0.2.10", a, "u@grey.example", true, greylist.ReasonKnown, 0},
		{34 * 24 * time.Hour, "192.0.2.10", a, "u@grey.example", true, greylist.ReasonKnown, 0},
		// ...and expire after 35 days of silence.
		{35 * 24 * time.Hour, "192.0.2.10", a, "u@grey.example", false, greylist.ReasonNew, 300 * time.Second},
	})
	// The sweep deletes what expired.
	c.advance(36 * 24 * time.Hour)
	if n, err := g.Expire(context.Background()); err != nil || n != 1 {
		t.Fatalf("expire: %d %v", n, err)
	}
	var rows int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM greylist`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("%d rows left, %v", rows, err)
	}
}

func TestAutoAllowlistAndExemptions(t *testing.T) {
	g, c, db := setup(t, greylist.Options{AutoAllowAfter: 2})
	// Two triplets passed by retrying...
	run(t, g, c, []step{
		{0, "198.51.100.7", "a@s.example", "u@grey.example", false, greylist.ReasonNew, 300 * time.Second},
		{0, "198.51.100.7", "b@s.example", "u@grey.example", false, greylist.ReasonNew, 300 * time.Second},
		{10 * time.Minute, "198.51.100.7", "a@s.example", "u@grey.example", true, greylist.ReasonRetried, 0},
		// a passed triplet used again is not one more pass
		{0, "198.51.100.7", "a@s.example", "u@grey.example", true, greylist.ReasonKnown, 0},
		{0, "198.51.100.8", "c@s.example", "u@grey.example", false, greylist.ReasonNew, 300 * time.Second},
		{0, "198.51.100.7", "b@s.example", "u@grey.example", true, greylist.ReasonRetried, 0},
		// ...and the network is no longer greylisted, for any triplet.
		{0, "198.51.100.200", "new@s.example", "v@grey.example", true, greylist.ReasonAllowlisted, 0},
		// Others still are.
		{0, "198.51.101.1", "new@s.example", "v@grey.example", false, greylist.ReasonNew, 300 * time.Second},
	})
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM greylist WHERE sender = 'new@s.example' AND client = '198.51.100.0/24'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("an allowlisted client's triplet was stored: %d %v", n, err)
	}
	// An allowlisted network is forgotten after Expiry without mail.
	c.advance(36 * 24 * time.Hour)
	run(t, g, c, []step{
		{0, "198.51.100.200", "new@s.example", "v@grey.example", false, greylist.ReasonNew, 300 * time.Second},
	})

	// Exempt clients (client_access permit, authenticated) are not even
	// looked up.
	v, err := g.Check(context.Background(), greylist.Request{Client: netip.MustParseAddr("192.0.2.1"),
		Sender: "x@y.example", Recipient: "u@grey.example", Exempt: true})
	if err != nil || !v.Pass || v.Reason != greylist.ReasonExempt {
		t.Fatalf("%+v %v", v, err)
	}
	// A database failure is an error, never a pass.
	db.Pool.Close()
	if v, err := g.Check(context.Background(), greylist.Request{Client: netip.MustParseAddr("192.0.2.1"),
		Sender: "x@y.example", Recipient: "u@grey.example"}); err == nil || v.Pass {
		t.Fatalf("closed database: %+v %v", v, err)
	}
}
