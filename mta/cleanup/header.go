package cleanup

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/facteur/facteur/mta/msgauth"
)

// Errors of the copy, turned into replies by Enqueue.
var (
	errTooBig      = errors.New("message exceeds the size limit")
	errTooManyHops = errors.New("too many Received: headers")
	errBareCR      = errors.New("bare CR in message")
	errBareLF      = errors.New("bare LF in message")
)

// readError is an error from the body reader (the SMTP session): it is
// handed back as it is, since the session knows what it means.
type readError struct{ err error }

func (e *readError) Error() string { return "read message: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// writeError is an error from the spool writer: the disk.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write spool: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// copyParams says how to rewrite the message while copying it.
type copyParams struct {
	limit   int64 // input bytes allowed
	maxHops int   // Received: fields allowed
	// Fields inserted at the end of the header block when the message
	// has none of its own (Client.Submission): complete lines with CRLF,
	// built lazily so that nothing is formatted for mail that has them.
	messageID func() string // "Message-ID: <…>\r\n"
	date      func() string // "Date: …\r\n"
	// authservID, when set, removes the Authentication-Results fields
	// that claim it and every X-Facteur-Quarantine field
	// (msgauth.ForgedField; RFC 8601 5): only this host may write them.
	authservID string
}

// copyResult is what the copy learned about the message.
type copyResult struct {
	size      int64  // bytes read (the message as received)
	received  int    // Received: fields in the message
	messageID string // the Message-ID: value found or added, for the queue row
	forged    int    // Authentication-Results and quarantine fields removed
}

// copier streams a message from r to w, editing only the header block:
// Return-Path: fields are dropped (RFC 5321 4.4: the final delivery adds
// it), Message-ID: and Date: are appended when missing and asked for, and
// Received: fields are counted. The body is opaque and copied as it is.
//
// The header block is not parsed as MIME: a field is a line that starts
// with a field name and a colon (RFC 5322 2.2) with its continuation lines
// (starting with a space or a tab); the block ends at the first empty line,
// or at the first line that is not a field, in which case an empty line is
// inserted before that line so that the result has a well-formed header.
//
// Authentication-Results: and X-Facteur-Quarantine: fields are held back
// (up to maxHeldField bytes, enough to read the authserv-id) until it is
// known whether they claim this host (copyParams.authservID); those that do
// are dropped, the others written unchanged.
//
// Every line must end with CRLF: a CR not followed by LF, or an LF not
// preceded by CR, stops the copy (SMTP smuggling, CVE-2023-51764: the
// spool must never hold one). A last line without any line end gets CRLF.
type copier struct {
	br *bufio.Reader
	w  io.Writer
	p  copyParams

	res       copyResult
	pendingCR bool // the last byte seen was a CR
	lineStart bool // the next fragment starts a line
	inHeader  bool
	drop      bool // the current field is being dropped
	sawField  bool // a field has started (so a continuation line is one)
	hasDate   bool
	capture   bool         // the current field is Message-ID:
	idField   bytes.Buffer // its raw text, capped
	holding   bool         // the current field goes to held until judged
	held      bytes.Buffer
}

const (
	maxMessageIDField = 1000
	maxHeldField      = 8 << 10
)

func copyMessage(br *bufio.Reader, w io.Writer, p copyParams) (copyResult, error) {
	c := &copier{br: br, w: w, p: p, lineStart: true, inHeader: true}
	err := c.run()
	return c.res, err
}

func (c *copier) run() error {
	for c.inHeader {
		frag, err := c.br.ReadSlice('\n')
		if len(frag) > 0 {
			if err := c.account(frag); err != nil {
				return err
			}
			if err := c.headerFragment(frag); err != nil {
				return err
			}
			c.lineStart = frag[len(frag)-1] == '\n'
		}
		switch {
		case err == nil || errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			if c.inHeader {
				// A message without a body: the header block ends here.
				if err := c.finish(); err != nil {
					return err
				}
				if err := c.endHeader(false); err != nil {
					return err
				}
				c.inHeader = false
			}
			return c.finish()
		default:
			return &readError{err}
		}
	}
	// The body: whole buffers at a time, unparsed.
	for {
		if _, err := c.br.Peek(1); err != nil {
			if errors.Is(err, io.EOF) {
				return c.finish()
			}
			return &readError{err}
		}
		buf, _ := c.br.Peek(c.br.Buffered())
		if err := c.account(buf); err != nil {
			return err
		}
		if err := c.write(buf); err != nil {
			return err
		}
		c.lineStart = buf[len(buf)-1] == '\n'
		_, _ = c.br.Discard(len(buf))
	}
}

// account counts the bytes of p against the limit and checks its line ends.
func (c *copier) account(p []byte) error {
	c.res.size += int64(len(p))
	if c.res.size > c.p.limit {
		return errTooBig
	}
	return c.checkLineEnds(p)
}

// checkLineEnds checks that every LF in p follows a CR and every CR is
// followed by an LF, carrying a final CR over to the next call.
func (c *copier) checkLineEnds(p []byte) error {
	crs := bytes.Count(p, []byte{'\r'})
	if c.pendingCR {
		crs++
	}
	lfs := 0
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			break
		}
		k := i + j
		if k == 0 && !c.pendingCR || k > 0 && p[k-1] != '\r' {
			return errBareLF
		}
		lfs++
		i = k + 1
	}
	c.pendingCR = len(p) > 0 && p[len(p)-1] == '\r'
	if c.pendingCR {
		crs--
	}
	if crs != lfs {
		return errBareCR
	}
	return nil
}

// finish checks the end of the input: a CR must not be left hanging, and
// a last line without a line end gets CRLF.
func (c *copier) finish() error {
	if c.pendingCR {
		return errBareCR
	}
	if !c.lineStart {
		c.lineStart = true
		return c.writeString("\r\n")
	}
	return nil
}

func (c *copier) headerFragment(frag []byte) error {
	if c.lineStart {
		switch {
		case len(frag) == 2 && frag[0] == '\r' && frag[1] == '\n':
			// The empty line that ends the header block (RFC 5322 2.1).
			if err := c.endHeader(false); err != nil {
				return err
			}
			c.inHeader = false
			return c.write(frag)
		case (frag[0] == ' ' || frag[0] == '\t') && c.sawField:
			// A continuation line of the current field (RFC 5322 2.2.3).
		default:
			name, ok := fieldName(frag)
			if !ok {
				// Not a header field: the body starts here.
				if err := c.endHeader(true); err != nil {
					return err
				}
				c.inHeader = false
				return c.write(frag)
			}
			if err := c.startField(name); err != nil {
				return err
			}
		}
	}
	if c.capture && c.idField.Len() < maxMessageIDField {
		c.idField.Write(frag[:min(len(frag), maxMessageIDField-c.idField.Len())])
	}
	if c.drop {
		return nil
	}
	return c.write(frag)
}

func (c *copier) startField(name string) error {
	if err := c.release(); err != nil {
		return err
	}
	c.sawField = true
	c.drop = false
	c.capture = false
	switch {
	case strings.EqualFold(name, "Return-Path"):
		// RFC 5321 4.4: Return-Path: is added at final delivery; one that
		// arrives with the message is stale or forged.
		c.drop = true
	case strings.EqualFold(name, "Received"):
		c.res.received++
	case strings.EqualFold(name, "Message-ID"):
		if c.res.messageID == "" && c.idField.Len() == 0 {
			c.capture = true
		}
	case strings.EqualFold(name, "Date"):
		c.hasDate = true
	case c.p.authservID != "" && (strings.EqualFold(name, msgauth.HeaderName) ||
		strings.EqualFold(name, msgauth.QuarantineHeaderName)):
		c.holding = true
	}
	return nil
}

// release ends the holding of a field: it is dropped (with the rest of its
// lines) when it claims this host, else written.
func (c *copier) release() error {
	if !c.holding {
		return nil
	}
	c.holding = false
	defer c.held.Reset()
	if msgauth.ForgedField(c.held.Bytes(), c.p.authservID) {
		c.res.forged++
		c.drop = true
		return nil
	}
	return c.out(c.held.Bytes())
}

// endHeader appends the fields asked for and, when the header block was
// ended by a line that is not a field, the empty line it lacked.
func (c *copier) endHeader(insertBlank bool) error {
	if err := c.release(); err != nil {
		return err
	}
	c.capture = false
	if c.idField.Len() > 0 {
		c.res.messageID = fieldValue(c.idField.String())
	}
	// RFC 5321 6.3: a message that has been relayed more often than any
	// sane path needs is looping.
	if c.p.maxHops > 0 && c.res.received > c.p.maxHops {
		return errTooManyHops
	}
	if c.p.messageID != nil && c.idField.Len() == 0 {
		line := c.p.messageID()
		c.res.messageID = fieldValue(line)
		if err := c.writeString(line); err != nil {
			return err
		}
	}
	if c.p.date != nil && !c.hasDate {
		if err := c.writeString(c.p.date()); err != nil {
			return err
		}
	}
	if insertBlank {
		return c.writeString("\r\n")
	}
	return nil
}

func (c *copier) write(p []byte) error {
	if c.holding {
		c.held.Write(p)
		if c.held.Len() < maxHeldField {
			return nil
		}
		// Long enough to judge: decide now, and drop or stream the rest.
		return c.release()
	}
	return c.out(p)
}

func (c *copier) out(p []byte) error {
	if _, err := c.w.Write(p); err != nil {
		return &writeError{err}
	}
	return nil
}

func (c *copier) writeString(s string) error {
	if c.holding {
		return c.write([]byte(s))
	}
	if _, err := io.WriteString(c.w, s); err != nil {
		return &writeError{err}
	}
	return nil
}

// fieldName returns the name of the header field that line starts, if it
// starts one: printable US-ASCII except the colon (RFC 5322 2.2), then
// optional white space (obsolete syntax, RFC 5322 4.5) and a colon.
func fieldName(line []byte) (string, bool) {
	i := 0
	for i < len(line) && line[i] > ' ' && line[i] < 0x7f && line[i] != ':' {
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

// fieldValue returns the unfolded, trimmed value of a raw field.
func fieldValue(raw string) string {
	if i := strings.IndexByte(raw, ':'); i >= 0 {
		raw = raw[i+1:]
	}
	raw = strings.NewReplacer("\r\n", "", "\r", "", "\n", "").Replace(raw)
	return strings.TrimSpace(raw)
}
