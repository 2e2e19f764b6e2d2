package qmqpd

import (
	"errors"
	"fmt"
	"io"
)

var (
	// errFormat is a malformed netstring.
	errFormat = errors.New("malformed netstring")
	// errTooLong is a netstring longer than allowed.
	errTooLong = errors.New("netstring too long")
)

// readLength reads the length of a netstring ("123:"), at most max. A
// netstring is [len]":"[string]"," with len in decimal (cr.yp.to/proto/
// netstrings.txt).
func readLength(r io.Reader, max int64) (int64, error) {
	var n int64
	digits := 0
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.EOF) && digits > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		c := b[0]
		switch {
		case c >= '0' && c <= '9':
			digits++
			if digits > 19 {
				return 0, fmt.Errorf("%w: length of more than 19 digits", errTooLong)
			}
			n = n*10 + int64(c-'0')
		case c == ':' && digits > 0:
			if n > max {
				return 0, fmt.Errorf("%w: %d bytes, more than %d", errTooLong, n, max)
			}
			return n, nil
		default:
			return 0, fmt.Errorf("%w: unexpected byte %q in length", errFormat, c)
		}
	}
}

// expectComma reads the ',' that ends a netstring.
func expectComma(r io.Reader) error {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if b[0] != ',' {
		return fmt.Errorf("%w: %q instead of ','", errFormat, b[0])
	}
	return nil
}

// readNetstring reads a whole netstring of at most max bytes.
func readNetstring(r io.Reader, max int64) (string, error) {
	n, err := readLength(r, max)
	if err != nil {
		return "", err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	if err := expectComma(r); err != nil {
		return "", err
	}
	return string(buf), nil
}

// crlfWriter converts a QMQP message (LF line ends, qmail's format) to the
// spool format: LF becomes CRLF, CRLF stays CRLF, and a last line without a
// line end gets CRLF (finish). A CR not followed by LF is noted in bareCR
// (and passed on; the message is refused). Bytes above 0x7f are noted in
// eightBit.
type crlfWriter struct {
	w        io.Writer
	buf      []byte
	cr       bool // the previous byte was CR
	last     byte
	any      bool
	bareCR   bool
	eightBit bool
}

// writeError is an error of the underlying writer (the temporary file),
// not of the client.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func (c *crlfWriter) Write(p []byte) (int, error) {
	c.buf = c.buf[:0]
	for _, b := range p {
		if c.cr && b != '\n' {
			c.bareCR = true
		}
		if b == '\n' && !c.cr {
			c.buf = append(c.buf, '\r')
		}
		if b >= 0x80 {
			c.eightBit = true
		}
		c.cr = b == '\r'
		c.buf = append(c.buf, b)
		c.last = b
	}
	if len(p) > 0 {
		c.any = true
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return 0, &writeError{err}
	}
	return len(p), nil
}

// finish ends the last line with CRLF when it has no line end.
func (c *crlfWriter) finish() error {
	if c.cr {
		c.bareCR = true // a CR at the very end
	}
	if c.any && c.last != '\n' {
		if _, err := c.w.Write([]byte("\r\n")); err != nil {
			return &writeError{err}
		}
	}
	return nil
}
