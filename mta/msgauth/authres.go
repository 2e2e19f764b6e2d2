package msgauth

import (
	"bytes"
	"strings"

	"github.com/emersion/go-msgauth/authres"
)

// HeaderName is the field AuthResultsHeader writes and StripForged removes.
const HeaderName = "Authentication-Results"

// QuarantineHeaderName is the field that marks a message quarantined by
// DMARC (QuarantineField). Mailbox users filter on it (a Sieve rule, or the
// Maildir agent's Junk folder). StripForged removes every incoming one.
const QuarantineHeaderName = "X-Facteur-Quarantine"

// AuthResultsHeader returns the Authentication-Results header field (RFC
// 8601) for the results, complete with its name, folded one result per
// line and ending in CRLF, to prepend to the message:
//
//	Authentication-Results: mx.example.net;
//		spf=pass smtp.mailfrom=alice@example.com;
//		dkim=pass header.d=example.com header.i=@example.com;
//		dmarc=pass header.from=example.com
//
// A zero SPFResult or DMARCResult is left out; no DKIM results is
// dkim=none. authservID is this host's name (RFC 8601 2.5).
func AuthResultsHeader(authservID string, spf SPFResult, dkims []DKIMResult, dm DMARCResult) string {
	var rs []authres.Result
	if spf.Result != "" {
		r := &authres.SPFResult{Value: authres.ResultValue(spf.Result), Reason: param(spf.Reason)}
		if spf.Identity == IdentityHelo {
			r.Helo = param(spf.Helo)
		} else {
			r.From = param(spf.MailFrom)
		}
		rs = append(rs, r)
	}
	if len(dkims) == 0 {
		rs = append(rs, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, d := range dkims {
		rs = append(rs, &authres.DKIMResult{Value: authres.ResultValue(d.Result), Reason: param(d.Reason),
			Domain: param(d.Domain), Identifier: param(d.Identifier)})
	}
	if dm.Result != "" {
		rs = append(rs, &authres.DMARCResult{Value: authres.ResultValue(dm.Result), Reason: param(dm.Reason), From: param(dm.From)})
	}
	id := cleanValue(authservID)
	var b strings.Builder
	b.WriteString(HeaderName + ": " + id)
	for _, r := range rs {
		one := authres.Format(id, []authres.Result{r})
		b.WriteString(";\r\n\t")
		b.WriteString(cleanValue(strings.TrimSpace(strings.TrimPrefix(one, id+"; "))))
	}
	b.WriteString("\r\n")
	return b.String()
}

// QuarantineField returns the field that marks a message quarantined by
// DMARC, complete and ending in CRLF:
//
//	X-Facteur-Quarantine: dmarc; from=example.com; policy=reject
func QuarantineField(r DMARCResult) string {
	return QuarantineHeaderName + ": dmarc; from=" + cleanValue(r.From) + "; policy=" + cleanValue(string(r.Policy)) + "\r\n"
}

// cleanValue drops control characters (CR and LF included) from a value
// built from DNS or message data, so it cannot end the field or add one.
func cleanValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// param cleans a value for a result's parameter. go-msgauth quotes values
// with special characters, but does not escape a backslash (which could
// then escape the closing quote), and many parsers (go-msgauth's among
// them) split results at every ";", quoted or not: a reason taken from DNS
// or a quoted MAIL FROM could then add a result of its choosing. So
// backslashes, double quotes and semicolons are replaced, and the value is
// cut to 200 bytes.
var paramReplacer = strings.NewReplacer(`\`, "/", `"`, "'", ";", ",")

func param(s string) string {
	s = paramReplacer.Replace(cleanValue(s))
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "")
	}
	return s
}

// StripForged returns the header block without the Authentication-Results
// fields that claim authservID (RFC 8601 5: a receiver must remove or
// rename them, else a sender could forge our verdict) and without any
// X-Facteur-Quarantine field. Other fields, and the bytes of those kept,
// are unchanged. header is the header block as received (fields with their
// continuation lines, lines ending in CRLF, up to and including the empty
// line); anything after the empty line is returned as it is.
func StripForged(header []byte, authservID string) []byte {
	out := make([]byte, 0, len(header))
	rest := header
	for len(rest) > 0 {
		// One field: a line and its continuation lines.
		end := 0
		for {
			i := bytes.IndexByte(rest[end:], '\n')
			if i < 0 {
				end = len(rest)
				break
			}
			end += i + 1
			if end >= len(rest) || (rest[end] != ' ' && rest[end] != '\t') {
				break
			}
		}
		field := rest[:end]
		rest = rest[end:]
		if len(bytes.TrimRight(field, "\r\n")) == 0 {
			// The empty line: the body follows, untouched.
			out = append(out, field...)
			out = append(out, rest...)
			break
		}
		if !ForgedField(field, authservID) {
			out = append(out, field...)
		}
	}
	return out
}

// ForgedField reports whether one header field (name, colon, value and its
// continuation lines) is one StripForged removes: an
// Authentication-Results field whose authserv-id is authservID (compared
// case-insensitively), or an X-Facteur-Quarantine field. For callers that
// copy a header field by field.
func ForgedField(field []byte, authservID string) bool {
	name, value, ok := bytes.Cut(field, []byte(":"))
	if !ok {
		return false
	}
	n := strings.TrimRight(string(name), " \t")
	switch {
	case strings.EqualFold(n, QuarantineHeaderName):
		return true
	case strings.EqualFold(n, HeaderName):
		id := authservIDOf(string(value))
		if len(id) >= 2 && id[0] == '"' && id[len(id)-1] == '"' {
			id = id[1 : len(id)-1] // a quoted-string is the same value (RFC 8601 2.2)
		}
		return strings.EqualFold(id, strings.TrimSpace(authservID))
	}
	return false
}

// authservIDOf returns the authserv-id of an Authentication-Results value:
// its first token, comments and folding removed (RFC 8601 2.2).
func authservIDOf(v string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == ';':
			return b.String()
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			if b.Len() > 0 {
				return b.String()
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
