package vacation

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// rfc5322Date is the date-time of RFC 5322 3.3.
const rfc5322Date = "Mon, 2 Jan 2006 15:04:05 -0700"

// maxReferences bounds the msg-ids carried over from the subject message's
// References: field, keeping the most recent (the first one, the thread's
// root, is kept too).
const maxReferences = 20

// reply is an automatic response to one subject message.
type reply struct {
	from     mail.Address // the mailbox, with its display name
	to       string       // the subject message's envelope sender, external form
	subject  string       // clean: no control characters
	body     string
	hostname string // for the Message-ID
	now      time.Time
	// inReplyTo is the subject message's Message-ID ("" if it had no valid
	// one); references its References: msg-ids.
	inReplyTo  string
	references []string
}

// needsSMTPUTF8 reports whether the reply's addresses need the SMTPUTF8
// extension (RFC 6531): a non-ASCII local part or domain.
func (r *reply) needsSMTPUTF8() bool {
	return !isASCII(r.from.Address) || !isASCII(r.to)
}

// bytes renders the reply as an RFC 5322 message with CRLF line ends.
// Header fields as RFC 3834 3.1 recommends: From: the responding mailbox,
// To: the address the response is sent to, a Subject: that says it is an
// automatic response, In-Reply-To: and References: to thread it (RFC 3834
// 3.1.5; RFC 5322 3.6.4), and Auto-Submitted: auto-replied (RFC 3834 5).
// Precedence: bulk and X-Auto-Response-Suppress: All are not standard but
// keep older responders (and Exchange) from answering the answer.
func (r *reply) bytes() []byte {
	var b bytes.Buffer
	b.Grow(1024 + len(r.body))
	field(&b, "From", r.from.String())
	field(&b, "To", "<"+r.to+">")
	field(&b, "Subject", mime.QEncoding.Encode("utf-8", r.subject))
	field(&b, "Date", r.now.Format(rfc5322Date))
	field(&b, "Message-ID", newMessageID(r.hostname, r.now))
	if r.inReplyTo != "" {
		field(&b, "In-Reply-To", r.inReplyTo)
		refs := r.references
		if len(refs) > maxReferences {
			refs = append(refs[:1:1], refs[len(refs)-maxReferences+1:]...)
		}
		refs = append(refs[:len(refs):len(refs)], r.inReplyTo)
		field(&b, "References", strings.Join(refs, " "))
	}
	field(&b, "Auto-Submitted", "auto-replied")
	field(&b, "Precedence", "bulk")
	field(&b, "X-Auto-Response-Suppress", "All")
	field(&b, "MIME-Version", "1.0")
	field(&b, "Content-Type", "text/plain; charset=utf-8")

	body := strings.ReplaceAll(strings.ReplaceAll(r.body, "\r\n", "\n"), "\r", "\n")
	if body != "" && !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	if isASCII(body) && !longLine(body, 998) {
		field(&b, "Content-Transfer-Encoding", "7bit")
		b.WriteString("\r\n")
		b.WriteString(strings.ReplaceAll(body, "\n", "\r\n"))
		return b.Bytes()
	}
	field(&b, "Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b) // text mode: line breaks become CRLF
	_, _ = qp.Write([]byte(body))       // a bytes.Buffer does not fail
	_ = qp.Close()
	return b.Bytes()
}

// field writes "name: value" CRLF, folding the value at spaces so that
// lines stay under 78 characters where a space allows it (RFC 5322 2.1.1,
// 2.2.3). value has no CR or LF.
func field(b *bytes.Buffer, name, value string) {
	b.WriteString(name)
	b.WriteString(":")
	col := len(name) + 1
	for i, w := range strings.Split(value, " ") {
		if i > 0 && col+1+len(w) > 78 {
			b.WriteString("\r\n")
			col = 0
		}
		b.WriteString(" ")
		b.WriteString(w)
		col += 1 + len(w)
	}
	b.WriteString("\r\n")
}

// newMessageID returns a unique msg-id for a reply made at now on host.
func newMessageID(host string, now time.Time) string {
	var rnd [9]byte
	_, _ = rand.Read(rnd[:]) // crypto/rand.Read never fails
	if host == "" {
		host = "localhost"
	}
	return "<" + strconv.FormatInt(now.UnixMicro(), 36) + "." + hex.EncodeToString(rnd[:]) + ".vacation@" + host + ">"
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// longLine reports whether s (LF line ends) has a line longer than n bytes.
func longLine(s string, n int) bool {
	for s != "" {
		line, rest, _ := strings.Cut(s, "\n")
		if len(line) > n {
			return true
		}
		s = rest
	}
	return false
}
