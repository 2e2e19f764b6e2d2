package dnsbl

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Filter keeps the DNSBL answers that match a pattern such as
// "127.0.0.[2..11]" (postscreen_dnsbl_sites): one pattern per octet, a
// number, "*" for any, or a bracketed list of numbers and ranges separated
// by ";" ("[1;3;5..7]"). The zero Filter keeps any answer in 127.0.0.0/8
// except 127.255.255.0/24, which lists such as Spamhaus use to report
// errors (a refused query, an over-limit resolver), not listings.
type Filter struct {
	octets [4][]octetRange // nil: the default filter
}

type octetRange struct{ lo, hi int }

// ParseFilter parses a reply filter; "" is the zero Filter.
func ParseFilter(s string) (Filter, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Filter{}, nil
	}
	parts, err := splitOctets(s)
	if err != nil {
		return Filter{}, err
	}
	var f Filter
	for i, p := range parts {
		switch {
		case p == "*":
			f.octets[i] = []octetRange{{0, 255}}
		case strings.HasPrefix(p, "[") && strings.HasSuffix(p, "]"):
			for _, item := range strings.Split(p[1:len(p)-1], ";") {
				lo, hi, isRange := strings.Cut(item, "..")
				if !isRange {
					hi = lo
				}
				l, err1 := octet(lo)
				h, err2 := octet(hi)
				if err1 != nil || err2 != nil || l > h {
					return Filter{}, fmt.Errorf("reply filter %q: bad range %q", s, item)
				}
				f.octets[i] = append(f.octets[i], octetRange{l, h})
			}
		default:
			n, err := octet(p)
			if err != nil {
				return Filter{}, fmt.Errorf("reply filter %q: %v", s, err)
			}
			f.octets[i] = []octetRange{{n, n}}
		}
	}
	return f, nil
}

// splitOctets splits at the dots that are not inside brackets.
func splitOctets(s string) ([]string, error) {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case '.':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
		if depth < 0 || depth > 1 {
			return nil, fmt.Errorf("reply filter %q: unbalanced brackets", s)
		}
	}
	parts = append(parts, s[start:])
	if depth != 0 || len(parts) != 4 {
		return nil, fmt.Errorf("reply filter %q: want four octet patterns", s)
	}
	return parts, nil
}

func octet(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 || len(s) > 3 {
		return 0, fmt.Errorf("bad octet %q", s)
	}
	return n, nil
}

// Match reports whether the answer a is kept.
func (f Filter) Match(a netip.Addr) bool {
	a = a.Unmap()
	if !a.Is4() {
		return false
	}
	b := a.As4()
	if f.octets[0] == nil {
		return b[0] == 127 && !(b[1] == 255 && b[2] == 255)
	}
	for i, rs := range f.octets {
		ok := false
		for _, r := range rs {
			if int(b[i]) >= r.lo && int(b[i]) <= r.hi {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
