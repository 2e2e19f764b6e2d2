package vacation

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
)

// header holds the fields of a subject message's header block that the
// responder looks at, unfolded, in order of appearance. Other fields are not
// kept.
type header struct {
	fields map[string][]string // lower-case name → values
	// list is the name of the first List-* field (RFC 2369, RFC 2919), "" if
	// none.
	list string
}

// wanted reports whether readHeader keeps the field n (lower case).
func wanted(n string) bool {
	switch n {
	case "to", "cc", "subject", "message-id", "references", "precedence", "auto-submitted",
		"x-auto-response-suppress":
		return true
	}
	return false
}

// get returns the first value of the field name (lower case).
func (h *header) get(name string) (string, bool) {
	v := h.fields[name]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// errHeaderTooBig is returned by readHeader when the header block does not
// end within the limit.
var errHeaderTooBig = errors.New("header block too big")

// readHeader reads the header block of a message (CRLF or LF lines) up to
// the empty line that ends it, reading at most max bytes. Folded fields are
// unfolded (RFC 5322 2.2.3). A line that is neither a field nor a
// continuation ends the block, as Postfix's cleanup treats it: what follows is
// body. The body is never read.
func readHeader(r io.Reader, max int) (*header, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, int64(max)), 16<<10)
	h := &header{fields: map[string][]string{}}
	var name string // the field being read ("" when it is not kept)
	var cur strings.Builder
	flush := func() {
		if name != "" {
			h.fields[name] = append(h.fields[name], strings.TrimSpace(cur.String()))
		}
		name = ""
		cur.Reset()
	}
	read := 0
	for {
		line, err := br.ReadString('\n')
		read += len(line)
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read header: %w", err)
		}
		if err == io.EOF && read >= max {
			// The limit, not the message, ended it (even on a line end).
			return nil, errHeaderTooBig
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			// The empty line ending the header block, or the end of the
			// message (a message without a body).
			flush()
			return h, nil
		case line[0] == ' ' || line[0] == '\t':
			if name != "" {
				cur.WriteString(line)
			}
		default:
			flush()
			n, v, ok := strings.Cut(line, ":")
			if !ok || !validFieldName(n) {
				return h, nil // not a header field: the body starts here
			}
			n = strings.ToLower(n)
			if strings.HasPrefix(n, "list-") && h.list == "" {
				h.list = n
			}
			if wanted(n) {
				name = n
				cur.WriteString(v)
			}
		}
		if err == io.EOF {
			flush()
			return h, nil
		}
	}
}

// validFieldName reports whether n is a field name: printable US-ASCII
// except ':' and space (RFC 5322 3.6.8). Trailing white space before the
// colon is tolerated (obsolete syntax, RFC 5322 4.5).
func validFieldName(n string) bool {
	n = strings.TrimRight(n, " \t")
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < 33 || n[i] > 126 {
			return false
		}
	}
	return true
}

// wordDecoder decodes RFC 2047 encoded words in any charset that
// go-message knows.
func wordDecoder() *mime.WordDecoder { return &mime.WordDecoder{CharsetReader: charset.Reader} }

// addresses returns the addr-specs of every To: and Cc: field, lower-cased
// as given (the caller canonicalises). A field that net/mail cannot parse is
// read leniently: angle-bracketed addresses, or words with an '@', outside
// quoted strings and comments.
func (h *header) addresses() []string {
	var out []string
	p := mail.AddressParser{WordDecoder: wordDecoder()}
	for _, f := range []string{"to", "cc"} {
		for _, v := range h.fields[f] {
			list, err := p.ParseList(v)
			if err == nil {
				for _, a := range list {
					out = append(out, a.Address)
				}
				continue
			}
			out = append(out, lenientAddresses(v)...)
		}
	}
	return out
}

// lenientAddresses extracts addresses from an address list that does not
// parse: quoted strings and comments are dropped (an address in a display
// name is not a recipient), then each element (split at ',' and ';') gives
// what is inside its angle brackets or, without them, its last word after any
// group name ("name:").
func lenientAddresses(s string) []string {
	var b strings.Builder
	depth, quoted, esc := 0, false, false
	for _, c := range s {
		switch {
		case esc:
			esc = false
			continue
		case c == '\\' && (quoted || depth > 0):
			esc = true
			continue
		case quoted:
			if c == '"' {
				quoted = false
			}
			continue
		case depth > 0:
			switch c {
			case '(':
				depth++
			case ')':
				depth--
			}
			continue
		case c == '"':
			quoted = true
			continue
		case c == '(':
			depth++
			continue
		}
		b.WriteRune(c)
	}
	var out []string
	for _, el := range strings.FieldsFunc(b.String(), func(r rune) bool { return r == ',' || r == ';' }) {
		if i := strings.IndexByte(el, '<'); i >= 0 {
			a, _, _ := strings.Cut(el[i+1:], ">")
			if a = strings.TrimSpace(a); strings.Contains(a, "@") {
				out = append(out, a)
			}
			continue
		}
		if i := strings.LastIndexByte(el, ':'); i >= 0 {
			el = el[i+1:]
		}
		words := strings.Fields(el)
		if len(words) > 0 && strings.Contains(words[len(words)-1], "@") {
			out = append(out, words[len(words)-1])
		}
	}
	return out
}

// subject returns the decoded Subject: (RFC 2047 encoded words decoded when
// the charset is known, the raw text otherwise), cleaned for reuse in a
// header: control characters become spaces, runs of white space one space,
// at most maxRunes runes.
func (h *header) subject(maxRunes int) string {
	s, _ := h.get("subject")
	if d, err := wordDecoder().DecodeHeader(s); err == nil {
		s = d
	}
	return cleanText(s, maxRunes)
}

// cleanText makes s safe for a header field value: valid UTF-8, no control
// character (so no CR or LF that would start a new field), single spaces, at
// most maxRunes runes.
func cleanText(s string, maxRunes int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	n := 0
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			space = b.Len() > 0
			continue
		}
		if n >= maxRunes {
			break
		}
		if space {
			b.WriteByte(' ')
			n++
			space = false
			if n >= maxRunes {
				break
			}
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// msgIDs returns the msg-ids (with their angle brackets) found in a
// Message-ID: or References: value (RFC 5322 3.6.4), leaving out anything
// that is not "<" id-left "@" id-right ">" made of printable characters.
func msgIDs(v string) []string {
	var out []string
	for {
		i := strings.IndexByte(v, '<')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return out
		}
		id := v[i : i+j+1]
		v = v[i+j+1:]
		if validMsgID(id) {
			out = append(out, id)
		}
	}
}

// validMsgID checks a msg-id including its brackets: one '@', printable
// characters without white space or brackets inside, at most 250 bytes (so a
// line holding one stays short).
func validMsgID(id string) bool {
	if len(id) < 5 || len(id) > 250 || !utf8.ValidString(id) {
		return false
	}
	in := id[1 : len(id)-1]
	if strings.Count(in, "@") != 1 || strings.HasPrefix(in, "@") || strings.HasSuffix(in, "@") {
		return false
	}
	for _, r := range in {
		if r <= ' ' || r == 0x7f || r == '<' || r == '>' || unicode.IsControl(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}
