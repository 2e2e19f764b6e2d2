package cleanup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"sync"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/envelope"
)

// MaxPrependBytes bounds what a Check may prepend (queue_message.prepend's
// CHECK).
const MaxPrependBytes = 64 << 10

// errCheckAborted ends the input of a check whose message was refused.
var errCheckAborted = errors.New("cleanup: message not queued")

// checkRun is one Message.Check running beside the copy: the copy writes
// into a pipe (buffered, so that the check's goroutine wakes once per 32 KiB,
// not once per header line) and the check reads it.
type checkRun struct {
	pw   *io.PipeWriter
	bw   *bufio.Writer
	done chan struct{}

	prepend string
	err     error
	ended   bool
}

var checkBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

func startCheck(ctx context.Context, fn func(context.Context, io.Reader) (string, error)) *checkRun {
	pr, pw := io.Pipe()
	bw := checkBufs.Get().(*bufio.Writer)
	bw.Reset(pw)
	r := &checkRun{pw: pw, bw: bw, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.prepend, r.err = fn(ctx, pr)
		// The rest, so that the copy never waits on a check that stopped
		// reading early.
		_, _ = io.Copy(io.Discard, pr)
	}()
	return r
}

// Write feeds the check. It never fails: a check that stopped reading is
// drained by its goroutine, and one that failed says so in finish.
func (r *checkRun) Write(p []byte) (int, error) {
	if !r.ended {
		_, _ = r.bw.Write(p)
	}
	return len(p), nil
}

// finish ends the input and waits for the check's answer.
func (r *checkRun) finish() (string, error) {
	if err := r.end(nil); err != nil {
		return "", err
	}
	<-r.done
	return r.prepend, r.err
}

// abort ends the input of a check whose message is not queued; the check
// ends on its own (its lookups are bounded), unwaited for.
func (r *checkRun) abort() { _ = r.end(errCheckAborted) }

func (r *checkRun) end(cause error) error {
	if r.ended {
		return nil
	}
	r.ended = true
	var err error
	if cause == nil {
		err = r.bw.Flush()
		r.pw.Close()
	} else {
		r.pw.CloseWithError(cause)
	}
	r.bw.Reset(nil)
	checkBufs.Put(r.bw)
	r.bw = nil
	if err != nil {
		return fmt.Errorf("feed message check: %w", err)
	}
	return nil
}

// teeWriter writes to the spool and feeds the check; only the spool's
// errors count.
type teeWriter struct {
	w   io.Writer
	chk *checkRun
}

func (t teeWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if n > 0 {
		_, _ = t.chk.Write(p[:n])
	}
	return n, err
}

// validPrepend checks what a Check returned: whole header fields with CRLF
// line ends and no empty line (which would end the header block), within
// MaxPrependBytes.
func validPrepend(s string) error {
	if s == "" {
		return nil
	}
	bad := len(s) > MaxPrependBytes || !strings.HasSuffix(s, "\r\n") ||
		s[0] == ' ' || s[0] == '\t' || strings.HasPrefix(s, "\r\n") || strings.Contains(s, "\r\n\r\n") ||
		strings.Count(s, "\r") != strings.Count(s, "\n") || strings.Count(s, "\r\n") != strings.Count(s, "\n") ||
		strings.IndexByte(s, 0) >= 0
	if bad {
		return fmt.Errorf("message check returned malformed header fields (%d bytes)", len(s))
	}
	return nil
}

// ReadHeaderBlock reads a message's header block from br, up to and
// including the empty line that ends it (or the whole message when it has
// no body), at most max bytes; longer is an error. What follows stays in br.
func ReadHeaderBlock(br *bufio.Reader, max int) ([]byte, error) {
	var h []byte
	start := true // the next fragment starts a line
	for {
		line, err := br.ReadSlice('\n')
		h = append(h, line...)
		if len(h) > max {
			return nil, errHeaderTooLong
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			start = false
			continue
		case errors.Is(err, io.EOF):
			return h, nil
		case err != nil:
			return nil, err
		}
		if start && (string(line) == "\r\n" || string(line) == "\n") {
			return h, nil
		}
		start = true
	}
}

var errHeaderTooLong = errors.New("header block too long")

// FromAddresses returns the addresses of the From: field of a header block
// (RFC 5322 3.6.2), in the internal form local@domain. A header without
// exactly one From: field, or whose From: does not parse, is an error.
func FromAddresses(header []byte) ([]string, error) {
	raw := header
	if !bytes.HasSuffix(raw, []byte("\n\r\n")) && !bytes.HasSuffix(raw, []byte("\n\n")) {
		raw = append(bytes.Clone(raw), "\r\n"...)
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse header: %w", err)
	}
	if n := len(m.Header["From"]); n != 1 {
		return nil, fmt.Errorf("%d From: fields", n)
	}
	list, err := m.Header.AddressList("From")
	if err != nil {
		return nil, fmt.Errorf("From: %w", err)
	}
	if len(list) == 0 {
		return nil, errors.New("empty From:")
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Address
	}
	return out, nil
}

// Signer signs a message: mta/dkimsign's *Signer (see its Sign for the
// contract: the From: domain must be fromDomain and allowed by allowed, else
// 553 5.7.1 or no signature by its own policy).
type Signer interface {
	Sign(ctx context.Context, fromDomain string, allowed func(domain string) bool, msg io.Reader) (string, error)
}

// maxSignedHeader bounds the header block SignCheck keeps in memory (as
// dkimsign does).
const maxSignedHeader = 1 << 20

// SignCheck returns the Message.Check of submitted mail: a DKIM-Signature
// made with the key of the From: header's domain (DESIGN "Signing
// authority"), only when the submitting identity may send as every address
// of the From: field. mayUse answers that for one address: lookups'
// SenderAllowed for an authenticated user, pickup's local sender permission
// for a local user; the same permission as for MAIL FROM. A From: address
// the identity may not use gets the Signer's Unauthorized policy: 553
// 5.7.1, or sent unsigned. A message that no signature can be made for —
// without a From: field that parses (a cron job's "From: root"), or with
// addresses of several domains — goes out unsigned. The signature covers
// the message as queued (after cleanup's Message-ID: and Date:), so that it
// verifies where it is delivered.
func SignCheck(s Signer, mayUse func(ctx context.Context, addr string) (bool, error)) func(context.Context, io.Reader) (string, error) {
	return func(ctx context.Context, msg io.Reader) (string, error) {
		br := bufio.NewReaderSize(msg, 16<<10)
		hdr, err := ReadHeaderBlock(br, maxSignedHeader)
		if errors.Is(err, errHeaderTooLong) {
			return "", fmt.Errorf("%w: %w", envelope.MessageTooBig(), err)
		}
		if err != nil {
			return "", fmt.Errorf("read message: %w", err)
		}
		addrs, err := FromAddresses(hdr)
		if err != nil {
			return "", nil // nothing to sign for
		}
		ok, domain, several := true, "", false
		for _, a := range addrs {
			allowed, err := mayUse(ctx, a)
			switch {
			case err != nil && lookups.Permanent(err):
				allowed = false
			case err != nil:
				return "", fmt.Errorf("%w: From: permission: %w", envelope.LookupFailed(), err)
			}
			ok = ok && allowed
			d := ""
			if i := strings.LastIndexByte(a, '@'); i >= 0 {
				d, _ = address.Domain(a[i+1:])
			}
			if domain == "" {
				domain = d
			}
			several = several || d == "" || d != domain
		}
		if ok && several {
			return "", nil // dkimsign signs for one domain only
		}
		// Sign reads From: again and applies the Unauthorized policy when
		// allowed says no.
		return s.Sign(ctx, domain, func(d string) bool { return ok && d == domain }, io.MultiReader(bytes.NewReader(hdr), br))
	}
}
