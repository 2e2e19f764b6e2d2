package cleanup

import (
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// rfc5322Date is the date-time of RFC 5322 3.3.
const rfc5322Date = "Mon, 2 Jan 2006 15:04:05 -0700"

// receivedHeader builds facteur's Received: field (RFC 5321 4.4, in
// Postfix's layout), folded, with CRLF line ends:
//
//	Received: from HELO (NAME [IP])
//		(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)
//		(Authenticated sender: USER)
//		by HOSTNAME (facteur) with ESMTPSA id QUEUEID
//		for <RCPT>; DATE
//
// and for local submission (no client address):
//
//	Received: by HOSTNAME (facteur, from user LOCALUSER)
//		id QUEUEID; DATE
//
// Every value that comes from the client (HELO, the AUTH identity, the
// recipient) is cleaned by clean: no CR, LF or other control character, no
// parenthesis or angle bracket that would end a comment or an address early,
// and a bounded length, so that nothing a client sends can add a header
// field or forge trace information.
func receivedHeader(hostname, id string, cl *Client, rcpt string, utf8ok bool, now time.Time) string {
	var b strings.Builder
	b.Grow(256)
	b.WriteString("Received: ")
	host := clean(hostname, 255, false, false)
	if host == "" {
		host = "localhost"
	}
	if cl.Addr == "" {
		b.WriteString("by ")
		b.WriteString(host)
		b.WriteString(" (facteur")
		if cl.LocalUser != "" {
			b.WriteString(", from user ")
			b.WriteString(clean(cl.LocalUser, 64, false, false))
		}
		b.WriteString(")\r\n\tid ")
		b.WriteString(id)
	} else {
		helo := clean(cl.Helo, 255, false, false)
		if helo == "" {
			helo = "unknown"
		}
		name := clean(cl.Name, 255, false, false)
		if name == "" {
			name = "unknown"
		}
		b.WriteString("from ")
		b.WriteString(helo)
		b.WriteString(" (")
		b.WriteString(name)
		b.WriteString(" [")
		b.WriteString(addressLiteral(cl.Addr))
		b.WriteString("])")
		if cl.TLS != "" {
			version, cipher, _ := strings.Cut(strings.TrimSpace(cl.TLS), " ")
			b.WriteString("\r\n\t(using ")
			b.WriteString(clean(version, 32, false, false))
			if cipher = clean(strings.TrimSpace(cipher), 100, false, false); cipher != "" {
				b.WriteString(" with cipher ")
				b.WriteString(cipher)
			}
			b.WriteString(")")
		}
		if cl.AuthUser != "" {
			b.WriteString("\r\n\t(Authenticated sender: ")
			b.WriteString(clean(cl.AuthUser, 255, true, utf8ok))
			b.WriteString(")")
		}
		b.WriteString("\r\n\tby ")
		b.WriteString(host)
		b.WriteString(" (facteur) with ")
		proto := clean(cl.Protocol, 32, false, false)
		if proto == "" {
			proto = "SMTP"
		}
		b.WriteString(proto)
		b.WriteString(" id ")
		b.WriteString(id)
	}
	if rcpt != "" {
		b.WriteString("\r\n\tfor <")
		b.WriteString(clean(rcpt, 320, false, utf8ok))
		b.WriteString(">")
	}
	b.WriteString("; ")
	b.WriteString(now.Format(rfc5322Date))
	b.WriteString("\r\n")
	return b.String()
}

// addressLiteral writes an IP address as RFC 5321 4.1.3 does (IPv6 with
// its "IPv6:" tag), or the cleaned text if it is not an IP address.
func addressLiteral(s string) string {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		if ap, perr := netip.ParseAddrPort(s); perr == nil {
			ip, err = ap.Addr(), nil
		}
	}
	if err != nil {
		return clean(s, 64, false, false)
	}
	ip = ip.Unmap()
	if ip.Is6() {
		return "IPv6:" + ip.WithZone("").String()
	}
	return ip.String()
}

// clean makes a client-supplied value safe to place in a header field:
// control characters (CR and LF among them), the delimiters ( ) < > ; \ and
// invalid UTF-8 become '?', spaces too unless allowSpace, non-ASCII too
// unless utf8ok (RFC 6532 allows UTF-8 in the header only for SMTPUTF8
// mail), and the result is cut at max bytes.
func clean(s string, max int, allowSpace, utf8ok bool) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			break
		}
		switch {
		case r == utf8.RuneError:
			b.WriteByte('?')
		case r == ' ' && allowSpace:
			b.WriteByte(' ')
		case r < 0x80:
			if r <= ' ' || r == 0x7f || strings.ContainsRune("()<>;\\", r) {
				b.WriteByte('?')
			} else {
				b.WriteRune(r)
			}
		case utf8ok && unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}
