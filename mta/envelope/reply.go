package envelope

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
)

// Status is an enhanced mail system status code (RFC 3463 2, RFC 2034):
// class, subject and detail, so Status{5, 1, 1} is "5.1.1". The zero Status
// means none was given. It converts to and from smtp.EnhancedCode.
type Status [3]int

// IsZero reports whether no status is set.
func (s Status) IsZero() bool { return s == Status{} }

// Valid reports whether s is a well-formed status code: class 2, 4 or 5,
// subject and detail of one to three digits (RFC 3463 2).
func (s Status) Valid() bool {
	return (s[0] == 2 || s[0] == 4 || s[0] == 5) &&
		s[1] >= 0 && s[1] <= 999 && s[2] >= 0 && s[2] <= 999
}

// String returns "class.subject.detail", or "" for the zero Status.
func (s Status) String() string {
	if s.IsZero() {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", s[0], s[1], s[2])
}

// ParseEnhanced reads an enhanced status code at the start of a reply text
// (after the three-digit reply code), as RFC 2034 4 places it: "5.1.1 User
// unknown" gives Status{5, 1, 1} and "User unknown". Leading spaces are
// skipped, and the code must be followed by a space or the end of the text.
// Without a valid code, ok is false and rest is the text unchanged. Delivery
// agents use it on remote replies, and transports on "error:5.x.x text".
func ParseEnhanced(text string) (st Status, rest string, ok bool) {
	t := strings.TrimLeft(text, " ")
	code, after, _ := strings.Cut(t, " ")
	parts := strings.Split(code, ".")
	if len(parts) != 3 {
		return Status{}, text, false
	}
	for i, p := range parts {
		if p == "" || len(p) > 3 || (i == 0 && len(p) != 1) {
			return Status{}, text, false
		}
		for j := 0; j < len(p); j++ {
			if p[j] < '0' || p[j] > '9' {
				return Status{}, text, false
			}
		}
		st[i], _ = strconv.Atoi(p)
	}
	if !st.Valid() {
		return Status{}, text, false
	}
	return st, strings.TrimLeft(after, " "), true
}

// Reply is an SMTP reply: a three-digit code (RFC 5321 4.2), an enhanced
// status code (RFC 3463) and a text. It is an error, so a reply can travel up
// a call chain, wrapped, to Funnel; it is also what delivery agents record as
// a recipient's last reply.
//
// Text may have several lines separated by "\n" (a multi-line reply); control
// characters are removed when it is sent (ToSMTP).
type Reply struct {
	Code     int
	Enhanced Status
	Text     string
}

// Error returns String: a Reply is an error.
func (r Reply) Error() string { return r.String() }

// String returns the reply on one line, as in logs and delivery_log:
// "550 5.1.1 text". Line breaks in the text become spaces; a missing status
// is left out.
func (r Reply) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%03d", r.Code)
	if !r.Enhanced.IsZero() {
		b.WriteByte(' ')
		b.WriteString(r.Enhanced.String())
	}
	if r.Text != "" {
		b.WriteByte(' ')
		b.WriteString(strings.Join(cleanLines(r.Text), " "))
	}
	return b.String()
}

// Temporary reports whether the reply is a transient failure (4yz, RFC 5321
// 4.2.1): try again later.
func (r Reply) Temporary() bool { return r.Code >= 400 && r.Code <= 499 }

// Permanent reports whether the reply is a permanent failure (5yz, RFC 5321
// 4.2.1): do not retry; bounce.
func (r Reply) Permanent() bool { return r.Code >= 500 && r.Code <= 599 }

// ToSMTP returns the reply as go-smtp sends it, for a Session method to
// return. Control characters in the text are dropped or replaced by spaces,
// so a text cannot inject protocol lines, and long lines are cut to fit the
// 512-octet reply line (RFC 5321 4.5.3.1.5). A zero or malformed status makes
// go-smtp send class.0.0.
func (r Reply) ToSMTP() *smtp.SMTPError {
	ec := smtp.EnhancedCodeNotSet
	if r.Enhanced.Valid() {
		ec = smtp.EnhancedCode(r.Enhanced)
	}
	return &smtp.SMTPError{
		Code:         r.Code,
		EnhancedCode: ec,
		Message:      strings.Join(cleanLines(r.Text), "\n"),
	}
}

// FromSMTP converts a go-smtp error, such as the go-smtp client returns for a
// remote server's reply, to a Reply. A missing enhanced code is looked for at
// the start of the message; a malformed one is dropped. nil gives the zero
// Reply.
func FromSMTP(e *smtp.SMTPError) Reply {
	if e == nil {
		return Reply{}
	}
	r := Reply{Code: e.Code, Text: e.Message}
	switch ec := Status(e.EnhancedCode); {
	case ec.Valid():
		r.Enhanced = ec
	case e.EnhancedCode == smtp.EnhancedCodeNotSet || e.EnhancedCode == smtp.NoEnhancedCode:
		if st, rest, ok := ParseEnhanced(e.Message); ok {
			r.Enhanced, r.Text = st, rest
		}
	}
	return r
}

// Funnel turns an error from any path of an SMTP session into the reply that
// a go-smtp Session method returns (maddy's wrapErr; DESIGN "One funnel from
// error to reply"). A Reply, *Reply or *smtp.SMTPError found in err's chain
// (errors.As) keeps its code if it is a 4yz or 5yz failure. Anything else, a
// database or disk error, a cancelled context, or a success code where an
// error was expected, becomes 451 4.3.0 "Internal error, session <id>": an
// outcome we cannot vouch for is temporary, and the text reveals nothing
// internal. The caller logs err with the session id.
//
// Call it only on a non-nil error (if err != nil { return Funnel(err, id) }).
// It never returns nil, so that no typed nil *smtp.SMTPError reaches go-smtp
// as a non-nil error; Funnel(nil, id) is treated as an internal error.
//
// A success is not an error: Data returns Queued(id).ToSMTP() directly, and
// only after the message is durably queued.
func Funnel(err error, sessionID string) *smtp.SMTPError {
	if err != nil {
		var r Reply
		if errors.As(err, &r) && r.failure() {
			return r.ToSMTP()
		}
		var rp *Reply
		if errors.As(err, &rp) && rp != nil && rp.failure() {
			return rp.ToSMTP()
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) && se != nil {
			if r := FromSMTP(se); r.failure() {
				return r.ToSMTP()
			}
		}
	}
	return InternalError(sessionID).ToSMTP()
}

func (r Reply) failure() bool { return r.Temporary() || r.Permanent() }

// maxTextLine is the longest text in one reply line: 512 octets (RFC 5321
// 4.5.3.1.5) less the code, the enhanced status and CRLF.
const maxTextLine = 480

// cleanLines splits a reply text into lines and makes each safe to send: no
// CR, other control characters and invalid UTF-8 as spaces, at most
// maxTextLine octets.
func cleanLines(text string) []string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		l = strings.Map(func(r rune) rune {
			switch {
			case r == '\r':
				return -1
			case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f, r == utf8.RuneError:
				return ' '
			}
			return r
		}, l)
		if len(l) > maxTextLine {
			n := maxTextLine
			for n > 0 && !utf8.RuneStart(l[n]) {
				n--
			}
			l = l[:n]
		}
		lines[i] = l
	}
	return lines
}
