// Package mailfile holds what the agents that write a queued message out
// locally (maildir, local, pipe) share: the header block and its
// Delivered-To loop check, and the CRLF to LF conversion of a file or a
// command's input.
package mailfile

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// MaxHeader bounds the header block ReadHeader keeps in memory; a longer
// one is read up to there.
const MaxHeader = 1 << 20

// ReadHeader returns the header block of br up to and including the empty
// line that ends it (or up to MaxHeader, or the whole message if it has no
// body); br is left at the start of the body.
func ReadHeader(br *bufio.Reader) ([]byte, error) {
	var hdr []byte
	for len(hdr) < MaxHeader {
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

// DeliveredTo reports whether the header block has a Delivered-To: field
// naming addr (compared without case, angle brackets or spaces): Postfix
// local(8) and virtual(8)'s loop detection.
func DeliveredTo(hdr []byte, addr string) bool {
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

// LFWriter turns CRLF into LF (a CR not followed by LF is kept) and counts
// the bytes and LFs it writes. Close writes a pending CR and flushes.
type LFWriter struct {
	w        *bufio.Writer
	cr       bool // the last byte seen was a CR, not yet written
	n, lines int64
	err      error
}

// NewLFWriter returns an LFWriter writing to w.
func NewLFWriter(w *bufio.Writer) *LFWriter { return &LFWriter{w: w} }

// Written returns the bytes written so far; Lines the LFs among them.
func (l *LFWriter) Written() int64 { return l.n }

// Lines returns the LFs written so far.
func (l *LFWriter) Lines() int64 { return l.lines }

func (l *LFWriter) put(p []byte) {
	if l.err != nil || len(p) == 0 {
		return
	}
	_, l.err = l.w.Write(p)
	l.n += int64(len(p))
	l.lines += int64(bytes.Count(p, []byte{'\n'}))
}

func (l *LFWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && l.err == nil {
		if l.cr {
			l.cr = false
			if p[0] != '\n' {
				l.put([]byte{'\r'})
			}
		}
		i := bytes.IndexByte(p, '\r')
		if i < 0 {
			l.put(p)
			break
		}
		l.put(p[:i])
		l.cr = true
		p = p[i+1:]
	}
	if l.err != nil {
		return 0, l.err
	}
	return n, nil
}

// Close writes a pending CR and flushes.
func (l *LFWriter) Close() error {
	if l.cr {
		l.cr = false
		l.put([]byte{'\r'})
	}
	if l.err != nil {
		return l.err
	}
	return l.w.Flush()
}
