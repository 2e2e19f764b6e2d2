// Package address parses and normalises email addresses and domain names.
// It is the one normaliser that store callers, lookups, mta and admin all use,
// so that an address has one spelling as a lookup key everywhere.
//
// The canonical form (Canonical, Normalize, Domain) is what the database
// stores and CHECKs: the local part lower-cased (as PostfixAdmin stores it and
// as Postfix folds lookup keys) and the domain in lower-case IDNA A-labels
// without a trailing dot, so "John@Bücher.Example." is
// "john@xn--bcher-kva.example". The envelope keeps the sender's spelling of the
// local part (Address.Local, Address.String) for forwarding.
//
// Two input forms exist. Parse reads the external form of RFC 5321 4.1.2,
// where a local part that is not a dot-string is quoted ("john doe"@example).
// ParseInternal reads the internal form that go-smtp hands to a Session's
// Mail and Rcpt: quotes and backslash escapes already removed
// (john doe@example), so everything before the last '@' is the local part.
// String and Canonical always produce the external form, quoting the local
// part only when it needs it.
//
// The package has no state and does no I/O.
package address

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// maxLocalLen is the longest local part (RFC 5321 4.5.3.1.1).
	maxLocalLen = 64

	// maxPathLen is the longest address: a path is at most 256 octets
	// including the angle brackets (RFC 5321 4.5.3.1.3).
	maxPathLen = 254
)

var (
	// ErrSyntax is wrapped by every error about a malformed address or
	// domain.
	ErrSyntax = errors.New("syntax error")

	// ErrTooLong is wrapped by errors about a local part, domain, label or
	// whole address over its length limit.
	ErrTooLong = errors.New("too long")

	// ErrIPLiteral is wrapped by Domain's error for an address literal such
	// as "[192.0.2.1]", which is valid in an address but is not a domain.
	ErrIPLiteral = errors.New("address literal is not a domain")
)

// Address is a parsed and checked email address.
//
// Local is the local part as the sender spelled it (case kept), without the
// quotes and backslash escapes of the external form. Domain is canonical:
// lower-case A-labels without a trailing dot (see Domain), or a normalised
// address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]"; see IsIPLiteral).
//
// Compare addresses by Canonical, not with ==: Parse records whether the
// domain was given in U-labels (for NeedsSMTPUTF8), so the results of parsing
// "a@bücher.example" and "a@xn--bcher-kva.example" differ under ==.
type Address struct {
	Local  string
	Domain string

	uDomain bool // the domain was given with non-ASCII characters
}

// Parse parses an address in the external form of RFC 5321 4.1.2
// ("Mailbox"): a dot-string or quoted-string local part, '@', and a domain or
// an IP address literal. Surrounding white space is ignored; source routes are
// not accepted (see StripSourceRoute). UTF-8 is accepted in the local part and
// the domain as RFC 6531 allows; NeedsSMTPUTF8 tells whether it was used.
//
// Parse is lenient where Postfix is: an unquoted local part may have leading,
// trailing or repeated dots ("a..b@example" is accepted, and String quotes
// it). It rejects an empty local part, a local part over 64 octets or an
// address over 254 octets (RFC 5321 4.5.3.1), control characters anywhere,
// white space and specials outside quotes, and invalid UTF-8.
func Parse(s string) (Address, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Address{}, fmt.Errorf("%w: empty address", ErrSyntax)
	}
	if len(s) > maxInputLen {
		return Address{}, fmt.Errorf("%w: address of %d octets", ErrTooLong, len(s))
	}
	var local, wireLocal, dom string
	if s[0] == '"' {
		l, rest, err := unquote(s)
		if err != nil {
			return Address{}, fmt.Errorf("address %s: %w", quote(s), err)
		}
		if rest == "" || rest[0] != '@' {
			return Address{}, fmt.Errorf("%w: address %s: no '@' after the quoted local part", ErrSyntax, quote(s))
		}
		local, wireLocal, dom = l, s[:len(s)-len(rest)], rest[1:]
	} else {
		i := strings.LastIndexByte(s, '@')
		if i < 0 {
			return Address{}, fmt.Errorf("%w: address %s has no '@'", ErrSyntax, quote(s))
		}
		local, wireLocal, dom = s[:i], s[:i], s[i+1:]
		if err := checkDotString(local); err != nil {
			return Address{}, fmt.Errorf("address %s: %w", quote(s), err)
		}
	}
	if len(s) > maxPathLen {
		return Address{}, fmt.Errorf("%w: address of %d octets, more than %d", ErrTooLong, len(s), maxPathLen)
	}
	if len(wireLocal) > maxLocalLen {
		return Address{}, fmt.Errorf("%w: local part of %d octets, more than %d", ErrTooLong, len(wireLocal), maxLocalLen)
	}
	return build(s, local, dom)
}

// ParseInternal parses an address in internal form, as go-smtp passes it to
// Session.Mail and Session.Rcpt: the quotes and escapes of a quoted local part
// already removed, so `"john doe"@example` arrives as "john doe@example" and
// `"user@other"@example` as "user@other@example". Everything before the last
// '@' is the local part, taken literally; it may hold any printable character,
// including '@' and spaces (check HasRouting before relaying), but no control
// character or invalid UTF-8. The input is not trimmed. The limits of Parse
// apply to the external form, String.
//
// Note that go-smtp removes source routes itself.
func ParseInternal(s string) (Address, error) {
	if len(s) > maxInputLen {
		return Address{}, fmt.Errorf("%w: address of %d octets", ErrTooLong, len(s))
	}
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return Address{}, fmt.Errorf("%w: address %s has no '@'", ErrSyntax, quote(s))
	}
	return build(s, s[:i], s[i+1:])
}

// build checks what Parse and ParseInternal share and makes the Address.
func build(in, local, dom string) (Address, error) {
	if local == "" {
		return Address{}, fmt.Errorf("%w: address %s has an empty local part", ErrSyntax, quote(in))
	}
	if err := checkLocal(local); err != nil {
		return Address{}, fmt.Errorf("address %s: %w", quote(in), err)
	}
	var d string
	var err error
	if strings.HasPrefix(dom, "[") {
		d, err = ipLiteral(dom)
	} else {
		d, err = domain(dom)
	}
	if err != nil {
		return Address{}, fmt.Errorf("address %s: %w", quote(in), err)
	}
	a := Address{Local: local, Domain: d, uDomain: !isASCII(dom)}

	// The limits apply to what we send and store too: lower-casing can
	// lengthen a UTF-8 local part, and A-labels can be longer than U-labels.
	for _, l := range []string{quoteLocal(local), quoteLocal(strings.ToLower(local))} {
		if len(l) > maxLocalLen {
			return Address{}, fmt.Errorf("%w: local part of %d octets, more than %d", ErrTooLong, len(l), maxLocalLen)
		}
		if n := len(l) + 1 + len(d); n > maxPathLen {
			return Address{}, fmt.Errorf("%w: address of %d octets, more than %d", ErrTooLong, n, maxPathLen)
		}
	}
	return a, nil
}

// unquote reads a quoted-string at the start of s (RFC 5321 4.1.2
// Quoted-string, with RFC 6531's UTF-8) and returns its content and the rest
// of s after the closing quote.
func unquote(s string) (content, rest string, err error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), s[i+1:], nil
		case c == '\\':
			// quoted-pairSMTP = %d92 %d32-126
			i++
			if i == len(s) || s[i] < 32 || s[i] > 126 {
				return "", "", fmt.Errorf("%w: bad backslash escape in quoted local part", ErrSyntax)
			}
			b.WriteByte(s[i])
		case c < 32 || c == 127:
			return "", "", fmt.Errorf("%w: control character in quoted local part", ErrSyntax)
		default:
			b.WriteByte(c)
		}
	}
	return "", "", fmt.Errorf("%w: unterminated quoted local part", ErrSyntax)
}

// checkLocal checks what every local part must satisfy: valid UTF-8 without
// control characters (C0, DEL and C1).
func checkLocal(l string) error {
	if !utf8.ValidString(l) {
		return fmt.Errorf("%w: local part is not valid UTF-8", ErrSyntax)
	}
	for _, r := range l {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: control character %q in local part", ErrSyntax, r)
		}
	}
	return nil
}

// checkDotString checks an unquoted local part: atext (RFC 5321 4.1.2, RFC
// 5322 3.2.3), non-ASCII characters other than white space and controls (RFC
// 6531 3.3), and dots, which, like Postfix, we accept anywhere.
func checkDotString(l string) error {
	for _, r := range l {
		if r != '.' && !isAtext(r) {
			return fmt.Errorf("%w: character %q must be quoted in a local part", ErrSyntax, r)
		}
	}
	return nil
}

// isAtext reports whether r may appear in an atom of a dot-string.
func isAtext(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case r < utf8.RuneSelf:
		return strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r)
	default:
		return r != utf8.RuneError && !unicode.IsSpace(r) && !unicode.IsControl(r)
	}
}

// isDotString reports whether l can be sent unquoted: atoms separated by
// single dots (RFC 5321 4.1.2 Dot-string).
func isDotString(l string) bool {
	if l == "" {
		return false
	}
	for atom := range strings.SplitSeq(l, ".") {
		if atom == "" {
			return false
		}
		for _, r := range atom {
			if !isAtext(r) {
				return false
			}
		}
	}
	return true
}

// quoteLocal returns the external form of a local part: itself if it is a
// dot-string, otherwise a quoted-string with '"' and '\' escaped (RFC 5321
// 4.1.2 says to quote only when needed).
func quoteLocal(l string) string {
	if isDotString(l) {
		return l
	}
	var b strings.Builder
	b.Grow(len(l) + 2)
	b.WriteByte('"')
	for i := 0; i < len(l); i++ {
		if l[i] == '"' || l[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(l[i])
	}
	b.WriteByte('"')
	return b.String()
}

// String returns the address in external form with the local part spelled as
// given (quoted if needed) and the canonical domain, for the envelope of mail
// we forward or send. The zero Address gives "", the null reverse-path.
func (a Address) String() string {
	if a.Local == "" && a.Domain == "" {
		return ""
	}
	return quoteLocal(a.Local) + "@" + a.Domain
}

// Canonical returns the lookup key and stored form of the address: the local
// part lower-cased (strings.ToLower, which folds UTF-8 too) and quoted if
// needed, '@', and the canonical domain. Parsing it again gives the same
// Canonical. The zero Address gives "".
func (a Address) Canonical() string {
	if a.Local == "" && a.Domain == "" {
		return ""
	}
	return quoteLocal(strings.ToLower(a.Local)) + "@" + a.Domain
}

// NeedsSMTPUTF8 reports whether the address, as it was received, needs the
// SMTPUTF8 extension (RFC 6531 3.4): its local part is not ASCII or its domain
// was given in U-labels. Without SMTPUTF8 such an address gets 553 5.6.7.
// String needs SMTPUTF8 only when the local part is not ASCII, since it uses
// A-labels.
func (a Address) NeedsSMTPUTF8() bool {
	return a.uDomain || !isASCII(a.Local) || !isASCII(a.Domain)
}

// Normalize parses an address in external form and returns its canonical
// form, the key to store and look up: Parse then Canonical.
func Normalize(s string) (string, error) {
	a, err := Parse(s)
	if err != nil {
		return "", err
	}
	return a.Canonical(), nil
}

// NormalizeDomainOrAddress normalises a key that may be a domain
// ("Example.COM" → "example.com"), an address (as Normalize), or the
// catch-all form "@domain" ("@Example.COM" → "@example.com"), as in the alias
// and transport tables.
func NormalizeDomainOrAddress(s string) (string, error) {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "@"); ok {
		d, err := domain(rest)
		if err != nil {
			return "", err
		}
		return "@" + d, nil
	}
	if strings.Contains(s, "@") {
		return Normalize(s)
	}
	return Domain(s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// quote quotes untrusted input for an error message, shortened.
func quote(s string) string {
	const max = 100
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
