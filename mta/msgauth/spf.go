package msgauth

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"

	"github.com/facteur/facteur/lookups/address"
)

// SPF identities (RFC 7208 2.3, 2.4).
const (
	IdentityMailFrom = "mailfrom"
	IdentityHelo     = "helo"
)

// SPFResult is the outcome of an SPF check.
type SPFResult struct {
	// Result is one of pass, fail, softfail, neutral, none, temperror,
	// permerror.
	Result Result
	// Identity is IdentityMailFrom, or IdentityHelo for the null sender
	// (RFC 7208 2.4: the HELO name stands in, as postmaster@helo).
	Identity string
	// Domain is the domain whose policy was checked (A-labels, lower
	// case): the MAIL FROM domain or the HELO name. DMARC aligns it.
	Domain string
	// MailFrom is the envelope sender ("" for <>), Helo the HELO name, as
	// the client gave them.
	MailFrom string
	Helo     string
	// Reason explains a temperror or permerror (for logs and the header).
	Reason string
}

// CheckSPF evaluates the SPF policy of mailFrom's domain for the client ip
// (RFC 7208 4). For the null sender (mailFrom "") it checks the HELO name
// instead, as postmaster@helo (RFC 7208 2.4). A domain that is malformed,
// an address literal or a single label gives none (RFC 7208 4.3); a DNS
// failure or timeout gives temperror, never fail.
func (c *Checker) CheckSPF(ctx context.Context, ip netip.Addr, helo, mailFrom string) SPFResult {
	r := SPFResult{Identity: IdentityMailFrom, MailFrom: mailFrom, Helo: helo}
	sender := mailFrom
	raw := ""
	if mailFrom == "" {
		r.Identity = IdentityHelo
		raw = helo
		sender = "postmaster@" + helo
	} else if i := strings.LastIndexByte(mailFrom, '@'); i >= 0 {
		raw = mailFrom[i+1:]
		if i == 0 {
			// RFC 7208 4.3: no local part, "postmaster" stands in.
			sender = "postmaster" + mailFrom
		}
	}
	d, err := address.Domain(raw)
	if err != nil || !strings.Contains(d, ".") || address.IsIPLiteral(raw) {
		r.Result = ResultNone
		r.Domain = strings.ToLower(raw)
		return r
	}
	r.Domain = d
	if i := strings.LastIndexByte(sender, '@'); i >= 0 {
		sender = sender[:i+1] + d
	}
	if !ip.IsValid() {
		r.Result, r.Reason = ResultPermError, "no client IP address"
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	res, err := spf.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), d, sender,
		spf.WithContext(ctx), spf.WithResolver(c.res))
	r.Result = Result(res)
	switch res {
	case spf.TempError, spf.PermError:
		if err != nil {
			r.Reason = err.Error()
		}
	case spf.None, spf.Neutral, spf.Pass, spf.Fail, spf.SoftFail:
	default:
		r.Result, r.Reason = ResultPermError, "unexpected SPF result "+string(res)
	}
	if ctx.Err() != nil && r.Result != ResultPass && r.Result != ResultFail {
		// The time ran out: whatever was concluded from missing answers
		// is temporary.
		r.Result, r.Reason = ResultTempError, ctx.Err().Error()
	}
	return r
}
