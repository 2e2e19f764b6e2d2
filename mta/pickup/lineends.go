package pickup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// crlfReader turns LF line ends into CRLF (the spool format), keeps CRLF as
// it is, and ends a last line that has no line end with CRLF: sendmail's
// input is text with UNIX line ends, or with CRLF (Postfix's
// sendmail_fix_line_endings = always). A CR that is not followed by LF is
// passed on: cleanup refuses it (550 5.5.2).
type crlfReader struct {
	r       io.Reader
	in      []byte
	out     []byte
	pending []byte
	last    byte
	seen    bool
	err     error
}

func newCRLFReader(r io.Reader) *crlfReader {
	return &crlfReader{r: r, in: make([]byte, 32<<10), out: make([]byte, 0, 64<<10+2)}
}

func (c *crlfReader) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		n, err := c.r.Read(c.in)
		out := c.out[:0]
		for _, b := range c.in[:n] {
			if b == '\n' && c.last != '\r' {
				out = append(out, '\r')
			}
			out = append(out, b)
			c.last = b
		}
		if n > 0 {
			c.seen = true
		}
		if err != nil {
			if errors.Is(err, io.EOF) && c.seen && c.last != '\n' {
				out = append(out, '\r', '\n')
				c.last = '\n'
			}
			c.err = err
		}
		c.pending = out
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// chunkReader reads the message of a SUBMIT request: chunks of "<n>" LF
// then n bytes, ended by a "0" LF chunk. A connection that ends before the
// last chunk gives io.ErrUnexpectedEOF, so that nothing is queued.
type chunkReader struct {
	br   *bufio.Reader
	left int64
	done bool
	err  error
}

// errBadChunk is a malformed chunk header.
var errBadChunk = errors.New("malformed chunk header")

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.done {
		return 0, io.EOF
	}
	for c.left == 0 {
		line, err := readLine(c.br, 20)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			c.err = fmt.Errorf("read chunk header: %w", err)
			return 0, c.err
		}
		n, err := strconv.ParseInt(line, 10, 64)
		if err != nil || n < 0 || n > maxChunkSize {
			c.err = fmt.Errorf("%w: %q", errBadChunk, printable(line))
			return 0, c.err
		}
		if n == 0 {
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		c.err = fmt.Errorf("read chunk: %w", err)
		return n, c.err
	}
	return n, nil
}

// drain reads the rest of the message so that the reply comes after it, as
// the client expects. It reports whether the message ended properly.
func (c *chunkReader) drain() bool {
	_, err := io.Copy(io.Discard, c)
	return err == nil
}
