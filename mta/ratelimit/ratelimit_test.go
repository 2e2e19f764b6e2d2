package ratelimit_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/ratelimit"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)} }

func wantReply(t *testing.T, err error, code int, st envelope.Status) {
	t.Helper()
	var r envelope.Reply
	if !errors.As(err, &r) || r.Code != code || r.Enhanced != st {
		t.Fatalf("got %v, want %d %s", err, code, st)
	}
}

func TestAnvilConnectionCount(t *testing.T) {
	a := ratelimit.NewAnvil(ratelimit.AnvilOptions{ConnectionCount: 2})
	ip := netip.MustParseAddr("192.0.2.1")
	r1, err := a.Connect(ip)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := a.Connect(ip)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Connect(ip)
	wantReply(t, err, 421, envelope.Status{4, 7, 0})
	if !strings.Contains(err.Error(), "too many connections from 192.0.2.1") {
		t.Fatal(err)
	}
	// Others are not affected.
	if _, err := a.Connect(netip.MustParseAddr("192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	r1()
	r1() // a second release does nothing
	if _, err := a.Connect(ip); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	_, err = a.Connect(ip)
	wantReply(t, err, 421, envelope.Status{4, 7, 0})
	r2()
}

func TestAnvilRatesWithTheClock(t *testing.T) {
	c := newClock()
	a := ratelimit.NewAnvil(ratelimit.AnvilOptions{ConnectionRate: 3, MessageRate: 2, Window: time.Minute, Now: c.now,
		Exempt: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	ip := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		rel, err := a.Connect(ip)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		rel()
	}
	_, err := a.Connect(ip)
	wantReply(t, err, 421, envelope.Status{4, 7, 0})
	// One more every Window/rate.
	c.advance(20 * time.Second)
	if _, err := a.Connect(ip); err != nil {
		t.Fatal(err)
	}
	_, err = a.Connect(ip)
	wantReply(t, err, 421, envelope.Status{4, 7, 0})

	for i := range 2 {
		if err := a.Message(ip); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	err = a.Message(ip)
	wantReply(t, err, 450, envelope.Status{4, 7, 1})
	if !strings.Contains(err.Error(), "too much mail from 192.0.2.1") {
		t.Fatal(err)
	}
	c.advance(30 * time.Second)
	if err := a.Message(ip); err != nil {
		t.Fatal(err)
	}
	// IPv6 clients share their /64; IPv4-mapped addresses are IPv4.
	v6 := netip.MustParseAddr("2001:db8::1")
	a.Message(v6)
	a.Message(netip.MustParseAddr("2001:db8::2"))
	wantReply(t, a.Message(netip.MustParseAddr("2001:db8::ffff:3")), 450, envelope.Status{4, 7, 1})
	if err := a.Message(netip.MustParseAddr("2001:db8:0:1::1")); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	wantReply(t, a.Message(netip.MustParseAddr("::ffff:192.0.2.1")), 450, envelope.Status{4, 7, 1})
	// Exempt networks have no limit.
	for range 10 {
		if err := a.Message(netip.MustParseAddr("10.1.2.3")); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAnvilStateIsBounded(t *testing.T) {
	c := newClock()
	a := ratelimit.NewAnvil(ratelimit.AnvilOptions{MessageRate: 5, MaxClients: 100, Now: c.now})
	held, err := a.Connect(netip.MustParseAddr("198.51.100.1"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		a.Message(netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}))
		if n := a.Clients(); n > 100 {
			t.Fatalf("%d clients tracked", n)
		}
	}
	// Idle clients go after a Window.
	c.advance(2 * time.Minute)
	a.Message(netip.MustParseAddr("203.0.113.1"))
	if n := a.Clients(); n != 2 {
		t.Fatalf("%d clients tracked after the window (want the connected one and the new one)", n)
	}
	held()
}

func TestEvaluate(t *testing.T) {
	n := func(v int) *int { return &v }
	base := store.SendStatus{Mailbox: "u@a.example", Domain: "a.example"}
	cases := []struct {
		name string
		edit func(*store.SendStatus)
		want string
	}{
		{"no limits", func(*store.SendStatus) {}, ""},
		{"under", func(s *store.SendStatus) {
			s.MailboxLimits.MessagesPerHour, s.MailboxSent.LastHour = n(10), 9
		}, ""},
		{"mailbox hour", func(s *store.SendStatus) {
			s.MailboxLimits.MessagesPerHour, s.MailboxSent.LastHour = n(10), 10
		}, "u@a.example may send 10 messages per hour"},
		{"mailbox day", func(s *store.SendStatus) {
			s.MailboxLimits.MessagesPerDay, s.MailboxSent.LastDay = n(100), 100
		}, "u@a.example may send 100 messages per day"},
		{"domain hour", func(s *store.SendStatus) {
			s.DomainLimits.MessagesPerHour, s.DomainSent.LastHour = n(5), 7
		}, "domain a.example may send 5 messages per hour"},
		{"domain day", func(s *store.SendStatus) {
			s.DomainLimits.MessagesPerDay, s.DomainSent.LastDay = n(50), 50
		}, "domain a.example may send 50 messages per day"},
	}
	for _, tc := range cases {
		st := base
		tc.edit(&st)
		r, over := ratelimit.Evaluate(st)
		if over != (tc.want != "") || (over && (!strings.Contains(r.Text, tc.want) || r.Code != 450 || r.Enhanced != (envelope.Status{4, 7, 1}))) {
			t.Errorf("%s: %v %v", tc.name, r, over)
		}
	}
}

func outboundSetup(t *testing.T) (*store.Store, *storetest.DB, *clock, *ratelimit.Outbound) {
	t.Helper()
	db := storetest.New(t)
	st := store.New(db.Pool)
	if _, err := db.Pool.Exec(context.Background(), `
		INSERT INTO domain (name) VALUES ('a.example'), ('b.example');
		INSERT INTO mailbox (address, maildir) VALUES ('u@a.example', ''), ('v@a.example', ''), ('w@b.example', '');`); err != nil {
		t.Fatal(err)
	}
	c := newClock()
	return st, db, c, ratelimit.NewOutbound(st, ratelimit.OutboundOptions{Now: c.now})
}

// send runs one transaction with n recipients and records it.
func send(ctx context.Context, o *ratelimit.Outbound, mailbox string, n int) error {
	tx, err := o.Mail(ctx, mailbox)
	if err != nil {
		return err
	}
	for range n {
		if err := tx.Rcpt(); err != nil {
			return err
		}
	}
	return o.Record(ctx, mailbox, tx.Recipients())
}

func TestOutboundLimitsPerMailboxAndDomain(t *testing.T) {
	st, _, c, o := outboundSetup(t)
	ctx := context.Background()
	n := func(v int) *int { return &v }
	if _, err := st.PutMailboxPolicy(ctx, store.MailboxPolicy{Mailbox: "u@a.example", Active: true,
		SendLimits: store.SendLimits{MessagesPerHour: n(2), RecipientsPerMessage: n(3)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutDomainPolicy(ctx, store.DomainPolicy{Domain: "a.example", Active: true,
		SendLimits: store.SendLimits{MessagesPerDay: n(4), RecipientsPerMessage: n(5)}}); err != nil {
		t.Fatal(err)
	}
	// u: two messages an hour.
	for i := range 2 {
		if err := send(ctx, o, "u@a.example", 1); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		c.advance(time.Minute)
	}
	_, err := o.Mail(ctx, "u@a.example")
	wantReply(t, err, 450, envelope.Status{4, 7, 1})
	// An hour (and a bucket) later, again.
	c.advance(time.Hour + 5*time.Minute)
	if err := send(ctx, o, "u@a.example", 1); err != nil {
		t.Fatal(err)
	}
	// v has no limit of its own, but the domain's four a day are used up
	// with it: three by u, one by v.
	if err := send(ctx, o, "v@a.example", 1); err != nil {
		t.Fatal(err)
	}
	_, err = o.Mail(ctx, "v@a.example")
	wantReply(t, err, 450, envelope.Status{4, 7, 1})
	if !strings.Contains(err.Error(), "domain a.example may send 4 messages per day") {
		t.Fatal(err)
	}
	// Another domain is not affected.
	if err := send(ctx, o, "w@b.example", 100); err != nil {
		t.Fatal(err)
	}
	// The next day (windows are rounded outwards to 5-minute buckets),
	// the domain may send again.
	c.advance(24*time.Hour + 5*time.Minute)
	if err := send(ctx, o, "v@a.example", 1); err != nil {
		t.Fatal(err)
	}

	// Recipients per message: the smaller of the mailbox's 3 and the
	// domain's 5.
	tx, err := o.Mail(ctx, "u@a.example")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := tx.Rcpt(); err != nil {
			t.Fatalf("recipient %d: %v", i, err)
		}
	}
	err = tx.Rcpt()
	wantReply(t, err, 450, envelope.Status{4, 7, 1})
	if tx.Recipients() != 3 {
		t.Fatalf("%d recipients counted", tx.Recipients())
	}
	// Status is what admins see.
	s, err := st.SendStatus(ctx, "v@a.example", c.now())
	if err != nil || s.DomainSent.LastDay != 1 || s.MailboxSent.LastDay != 1 {
		t.Fatalf("%+v %v", s, err)
	}
}

func TestOutboundCountsAcrossNodes(t *testing.T) {
	st, db, c, o1 := outboundSetup(t)
	ctx := context.Background()
	three := 3
	if _, err := st.PutMailboxPolicy(ctx, store.MailboxPolicy{Mailbox: "u@a.example", Active: true,
		SendLimits: store.SendLimits{MessagesPerHour: &three}}); err != nil {
		t.Fatal(err)
	}
	// A second node: its own pool, its own Outbound, the same database.
	st2, err := store.Open(ctx, db.URL, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	o2 := ratelimit.NewOutbound(st2, ratelimit.OutboundOptions{Now: c.now})
	for i, o := range []*ratelimit.Outbound{o1, o2, o1} {
		if err := send(ctx, o, "u@a.example", 1); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	_, err = o2.Mail(ctx, "u@a.example")
	wantReply(t, err, 450, envelope.Status{4, 7, 1})
	// A database failure is not a reply: the caller answers 451 4.3.0.
	st2.Close()
	_, err = o2.Mail(ctx, "u@a.example")
	var r envelope.Reply
	if err == nil || errors.As(err, &r) {
		t.Fatalf("closed database: %v", err)
	}
}
