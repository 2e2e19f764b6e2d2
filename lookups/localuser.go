package lookups

import (
	"context"
	"errors"
	"os/user"
	"strings"
)

// SystemUser is an Options.LocalUser for the operating system's user
// database (os/user: the C library's getpwnam when built with cgo, so NSS
// sources such as LDAP count; /etc/passwd only in a static build). It
// reports whether name is a user. A name that no account can have (empty,
// with "/", white space or control characters, or starting with "-" or
// ".") is not one; a failure of the user database is an error, never "no
// such user".
//
// Every account counts, root and system accounts included, as in Postfix;
// the local delivery agent refuses to deliver as root (alias root to a
// person), and smtpd rejects unknown names at RCPT time.
func SystemUser(_ context.Context, name string) (bool, error) {
	if name == "" || len(name) > 256 || name[0] == '-' || name[0] == '.' ||
		strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '/' || r == ':' }) {
		return false, nil
	}
	_, err := user.Lookup(name)
	if err == nil {
		return true, nil
	}
	var unk user.UnknownUserError
	if errors.As(err, &unk) {
		return false, nil
	}
	return false, err
}
