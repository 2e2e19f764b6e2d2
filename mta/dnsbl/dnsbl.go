// Package dnsbl scores a client IP address against DNS block and allow
// lists, as Postfix's postscreen does (postscreen_dnsbl_sites,
// postscreen_dnsbl_threshold): every list that lists the address adds its
// weight (allow lists, DNSWL, have negative weights), and a score at or
// above the threshold gets 554 5.7.1 with the list's reason (its TXT
// record). The lists come from the dnsbl table.
//
// The lookups of one check run concurrently under one timeout; a list that
// does not answer in time, or answers with an error, counts nothing (the
// verdict is marked Incomplete and is not cached). Verdicts are cached per
// address for CacheTTL.
//
// The smtpd wiring, at connection time (after client_access exemptions):
//
//	v, err := checker.Check(ctx, clientIP)
//	if err != nil { … 451 4.3.0, or let the client in: the lists are a hint }
//	if r, reject := v.Reply(); reject { return r }   // 554 5.7.1
//	if v.Allowlisted { … skip greylisting }
//
// SECURITY: the client address is untrusted input, and so are DNS answers:
// TXT reasons are stripped of control characters and cut before they go in
// a reply. The package only sends DNS queries through the Resolver and
// reads the dnsbl table.
package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
)

// Resolver is the DNS the lists are queried with: *net.Resolver has this
// shape, and so does go-mockdns. NXDOMAIN (not listed) should be a
// *net.DNSError with IsNotFound; any other error counts as no answer.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Sites gives the active lists. *store.Store satisfies it.
type Sites interface {
	ActiveDNSBLSites(ctx context.Context) ([]store.DNSBLSite, error)
}

// Options configures a Checker. The zero value is usable.
type Options struct {
	// Threshold is the score at which a client is refused (default 1).
	Threshold int
	// AllowlistThreshold, when positive, marks a client allowlisted when
	// its score is at or below -AllowlistThreshold
	// (postscreen_dnsbl_allowlist_threshold); 0 turns it off.
	AllowlistThreshold int
	// Timeout bounds all the lookups of one check (default 10 s).
	Timeout time.Duration
	// CacheTTL is how long a complete verdict is kept (default 1 h, as
	// postscreen_dnsbl_max_ttl); negative: no cache.
	CacheTTL time.Duration
	// CacheSize bounds the cached verdicts (default 100000).
	CacheSize int
	// SitesTTL is how long the list of sites is kept (default 60 s);
	// Invalidate drops it at once (call it on NOTIFY facteur_config).
	SitesTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives lookup failures and bad rows (default: discard).
	Logger *slog.Logger
}

// Hit is one list that lists the client.
type Hit struct {
	Zone string // the zone queried
	// Name is the list's name in replies (ReplyName, else Zone).
	Name    string
	Weight  int
	Answers []netip.Addr // the A records that matched the filter
	// Reason is the list's TXT record for the address (fetched for
	// blocking hits of a refused client), cleaned and cut.
	Reason string
}

// Verdict is the outcome of a check.
type Verdict struct {
	Client netip.Addr
	Score  int   // the sum of the weights of Hits
	Hits   []Hit // by weight, highest first
	// Listed means Score reached the threshold: refuse the client.
	Listed bool
	// Allowlisted means the score is at or below -AllowlistThreshold.
	Allowlisted bool
	// Incomplete means some list gave no answer (timeout, SERVFAIL); its
	// weight was not counted.
	Incomplete bool
	// Cached means the verdict came from the cache.
	Cached bool
}

// Reply returns 554 5.7.1 for a listed client, naming the list with the
// highest weight and its reason (Postfix's postscreen and reject_rbl_client
// wording).
func (v Verdict) Reply() (envelope.Reply, bool) {
	if !v.Listed {
		return envelope.Reply{}, false
	}
	text := fmt.Sprintf("Service unavailable; client [%s] blocked", v.Client)
	if len(v.Hits) > 0 && v.Hits[0].Weight > 0 {
		text += " using " + v.Hits[0].Name
		if v.Hits[0].Reason != "" {
			text += "; " + v.Hits[0].Reason
		}
	}
	return envelope.Reply{Code: 554, Enhanced: envelope.Status{5, 7, 1}, Text: text}, true
}

// Checker checks client addresses. It is safe for concurrent use.
type Checker struct {
	res   Resolver
	sites Sites
	opts  Options

	mu       sync.Mutex
	loaded   []site
	loadedAt time.Time
	gen      uint64
	cache    map[netip.Addr]cached
}

type site struct {
	zone, name string
	weight     int
	filter     Filter
}

type cached struct {
	v       Verdict
	expires time.Time
}

// New returns a Checker.
func New(res Resolver, sites Sites, opts Options) *Checker {
	if opts.Threshold == 0 {
		opts.Threshold = 1
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = time.Hour
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = 100000
	}
	if opts.SitesTTL <= 0 {
		opts.SitesTTL = 60 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Checker{res: res, sites: sites, opts: opts, cache: map[netip.Addr]cached{}}
}

// Invalidate drops the list of sites and every cached verdict.
func (c *Checker) Invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loaded, c.loadedAt = nil, time.Time{}
	c.cache = map[netip.Addr]cached{}
	c.gen++
}

// Check scores ip against the active lists. err is set only when the list
// of sites could not be loaded from the database; DNS failures make an
// Incomplete verdict instead.
func (c *Checker) Check(ctx context.Context, ip netip.Addr) (Verdict, error) {
	ip = ip.Unmap()
	now := c.opts.Now()
	c.mu.Lock()
	e, ok := c.cache[ip]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		v := e.v
		v.Cached = true
		return v, nil
	}
	sites, gen, err := c.loadSites(ctx, now)
	if err != nil {
		return Verdict{Client: ip}, err
	}
	v := c.check(ctx, ip, sites)
	if !v.Incomplete && c.opts.CacheTTL > 0 {
		c.mu.Lock()
		if c.gen == gen {
			if len(c.cache) >= c.opts.CacheSize {
				c.sweep(now)
			}
			c.cache[ip] = cached{v: v, expires: now.Add(c.opts.CacheTTL)}
		}
		c.mu.Unlock()
	}
	return v, nil
}

// sweep drops expired entries, or all of them when none has expired (the
// cache is a bound on memory, not a promise). c.mu is held.
func (c *Checker) sweep(now time.Time) {
	for k, e := range c.cache {
		if !now.Before(e.expires) {
			delete(c.cache, k)
		}
	}
	if len(c.cache) >= c.opts.CacheSize {
		c.cache = map[netip.Addr]cached{}
	}
}

func (c *Checker) loadSites(ctx context.Context, now time.Time) ([]site, uint64, error) {
	c.mu.Lock()
	if c.loaded != nil && now.Sub(c.loadedAt) < c.opts.SitesTTL {
		s, g := c.loaded, c.gen
		c.mu.Unlock()
		return s, g, nil
	}
	gen := c.gen
	c.mu.Unlock()
	rows, err := c.sites.ActiveDNSBLSites(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("dnsbl: %w", err)
	}
	sites := make([]site, 0, len(rows))
	for _, r := range rows {
		f, err := ParseFilter(r.ReplyFilter)
		if err != nil {
			c.opts.Logger.Error("dnsbl: site ignored", "zone", r.Zone, "err", err)
			continue
		}
		name := r.ReplyName
		if name == "" {
			name = r.Zone
		}
		sites = append(sites, site{zone: strings.TrimSuffix(strings.ToLower(r.Zone), "."), name: name, weight: r.Weight, filter: f})
	}
	c.mu.Lock()
	if c.gen == gen {
		c.loaded, c.loadedAt = sites, now
	}
	c.mu.Unlock()
	return sites, gen, nil
}

type answer struct {
	addrs []netip.Addr
	err   error
}

func (c *Checker) check(ctx context.Context, ip netip.Addr, sites []site) Verdict {
	v := Verdict{Client: ip}
	if !ip.IsValid() || len(sites) == 0 {
		return v
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	rev := reverse(ip)

	// One query per zone, however many filters it has, all at once.
	answers := map[string]*answer{}
	var wg sync.WaitGroup
	for _, s := range sites {
		if _, ok := answers[s.zone]; ok {
			continue
		}
		a := &answer{}
		answers[s.zone] = a
		wg.Add(1)
		go func(zone string) {
			defer wg.Done()
			res, err := c.res.LookupIPAddr(ctx, rev+"."+zone)
			if err != nil {
				if de := (*net.DNSError)(nil); errors.As(err, &de) && de.IsNotFound {
					return
				}
				a.err = err
				return
			}
			for _, r := range res {
				if x, ok := netip.AddrFromSlice(r.IP); ok {
					a.addrs = append(a.addrs, x.Unmap())
				}
			}
		}(s.zone)
	}
	wg.Wait()

	for _, s := range sites {
		a := answers[s.zone]
		if a.err != nil {
			v.Incomplete = true
			continue
		}
		var matched []netip.Addr
		for _, x := range a.addrs {
			if s.filter.Match(x) {
				matched = append(matched, x)
			}
		}
		if len(matched) > 0 {
			v.Score += s.weight
			v.Hits = append(v.Hits, Hit{Zone: s.zone, Name: s.name, Weight: s.weight, Answers: matched})
		}
	}
	for zone, a := range answers {
		if a.err != nil {
			c.opts.Logger.Debug("dnsbl: no answer", "zone", zone, "client", ip, "err", a.err)
		}
	}
	sort.SliceStable(v.Hits, func(i, j int) bool { return v.Hits[i].Weight > v.Hits[j].Weight })
	v.Listed = v.Score >= c.opts.Threshold
	v.Allowlisted = c.opts.AllowlistThreshold > 0 && v.Score <= -c.opts.AllowlistThreshold
	if v.Listed {
		// The reasons of the blocking lists, for the reply and the log.
		for i := range v.Hits {
			if v.Hits[i].Weight <= 0 {
				continue
			}
			wg.Add(1)
			go func(h *Hit) {
				defer wg.Done()
				if txt, err := c.res.LookupTXT(ctx, rev+"."+h.Zone); err == nil && len(txt) > 0 {
					h.Reason = cleanReason(txt[0])
				}
			}(&v.Hits[i])
		}
		wg.Wait()
	}
	return v
}

// reverse returns the query label of ip: reversed octets for IPv4
// ("2.0.0.127"), reversed nibbles for IPv6 (RFC 5782 2.1, 2.4).
func reverse(ip netip.Addr) string {
	if ip.Is4() {
		b := ip.As4()
		return fmt.Sprintf("%d.%d.%d.%d", b[3], b[2], b[1], b[0])
	}
	b := ip.As16()
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 63)
	for i := len(b) - 1; i >= 0; i-- {
		if len(out) > 0 {
			out = append(out, '.')
		}
		out = append(out, hex[b[i]&0xf], '.', hex[b[i]>>4])
	}
	return string(out)
}

// cleanReason keeps printable text of a TXT reason, cut to 200 bytes.
func cleanReason(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200]
		for len(s) > 0 && s[len(s)-1]&0xc0 == 0x80 {
			s = s[:len(s)-1] // do not cut a UTF-8 sequence
		}
		if len(s) > 0 && s[len(s)-1] >= 0xc0 {
			s = s[:len(s)-1]
		}
	}
	return s
}
