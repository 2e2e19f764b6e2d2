package vacation

import "strings"

// machineSender reports whether a sender's local part names a mailer, a
// mailing list's administrative address or an address that takes no
// replies, and says which rule matched. RFC 3834 2 names "owner-*",
// "*-request" and "MAILER-DAEMON"; the rest are the names mailers, list
// servers and bulk senders use (vacation(1), PostfixAdmin's vacation.pl and
// Sieve vacation skip the same kinds). Anything after a '+' (an address
// extension, a VERP tail) is ignored.
func machineSender(local string) (string, bool) {
	l := strings.ToLower(local)
	if i := strings.IndexByte(l, '+'); i > 0 {
		l = l[:i]
	}
	switch l {
	case "mailer-daemon", "mailer", "postmaster", "double-bounce", "listserv", "majordomo", "nobody",
		"bounce", "bounces", "noreply", "no-reply", "donotreply", "do-not-reply":
		return l, true
	}
	for _, p := range []string{"owner-", "bounce-", "bounces-", "mailer-daemon"} {
		if strings.HasPrefix(l, p) {
			return p + "*", true
		}
	}
	for _, s := range []string{"-request", "-owner", "-bounces", "-bounce"} {
		if strings.HasSuffix(l, s) {
			return "*" + s, true
		}
	}
	// no-reply, no_reply, noreply.billing, info-donotreply, do.not.reply...
	squeezed := strings.NewReplacer("-", "", "_", "", ".", "").Replace(l)
	for _, w := range []string{"noreply", "donotreply"} {
		if strings.Contains(squeezed, w) {
			return w, true
		}
	}
	return "", false
}
