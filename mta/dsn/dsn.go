// Package dsn builds and parses delivery status notifications: RFC 3464
// multipart/report messages (RFC 6522) for failures, delays and successes,
// as Postfix's bounce(8) writes them. The queue manager decides who owes a
// notice and hands the result back to cleanup as a new message; this package
// only writes and reads the bytes.
//
// A report has three parts: a human-readable explanation (text/plain,
// quoted-printable UTF-8), the machine-readable message/delivery-status
// (RFC 3464 2), and the original message, whole (message/rfc822) or its
// header only (text/rfc822-headers), as RET asks (RFC 3461 4.3).
//
// SECURITY: everything a report carries about the failed delivery comes from
// untrusted parties: the original message and its envelope from its sender,
// reply texts and host names from remote servers. Write never lets such a
// value end a header field or a delivery-status field early: control
// characters (CR, LF included) become spaces, non-ASCII text in
// delivery-status fields is escaped (RFC 6533 utf-8-addr-xtext for
// addresses, '?' elsewhere), and long fields are folded. The original
// message is copied as opaque bytes inside its own MIME part, after a
// random boundary. ParseReport reads untrusted reports (bounces coming back
// from the network) with bounded memory: at most MaxParseBytes of input.
// Neither touches files, sockets or the database.
package dsn

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/facteur/facteur/mta/envelope"
)

// Actions of a per-recipient report (RFC 3464 2.3.3).
const (
	ActionFailed    = "failed"
	ActionDelayed   = "delayed"
	ActionDelivered = "delivered"
	ActionRelayed   = "relayed"
	ActionExpanded  = "expanded"
)

// RET values: what of the original message a report returns (RFC 3461 4.3).
const (
	ReturnHeaders = "HDRS"
	ReturnFull    = "FULL"
)

// Recipient is one recipient's part of a report (RFC 3464 2.3).
type Recipient struct {
	// FinalRecipient is the address the delivery was tried to.
	FinalRecipient string
	// OriginalRecipient is the ORCPT parameter as given ("rfc822;addr"),
	// or an address; "" leaves the field out (RFC 3464 2.3.1).
	OriginalRecipient string
	Action            string          // ActionFailed, ...
	Status            envelope.Status // RFC 3463 code; zero: 5.0.0, 4.0.0 or 2.0.0 by Action
	// RemoteMTA is the host that gave the diagnostic, "" if none.
	RemoteMTA string
	// Diagnostic is the remote's reply ("550 5.1.1 User unknown"), sent as
	// Diagnostic-Code of type smtp; "" leaves it out.
	Diagnostic string
	// Reason is the explanation for people when there is no reply from a
	// remote (a local failure, "mail transport unavailable").
	Reason         string
	LastAttempt    time.Time // zero: left out
	WillRetryUntil time.Time // delayed only; zero: left out
}

// Report is one delivery status notification about one message.
type Report struct {
	// ReportingMTA is this host's name (Reporting-MTA, and the From: domain).
	ReportingMTA string
	// From is the From: address ("" is MAILER-DAEMON@ReportingMTA).
	From string
	// To is the report's recipient: the original sender, or the
	// postmaster for a double bounce.
	To string
	// Subject overrides the subject chosen from the actions.
	Subject string
	// Intro overrides the first paragraph of the explanation.
	Intro string
	// QueueID is the original message's queue id, for people and logs
	// (X-Facteur-Queue-ID); "" leaves it out.
	QueueID string
	// EnvelopeID is RFC 3461 ENVID, returned as Original-Envelope-Id.
	EnvelopeID string
	// OriginalSender is the original envelope sender, shown to people.
	OriginalSender string
	// OriginalMessageID is the original's Message-ID, for References:.
	OriginalMessageID string
	ArrivalDate       time.Time
	Date              time.Time // zero: now
	// MessageID is the report's own Message-ID ("<…>"); "" makes one.
	MessageID  string
	Recipients []Recipient
	// Return is ReturnFull to enclose the whole original message,
	// anything else to enclose its header only.
	Return string
	// EightBit says the original is not 7-bit clean (8BITMIME, SMTPUTF8):
	// its part is marked 8bit.
	EightBit bool
}

// Kind of report, from the actions it lists.
const (
	KindFailure = "failure"
	KindDelay   = "delay"
	KindSuccess = "success"
)

// Kind returns KindFailure if any recipient failed, else KindDelay if any
// is delayed, else KindSuccess.
func (r *Report) Kind() string {
	k := KindSuccess
	for _, rc := range r.Recipients {
		switch rc.Action {
		case ActionFailed:
			return KindFailure
		case ActionDelayed:
			k = KindDelay
		}
	}
	return k
}

// MaxHeaderBytes bounds the header block of the original copied into a
// headers-only report.
const MaxHeaderBytes = 1 << 20

// Write writes r as an RFC 3464 multipart/report message with CRLF line ends
// to w, enclosing original (the queued message, CRLF lines) whole or its
// header only as r.Return says. original may be nil when the body is not
// available (the report says so).
func Write(w io.Writer, r *Report, original io.Reader) error {
	if len(r.Recipients) == 0 {
		return errors.New("dsn: a report needs at least one recipient")
	}
	if r.To == "" {
		return errors.New("dsn: no report recipient (never to the null sender)")
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	date := r.Date
	if date.IsZero() {
		date = time.Now()
	}
	host := headerText(r.ReportingMTA, 255)
	if host == "" {
		host = "localhost"
	}
	from := r.From
	if from == "" {
		from = "MAILER-DAEMON@" + host
	}
	msgID := r.MessageID
	if msgID == "" {
		msgID = "<" + randHex(12) + ".dsn@" + host + ">"
	}
	boundary := "=_facteur_" + randHex(16)
	kind := r.Kind()

	h := &fieldWriter{w: bw}
	h.field("From", "Mail Delivery System <"+addrText(from)+">")
	h.field("To", "<"+addrText(r.To)+">")
	h.field("Subject", headerText(subject(r, kind), 200))
	h.field("Date", date.Format(time.RFC1123Z))
	h.field("Message-ID", headerText(msgID, 500))
	if id := strings.TrimSpace(r.OriginalMessageID); id != "" && strings.HasPrefix(id, "<") && strings.HasSuffix(id, ">") {
		h.field("References", headerText(id, 900))
	}
	// RFC 3834 5: notices are automatic responses.
	h.field("Auto-Submitted", "auto-replied")
	h.field("MIME-Version", "1.0")
	h.field("Content-Type", `multipart/report; report-type=delivery-status; boundary="`+boundary+`"`)
	h.raw("\r\nThis is a MIME-encapsulated message.\r\n\r\n")

	// Part 1: for people.
	h.raw("--" + boundary + "\r\n")
	h.field("Content-Description", "Notification")
	h.field("Content-Type", "text/plain; charset=utf-8")
	h.field("Content-Transfer-Encoding", "quoted-printable")
	h.raw("\r\n")
	if h.err == nil {
		qp := quotedprintable.NewWriter(bw)
		if _, err := io.WriteString(qp, humanText(r, kind, host)); err != nil {
			return fmt.Errorf("dsn: write: %w", err)
		}
		if err := qp.Close(); err != nil {
			return fmt.Errorf("dsn: write: %w", err)
		}
	}
	h.raw("\r\n")

	// Part 2: for machines (RFC 3464 2.1, 2.2, 2.3).
	h.raw("--" + boundary + "\r\n")
	h.field("Content-Description", "Delivery report")
	h.field("Content-Type", "message/delivery-status")
	h.raw("\r\n")
	h.field("Reporting-MTA", "dns; "+dsText(host, 255))
	if r.QueueID != "" {
		h.field("X-Facteur-Queue-ID", dsText(r.QueueID, 64))
	}
	if r.OriginalSender != "" {
		h.field("X-Facteur-Sender", typedAddress(r.OriginalSender))
	}
	if r.EnvelopeID != "" {
		// RFC 3464 2.2.1: the ENVID as xtext.
		h.field("Original-Envelope-Id", xtext(r.EnvelopeID))
	}
	if !r.ArrivalDate.IsZero() {
		h.field("Arrival-Date", r.ArrivalDate.Format(time.RFC1123Z))
	}
	for _, rc := range r.Recipients {
		h.raw("\r\n")
		if rc.OriginalRecipient != "" {
			h.field("Original-Recipient", origRecipient(rc.OriginalRecipient))
		}
		h.field("Final-Recipient", typedAddress(rc.FinalRecipient))
		h.field("Action", action(rc.Action))
		h.field("Status", status(rc).String())
		if rc.RemoteMTA != "" {
			h.field("Remote-MTA", "dns; "+dsText(rc.RemoteMTA, 255))
		}
		if rc.Diagnostic != "" {
			h.field("Diagnostic-Code", "smtp; "+dsText(rc.Diagnostic, 2000))
		} else if rc.Reason != "" {
			h.field("Diagnostic-Code", "X-Facteur; "+dsText(rc.Reason, 2000))
		}
		if !rc.LastAttempt.IsZero() {
			h.field("Last-Attempt-Date", rc.LastAttempt.Format(time.RFC1123Z))
		}
		if rc.Action == ActionDelayed && !rc.WillRetryUntil.IsZero() {
			h.field("Will-Retry-Until", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	h.raw("\r\n")

	// Part 3: the original, or what we have of it.
	h.raw("--" + boundary + "\r\n")
	full := strings.EqualFold(r.Return, ReturnFull)
	switch {
	case original == nil:
		h.field("Content-Description", "Undelivered Message (not available)")
		h.field("Content-Type", "text/plain; charset=us-ascii")
		h.raw("\r\nThe original message is no longer available.\r\n")
	case full:
		h.field("Content-Description", "Undelivered Message")
		h.field("Content-Type", "message/rfc822")
		if r.EightBit {
			h.field("Content-Transfer-Encoding", "8bit")
		}
		h.raw("\r\n")
		if h.err == nil {
			if err := copyOriginal(bw, original, boundary); err != nil {
				return err
			}
		}
	default:
		h.field("Content-Description", "Undelivered Message Headers")
		h.field("Content-Type", "text/rfc822-headers")
		if r.EightBit {
			h.field("Content-Transfer-Encoding", "8bit")
		}
		h.raw("\r\n")
		if h.err == nil {
			if err := copyHeaders(bw, original, boundary); err != nil {
				return err
			}
		}
	}
	h.raw("\r\n--" + boundary + "--\r\n")
	if h.err != nil {
		return fmt.Errorf("dsn: write: %w", h.err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("dsn: write: %w", err)
	}
	return nil
}

func subject(r *Report, kind string) string {
	if r.Subject != "" {
		return r.Subject
	}
	switch kind {
	case KindFailure:
		return "Undelivered Mail Returned to Sender"
	case KindDelay:
		return "Delayed Mail (still being retried)"
	}
	return "Successful Mail Delivery Report"
}

// humanText is the first part, in Postfix's words.
func humanText(r *Report, kind, host string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "This is the mail system at host %s.\r\n\r\n", host)
	switch {
	case r.Intro != "":
		b.WriteString(wrapText(r.Intro))
	case kind == KindFailure:
		b.WriteString(wrapText("I'm sorry to have to inform you that your message could not be delivered to one or more recipients. It's attached below."))
		b.WriteString("\r\n\r\n")
		b.WriteString(wrapText("For further assistance, please send mail to postmaster."))
		b.WriteString("\r\n\r\n")
		b.WriteString(wrapText("If you do so, please include this problem report. You can delete your own text from the attached returned message."))
	case kind == KindDelay:
		b.WriteString("####################################################################\r\n")
		b.WriteString("# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n")
		b.WriteString("####################################################################\r\n\r\n")
		b.WriteString(wrapText("Your message could not be delivered for some time. It will be retried until it is too old; you will be told if it cannot be delivered."))
	default:
		b.WriteString(wrapText("Your message was successfully delivered to the destination(s) listed below. If the message was delivered to a mailbox you will receive no further notifications. Otherwise you may still receive notifications of mail delivery errors from other systems."))
	}
	b.WriteString("\r\n\r\n")
	if r.QueueID != "" || r.OriginalSender != "" {
		fmt.Fprintf(&b, "Queue id: %s, sender: <%s>\r\n\r\n", oneLine(r.QueueID), oneLine(r.OriginalSender))
	}
	b.WriteString("                   The mail system\r\n")
	for _, rc := range r.Recipients {
		b.WriteString("\r\n")
		line := "<" + oneLine(rc.FinalRecipient) + ">"
		if o := bareORCPT(rc.OriginalRecipient); o != "" && !strings.EqualFold(o, rc.FinalRecipient) {
			line += " (expanded from <" + oneLine(o) + ">)"
		}
		line += ": "
		switch {
		case rc.Diagnostic != "" && rc.RemoteMTA != "":
			line += "host " + oneLine(rc.RemoteMTA) + " said: " + oneLine(rc.Diagnostic)
		case rc.Diagnostic != "":
			line += oneLine(rc.Diagnostic)
		case rc.Reason != "":
			line += oneLine(rc.Reason)
		default:
			line += rc.Action
		}
		b.WriteString(wrapIndent(line, "    "))
		b.WriteString("\r\n")
	}
	return b.String()
}

// wrapText folds a paragraph at spaces to lines of at most 72 characters
// (longer words stay whole).
func wrapText(s string) string { return wrapIndent(s, "") }

// wrapIndent is wrapText with continuation lines indented.
func wrapIndent(s, indent string) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(s) {
		if i > 0 {
			if n+1+utf8.RuneCountInString(w) > 72 {
				b.WriteString("\r\n" + indent)
				n = len(indent)
			} else {
				b.WriteByte(' ')
				n++
			}
		}
		b.WriteString(w)
		n += utf8.RuneCountInString(w)
	}
	return b.String()
}

func action(a string) string {
	switch a {
	case ActionFailed, ActionDelayed, ActionDelivered, ActionRelayed, ActionExpanded:
		return a
	}
	return ActionFailed
}

// status returns the recipient's status, or a generic one for its action
// (RFC 3464 2.3.4 requires the field).
func status(rc Recipient) envelope.Status {
	if rc.Status.Valid() {
		return rc.Status
	}
	switch rc.Action {
	case ActionDelayed:
		return envelope.Status{4, 0, 0}
	case ActionDelivered, ActionRelayed, ActionExpanded:
		return envelope.Status{2, 0, 0}
	}
	return envelope.Status{5, 0, 0}
}

// fieldWriter writes header and delivery-status fields, folded, and keeps
// the first error.
type fieldWriter struct {
	w   *bufio.Writer
	err error
}

func (f *fieldWriter) raw(s string) {
	if f.err == nil {
		_, f.err = f.w.WriteString(s)
	}
}

// field writes "Name: value" folded at spaces to lines of about 78
// characters (RFC 5322 2.2.3); a word longer than a line is split hard at
// 900 bytes, so no line exceeds 998 (RFC 5322 2.1.1). value must already be
// clean of control characters.
func (f *fieldWriter) field(name, value string) {
	line := name + ":"
	n := len(line)
	var b strings.Builder
	b.WriteString(line)
	for _, word := range strings.Fields(value) {
		for len(word) > 900 {
			cut := 900
			for cut > 0 && !utf8.RuneStart(word[cut]) {
				cut--
			}
			b.WriteString("\r\n ")
			b.WriteString(word[:cut])
			word = word[cut:]
			n = 1 + cut
		}
		if n+1+len(word) > 78 && n > len(name)+1 {
			b.WriteString("\r\n ")
			n = 1
		} else {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	b.WriteString("\r\n")
	f.raw(b.String())
}

// headerText makes untrusted text fit in an unstructured header field: no
// control characters, valid UTF-8 replaced by '?' when not ASCII (the report
// is 7-bit), at most max bytes.
func headerText(s string, max int) string {
	return dsText(s, max)
}

// dsText makes untrusted text fit in a delivery-status field (RFC 3464
// fields are US-ASCII): control characters become spaces, other non-ASCII
// characters '?', runs of spaces one, at most max bytes.
func dsText(s string, max int) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f:
			r = ' '
		case r >= 0x80:
			r = '?'
		}
		if r == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		if b.Len() >= max {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// oneLine is for the human-readable part (UTF-8 allowed, quoted-printable
// encoded): control characters become spaces.
func oneLine(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == ' ' }), " ")
}

// addrText is an address for a header field: ASCII without spaces, angle
// brackets or control characters (anything else is replaced).
func addrText(a string) string {
	return strings.Map(func(r rune) rune {
		if r <= 0x20 || r >= 0x7f || r == '<' || r == '>' || r == '(' || r == ')' || r == ',' || r == ';' || r == '"' || r == '\\' {
			return '?'
		}
		return r
	}, a)
}

// typedAddress is "rfc822; addr" for an ASCII address, or "utf-8; addr"
// with RFC 6533 3 escapes (\x{HEX}) for an internationalised one.
func typedAddress(a string) string {
	ascii := true
	for i := 0; i < len(a); i++ {
		if a[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return "rfc822; " + addrEscape(a)
	}
	return "utf-8; " + addrEscape(a)
}

// addrEscape escapes, in the style of RFC 6533 utf-8-addr-xtext, every
// character that is not printable ASCII or that could end the field, so
// that the address reads back exactly (unescapeAddr).
func addrEscape(a string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(a, "\uFFFD") {
		if r > 0x20 && r < 0x7f && r != '\\' && r != '+' && r != '=' {
			b.WriteRune(r)
			continue
		}
		fmt.Fprintf(&b, `\x{%X}`, r)
	}
	return b.String()
}

// origRecipient writes ORCPT as given ("rfc822;Addr", RFC 3461 4.2) as an
// Original-Recipient field value (RFC 3464 2.3.1); a bare address is rfc822.
func origRecipient(o string) string {
	typ, addr, ok := strings.Cut(o, ";")
	if !ok {
		return typedAddress(o)
	}
	typ = strings.ToLower(strings.TrimSpace(typ))
	addr = strings.TrimSpace(addr)
	if typ == "rfc822" || typ == "utf-8" {
		return typedAddress(addr)
	}
	return dsText(typ, 32) + "; " + addrEscape(addr)
}

// bareORCPT returns the address part of an ORCPT value.
func bareORCPT(o string) string {
	if _, addr, ok := strings.Cut(o, ";"); ok {
		return strings.TrimSpace(addr)
	}
	return strings.TrimSpace(o)
}

// xtext encodes s as RFC 3461 4 xtext: "+" and "=", controls, space and
// non-ASCII bytes as +HH.
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// copyOriginal copies the whole original. A line that would read as our
// boundary cannot occur (the boundary is random), but a line starting with
// "--" and the boundary is broken anyway, defensively.
func copyOriginal(w *bufio.Writer, original io.Reader, boundary string) error {
	br := bufio.NewReaderSize(original, 32<<10)
	atLineStart := true
	mark := "--" + boundary
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if atLineStart && strings.HasPrefix(string(line), mark) {
				if _, werr := w.WriteString(" "); werr != nil {
					return fmt.Errorf("dsn: write original: %w", werr)
				}
			}
			if _, werr := w.Write(line); werr != nil {
				return fmt.Errorf("dsn: write original: %w", werr)
			}
			atLineStart = line[len(line)-1] == '\n'
		}
		switch {
		case err == nil:
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if !atLineStart {
				if _, werr := w.WriteString("\r\n"); werr != nil {
					return fmt.Errorf("dsn: write original: %w", werr)
				}
			}
			return nil
		default:
			return fmt.Errorf("dsn: read original: %w", err)
		}
	}
}

// copyHeaders copies the original's header block, up to the first empty
// line, at most MaxHeaderBytes.
func copyHeaders(w *bufio.Writer, original io.Reader, boundary string) error {
	br := bufio.NewReaderSize(io.LimitReader(original, MaxHeaderBytes), 32<<10)
	mark := "--" + boundary
	atLineStart := true
	for {
		line, err := br.ReadSlice('\n')
		if atLineStart && (string(line) == "\r\n" || string(line) == "\n") {
			return nil
		}
		if len(line) > 0 {
			if atLineStart && strings.HasPrefix(string(line), mark) {
				if _, werr := w.WriteString(" "); werr != nil {
					return fmt.Errorf("dsn: write original: %w", werr)
				}
			}
			if _, werr := w.Write(line); werr != nil {
				return fmt.Errorf("dsn: write original: %w", werr)
			}
			atLineStart = line[len(line)-1] == '\n'
		}
		switch {
		case err == nil:
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if !atLineStart {
				if _, werr := w.WriteString("\r\n"); werr != nil {
					return fmt.Errorf("dsn: write original: %w", werr)
				}
			}
			return nil
		default:
			return fmt.Errorf("dsn: read original: %w", err)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
