// Package msgauth authenticates inbound mail: SPF (RFC 7208) on MAIL FROM
// or HELO, DKIM verification (RFC 6376, RFC 8463) of every signature, DMARC
// (RFC 7489) alignment and policy, and the Authentication-Results header
// field (RFC 8601) that records them under this host's authserv-id.
//
// A Checker does the DNS work through one injected Resolver (*net.Resolver
// has its shape; tests pass an in-process fake), bounded by a timeout. A
// DNS answer other than "no such name / no such record" is a temporary
// error, never "not found" (RFC 7208 4.4, RFC 7489 6.6.3), whatever the
// resolver's error type.
//
// The smtpd wiring, in order:
//
//	spf := c.CheckSPF(ctx, ip, helo, mailFrom)                 // at MAIL FROM (or after DATA)
//	dkims := c.VerifyDKIM(ctx, message)                         // after DATA: header and body
//	from, _ := FromDomain(header)                               // "" when unusable: permerror below
//	dm := c.EvaluateDMARC(ctx, from, spf, dkims)
//	if r, reject := dm.Reply(domainPolicy.DMARCFailure); reject { return r }  // 550 5.7.1
//	header = StripForged(header, authservID)                    // drop forged A-R for our id
//	prepend AuthResultsHeader(authservID, spf, dkims, dm)
//	if dm.Disposition(domainPolicy.DMARCFailure) == PolicyQuarantine { prepend QuarantineField(dm) }
//
// SECURITY: every input (client IP, HELO, MAIL FROM, the message) is
// untrusted and comes from the network; DNS answers are untrusted too. The
// package sends DNS queries through the Resolver only, writes nothing, and
// keeps no state between calls.
package msgauth

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"time"
)

// Resolver is the DNS of SPF, DKIM and DMARC: *net.Resolver has this shape,
// and so do the fakes of the tests (go-mockdns). It is the same resolver
// every DNS consumer of facteur is given. A name that does not exist
// (NXDOMAIN) or has no record of the type asked should come back as a
// *net.DNSError with IsNotFound set; any other error is taken as temporary.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Result is an authentication result (RFC 8601 2.7).
type Result string

// Results. SPF uses all but Policy; DKIM pass, fail, neutral, temperror,
// permerror and none; DMARC pass, fail, none, temperror and permerror.
const (
	ResultNone      Result = "none"
	ResultPass      Result = "pass"
	ResultFail      Result = "fail"
	ResultSoftFail  Result = "softfail"
	ResultNeutral   Result = "neutral"
	ResultTempError Result = "temperror"
	ResultPermError Result = "permerror"
)

// Options configures a Checker.
type Options struct {
	// Resolver answers every DNS query (required).
	Resolver Resolver
	// Timeout bounds each check (SPF, DKIM, DMARC); default 20 s, the
	// minimum RFC 7208 4.6.4 suggests for SPF.
	Timeout time.Duration
	// MaxDKIMSignatures bounds the signatures verified per message
	// (default 10); more are ignored.
	MaxDKIMSignatures int
	// Rand returns a number in [0, n), for DMARC's pct= sampling (default
	// math/rand/v2.IntN).
	Rand func(n int) int
}

// Checker runs the checks. It is safe for concurrent use.
type Checker struct {
	res  guard
	opts Options
}

// New returns a Checker.
func New(opts Options) *Checker {
	if opts.Resolver == nil {
		panic("msgauth: no Resolver")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	if opts.MaxDKIMSignatures <= 0 {
		opts.MaxDKIMSignatures = 10
	}
	if opts.Rand == nil {
		opts.Rand = rand.IntN
	}
	return &Checker{res: guard{opts.Resolver}, opts: opts}
}

// guard makes every resolver error one of the two kinds the libraries
// understand: a *net.DNSError that is either IsNotFound or IsTemporary.
// blitiri.com.ar/go/spf takes any other error for a permanent one, and
// go-msgauth any non-temporary one for "no key": a timeout or a SERVFAIL
// must never turn into a failure.
type guard struct{ r Resolver }

func (g guard) LookupTXT(ctx context.Context, name string) ([]string, error) {
	v, err := g.r.LookupTXT(ctx, name)
	return v, dnsError(name, err)
}

func (g guard) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	v, err := g.r.LookupMX(ctx, name)
	return v, dnsError(name, err)
}

func (g guard) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	v, err := g.r.LookupIPAddr(ctx, host)
	return v, dnsError(host, err)
}

func (g guard) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	v, err := g.r.LookupAddr(ctx, addr)
	return v, dnsError(addr, err)
}

func dnsError(name string, err error) error {
	if err == nil {
		return nil
	}
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return &net.DNSError{Err: de.Err, Name: name, IsNotFound: true}
	}
	return &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true}
}

// lookupTXT is the context-bound TXT lookup go-msgauth takes.
func (c *Checker) lookupTXT(ctx context.Context) func(string) ([]string, error) {
	return func(name string) ([]string, error) { return c.res.LookupTXT(ctx, name) }
}
