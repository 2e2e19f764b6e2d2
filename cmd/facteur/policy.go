package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/facteur/facteur/mta/dkimsign"
	"github.com/facteur/facteur/mta/dnsbl"
	"github.com/facteur/facteur/mta/greylist"
	"github.com/facteur/facteur/mta/msgauth"
	"github.com/facteur/facteur/mta/ratelimit"
	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/store"
)

// policyParts are the abuse defence and mail authentication parts of the
// receiving roles (issue 8), built once per process over the one resolver
// (DESIGN "DNS") and the store.
type policyParts struct {
	signer *dkimsign.Signer
	bl     *dnsbl.Checker
	deps   func(d *smtpd.Deps)
}

// invalidate drops the caches that a control-plane change to table makes
// stale (lookups.Options.OnInvalidate; "" when changes may have been
// missed): the signer's keys (dkim_key, joined with the active domain) and
// the DNSBL checker's sites, at once instead of after their 60 s.
func (p *policyParts) invalidate(table string) {
	switch table {
	case "", "dkim_key", "domain":
		p.signer.Invalidate()
	}
	switch table {
	case "", "dnsbl":
		p.bl.Invalidate()
	}
}

// buildPolicy builds the DNSBL checker, the greylister, the message rate,
// the outbound limits, the SPF/DKIM/DMARC checker and the DKIM signer the
// configuration asks for.
func buildPolicy(cfg *Config, st *store.Store, log *slog.Logger) (*policyParts, error) {
	p := cfg.Policy
	dns, err := cfg.resolver()
	if err != nil {
		return nil, err
	}
	var unauthorized dkimsign.Unauthorized
	switch p.UnauthorizedFrom {
	case "", "reject":
		unauthorized = dkimsign.Reject
	case "unsigned":
		unauthorized = dkimsign.SendUnsigned
	default:
		return nil, fmt.Errorf("policy.unauthorized_from %q: want reject or unsigned", p.UnauthorizedFrom)
	}
	signer := dkimsign.New(st, dkimsign.Options{Unauthorized: unauthorized, Logger: log})
	bl := dnsbl.New(dns, st, dnsbl.Options{Threshold: p.DNSBLThreshold, AllowlistThreshold: p.DNSWLThreshold, Logger: log})
	pol := &cachedPolicies{Store: st, ttl: time.Second}
	grey := greylist.New(pol, greylist.Options{Delay: p.GreylistDelay.Duration, RetryWindow: p.GreylistRetryWindow.Duration,
		Expiry: p.GreylistExpiry.Duration, AutoAllowAfter: p.GreylistAutoAllow, Logger: log})
	out := ratelimit.NewOutbound(st, ratelimit.OutboundOptions{Logger: log})
	var rate smtpd.MessageRate
	if p.MessageRate > 0 {
		// Connections stay with smtpd's own limiter: this Anvil counts
		// messages only.
		rate = ratelimit.NewAnvil(ratelimit.AnvilOptions{MessageRate: p.MessageRate, Window: time.Minute})
	}
	var auth smtpd.MsgAuth
	if p.authenticate() {
		auth = msgauth.New(msgauth.Options{Resolver: dns})
	}
	return &policyParts{signer: signer, bl: bl, deps: func(d *smtpd.Deps) {
		d.DNSBL, d.Greylist, d.Messages, d.Outbound = bl, grey, rate, out
		if auth != nil {
			d.MsgAuth, d.Policies = auth, pol
		}
		d.Signer = signer
	}}, nil
}

// cachedPolicies is the store with domain policies kept for a second: the
// MX path asks for them at every RCPT (greylisting) and at the end of every
// DATA (DMARC), and a second is within DESIGN's "stale cache entries go
// within a second" without a NOTIFY hook.
type cachedPolicies struct {
	*store.Store
	ttl time.Duration

	mu sync.Mutex
	m  map[string]cachedPolicy
}

type cachedPolicy struct {
	p       store.DomainPolicy
	expires time.Time
}

// maxCachedPolicies bounds the cache; past it, it starts over.
const maxCachedPolicies = 10000

func (c *cachedPolicies) EffectiveDomainPolicy(ctx context.Context, domain string) (store.DomainPolicy, error) {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[domain]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.p, nil
	}
	p, err := c.Store.EffectiveDomainPolicy(ctx, domain)
	if err != nil {
		return p, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedPolicies {
		c.m = map[string]cachedPolicy{}
	}
	c.m[domain] = cachedPolicy{p: p, expires: now.Add(c.ttl)}
	c.mu.Unlock()
	return p, nil
}
