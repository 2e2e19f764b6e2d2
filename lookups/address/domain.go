package address

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

const (
	// maxDomainLen is the longest domain name in presentation form without
	// the trailing dot (RFC 1035 2.3.4: 255 octets on the wire, i.e. 253
	// characters of text).
	maxDomainLen = 253

	// maxLabelLen is the longest label (RFC 1035 2.3.4, RFC 5321 4.5.3.1.2).
	maxLabelLen = 63

	// maxInputLen bounds the work done on hostile input before any other
	// check: nothing longer can normalise to a valid name or path.
	maxInputLen = 1024
)

// profile is the IDNA profile for every domain we see: the UTS #46 lookup
// mapping (case folding, width mapping, NFC) and the Bidi rule of RFC 5893, as
// idna.Lookup, but with the STD3 ASCII rules and the hyphen rule turned off so
// that names Postfix accepts (underscores as in _dmarc.example, "--" in the
// third and fourth position as in r1---sn-x.example) pass. checkASCII then
// applies our own, Postfix-like, rules to the A-label form.
var profile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.StrictDomainName(false),
	idna.CheckHyphens(false),
)

// Domain returns the canonical form of a domain name: lower-case IDNA
// A-labels (RFC 5890), without a trailing dot. Surrounding white space and one
// trailing dot are removed first; "Bücher.Example." becomes
// "xn--bcher-kva.example".
//
// It is lenient like Postfix's valid_hostname: labels of letters, digits,
// hyphens (not first or last) and underscores, except that the last label
// (the top-level domain) must be letters, digits and hyphens and not all
// digits (RFC 3696 2), so "192.0.2.1" is not a domain. The whole name may have
// at most 253 characters and each label at most 63 (RFC 1035 2.3.4).
// Address literals ("[192.0.2.1]") are not domains: Domain returns an error
// wrapping ErrIPLiteral for them, see IsIPLiteral.
func Domain(s string) (string, error) {
	return domain(strings.TrimSpace(s))
}

// domain is Domain without the trimming of white space, for the domain part
// of an address, where white space is an error.
func domain(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: empty domain", ErrSyntax)
	}
	if len(s) > maxInputLen {
		return "", fmt.Errorf("%w: domain too long", ErrTooLong)
	}
	if s[0] == '[' {
		return "", fmt.Errorf("%w: %s", ErrIPLiteral, quote(s))
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: domain is not valid UTF-8", ErrSyntax)
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" || s[0] == '.' {
		return "", fmt.Errorf("%w: empty label in domain %s", ErrSyntax, quote(s))
	}
	a, err := profile.ToASCII(s)
	if err != nil {
		return "", fmt.Errorf("%w: domain %s: %v", ErrSyntax, quote(s), err)
	}
	// The mapping may turn other dots (U+3002 and kin) into a trailing dot.
	if strings.HasSuffix(a, ".") {
		return "", fmt.Errorf("%w: empty label in domain %s", ErrSyntax, quote(s))
	}
	if err := checkASCII(a); err != nil {
		return "", fmt.Errorf("domain %s: %w", quote(s), err)
	}
	return a, nil
}

// checkASCII checks a domain in lower-case A-label form.
func checkASCII(d string) error {
	if len(d) > maxDomainLen {
		return fmt.Errorf("%w: more than %d characters", ErrTooLong, maxDomainLen)
	}
	labels := strings.Split(d, ".")
	for i, l := range labels {
		if l == "" {
			return fmt.Errorf("%w: empty label", ErrSyntax)
		}
		if len(l) > maxLabelLen {
			return fmt.Errorf("%w: label of more than %d characters", ErrTooLong, maxLabelLen)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%w: label %q begins or ends with a hyphen", ErrSyntax, l)
		}
		last := i == len(labels)-1
		digits := true
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c == '-':
				digits = false
			case c == '_' && !last:
				digits = false
			default:
				return fmt.Errorf("%w: invalid character %q in label %q", ErrSyntax, c, l)
			}
		}
		if last && digits {
			return fmt.Errorf("%w: all-numeric top-level label %q", ErrSyntax, l)
		}
	}
	return nil
}

// DomainUnicode returns a domain in its display form, with U-labels: the
// inverse of Domain, for user interfaces. The result is not a lookup key.
func DomainUnicode(s string) (string, error) {
	a, err := Domain(s)
	if err != nil {
		return "", err
	}
	u, err := profile.ToUnicode(a)
	if err != nil {
		return "", fmt.Errorf("%w: domain %s: %v", ErrSyntax, quote(a), err)
	}
	return u, nil
}

// IsIPLiteral reports whether s is an address literal of RFC 5321 4.1.3 that
// names an IP address: "[192.0.2.1]" or "[IPv6:2001:db8::1]".
func IsIPLiteral(s string) bool {
	_, err := ParseIPLiteral(s)
	return err == nil
}

// ParseIPLiteral returns the IP address of an address literal (RFC 5321
// 4.1.3): "[192.0.2.1]" holds an IPv4 address in dotted-quad form, and
// "[IPv6:…]" (the tag in any case) an IPv6 address without a zone. General
// address literals ("[tag:…]") are not supported.
func ParseIPLiteral(s string) (netip.Addr, error) {
	if len(s) < 3 || len(s) > 64 || s[0] != '[' || s[len(s)-1] != ']' {
		return netip.Addr{}, fmt.Errorf("%w: not an address literal: %s", ErrSyntax, quote(s))
	}
	in := s[1 : len(s)-1]
	v6 := len(in) > 5 && strings.EqualFold(in[:5], "IPv6:")
	if v6 {
		in = in[5:]
	}
	ip, err := netip.ParseAddr(in)
	if err != nil || ip.Zone() != "" || ip.Is4() == v6 {
		return netip.Addr{}, fmt.Errorf("%w: bad address literal %s", ErrSyntax, quote(s))
	}
	return ip, nil
}

// ipLiteral returns the canonical form of an address literal:
// "[192.0.2.1]" or "[IPv6:" + RFC 5952 text + "]".
func ipLiteral(s string) (string, error) {
	ip, err := ParseIPLiteral(s)
	if err != nil {
		return "", err
	}
	if ip.Is4() {
		return "[" + ip.String() + "]", nil
	}
	return "[IPv6:" + ip.String() + "]", nil
}
