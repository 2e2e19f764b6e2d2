package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
)

// dnsResolver is what every DNS consumer of a serving process shares
// (DESIGN "DNS": one injected resolver everywhere).
type dnsResolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// nxResolver knows no names: every lookup is NXDOMAIN. facteur dev uses it,
// so that mail to remote domains bounces instead of leaving the machine.
type nxResolver struct{}

func nx(name string) error {
	return &net.DNSError{Err: "no such host (dns.resolver = none)", Name: name, IsNotFound: true}
}

func (nxResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) { return nil, nx(name) }
func (nxResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return nil, nx(host)
}
func (nxResolver) LookupTXT(_ context.Context, name string) ([]string, error)  { return nil, nx(name) }
func (nxResolver) LookupAddr(_ context.Context, addr string) ([]string, error) { return nil, nx(addr) }

// resolver returns the resolver the configuration names.
func (c *Config) resolver() (dnsResolver, error) {
	switch c.DNS.Resolver {
	case "", "system":
		return net.DefaultResolver, nil
	case "none":
		return nxResolver{}, nil
	}
	return nil, fmt.Errorf("dns.resolver %q: want system or none", c.DNS.Resolver)
}

// localAddrs lists this host's addresses, so that an MX pointing back at us
// is recognised as a loop (RFC 5321 5.1).
func localAddrs() []netip.Addr {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range ifaddrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// mailOwner returns the uid and gid that own virtual Maildirs: the
// configured mail_owner ("user" or "uid:gid"), else vmail when running as
// root, else this process's user (0, 0 meaning "leave as created").
func (c *Config) mailOwner(euid int) (uid, gid int, err error) {
	spec := c.MailOwner
	if spec == "" {
		if euid != 0 {
			return 0, 0, nil
		}
		spec = "vmail"
	}
	if u, g, ok := strings.Cut(spec, ":"); ok {
		uid, err1 := strconv.Atoi(u)
		gid, err2 := strconv.Atoi(g)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("mail_owner %q: want a user name or uid:gid", spec)
		}
		return uid, gid, nil
	}
	u, err := user.Lookup(spec)
	if err != nil {
		return 0, 0, fmt.Errorf("mail_owner %q: %w", spec, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// listenPorts returns the port of the MX listen address (with 25, the port
// the world sends mail to), for the smtp agent's loop check.
func listenPorts(addr string) []int {
	ports := []int{25}
	if _, p, err := net.SplitHostPort(addr); err == nil {
		if n, err := strconv.Atoi(p); err == nil && n != 25 {
			ports = append(ports, n)
		}
	}
	return ports
}
