package admin

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/facteur/facteur/lookups/address"
)

// The authorisation layer: every name a client gives (in a path or a body)
// goes through one of these before anything reads or writes it. Each
// normalises first (case, trailing dot, IDN U-labels to A-labels; the
// address package is the one normaliser) and then checks the domain
// against the principal's scope, so that "U@B.TEST.", "u@b.test" and
// "u@xn--bcher-kva.test"/"u@bücher.test" are one name and one decision.
// A name outside the scope is "not found", exactly as a name that does not
// exist: a domain admin cannot learn that other domains exist.

// normDomain returns the canonical form of a domain name.
func normDomain(s string) (string, error) { return address.Domain(s) }

// splitAddress splits a canonical address (or "@domain") at its last '@'.
func splitAddress(a string) (local, domain string) {
	i := strings.LastIndexByte(a, '@')
	return a[:i], a[i+1:]
}

// scopedDomain normalises a domain name given in field (a path parameter
// when field is "") and returns it if p may manage it. A malformed name in
// a path is not found; in a body it is invalid.
func scopedDomain(p *principal, raw, field string) (string, error) {
	d, err := normDomain(raw)
	if err != nil {
		if field == "" {
			return "", errNotFound("")
		}
		return "", errInvalid(field, "invalid domain name")
	}
	if !p.inScope(d) {
		return "", errNotFound(field)
	}
	return d, nil
}

// scopedAddress normalises an address (local@domain) given in field and
// returns it if p may manage its domain.
func scopedAddress(p *principal, raw, field string) (string, error) {
	a, err := address.Normalize(strings.TrimSpace(raw))
	if err != nil || strings.HasPrefix(a, "\"") {
		if field == "" {
			return "", errNotFound("")
		}
		return "", errInvalid(field, "invalid address")
	}
	if _, d := splitAddress(a); !p.inScope(d) {
		return "", errNotFound(field)
	}
	return a, nil
}

// scopedAliasAddress is scopedAddress that also takes the catch-all form
// "@domain".
func scopedAliasAddress(p *principal, raw, field string) (string, error) {
	raw = strings.TrimSpace(raw)
	if !strings.HasPrefix(raw, "@") {
		return scopedAddress(p, raw, field)
	}
	a, err := address.NormalizeDomainOrAddress(raw)
	if err != nil {
		if field == "" {
			return "", errNotFound("")
		}
		return "", errInvalid(field, "invalid catch-all address")
	}
	if !p.inScope(a[1:]) {
		return "", errNotFound(field)
	}
	return a, nil
}

// isCommandDestination reports whether an alias destination is a command,
// a file or an :include: list. Those exist only on local domains and are
// written only by the CLI or newaliases (DESIGN.md), never through the
// admin service, whoever asks.
func isCommandDestination(d string) bool {
	d = strings.TrimSpace(d)
	return strings.HasPrefix(d, "|") || strings.HasPrefix(d, "/") ||
		strings.HasPrefix(strings.ToLower(d), ":include:")
}

// checkDestinations normalises alias destinations given in field: each must
// be an address (a superadmin may also name a bare local user, which the
// database accepts only on local domains). A command, file or :include:
// destination is a 403.
func checkDestinations(p *principal, dests []string, field string) ([]string, error) {
	out := make([]string, 0, len(dests))
	for _, d := range dests {
		if isCommandDestination(d) {
			return nil, &apiError{Status: http.StatusForbidden, Code: codeForbiddenDest, Field: field,
				Message: "command, file and :include: destinations are set with the CLI only"}
		}
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		if !strings.Contains(d, "@") && p.isSuper() {
			if strings.ContainsFunc(d, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
				return nil, errInvalid(field, "invalid destination")
			}
			out = append(out, strings.ToLower(d))
			continue
		}
		a, err := address.Normalize(d)
		if err != nil {
			return nil, errInvalid(field, "invalid destination address %q", truncate(d, 80))
		}
		out = append(out, a)
	}
	return out, nil
}

// nexthopRE is the transport table's CHECK on a next hop.
var nexthopRE = regexp.MustCompile(`^(smtp|lmtp|relay|maildir|local|pipe|discard|error)(:.*)?$`)

// checkTransport checks a transport (next hop) given in field. Only a
// superadmin may set one (on a domain, a mailbox or the transport table):
// for anyone else the mere presence of the field is a 403.
func checkTransport(p *principal, t *string, field string) error {
	if !p.isSuper() {
		return errForbidden(field, "only a superadmin may set transports")
	}
	if t == nil {
		return nil
	}
	if !nexthopRE.MatchString(*t) || strings.ContainsFunc(*t, unicode.IsControl) {
		return errInvalid(field, "a transport is smtp:, lmtp:, relay:, maildir, local, pipe:, discard or error:")
	}
	return nil
}

// isProtected reports whether a canonical address is one that every domain
// needs (postmaster@, RFC 5321 4.5.1; abuse@, RFC 2142, and any others
// configured): only a superadmin may delete or disable it.
func (h *Handler) isProtected(addr string) bool {
	local, _ := splitAddress(addr)
	return slices.Contains(h.opts.ProtectedLocalParts, local)
}

// checkPassword applies the password policy to a new password of the
// account whose names (address, local part, username) are given.
func (h *Handler) checkPassword(pw string, names ...string) error {
	pol := h.opts.Password
	weak := func(format string, args ...any) error {
		e := errInvalid("password", format, args...)
		e.Code = codeWeakPassword
		return e
	}
	if !utf8.ValidString(pw) || strings.ContainsRune(pw, 0) {
		return weak("the password must be UTF-8 text without NUL")
	}
	if n := utf8.RuneCountInString(pw); n < pol.MinLength {
		return weak("the password must have at least %d characters", pol.MinLength)
	} else if n > pol.MaxLength {
		return weak("the password may have at most %d characters", pol.MaxLength)
	}
	lower := strings.ToLower(pw)
	for _, n := range names {
		if n != "" && lower == strings.ToLower(n) {
			return weak("the password must not be the account's name or address")
		}
	}
	if pol.MinClasses > 0 {
		var classes [4]bool
		for _, r := range pw {
			switch {
			case unicode.IsLower(r):
				classes[0] = true
			case unicode.IsUpper(r):
				classes[1] = true
			case unicode.IsDigit(r):
				classes[2] = true
			default:
				classes[3] = true
			}
		}
		n := 0
		for _, c := range classes {
			if c {
				n++
			}
		}
		if n < pol.MinClasses {
			return weak("the password must mix at least %d of: lower case, upper case, digits, other characters", pol.MinClasses)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
