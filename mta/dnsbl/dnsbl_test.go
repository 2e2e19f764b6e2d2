package dnsbl_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/foxcpp/go-mockdns"

	"github.com/facteur/facteur/mta/dnsbl"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

func zones(m map[string]mockdns.Zone) *mockdns.Resolver {
	z := map[string]mockdns.Zone{}
	for k, v := range m {
		z[strings.ToLower(strings.TrimSuffix(k, "."))+"."] = v
	}
	return &mockdns.Resolver{Zones: z}
}

// sites is an in-memory dnsbl.Sites.
type sites struct {
	rows  []store.DNSBLSite
	err   error
	loads atomic.Int32
}

func (s *sites) ActiveDNSBLSites(context.Context) ([]store.DNSBLSite, error) {
	s.loads.Add(1)
	return s.rows, s.err
}

// counting counts queries and may delay the answers of some zones.
type counting struct {
	dnsbl.Resolver
	queries atomic.Int32
	delay   map[string]time.Duration // by zone suffix
}

func (c *counting) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	c.queries.Add(1)
	for suffix, d := range c.delay {
		if strings.HasSuffix(host, suffix) {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return c.Resolver.LookupIPAddr(ctx, host)
}

// The postscreen example: Spamhaus ZEN with SBL/XBL weighing more than the
// PBL, and DNSWL subtracting.
var postscreenSites = []store.DNSBLSite{
	{Zone: "zen.spamhaus.org", ReplyFilter: "127.0.0.[2..9]", Weight: 3},
	{Zone: "zen.spamhaus.org", ReplyFilter: "127.0.0.[10;11]", Weight: 1},
	{Zone: "bl.example", Weight: 1, ReplyName: "the example list"},
	{Zone: "list.dnswl.org", ReplyFilter: "127.0.[0..255].[1..3]", Weight: -2},
}

func postscreenDNS() *mockdns.Resolver {
	return zones(map[string]mockdns.Zone{
		// 192.0.2.1: SBL and PBL at zen
		"1.2.0.192.zen.spamhaus.org": {A: []string{"127.0.0.2", "127.0.0.10"},
			TXT: []string{"https://www.spamhaus.org/query/ip/192.0.2.1\r\nX-Injected: yes"}},
		// 192.0.2.2: PBL only, and allowlisted by DNSWL
		"2.2.0.192.zen.spamhaus.org": {A: []string{"127.0.0.11"}},
		"2.2.0.192.list.dnswl.org":   {A: []string{"127.0.9.2"}},
		// 192.0.2.3: an answer outside the filter, and Spamhaus' error code
		"3.2.0.192.zen.spamhaus.org": {A: []string{"127.0.0.12"}},
		"3.2.0.192.bl.example":       {A: []string{"127.255.255.254"}},
		// 192.0.2.4: bl.example only, weight 1 = threshold
		"4.2.0.192.bl.example": {A: []string{"127.0.0.2"}, TXT: []string{"listed for spam"}},
		// 2001:db8::1 in nibble form
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org": {A: []string{"127.0.0.4"}},
		// 192.0.2.5: SERVFAIL at zen, listed at bl.example
		"5.2.0.192.zen.spamhaus.org": {Err: errors.New("SERVFAIL")},
		"5.2.0.192.bl.example":       {A: []string{"127.0.0.2"}},
	})
}

func TestWeightsThresholdAndReplies(t *testing.T) {
	c := dnsbl.New(postscreenDNS(), &sites{rows: postscreenSites}, dnsbl.Options{Threshold: 2, AllowlistThreshold: 1})
	ctx := context.Background()
	cases := []struct {
		ip                    string
		score                 int
		listed, allow, incomp bool
		reply                 string
	}{
		{"192.0.2.1", 4, true, false, false,
			"554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1 X-Injected: yes"},
		{"192.0.2.2", -1, false, true, false, ""},
		{"192.0.2.3", 0, false, false, false, ""},
		{"192.0.2.4", 1, false, false, false, ""},
		{"2001:db8::1", 3, true, false, false, "554 5.7.1 Service unavailable; client [2001:db8::1] blocked using zen.spamhaus.org"},
		{"::ffff:192.0.2.1", 4, true, false, false,
			"554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1 X-Injected: yes"},
		{"192.0.2.5", 1, false, false, true, ""},
		{"198.51.100.1", 0, false, false, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.ip, func(t *testing.T) {
			v, err := c.Check(ctx, netip.MustParseAddr(tc.ip))
			if err != nil {
				t.Fatal(err)
			}
			if v.Score != tc.score || v.Listed != tc.listed || v.Allowlisted != tc.allow || v.Incomplete != tc.incomp {
				t.Fatalf("%+v", v)
			}
			r, ok := v.Reply()
			if ok != (tc.reply != "") || (ok && r.String() != tc.reply) {
				t.Fatalf("reply %q %v, want %q", r.String(), ok, tc.reply)
			}
			if ok && (r.Code != 554 || r.Enhanced != (envelope.Status{5, 7, 1}) || strings.ContainsAny(r.Text, "\r\n")) {
				t.Fatalf("reply %+v", r)
			}
		})
	}
	// At threshold 1 the single bl.example listing refuses, with its
	// reply name and reason.
	c1 := dnsbl.New(postscreenDNS(), &sites{rows: postscreenSites}, dnsbl.Options{})
	v, _ := c1.Check(ctx, netip.MustParseAddr("192.0.2.4"))
	if r, ok := v.Reply(); !ok || r.Text != "Service unavailable; client [192.0.2.4] blocked using the example list; listed for spam" {
		t.Fatalf("%q %v", r.Text, ok)
	}
}

func TestCacheAndInvalidate(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	res := &counting{Resolver: postscreenDNS()}
	st := &sites{rows: postscreenSites}
	c := dnsbl.New(res, st, dnsbl.Options{CacheTTL: 10 * time.Minute, SitesTTL: time.Minute, Now: func() time.Time { return now }})
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")
	v, _ := c.Check(ctx, ip)
	q := res.queries.Load()
	if q != 3 || v.Cached {
		t.Fatalf("%d queries (one per zone), cached %v", q, v.Cached)
	}
	v, _ = c.Check(ctx, ip)
	if !v.Cached || !v.Listed || res.queries.Load() != q {
		t.Fatalf("second check: %+v, %d queries", v, res.queries.Load())
	}
	now = now.Add(11 * time.Minute)
	if v, _ = c.Check(ctx, ip); v.Cached || res.queries.Load() != 2*q {
		t.Fatalf("after the TTL: %+v", v)
	}
	if st.loads.Load() != 2 {
		t.Fatalf("sites loaded %d times", st.loads.Load())
	}
	// A changed table takes effect on Invalidate.
	st.rows = []store.DNSBLSite{{Zone: "bl.example", Weight: 1}}
	c.Invalidate()
	if v, _ = c.Check(ctx, ip); v.Cached || v.Listed {
		t.Fatalf("after Invalidate: %+v", v)
	}
	// Incomplete verdicts are not cached.
	res.queries.Store(0)
	st.rows = postscreenSites
	c.Invalidate()
	c.Check(ctx, netip.MustParseAddr("192.0.2.5"))
	if v, _ = c.Check(ctx, netip.MustParseAddr("192.0.2.5")); v.Cached {
		t.Fatal("an incomplete verdict was cached")
	}
	// A database failure is an error, not a verdict.
	st.err = errors.New("connection refused")
	c.Invalidate()
	if _, err := c.Check(ctx, ip); err == nil {
		t.Fatal("no error")
	}
}

func TestLookupsRunConcurrentlyUnderOneTimeout(t *testing.T) {
	var rows []store.DNSBLSite
	for _, z := range []string{"a.example", "b.example", "c.example", "d.example"} {
		rows = append(rows, store.DNSBLSite{Zone: z, Weight: 1})
	}
	rows = append(rows, store.DNSBLSite{Zone: "slow.example", Weight: 5})
	res := &counting{Resolver: zones(map[string]mockdns.Zone{
		"1.2.0.192.a.example": {A: []string{"127.0.0.2"}},
		"1.2.0.192.b.example": {A: []string{"127.0.0.2"}},
	}), delay: map[string]time.Duration{
		".a.example": 300 * time.Millisecond, ".b.example": 300 * time.Millisecond,
		".c.example": 300 * time.Millisecond, ".d.example": 300 * time.Millisecond,
		".slow.example": time.Hour,
	}}
	c := dnsbl.New(res, &sites{rows: rows}, dnsbl.Options{Timeout: time.Second, Threshold: 2})
	start := time.Now()
	v, err := c.Check(context.Background(), netip.MustParseAddr("192.0.2.1"))
	el := time.Since(start)
	if err != nil || v.Score != 2 || !v.Listed || !v.Incomplete {
		t.Fatalf("%+v %v", v, err)
	}
	// Four 300 ms lookups in sequence would take 1.2 s; the slow list is
	// cut at the timeout.
	if el < time.Second || el > 3*time.Second {
		t.Fatalf("took %v", el)
	}
}

func TestFilters(t *testing.T) {
	for _, tc := range []struct {
		filter string
		ok     []string
		not    []string
	}{
		{"", []string{"127.0.0.2", "127.1.2.3"}, []string{"127.255.255.254", "10.0.0.2", "::1"}},
		{"127.0.0.2", []string{"127.0.0.2"}, []string{"127.0.0.3"}},
		{"127.0.0.[2..11]", []string{"127.0.0.2", "127.0.0.11"}, []string{"127.0.0.1", "127.0.0.12"}},
		{"127.0.[0..255].[1;3;5..7]", []string{"127.0.9.1", "127.0.0.6"}, []string{"127.0.9.2", "127.0.0.8"}},
		{"127.*.*.*", []string{"127.9.9.9"}, []string{"126.0.0.1"}},
	} {
		f, err := dnsbl.ParseFilter(tc.filter)
		if err != nil {
			t.Fatalf("%q: %v", tc.filter, err)
		}
		for _, a := range tc.ok {
			if !f.Match(netip.MustParseAddr(a)) {
				t.Errorf("%q does not match %s", tc.filter, a)
			}
		}
		for _, a := range tc.not {
			if f.Match(netip.MustParseAddr(a)) {
				t.Errorf("%q matches %s", tc.filter, a)
			}
		}
	}
	for _, bad := range []string{"127.0.0", "127.0.0.[2..]", "127.0.0.256", "127.0.0.[11..2]", "127.0.0.[[1]]", "127.0.0.1.1"} {
		if _, err := dnsbl.ParseFilter(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// The real path: sites from the dnsbl table.
func TestSitesFromTheDatabase(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx := context.Background()
	for _, s := range postscreenSites {
		s.Active = true
		if _, err := st.CreateDNSBLSite(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CreateDNSBLSite(ctx, store.DNSBLSite{Zone: "off.example", Weight: 100, Active: false}); err != nil {
		t.Fatal(err)
	}
	c := dnsbl.New(postscreenDNS(), st, dnsbl.Options{Threshold: 2})
	v, err := c.Check(ctx, netip.MustParseAddr("192.0.2.1"))
	if err != nil || v.Score != 4 || len(v.Hits) != 2 || v.Hits[0].Weight != 3 {
		t.Fatalf("%+v %v", v, err)
	}
}
