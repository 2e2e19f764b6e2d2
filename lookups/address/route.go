package address

import (
	"strings"
	"unicode/utf8"
)

// SplitExtension splits a local part at the recipient delimiter, as Postfix's
// recipient_delimiter (split_addr): delims is a set of delimiter characters
// ("+" or "+-"), and the local part is split at the first occurrence of any of
// them. ext excludes the delimiter; when the local part is split, the delimiter
// used starts at local[len(user)] and ext is what follows it.
//
// Like Postfix it does not split when the result would have an empty user
// (the local part starts with a delimiter, "+foo"), nor the reserved names
// postmaster, mailer-daemon and double-bounce, nor, when '-' is a delimiter,
// "owner-…" and "…-request" (owner_request_special). Case is ignored in those
// names. Without a split, user is local and ext is "". "user+" splits into
// "user" and "".
func SplitExtension(local, delims string) (user, ext string) {
	if delims == "" {
		return local, ""
	}
	switch strings.ToLower(local) {
	case "postmaster", "mailer-daemon", "double-bounce":
		return local, ""
	}
	if strings.Contains(delims, "-") {
		l := strings.ToLower(local)
		if strings.HasPrefix(l, "owner-") || (len(l) > len("-request") && strings.HasSuffix(l, "-request")) {
			return local, ""
		}
	}
	i := strings.IndexAny(local, delims)
	if i <= 0 {
		return local, ""
	}
	_, size := utf8.DecodeRuneInString(local[i:])
	return local[:i], local[i+size:]
}

// HasRouting reports whether a local part carries a routing form that an old
// mailer would act on: '%' (user%other@us), '!' (other!user@us, UUCP bang
// paths) or '@' (from `"user@other"@us`, or from go-smtp's internal form).
// An smtpd must not accept such a recipient for relaying: with the domain
// stripped, it names another destination (Postfix's allow_untrusted_routing).
func HasRouting(local string) bool {
	return strings.ContainsAny(local, "%!@")
}

// StripSourceRoute removes an obsolete source route from a path: RFC 5321
// 4.1.1.3 and appendix C say to accept and ignore it, so "@a,@b:user@d"
// becomes "user@d" and "<@a:user@d>" becomes "<user@d>". Paths without a
// route are returned unchanged; so is a path that starts with '@' but has no
// ':', which Parse then rejects. go-smtp already does this for MAIL and RCPT;
// it is for other inputs (pickup, QMQP).
func StripSourceRoute(path string) string {
	p, bracket := strings.CutPrefix(path, "<")
	if !strings.HasPrefix(p, "@") {
		return path
	}
	// A-d-l holds only domain names, never a ':' (RFC 5321 4.1.2).
	i := strings.IndexByte(p, ':')
	if i < 0 {
		return path
	}
	if bracket {
		return "<" + p[i+1:]
	}
	return p[i+1:]
}
