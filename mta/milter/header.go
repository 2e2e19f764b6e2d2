package milter

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Field is one header field as it is in the message: Name is the text before
// the colon, Value everything after it, leading whitespace and CRLF line
// folds included, without the final CRLF; "Subject: a\r\n b\r\n" is
// {"Subject", " a\r\n b"}. A line of the header block that is not a field
// (no colon) is kept with an empty Name and the line as Value: it is written
// back as it was and not shown to milters.
type Field struct {
	Name  string
	Value string
}

// Header is a message's header block in order.
type Header []Field

// ErrHeaderTooLong is returned by ReadHeader for a header block over its
// limit.
var ErrHeaderTooLong = errors.New("milter: header block too long")

// ParseHeader parses a header block (with or without the empty line that
// ends it; what follows an empty line is ignored). Lines may end in CRLF or
// LF; the fields keep CRLF folds.
func ParseHeader(block []byte) Header {
	h, _ := ReadHeader(bufio.NewReader(bytes.NewReader(block)), 0)
	return h
}

// ReadHeader reads a header block from r up to and including the empty line
// that ends it, leaving r at the start of the body. limit bounds the bytes
// read (0: no bound). At end of input the header read so far is returned
// with a nil error.
func ReadHeader(r *bufio.Reader, limit int) (Header, error) {
	h, _, err := readHeader(r, limit)
	return h, err
}

// SplitMessage splits a message, such as a spool file, into its header and
// a reader of its body, which starts right after the empty line that ends
// the header. maxHeader bounds the header block (0: no bound).
func SplitMessage(msg io.ReaderAt, size int64, maxHeader int) (Header, *io.SectionReader, error) {
	h, n, err := readHeader(bufio.NewReader(io.NewSectionReader(msg, 0, size)), maxHeader)
	if err != nil {
		return nil, nil, err
	}
	return h, io.NewSectionReader(msg, int64(n), size-int64(n)), nil
}

// readHeader is ReadHeader, also returning the bytes read.
func readHeader(r *bufio.Reader, limit int) (Header, int, error) {
	var h Header
	n := 0
	for {
		line, err := r.ReadString('\n')
		n += len(line)
		if limit > 0 && n > limit {
			return h, n, ErrHeaderTooLong
		}
		if line == "" && err != nil {
			if err == io.EOF {
				return h, n, nil
			}
			return h, n, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			return h, n, nil
		}
		if (line[0] == ' ' || line[0] == '\t') && len(h) > 0 {
			h[len(h)-1].Value += "\r\n" + line
		} else if name, value, ok := strings.Cut(line, ":"); ok && validName(name) {
			h = append(h, Field{Name: name, Value: value})
		} else {
			h = append(h, Field{Value: line})
		}
		if err != nil {
			if err == io.EOF {
				return h, n, nil
			}
			return h, n, err
		}
	}
}

// WriteTo writes the header block and the empty line that ends it.
func (h Header) WriteTo(w io.Writer) (int64, error) {
	var b bytes.Buffer
	for _, f := range h {
		if f.Name != "" {
			b.WriteString(f.Name)
			b.WriteByte(':')
		}
		b.WriteString(f.Value)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.WriteTo(w)
}

// Get returns the value of the first field called name (case-insensitive),
// with leading whitespace removed and folds kept.
func (h Header) Get(name string) (string, bool) {
	for _, f := range h {
		if f.Name != "" && strings.EqualFold(f.Name, name) {
			return strings.TrimLeft(f.Value, " \t"), true
		}
	}
	return "", false
}

// Clone returns a copy of h.
func (h Header) Clone() Header { return append(Header(nil), h...) }

// validName reports whether s is a header field name: printable US-ASCII
// but the colon (RFC 5322 2.2, ftext).
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 || s[i] == ':' {
			return false
		}
	}
	return true
}

// milterValue is how a field's value goes to a milter: folds as LF, as
// Sendmail and Postfix send them, without the leading whitespace unless
// the milter asked for it (SMFIP_HDR_LEADSPC), and without NUL, which would
// end the value early.
func milterValue(v string, leadSpace bool) string {
	if !leadSpace {
		v = strings.TrimLeft(v, " \t")
	}
	return strings.ReplaceAll(strings.ReplaceAll(v, "\r\n", "\n"), "\x00", "")
}

// fieldValue turns a value that a milter sent into a Field.Value: LF or
// CRLF folds become CRLF, every continuation line starts with whitespace and
// none is empty (so a milter cannot end the header or inject a field), and a
// space follows the colon unless the milter negotiated SMFIP_HDR_LEADSPC and
// so sends the whitespace itself.
func fieldValue(v string, leadSpace bool) (string, error) {
	if strings.ContainsAny(v, "\x00") {
		return "", fmt.Errorf("%w: NUL in header value", errProtocol)
	}
	lines := strings.Split(strings.ReplaceAll(v, "\r\n", "\n"), "\n")
	out := lines[:1]
	for _, l := range lines[1:] {
		l = strings.TrimRight(l, "\r")
		if strings.TrimLeft(l, " \t") == "" {
			continue
		}
		if l[0] != ' ' && l[0] != '\t' {
			l = "\t" + l
		}
		out = append(out, l)
	}
	out[0] = strings.ReplaceAll(out[0], "\r", "")
	s := strings.Join(out, "\r\n")
	if !leadSpace {
		s = " " + s
	}
	return s, nil
}

// ChangeKind says what a Change does.
type ChangeKind int

const (
	// AddHeader appends Name: Value at the end of the header
	// (smfi_addheader).
	AddHeader ChangeKind = iota + 1
	// InsertHeader inserts Name: Value before the field at position Index
	// counted from 0 at the top; past the end it appends (smfi_insheader).
	InsertHeader
	// ChangeHeader replaces the value of the Index-th field called Name
	// (1-based, case-insensitive; 0 counts as 1); if there are fewer, it
	// appends the field (smfi_chgheader).
	ChangeHeader
	// DeleteHeader removes the Index-th field called Name (smfi_chgheader
	// with an empty value); nothing if there is none.
	DeleteHeader
	// AddRcpt adds the envelope recipient Addr (smfi_addrcpt).
	AddRcpt
	// DelRcpt removes the envelope recipient Addr (smfi_delrcpt).
	DelRcpt
)

func (k ChangeKind) String() string {
	switch k {
	case AddHeader:
		return "add-header"
	case InsertHeader:
		return "insert-header"
	case ChangeHeader:
		return "change-header"
	case DeleteHeader:
		return "delete-header"
	case AddRcpt:
		return "add-rcpt"
	case DelRcpt:
		return "del-rcpt"
	}
	return fmt.Sprintf("change(%d)", int(k))
}

// Change is one modification a milter asked for at the end of the message.
type Change struct {
	Kind ChangeKind
	// Milter names the milter that asked.
	Milter string
	// Name and Value are the header field (Value in Field.Value form:
	// leading whitespace and CRLF folds included).
	Name, Value string
	// Index is the header index (InsertHeader, ChangeHeader, DeleteHeader).
	Index int
	// Addr is the recipient (AddRcpt, DelRcpt), without angle brackets.
	Addr string
}

// applyHeader applies one header change to h and returns the new header; h
// is changed in place where possible.
func applyHeader(h Header, c Change) Header {
	switch c.Kind {
	case AddHeader:
		return append(h, Field{Name: c.Name, Value: c.Value})
	case InsertHeader:
		// The index counts fields; lines that are not fields do not count.
		pos, n := len(h), 0
		for i, f := range h {
			if f.Name == "" {
				continue
			}
			if n == c.Index {
				pos = i
				break
			}
			n++
		}
		if c.Index < 0 {
			pos = 0
		}
		h = append(h, Field{})
		copy(h[pos+1:], h[pos:])
		h[pos] = Field{Name: c.Name, Value: c.Value}
		return h
	case ChangeHeader, DeleteHeader:
		idx := max(c.Index, 1)
		n := 0
		for i, f := range h {
			if f.Name == "" || !strings.EqualFold(f.Name, c.Name) {
				continue
			}
			if n++; n < idx {
				continue
			}
			if c.Kind == DeleteHeader {
				return append(h[:i], h[i+1:]...)
			}
			h[i].Value = c.Value
			return h
		}
		if c.Kind == ChangeHeader {
			return append(h, Field{Name: c.Name, Value: c.Value})
		}
	}
	return h
}

// applyRcpt applies one recipient change to rcpts. Addresses compare without
// regard to case; an address is added once.
func applyRcpt(rcpts []string, c Change) []string {
	switch c.Kind {
	case AddRcpt:
		for _, r := range rcpts {
			if strings.EqualFold(r, c.Addr) {
				return rcpts
			}
		}
		return append(rcpts, c.Addr)
	case DelRcpt:
		out := rcpts[:0]
		for _, r := range rcpts {
			if !strings.EqualFold(r, c.Addr) {
				out = append(out, r)
			}
		}
		return out
	}
	return rcpts
}

// stripAngle removes the angle brackets around an address, and what follows
// the closing one (ESMTP arguments).
func stripAngle(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "<") {
		if i := strings.IndexByte(s, '>'); i > 0 {
			return s[1:i]
		}
		return s[1:]
	}
	return s
}
