package smtp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/envelope"
)

// dest is where one delivery goes.
type dest struct {
	// key names the destination for connection reuse and TLS policies: the
	// next hop as written (lower case), or the recipient domain.
	key string
	// nexthop is the next hop as the transport gave it ("" for MX delivery).
	nexthop string
	// host is the domain or host name to look up, or an address literal.
	host string
	// ip is set when host is an address (no DNS).
	ip   netip.Addr
	port int
	// mx: look up the MX records of host (else its addresses only).
	mx bool
}

// explicit reports whether the destination comes from the transport table:
// name errors there are the operator's to fix, so they defer.
func (d dest) explicit() bool { return d.nexthop != "" }

// maxMX bounds the MX hosts looked at for one domain.
const maxMX = 20

// parseDest reads a next hop as Postfix does (smtp(8), "nexthop"):
// "[host]:port" and "[host]" connect to host without an MX lookup,
// "host:port" and "host" look up the MX records of host; "" delivers to the
// MX hosts of domain, or to the address of an address literal such as
// "[192.0.2.1]" (RFC 5321 4.1.3, 5.1). Ports may be numbers or "smtp" and
// "submission".
func parseDest(nexthop, domain string, defPort int) (dest, error) {
	if nexthop == "" {
		d := dest{key: domain, port: defPort, mx: true}
		if strings.HasPrefix(domain, "[") {
			ip, err := literal(domain)
			if err != nil {
				return dest{}, err
			}
			d.host, d.ip, d.mx = domain, ip, false
			return d, nil
		}
		h, err := address.Domain(domain)
		if err != nil {
			return dest{}, fmt.Errorf("recipient domain: %w", err)
		}
		d.host = h
		return d, nil
	}
	d := dest{key: strings.ToLower(nexthop), nexthop: nexthop, port: defPort, mx: true}
	host, port := nexthop, ""
	if strings.HasPrefix(nexthop, "[") {
		end := strings.IndexByte(nexthop, ']')
		if end < 0 {
			return dest{}, fmt.Errorf("next hop %q: missing ]", nexthop)
		}
		host, d.mx = nexthop[1:end], false
		switch rest := nexthop[end+1:]; {
		case rest == "":
		case strings.HasPrefix(rest, ":"):
			port = rest[1:]
		default:
			return dest{}, fmt.Errorf("next hop %q: junk after ]", nexthop)
		}
	} else if i := strings.LastIndexByte(nexthop, ':'); i >= 0 {
		host, port = nexthop[:i], nexthop[i+1:]
	}
	if port != "" {
		p, err := parsePort(port)
		if err != nil {
			return dest{}, fmt.Errorf("next hop %q: %w", nexthop, err)
		}
		d.port = p
	}
	if host == "" {
		return dest{}, fmt.Errorf("next hop %q: no host", nexthop)
	}
	if ip, err := netip.ParseAddr(strings.TrimPrefix(strings.TrimPrefix(host, "IPv6:"), "ipv6:")); err == nil {
		d.host, d.ip, d.mx = host, ip.Unmap(), false
		return d, nil
	}
	h, err := address.Domain(host)
	if err != nil {
		return dest{}, fmt.Errorf("next hop %q: %w", nexthop, err)
	}
	d.host = h
	return d, nil
}

func parsePort(s string) (int, error) {
	switch strings.ToLower(s) {
	case "smtp":
		return 25, nil
	case "submission":
		return 587, nil
	}
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return p, nil
}

// literal parses an address literal: "[192.0.2.1]" or "[IPv6:2001:db8::1]"
// (RFC 5321 4.1.3).
func literal(s string) (netip.Addr, error) {
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		return netip.Addr{}, fmt.Errorf("bad address literal %q", s)
	}
	in := s[1 : len(s)-1]
	if len(in) > 5 && strings.EqualFold(in[:5], "IPv6:") {
		in = in[5:]
	}
	ip, err := netip.ParseAddr(in)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("bad address literal %q", s)
	}
	return ip.Unmap(), nil
}

// target is one host to try, with its addresses in order.
type target struct {
	name  string // the MX or next hop host name (or address literal), without a trailing dot
	addrs []netip.Addr
}

// resolve finds the hosts of d. On failure it returns the result that
// applies to every recipient: NXDOMAIN bounces (5.1.2) for a recipient
// domain and defers for a configured next hop, a temporary DNS error defers
// (4.4.3), a null MX bounces (5.1.10, RFC 7505), and a destination whose best
// MX host is this node bounces (5.4.6).
func (a *Agent) resolve(ctx context.Context, d dest) ([]target, *deliver.Result) {
	// An explicit next hop on another port than SMTP's may well be this
	// machine (a content filter on [127.0.0.1]:10025, another MTA for
	// tests): only a hop on the SMTP port can loop back to us.
	selfCheck := !d.explicit() || slices.Contains(a.o.ListenPorts, d.port)
	if d.ip.IsValid() {
		if selfCheck && a.isSelf("", []netip.Addr{d.ip}) {
			return nil, loops(d)
		}
		return []target{{name: d.host, addrs: []netip.Addr{d.ip}}}, nil
	}
	if !d.mx {
		addrs, err := a.lookupAddrs(ctx, d.host)
		if err != nil {
			return nil, dnsFailure(d, d.host, "A", err)
		}
		if selfCheck && a.isSelf(d.host, addrs) {
			return nil, loops(d)
		}
		return []target{{name: d.host, addrs: addrs}}, nil
	}

	mxs, err := a.o.Resolver.LookupMX(ctx, d.host)
	if err != nil && !notFound(err) {
		return nil, dnsFailure(d, d.host, "MX", err)
	}
	// RFC 7505 3: a single MX of "." with preference 0 says the domain
	// accepts no mail. ("." among other MX records is ignored.)
	if len(mxs) == 1 && isRoot(mxs[0].Host) {
		r := local(556, envelope.Status{5, 1, 10}, fmt.Sprintf("Recipient address rejected: domain %s does not accept mail (nullMX)", d.host))
		if d.explicit() {
			r = local(451, envelope.Status{4, 1, 10}, fmt.Sprintf("next hop %s does not accept mail (nullMX)", d.host))
		}
		return nil, &r
	}
	mxs = slices.DeleteFunc(mxs, func(mx *net.MX) bool { return mx == nil || isRoot(mx.Host) })
	if len(mxs) == 0 {
		// RFC 5321 5.1: no MX records, the domain itself is the host.
		addrs, err := a.lookupAddrs(ctx, d.host)
		if err != nil {
			return nil, dnsFailure(d, d.host, "A", err)
		}
		if a.isSelf(d.host, addrs) {
			return nil, loops(d)
		}
		return []target{{name: d.host, addrs: addrs}}, nil
	}

	sortMX(mxs)
	if len(mxs) > maxMX {
		mxs = mxs[:maxMX]
	}
	type host struct {
		pref  uint16
		t     target
		err   error
		isOwn bool
	}
	hosts := make([]host, 0, len(mxs))
	for _, mx := range mxs {
		name := strings.ToLower(strings.TrimSuffix(mx.Host, "."))
		h := host{pref: mx.Pref, t: target{name: name}}
		h.t.addrs, h.err = a.lookupAddrs(ctx, name)
		h.isOwn = a.isSelf(name, h.t.addrs)
		hosts = append(hosts, h)
	}
	// Postfix smtp_truncate_self: hosts as preferred as this node, or less,
	// are not tried; if none is left, mail loops back to this node.
	selfPref := -1
	for _, h := range hosts {
		if h.isOwn && (selfPref < 0 || int(h.pref) < selfPref) {
			selfPref = int(h.pref)
		}
	}
	if selfPref >= 0 {
		hosts = slices.DeleteFunc(hosts, func(h host) bool { return int(h.pref) >= selfPref })
		if len(hosts) == 0 {
			return nil, loops(d)
		}
	}
	var out []target
	var failed error
	var failedName string
	for _, h := range hosts {
		if h.err != nil {
			// A temporary error outweighs "not found": it may resolve later.
			if failed == nil || !notFound(h.err) {
				failed, failedName = h.err, h.t.name
			}
			continue
		}
		out = append(out, h.t)
	}
	if len(out) == 0 {
		r := dnsFailure(d, failedName, "A", failed)
		if r.Status == deliver.Bounced {
			// Every MX host is missing from the DNS (Postfix: 5.4.4).
			r.Reply.Enhanced = envelope.Status{5, 4, 4}
		}
		return nil, r
	}
	return out, nil
}

// sortMX orders MX records by preference, shuffling those of equal
// preference (RFC 5321 5.1).
func sortMX(mxs []*net.MX) {
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(x, y *net.MX) int { return int(x.Pref) - int(y.Pref) })
}

func isRoot(h string) bool { return h == "." || h == "" }

// lookupAddrs returns the addresses of host, IPv4-mapped ones unmapped. A
// host name that is an IP address (a broken MX record) is used as it is.
func (a *Agent) lookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	ips, err := a.o.Resolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ip := range ips {
		if x, ok := netip.AddrFromSlice(ip.IP); ok && !x.IsUnspecified() {
			out = append(out, x.Unmap())
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no usable address", Name: host, IsNotFound: true}
	}
	return out, nil
}

// isSelf reports whether a host of that name or with one of those addresses
// is this node.
func (a *Agent) isSelf(name string, addrs []netip.Addr) bool {
	if name != "" && strings.EqualFold(strings.TrimSuffix(name, "."), strings.TrimSuffix(a.o.Hostname, ".")) {
		return true
	}
	for _, x := range addrs {
		if slices.Contains(a.o.LocalAddrs, x) {
			return true
		}
	}
	return false
}

// notFound reports whether err says that the name does not exist or has no
// records of the type (NXDOMAIN or NODATA).
func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// dnsFailure is the result of a failed lookup of name (Postfix's text).
func dnsFailure(d dest, name, typ string, err error) *deliver.Result {
	var r deliver.Result
	switch {
	case notFound(err) && !d.explicit():
		r = local(550, envelope.Status{5, 1, 2}, fmt.Sprintf(
			"Host or domain name not found. Name service error for name=%s type=%s: Host not found", name, typ))
	case notFound(err):
		r = local(451, envelope.Status{4, 4, 4}, fmt.Sprintf(
			"Host or domain name not found. Name service error for name=%s type=%s: Host not found (next hop %s)", name, typ, d.nexthop))
	default:
		r = local(451, envelope.Status{4, 4, 3}, fmt.Sprintf(
			"Host or domain name not found. Name service error for name=%s type=%s: Host not found, try again", name, typ))
	}
	return &r
}

// loops is the result for a destination whose best host is this node
// (Postfix: "mail for X loops back to myself", 5.4.6).
func loops(d dest) *deliver.Result {
	name := d.host
	if d.explicit() {
		name = d.nexthop
	}
	r := local(554, envelope.Status{5, 4, 6}, "mail for "+name+" loops back to myself")
	return &r
}
