// Package sendmailcli is the sendmail(1), mailq(1) and newaliases(1) front
// end of facteur, shared by cmd/sendmail (a small standalone binary) and
// `facteur sendmail` (also reached when the facteur binary is invoked as
// sendmail, mailq or newaliases through a symlink).
//
// It parses the command line as Postfix's sendmail does (Parse), then talks
// to the pickup service of `facteur serve` over its unix socket (see
// mta/pickup for the protocol): SUBMIT for a message, SMTP for -bs, SHOWQ
// for mailq. It needs no database credentials and no privilege: the daemon
// identifies the user from the socket's peer credentials. A message is read
// whole from standard input (in memory, past 1 MiB in an unlinked temporary
// file) before the daemon is contacted, as Postfix's sendmail writes it to
// its maildrop first.
//
// # Exit status (sysexits.h)
//
//	 0 EX_OK           queued (or listed, or nothing to do)
//	64 EX_USAGE        bad command line
//	65 EX_DATAERR      bad address or message (5.1.x but 5.1.1, 5.3.4, 5.4.6, 5.5.x, 5.6.x)
//	67 EX_NOUSER       unknown recipient (5.1.1)
//	69 EX_UNAVAILABLE  any other permanent refusal
//	70 EX_SOFTWARE     the daemon's answer makes no sense
//	74 EX_IOERR        reading standard input failed
//	75 EX_TEMPFAIL     the daemon is not running (socket missing or refused),
//	                   the connection broke, or a temporary failure (4yz)
//	77 EX_NOPERM       the sender (or the user) is not allowed (5.7.x)
//	78 EX_CONFIG       the configuration cannot be read
//
// Unlike Postfix, which leaves the message in its maildrop directory when
// the daemon is down, facteur's sendmail exits 75 and keeps nothing: the
// caller must try again (cron and most MUAs treat 75 as "deferred").
//
// newaliases (-bi, -I) prints that aliases live in facteur's database and
// take effect at once, points at `facteur newaliases` for importing
// /etc/aliases, and exits 0, so that package scripts that run newaliases
// keep working.
package sendmailcli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Exit statuses (sysexits.h).
const (
	ExOK          = 0
	ExUsage       = 64
	ExDataErr     = 65
	ExNoUser      = 67
	ExUnavailable = 69
	ExSoftware    = 70
	ExIOErr       = 74
	ExTempFail    = 75
	ExNoPerm      = 77
	ExConfig      = 78
)

// Env is what Main takes from its process.
type Env struct {
	// Args is the command line, Args[0] the name invoked (its base name
	// picks the mode: sendmail, mailq or newaliases).
	Args   []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment ($NAME is the default full name); nil
	// reads the process's.
	Getenv func(string) string
	// Socket returns the pickup socket's path, given the -C configuration
	// file ("" when -C was not given). Each main finds it its own way.
	Socket func(configPath string) (string, error)
	// DialTimeout bounds the connection to the socket (30 s).
	DialTimeout time.Duration
}

// NewaliasesMessage is what newaliases prints.
const NewaliasesMessage = `aliases live in facteur's database and take effect at once: there is nothing to rebuild.
To import /etc/aliases, run: facteur newaliases`

// Main runs the front end and returns the exit status.
func Main(ctx context.Context, e Env) int {
	prog := "sendmail"
	if len(e.Args) > 0 && e.Args[0] != "" {
		prog = filepath.Base(e.Args[0])
	}
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	if e.DialTimeout <= 0 {
		e.DialTimeout = 30 * time.Second
	}
	var args []string
	if len(e.Args) > 1 {
		args = e.Args[1:]
	}
	o, err := Parse(prog, args)
	if err != nil {
		fmt.Fprintf(e.Stderr, "%s: %v\n", prog, err)
		return ExUsage
	}
	for _, w := range o.Warnings {
		fmt.Fprintf(e.Stderr, "%s: warning: %s\n", prog, w)
	}
	c := &client{prog: prog, e: e, o: o}
	switch o.Mode {
	case ModeIgnore:
		return ExOK
	case ModeNewaliases:
		fmt.Fprintf(e.Stderr, "%s: %s\n", prog, strings.ReplaceAll(NewaliasesMessage, "\n", "\n"+prog+": "))
		return ExOK
	}
	if e.Socket == nil {
		return c.fail(ExConfig, "no way to find the pickup socket")
	}
	path, err := e.Socket(o.Config)
	if err != nil {
		return c.fail(ExConfig, "configuration: %v", err)
	}
	var msg *spooled
	if o.Mode == ModeEnqueue {
		// Read the whole message first, as Postfix's sendmail does (into
		// its maildrop): a slow writer never meets the daemon's idle
		// timeout, and the writer is never cut off by an early refusal.
		msg = &spooled{}
		defer msg.Close()
		if err := copyMessage(msg, e.Stdin, !o.IgnoreDots); err != nil {
			return c.fail(ExIOErr, "read message: %v", err)
		}
		if msg.err != nil {
			return c.fail(ExTempFail, "keep the message: %v", msg.err)
		}
	}
	conn, err := c.dial(ctx, path)
	if err != nil {
		return c.fail(ExTempFail, "%v", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	switch o.Mode {
	case ModeMailq:
		return c.mailq(conn)
	case ModeSMTP:
		return c.smtp(conn)
	default:
		return c.submit(conn, msg)
	}
}

type client struct {
	prog string
	e    Env
	o    *Options
}

func (c *client) fail(code int, format string, args ...any) int {
	fmt.Fprintf(c.e.Stderr, "%s: %s\n", c.prog, fmt.Sprintf(format, args...))
	return code
}

// dial connects to the pickup socket, saying plainly when the daemon is not
// there.
func (c *client) dial(ctx context.Context, path string) (*net.UnixConn, error) {
	d := net.Dialer{Timeout: c.e.DialTimeout}
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("facteur's pickup service is not running (no listener on %s); try again later", path)
		case errors.Is(err, syscall.EACCES):
			return nil, fmt.Errorf("cannot reach the pickup socket %s: permission denied", path)
		}
		return nil, fmt.Errorf("connect to the pickup socket %s: %w", path, err)
	}
	return conn.(*net.UnixConn), nil
}

// reply is one reply line of the daemon.
type reply struct {
	code     int
	enhanced string
	text     string
	line     string
}

// errMalformed is a reply line that is not "NNN text".
var errMalformed = errors.New("malformed reply")

// readReply reads and parses one reply line: "NNN x.y.z text".
func readReply(br *bufio.Reader) (reply, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return reply{}, err
	}
	line = strings.TrimRight(line, "\r\n")
	if len(line) < 3 {
		return reply{}, fmt.Errorf("%w %q", errMalformed, line)
	}
	code, err := strconv.Atoi(line[:3])
	if err != nil || code < 200 || code > 599 {
		return reply{}, fmt.Errorf("%w %q", errMalformed, line)
	}
	r := reply{code: code, line: line, text: strings.TrimSpace(line[3:])}
	if f, rest, _ := strings.Cut(r.text, " "); isEnhanced(f) {
		r.enhanced, r.text = f, rest
	}
	return r, nil
}

func isEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil {
			return false
		}
	}
	return true
}

// exitStatus maps a daemon reply to sendmail's exit status (see the
// package documentation).
func exitStatus(r reply) int {
	switch {
	case r.code >= 200 && r.code < 400:
		return ExOK
	case r.code >= 400 && r.code < 500:
		return ExTempFail
	case r.enhanced == "5.1.1":
		return ExNoUser
	case strings.HasPrefix(r.enhanced, "5.1."):
		return ExDataErr
	case strings.HasPrefix(r.enhanced, "5.7."):
		return ExNoPerm
	case r.enhanced == "5.3.4", r.enhanced == "5.4.6",
		strings.HasPrefix(r.enhanced, "5.5."), strings.HasPrefix(r.enhanced, "5.6."):
		return ExDataErr
	}
	return ExUnavailable
}

// refused reports a refusal and returns its exit status.
func (c *client) refused(r reply) int {
	return c.fail(exitStatus(r), "%s", r.line)
}

// lost reports a connection that broke, or a reply that makes no sense.
// werr is the error of a write before the read that failed, if any: it
// says more than the read's EOF.
func (c *client) lost(err, werr error) int {
	if errors.Is(err, errMalformed) {
		return c.fail(ExSoftware, "the pickup service answered nonsense: %v", err)
	}
	if werr != nil {
		err = werr
	}
	return c.fail(ExTempFail, "connection to the pickup service lost: %v", err)
}

// clean refuses request values that would break the line protocol.
func clean(what, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return fmt.Errorf("%s %q contains a line break", what, v)
	}
	return nil
}

// submit sends the message on standard input (sendmail -bm).
func (c *client) submit(conn *net.UnixConn, msg *spooled) int {
	o := c.o
	br := bufio.NewReader(conn)
	bw := bufio.NewWriterSize(conn, 64<<10)
	fullName, hasName := o.FullName, o.HasFullName
	if !hasName {
		fullName = c.e.Getenv("NAME")
		hasName = fullName != ""
	}
	req := []string{"SUBMIT"}
	if o.HasSender {
		if err := clean("sender", o.Sender); err != nil {
			return c.fail(ExDataErr, "%v", err)
		}
		req = append(req, "sender "+o.Sender)
	}
	if hasName {
		req = append(req, "fullname "+strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, fullName))
	}
	for _, r := range o.Recipients {
		if err := clean("recipient", r); err != nil {
			return c.fail(ExDataErr, "%v", err)
		}
		req = append(req, "rcpt "+r)
	}
	if o.Extract {
		req = append(req, "extract")
	}
	if o.Notify != "" {
		req = append(req, "notify "+o.Notify)
	}
	if o.EnvID != "" {
		req = append(req, "envid "+o.EnvID)
	}
	if o.Body != "" {
		req = append(req, "body "+o.Body)
	}
	req = append(req, "data")
	for _, l := range req {
		bw.WriteString(l)
		bw.WriteByte('\n')
	}
	// Even when the write fails, the daemon may have said why (a user it
	// refuses, too many connections) before closing.
	flushErr := bw.Flush()
	r, err := readReply(br)
	if err != nil {
		return c.lost(err, flushErr)
	}
	if r.code != 354 {
		return c.refused(r)
	}

	// The message, in chunks; a final empty chunk says it is complete, so
	// that a sendmail killed half-way never queues half a message.
	body, err := msg.reader()
	if err != nil {
		return c.fail(ExTempFail, "read the kept message: %v", err)
	}
	cw := &chunkWriter{w: bw}
	_, writeErr := io.Copy(cw, body)
	if writeErr == nil {
		_, writeErr = bw.WriteString("0\n")
	}
	if writeErr == nil {
		writeErr = bw.Flush()
	}
	// Even after a write error, the daemon may have said why.
	r, err = readReply(br)
	if err != nil {
		return c.lost(err, writeErr)
	}
	if r.code != 250 {
		return c.refused(r)
	}
	if o.Verbose > 0 {
		fmt.Fprintf(c.e.Stderr, "%s: %s\n", c.prog, r.text)
	}
	return ExOK
}

// chunkWriter frames what is written as chunks of at most maxChunk bytes:
// "<n>" LF, then n bytes.
type chunkWriter struct{ w io.Writer }

// maxChunk is well under the daemon's limit on one chunk (1 MiB).
const maxChunk = 64 << 10

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), maxChunk)
		if _, err := fmt.Fprintf(c.w, "%d\n", k); err != nil {
			return n, err
		}
		m, err := c.w.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// copyMessage copies the message from src; with stopAtDot, a line holding
// only "." ends it (sendmail without -i). It returns read errors only: a
// write error stays in dst (a bufio.Writer), for the caller's Flush.
func copyMessage(dst io.Writer, src io.Reader, stopAtDot bool) error {
	tw := &tagWriter{w: dst}
	if !stopAtDot {
		_, err := io.Copy(tw, src)
		if tw.err != nil {
			return nil
		}
		return err
	}
	br := bufio.NewReaderSize(src, 64<<10)
	atStart := true
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if atStart {
				s := string(line)
				if s == ".\n" || s == ".\r\n" || (s == "." && errors.Is(err, io.EOF)) {
					return nil
				}
			}
			if _, werr := tw.Write(line); werr != nil {
				return nil
			}
			atStart = line[len(line)-1] == '\n'
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

// spooled keeps the message read from standard input: in memory up to
// spillAt bytes, then in an unlinked temporary file.
type spooled struct {
	mem bytes.Buffer
	f   *os.File
	err error
}

const spillAt = 1 << 20

func (s *spooled) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.f == nil && s.mem.Len()+len(p) <= spillAt {
		return s.mem.Write(p)
	}
	if s.f == nil {
		f, err := os.CreateTemp("", "sendmail-*")
		if err != nil {
			s.err = err
			return 0, err
		}
		_ = os.Remove(f.Name()) // nothing is left behind, whatever happens
		s.f = f
		if _, err := s.f.Write(s.mem.Bytes()); err != nil {
			s.err = err
			return 0, err
		}
		s.mem = bytes.Buffer{}
	}
	n, err := s.f.Write(p)
	if err != nil {
		s.err = err
	}
	return n, err
}

// reader returns the message from its start.
func (s *spooled) reader() (io.Reader, error) {
	if s.f == nil {
		return bytes.NewReader(s.mem.Bytes()), nil
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return bufio.NewReaderSize(s.f, 64<<10), nil
}

func (s *spooled) Close() {
	if s.f != nil {
		_ = s.f.Close()
	}
}

// tagWriter remembers a write error, to tell it from a read error.
type tagWriter struct {
	w   io.Writer
	err error
}

func (t *tagWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil {
		t.err = err
	}
	return n, err
}

// mailq lists the queue (sendmail -bp).
func (c *client) mailq(conn *net.UnixConn) int {
	_, werr := io.WriteString(conn, "SHOWQ\n")
	br := bufio.NewReader(conn)
	r, err := readReply(br)
	if err != nil {
		return c.lost(err, werr)
	}
	if r.code != 250 {
		return c.refused(r)
	}
	out := bufio.NewWriter(c.e.Stdout)
	defer out.Flush()
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			out.Flush()
			return c.fail(ExTempFail, "queue listing cut short: %v", err)
		}
		if line == ".\n" {
			break
		}
		// Lines that start with "." come doubled (see mta/pickup).
		out.WriteString(strings.TrimPrefix(line, "."))
	}
	if err := out.Flush(); err != nil {
		return c.fail(ExIOErr, "write: %v", err)
	}
	return ExOK
}

// smtp relays an SMTP session between standard input and output and the
// daemon (sendmail -bs). Lines from standard input that end with a bare LF
// get CRLF, as a terminal or a script sends them.
func (c *client) smtp(conn *net.UnixConn) int {
	if _, err := io.WriteString(conn, "SMTP\n"); err != nil {
		return c.lost(err, nil)
	}
	go func() {
		_, _ = io.Copy(&crlfWriter{w: conn}, c.e.Stdin)
		_ = conn.CloseWrite()
	}()
	if _, err := io.Copy(c.e.Stdout, conn); err != nil && !errors.Is(err, net.ErrClosed) {
		return c.lost(err, nil)
	}
	return ExOK
}

// crlfWriter writes LF line ends as CRLF; CRLF stays CRLF.
type crlfWriter struct {
	w    io.Writer
	last byte
	buf  []byte
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	c.buf = c.buf[:0]
	for _, b := range p {
		if b == '\n' && c.last != '\r' {
			c.buf = append(c.buf, '\r')
		}
		c.buf = append(c.buf, b)
		c.last = b
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}
