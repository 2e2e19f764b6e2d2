package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/facteur/facteur/mta/envelope"
)

// MaxParseBytes bounds the input ParseReport reads.
const MaxParseBytes = 16 << 20

// maxParts bounds the MIME parts ParseReport looks at.
const maxParts = 16

// ErrNotReport means the message is not a multipart/report of report-type
// delivery-status with a delivery-status part.
var ErrNotReport = errors.New("dsn: not a delivery status notification")

// Parsed is a report read back by ParseReport.
type Parsed struct {
	// Header is the report message's header (From, To, Subject,
	// Auto-Submitted, ...).
	Header mail.Header
	// Text is the human-readable first part, decoded.
	Text string
	// Per-message fields (RFC 3464 2.2).
	ReportingMTA string // the name, without its "dns;" type
	QueueID      string // X-Facteur-Queue-ID
	EnvelopeID   string // Original-Envelope-Id, xtext-decoded
	ArrivalDate  time.Time
	Recipients   []Recipient
	// Original is the third part as found (a whole message or a header
	// block), at most MaxParseBytes; OriginalType its media type.
	Original     []byte
	OriginalType string
}

// Kind is the kind of the parsed report (see Report.Kind).
func (p *Parsed) Kind() string {
	r := Report{Recipients: p.Recipients}
	return r.Kind()
}

// ParseReport reads an RFC 3464 report: the top-level header, the
// human-readable part, the per-message and per-recipient fields of the
// message/delivery-status part, and the returned original. Unknown fields are
// ignored; a report without a delivery-status part is ErrNotReport. It reads
// at most MaxParseBytes.
func ParseReport(r io.Reader) (*Parsed, error) {
	msg, err := mail.ReadMessage(bufio.NewReader(io.LimitReader(r, MaxParseBytes)))
	if err != nil {
		return nil, fmt.Errorf("dsn: parse header: %w", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("%w: content type: %w", ErrNotReport, err)
	}
	// RFC 6522 3: multipart/report with a report-type parameter.
	if mt != "multipart/report" || !strings.EqualFold(params["report-type"], "delivery-status") || params["boundary"] == "" {
		return nil, fmt.Errorf("%w: content type %s", ErrNotReport, mt)
	}
	p := &Parsed{Header: msg.Header}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	found := false
	for i := 0; i < maxParts; i++ {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dsn: parse part: %w", err)
		}
		pt, _, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			pt = "text/plain" // RFC 2045 5.2
		}
		body, err := io.ReadAll(part)
		if err != nil {
			return nil, fmt.Errorf("dsn: read part: %w", err)
		}
		switch {
		case pt == "message/delivery-status" || pt == "message/global-delivery-status":
			if err := p.parseStatus(body); err != nil {
				return nil, err
			}
			found = true
		case i == 0 && strings.HasPrefix(pt, "text/"):
			p.Text = string(body)
		case pt == "message/rfc822" || pt == "text/rfc822-headers" || pt == "message/global" || pt == "message/global-headers":
			p.Original, p.OriginalType = body, pt
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: no delivery-status part", ErrNotReport)
	}
	return p, nil
}

// parseStatus reads the groups of fields of a delivery-status body: the
// per-message group, then one group per recipient (RFC 3464 2.1).
func (p *Parsed) parseStatus(body []byte) error {
	tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
	first := true
	for {
		// Groups are separated by blank lines; skip extra ones.
		for {
			b, err := tr.R.Peek(1)
			if err != nil || (b[0] != '\r' && b[0] != '\n') {
				break
			}
			if _, err := tr.ReadLine(); err != nil {
				break
			}
		}
		h, err := tr.ReadMIMEHeader()
		if len(h) > 0 {
			if first {
				p.ReportingMTA = fieldValue(h.Get("Reporting-Mta"))
				p.QueueID = strings.TrimSpace(h.Get("X-Facteur-Queue-Id"))
				if v := h.Get("Original-Envelope-Id"); v != "" {
					p.EnvelopeID = unxtext(strings.TrimSpace(v))
				}
				if v := h.Get("Arrival-Date"); v != "" {
					p.ArrivalDate, _ = mail.ParseDate(v)
				}
			} else {
				p.Recipients = append(p.Recipients, recipientFrom(h))
			}
			first = false
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("dsn: parse delivery-status: %w", err)
		}
	}
}

func recipientFrom(h textproto.MIMEHeader) Recipient {
	rc := Recipient{
		FinalRecipient: unescapeAddr(fieldValue(h.Get("Final-Recipient"))),
		Action:         strings.ToLower(strings.TrimSpace(h.Get("Action"))),
		RemoteMTA:      fieldValue(h.Get("Remote-Mta")),
	}
	if v := h.Get("Original-Recipient"); v != "" {
		typ, _, _ := strings.Cut(v, ";")
		rc.OriginalRecipient = strings.ToLower(strings.TrimSpace(typ)) + ";" + unescapeAddr(fieldValue(v))
	}
	if st, _, ok := envelope.ParseEnhanced(strings.TrimSpace(h.Get("Status"))); ok {
		rc.Status = st
	}
	if v := h.Get("Diagnostic-Code"); v != "" {
		typ, text, _ := strings.Cut(v, ";")
		if strings.EqualFold(strings.TrimSpace(typ), "smtp") {
			rc.Diagnostic = strings.TrimSpace(text)
		} else {
			rc.Reason = strings.TrimSpace(text)
		}
	}
	if v := h.Get("Last-Attempt-Date"); v != "" {
		rc.LastAttempt, _ = mail.ParseDate(v)
	}
	if v := h.Get("Will-Retry-Until"); v != "" {
		rc.WillRetryUntil, _ = mail.ParseDate(v)
	}
	return rc
}

// fieldValue returns the value after "type;" (RFC 3464 address-type and
// mta-name-type), unfolded and trimmed.
func fieldValue(v string) string {
	if _, after, ok := strings.Cut(v, ";"); ok {
		v = after
	}
	return strings.Join(strings.Fields(v), " ")
}

// unescapeAddr reverses addrEscape: \x{HEX} becomes the character.
func unescapeAddr(s string) string {
	if !strings.Contains(s, `\x{`) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, `\x{`)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		rest := s[i+3:]
		j := strings.IndexByte(rest, '}')
		if j < 0 || j > 6 {
			b.WriteString(s[i : i+3])
			s = rest
			continue
		}
		n, err := strconv.ParseUint(rest[:j], 16, 32)
		if err != nil || n > 0x10FFFF {
			b.WriteString(s[i : i+3])
			s = rest
			continue
		}
		b.WriteRune(rune(n))
		s = rest[j+1:]
	}
}

// unxtext decodes RFC 3461 4 xtext (+HH); malformed escapes stay as they are.
func unxtext(s string) string {
	if !strings.Contains(s, "+") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '+' && i+2 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
