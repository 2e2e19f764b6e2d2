package local

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// maxHeader bounds the header block kept for the loop check.
const maxHeader = 1 << 20

// readHeader returns the header block of r up to and including the empty
// line that ends it (or up to maxHeader, or all of r when it has no body).
func readHeader(r io.Reader) ([]byte, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var hdr []byte
	for len(hdr) < maxHeader {
		line, err := br.ReadSlice('\n')
		hdr = append(hdr, line...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			return hdr, nil
		}
		if err != nil {
			return nil, err
		}
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return hdr, nil // the empty line (RFC 5322 2.1)
		}
	}
	return hdr, nil
}

// deliveredTo reports whether the header block has a Delivered-To: field
// naming addr (compared without case, angle brackets or spaces): Postfix
// local(8)'s loop detection.
func deliveredTo(hdr []byte, addr string) bool {
	var field []byte
	check := func() bool {
		name, value, ok := bytes.Cut(field, []byte{':'})
		if !ok || !strings.EqualFold(string(bytes.TrimSpace(name)), "Delivered-To") {
			return false
		}
		v := strings.TrimSpace(strings.NewReplacer("\r", "", "\n", "").Replace(string(value)))
		v = strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">")
		return strings.EqualFold(strings.TrimSpace(v), addr)
	}
	for _, line := range bytes.SplitAfter(hdr, []byte{'\n'}) {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			field = append(field, line...) // folded (RFC 5322 2.2.3)
			continue
		}
		if check() {
			return true
		}
		field = append(field[:0], line...)
	}
	return check()
}
