package pickup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
)

// field is one header field as received: its name, lower-cased, and its raw
// lines with their CRLFs.
type field struct {
	name string
	raw  []byte
}

// value returns the field body unfolded (RFC 5322 2.2.3) and trimmed.
func (f field) value() string {
	i := bytes.IndexByte(f.raw, ':')
	v := strings.ReplaceAll(string(f.raw[i+1:]), "\r\n", "")
	return strings.TrimSpace(v)
}

// header is a message's header block.
type header struct {
	fields []field
	// rest is the first line of the body when no empty line ended the
	// header block (Postfix's cleanup inserts one; so do we).
	rest []byte
}

var (
	errHeaderTooBig = errors.New("header block too large")
	crlf            = []byte("\r\n")
)

// readHeader reads the header block of a message with CRLF line ends: the
// fields up to the empty line, which is consumed, or up to the first line
// that is not a header field, which is kept in rest. A leading "From " line
// (the mbox envelope line some programs write) is dropped. The block may
// hold at most max bytes.
func readHeader(br *bufio.Reader, max int) (*header, error) {
	h := &header{}
	total := 0
	for first := true; ; first = false {
		line, err := readRawLine(br, max-total)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if len(line) == 0 {
			return h, nil // end of message
		}
		total += len(line)
		switch {
		case first && bytes.HasPrefix(line, []byte("From ")):
		case bytes.Equal(line, crlf):
			return h, nil
		case (line[0] == ' ' || line[0] == '\t') && len(h.fields) > 0:
			last := &h.fields[len(h.fields)-1]
			last.raw = append(last.raw, line...)
		default:
			name, ok := fieldName(line)
			if !ok {
				h.rest = line
				return h, nil
			}
			h.fields = append(h.fields, field{name: strings.ToLower(name), raw: line})
		}
		if errors.Is(err, io.EOF) {
			return h, nil
		}
	}
}

// readRawLine reads one line with its line end, of at most max bytes.
func readRawLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, errHeaderTooBig
		}
		line = append(line, frag...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return line, err
	}
}

// fieldName returns the name of the header field that line starts, if it
// starts one: printable US-ASCII except ':' (RFC 5322 2.2), then ':' (white
// space before it is allowed, RFC 5322 4.5.8, obs-optional).
func fieldName(line []byte) (string, bool) {
	i := 0
	for i < len(line) && line[i] >= 33 && line[i] <= 126 && line[i] != ':' {
		i++
	}
	if i == 0 {
		return "", false
	}
	j := i
	for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
		j++
	}
	if j >= len(line) || line[j] != ':' {
		return "", false
	}
	return string(line[:i]), true
}

// has reports whether the header has a field of that (lower-case) name.
func (h *header) has(name string) bool {
	for _, f := range h.fields {
		if f.name == name {
			return true
		}
	}
	return false
}

// values returns the unfolded bodies of the fields with one of the names.
func (h *header) values(names ...string) []fieldValue {
	var out []fieldValue
	for _, f := range h.fields {
		for _, n := range names {
			if f.name == n {
				out = append(out, fieldValue{name: n, value: f.value()})
			}
		}
	}
	return out
}

type fieldValue struct{ name, value string }

// bytes returns the header block without the fields named in drop, with
// the add lines (each ending with CRLF) after the others, the empty line,
// and the first body line if the block had no empty line.
func (h *header) bytes(drop []string, add ...string) []byte {
	var b bytes.Buffer
	for _, f := range h.fields {
		skip := false
		for _, d := range drop {
			if f.name == d {
				skip = true
			}
		}
		if !skip {
			b.Write(f.raw)
		}
	}
	for _, a := range add {
		b.WriteString(a)
	}
	b.Write(crlf)
	b.Write(h.rest)
	return b.Bytes()
}

// headerAddresses returns the addresses of an address-list field body (To:,
// Cc:, Bcc:, RFC 5322 3.4), groups included. Unlike net/mail it accepts
// unqualified addresses ("root", "Root <root>", "root (Root)"), which the
// caller qualifies, as sendmail -t has always done.
func headerAddresses(value string) ([]string, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	if list, err := mail.ParseAddressList(value); err == nil {
		out := make([]string, 0, len(list))
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out, nil
	}
	var out []string
	for _, tok := range splitTopLevel(value) {
		if i := groupColon(tok); i >= 0 {
			tok = tok[i+1:] // "Group: a, b;" starts a group
		}
		tok = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(tok), ";"))
		if tok == "" {
			continue
		}
		if a, err := mail.ParseAddress(tok); err == nil {
			out = append(out, a.Address)
			continue
		}
		bare := stripComments(tok)
		if i := strings.IndexByte(bare, '<'); i >= 0 && strings.HasSuffix(bare, ">") {
			bare = strings.TrimSpace(bare[i+1 : len(bare)-1])
		}
		if !isBareLocal(bare) {
			return nil, fmt.Errorf("bad address %q", printable(tok))
		}
		out = append(out, bare)
	}
	return out, nil
}

// splitTopLevel splits an address list at the commas outside quoted
// strings, comments and angle brackets.
func splitTopLevel(s string) []string {
	var out []string
	depth, angle, quoted, start := 0, false, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\':
			i++
		case c == '"' && depth == 0:
			quoted = !quoted
		case quoted:
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// groupColon returns the index of a group's ':' in tok (outside quotes,
// comments and angle brackets), or -1.
func groupColon(tok string) int {
	depth, quoted := 0, false
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case quoted && c == '\\':
			i++
		case c == '"' && depth == 0:
			quoted = !quoted
		case quoted:
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == '<':
			return -1
		case c == ':':
			return i
		}
	}
	return -1
}

// stripComments removes (comments) outside quoted strings and trims.
func stripComments(s string) string {
	var b strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			b.WriteByte(c)
			i++
			b.WriteByte(s[i])
			continue
		case c == '"' && depth == 0:
			quoted = !quoted
		case !quoted && c == '(':
			depth++
			continue
		case !quoted && c == ')' && depth > 0:
			depth--
			continue
		case depth > 0:
			continue
		}
		b.WriteByte(c)
	}
	return strings.TrimSpace(b.String())
}

// isBareLocal reports whether s is an unqualified address: a dot-atom
// (RFC 5322 3.2.3) without '@'.
func isBareLocal(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0:
		default:
			return false
		}
	}
	return true
}
