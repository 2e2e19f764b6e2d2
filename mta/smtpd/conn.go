package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/facteur/facteur/mta/envelope"
)

// conn is the net.Conn that go-smtp serves. It sits between the socket (or
// the TLS connection) and go-smtp's textproto reader, and owns what go-smtp
// leaves to us at the byte level:
//
//   - SMTP smuggling: every byte of the session (command lines, DATA, BDAT
//     chunks) is checked for a bare CR or bare LF. textproto accepts "\n" as a
//     line end, and an MTA behind or in front of us may end DATA on "\n.\n";
//     so at the first bare CR or LF conn writes "550 5.5.2" itself, closes the
//     socket and returns an error to go-smtp, which then never sees the
//     offending bytes: a pending DATA or BDAT fails and nothing is queued.
//     (CVE-2023-51764 and kin; RFC 5321 2.3.8: CR and LF appear only together.)
//   - TLS: STARTTLS and implicit TLS are done here, not by go-smtp, because a
//     reader under go-smtp's TLS would see only ciphertext. go-smtp is never
//     given a *tls.Conn (its Server.TLSConfig is nil and AllowInsecureAuth is
//     set); the session reads the TLS state from conn and offers AUTH only
//     under TLS. conn adds STARTTLS to the EHLO reply.
//   - Commands go-smtp handles in a way we do not want: MAIL or AUTH before
//     HELO/EHLO (or before the EHLO that must follow STARTTLS) get "503 5.5.1"
//     (go-smtp says 502); VRFY gets "252 2.0.0" (go-smtp says 2.5.0);
//     "RCPT TO:<postmaster>" without a domain, which go-smtp's parser refuses,
//     is rewritten to the configured postmaster address (RFC 5321 4.5.1).
//   - Commands out of sequence get 503 (RFC 5321 4.3.2), not go-smtp's 502.
//   - The HELO/EHLO reply starts with our host name, not go-smtp's "Hello
//     <argument>": no client text in a reply (RFC 5321 4.1.1.1).
//   - A DATA line over MaxLineLength refuses the message with 552 5.3.4
//     once it has all been read (limitDataLine), instead of go-smtp's
//     ErrTooLongLine, which would close the connection.
//   - Per-IP error throttling: replies are watched; each 500-504 or 535 counts
//     as an error of the client's address, and before the next command conn
//     waits a growing delay, or answers "421 4.7.0" and closes.
//   - Connection checks of the MX listener (policy.go, admit), before the
//     banner: the pregreet test (a client that talks before the greeting
//     gets "554 5.5.0" and is closed) and the DNSBL (a listed client gets
//     "554 5.7.1" instead of the banner, and every command after it the
//     same reply, QUIT excepted: RFC 5321 3.1).
//
// To make mode changes exact, conn hands go-smtp one command line per Read
// and never reads ahead of what go-smtp has processed: a 354 reply switches
// to DATA mode, and a BDAT command line to chunk mode for exactly the chunk
// size go-smtp will read. go-smtp reads and writes from one goroutine per
// connection (BDAT's Data goroutine only reads from a pipe), so the read-side
// state needs no lock; writes take wmu.
type conn struct {
	raw  net.Conn
	srv  *Server
	ls   *listenerState
	info *connInfo

	cur      net.Conn      // raw, or the TLS connection over it
	br       *bufio.Reader // over cur
	tlsState atomic.Pointer[tls.ConnectionState]
	implicit bool // TLS from the first byte (submissions); handshake pending until done
	shaken   bool

	// Read side, touched by go-smtp's serving goroutine only.
	mode        int
	chunkLeft   int64
	chunkLast   bool
	inBDAT      bool // the body scanner is inside a BDAT message
	cmdScan     crlfScanner
	bodyScan    crlfScanner
	cmdStart    bool        // the next command byte starts a line
	dataStart   bool        // the next DATA byte starts a line
	expectSASL  bool        // the next line is a SASL response, not a command
	greeted     bool        // HELO/EHLO accepted since connect or STARTTLS
	ehlo        atomic.Bool // ... and it was EHLO
	greetVerb   string
	swallow     int // replies of injected commands to drop
	pending     []byte
	postmasterR string // the rewritten bare postmaster of the current line, if any

	// A DATA line over MaxLineLength (see limitDataLine).
	dataLine    int         // octets of the current DATA line so far
	skipData    bool        // the rest of the message is being dropped
	skipMidLine bool        // ... and go-smtp has part of the long line
	longLine    atomic.Bool // the current DATA message is refused (bodyReader)

	wmu   sync.Mutex
	wpart []byte // partial reply line
	dead  atomic.Bool

	admitOnce sync.Once
	refused   *envelope.Reply // the session was refused at connection
	nrefused  int             // commands refused since

	closeOnce sync.Once
}

const (
	modeCommand = iota
	modeData
	modeChunk
)

// errClosed is what go-smtp reads after conn closed the connection itself.
// It wraps net.ErrClosed, so go-smtp ends the connection without a reply.
var errClosed = fmt.Errorf("smtpd: connection closed by policy: %w", net.ErrClosed)

func newConn(raw net.Conn, srv *Server, ls *listenerState, info *connInfo) *conn {
	c := &conn{raw: raw, srv: srv, ls: ls, info: info, cur: raw, cmdStart: true}
	if ls.kind == Submissions {
		c.cur = tls.Server(raw, ls.tlsConfig)
		c.implicit = true
	}
	c.br = bufio.NewReaderSize(c.cur, readBufferSize)
	info.conn = c
	return c
}

// readBufferSize is larger than any command line go-smtp accepts
// (MaxLineLength), so command lines are handed up whole.
const readBufferSize = 16 << 10

// crlfScanner finds bare CR and bare LF in a byte stream; cr carries a CR
// that ended the previous piece.
type crlfScanner struct{ cr bool }

// scan reports false at the first bare CR or LF in b.
func (s *crlfScanner) scan(b []byte) bool {
	for len(b) > 0 {
		if s.cr {
			s.cr = false
			if b[0] != '\n' {
				return false // CR not followed by LF
			}
			b = b[1:]
			continue
		}
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			return true
		}
		if b[i] == '\n' {
			return false // LF not preceded by CR
		}
		s.cr = true
		b = b[i+1:]
	}
	return true
}

// greetedEHLO reports whether the client greeted with EHLO.
func (c *conn) greetedEHLO() bool { return c.ehlo.Load() }

// TLS returns the connection's TLS state, or nil before TLS.
func (c *conn) TLS() *tls.ConnectionState { return c.tlsState.Load() }

// handshake completes the implicit TLS handshake of a submissions
// connection, before its first byte is read or written.
func (c *conn) handshake() error {
	if !c.implicit || c.shaken {
		return nil
	}
	c.shaken = true
	tc := c.cur.(*tls.Conn)
	ctx, cancel := context.WithTimeout(c.info.ctx, c.srv.opts.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.info.log.Info("tls handshake failed", "err", err)
		c.info.setEnd("tls handshake failed")
		c.kill()
		return errClosed
	}
	st := tc.ConnectionState()
	c.tlsState.Store(&st)
	return nil
}

// Read hands go-smtp the next command line, DATA line or chunk bytes.
func (c *conn) Read(p []byte) (int, error) {
	c.admitOnce.Do(c.runAdmit)
	if c.dead.Load() {
		return 0, errClosed
	}
	c.wmu.Lock()
	err := c.handshake()
	c.wmu.Unlock()
	if err != nil {
		return 0, err
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	for {
		var out []byte
		var err error
		switch c.mode {
		case modeChunk:
			return c.readChunk(p)
		case modeData:
			out, err = c.readData()
		default:
			out, err = c.readCommand()
		}
		if len(out) == 0 {
			if err != nil {
				return 0, err
			}
			continue
		}
		n := copy(p, out)
		if n < len(out) {
			c.pending = append(c.pending[:0], out[n:]...)
		}
		return n, nil
	}
}

// readLine reads up to and including the next LF, or a full buffer.
func (c *conn) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if len(line) > 0 {
		return line, nil // a later read returns the error again
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return nil, err
}

// refreshDeadline gives a read that go-smtp did not announce (DATA, BDAT,
// and reads after a command conn answered itself) its own idle timeout.
func (c *conn) refreshDeadline() {
	if d := c.srv.opts.ReadTimeout; d > 0 {
		c.raw.SetReadDeadline(time.Now().Add(d))
	}
}

func (c *conn) readData() ([]byte, error) {
	c.refreshDeadline()
	line, err := c.readLine()
	if err != nil {
		return nil, err
	}
	start := c.dataStart
	if !c.bodyScan.scan(line) {
		return nil, c.smuggled("DATA")
	}
	c.dataStart = line[len(line)-1] == '\n'
	c.info.bytesIn.Add(int64(len(line)))
	// RFC 5321 4.1.1.4: the data end on CRLF "." CRLF; a "." line ended
	// by a bare LF never gets here.
	if start && string(line) == ".\r\n" {
		c.mode = modeCommand
		c.cmdStart = true
		if c.skipData {
			c.skipData = false
			if c.skipMidLine {
				return []byte("\r\n.\r\n"), nil
			}
		}
		return line, nil
	}
	return c.limitDataLine(line, start), nil
}

// limitDataLine enforces MaxLineLength on DATA lines before go-smtp does:
// go-smtp's line limit fails the DATA reader with smtp.ErrTooLongLine for
// good and then closes the connection, with a second, unsolicited reply.
// Instead, at the first line over the limit conn drops the rest of the
// message (still checking it for bare CR and LF), hands go-smtp an early
// end of data, and sets longLine, which makes bodyReader turn that end
// into errLongLine: the message is refused with 552 5.3.4 after the client
// sent all of it, nothing is queued, and the session goes on.
func (c *conn) limitDataLine(line []byte, start bool) []byte {
	if c.skipData {
		return nil
	}
	if start {
		c.dataLine = 0
	}
	c.dataLine += len(line)
	if c.dataLine <= c.srv.opts.MaxLineLength {
		return line
	}
	c.info.log.Info("message line too long, dropping the rest of the message", "limit", c.srv.opts.MaxLineLength)
	c.skipData, c.skipMidLine = true, !start
	c.longLine.Store(true)
	return nil
}

func (c *conn) readChunk(p []byte) (int, error) {
	c.refreshDeadline()
	if int64(len(p)) > c.chunkLeft {
		p = p[:c.chunkLeft]
	}
	n, err := c.br.Read(p)
	if n > 0 {
		if !c.bodyScan.scan(p[:n]) {
			return 0, c.smuggled("BDAT")
		}
		c.chunkLeft -= int64(n)
		c.info.bytesIn.Add(int64(n))
		if c.chunkLeft == 0 {
			c.mode = modeCommand
			c.cmdStart = true
			if c.chunkLast {
				c.inBDAT = false
				if c.bodyScan.cr { // the message ends on a bare CR
					return 0, c.smuggled("BDAT")
				}
			}
		}
		return n, nil
	}
	return 0, err
}

// readCommand returns the next command line to hand to go-smtp, after
// answering the commands conn handles itself.
func (c *conn) readCommand() ([]byte, error) {
	if c.cmdStart {
		if err := c.throttle(); err != nil {
			return nil, err
		}
	}
	line, err := c.readLine()
	if err != nil {
		return nil, err
	}
	start := c.cmdStart
	if !c.cmdScan.scan(line) {
		return nil, c.smuggled("command")
	}
	c.cmdStart = line[len(line)-1] == '\n'
	if c.refused != nil {
		return c.refusedCommand(line, start)
	}
	if !start {
		return line, nil // the rest of an overlong line: go-smtp refuses it
	}
	if c.expectSASL {
		c.expectSASL = false
		return line, nil
	}
	c.postmasterR = ""
	verb, arg := splitCommand(line)
	if verb != "BDAT" {
		c.inBDAT = false
	}
	switch verb {
	case "STARTTLS":
		return c.startTLS(arg)
	case "VRFY":
		// RFC 5321 3.5.3: 252 when we will not say whether a user exists.
		c.reply(replyVRFY())
		c.refreshDeadline()
		return nil, nil
	case "MAIL", "AUTH":
		if !c.greeted {
			// RFC 5321 4.1.4: a session starts with EHLO or HELO, and RFC
			// 3207 4.2: again after STARTTLS.
			c.reply(replyNoHello())
			c.refreshDeadline()
			return nil, nil
		}
	case "RCPT":
		if r, ok := c.rewritePostmaster(line); ok {
			return r, nil
		}
	case "HELO", "EHLO":
		c.greetVerb = verb
	case "BDAT":
		if size, last, ok := parseBDAT(arg); ok {
			if !c.inBDAT {
				c.bodyScan = crlfScanner{}
				c.inBDAT = true
			}
			if size > 0 {
				c.mode, c.chunkLeft, c.chunkLast = modeChunk, size, last
			} else if last {
				c.inBDAT = false
			}
		}
	}
	return line, nil
}

// runAdmit runs the connection checks (admit) once, before the banner:
// a refused client gets its reply instead of go-smtp's banner, which is
// dropped.
func (c *conn) runAdmit() {
	r, closeNow := c.admit()
	if r == nil && !closeNow {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if r != nil && !c.dead.Load() {
		c.raw.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout))
		c.cur.Write([]byte(replyLine(*r)))
		c.srv.opts.Metrics.Reply(c.ls.kind.String(), r.Code)
	}
	if closeNow {
		c.kill()
		return
	}
	c.refused = r
	c.swallow++ // go-smtp's banner
}

// refusedCommand answers a command of a session refused at connection:
// QUIT ends it, anything else gets the refusal again, until there were
// too many.
func (c *conn) refusedCommand(line []byte, start bool) ([]byte, error) {
	c.refreshDeadline()
	if !start {
		return nil, nil // the rest of an overlong line
	}
	verb, _ := splitCommand(line)
	if verb == "QUIT" {
		c.reply(replyBye())
		c.kill()
		return nil, errClosed
	}
	if c.nrefused++; c.nrefused > maxRefusedCommands {
		c.reply(replyTooManyErrors())
		c.kill()
		return nil, errClosed
	}
	c.reply(*c.refused)
	return nil, nil
}

// splitCommand splits a command line as go-smtp's parseCmd does: a line that
// starts with STARTTLS is STARTTLS; otherwise a four-letter verb, then a
// space and the argument.
func splitCommand(line []byte) (verb, arg string) {
	s := strings.TrimRight(string(line), "\r\n")
	if len(s) >= 8 && strings.EqualFold(s[:8], "STARTTLS") {
		return "STARTTLS", strings.TrimSpace(s[8:])
	}
	if len(s) == 4 {
		return strings.ToUpper(s), ""
	}
	if len(s) > 5 && s[4] == ' ' {
		return strings.ToUpper(s[:4]), strings.TrimSpace(s[5:])
	}
	return "", ""
}

// parseBDAT parses BDAT's argument exactly as go-smtp does, so that conn
// expects a chunk exactly when go-smtp reads one (RFC 3030 2).
func parseBDAT(arg string) (size int64, last, ok bool) {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 {
		return 0, false, false
	}
	if len(f) == 2 {
		if !strings.EqualFold(f[1], "LAST") {
			return 0, false, false
		}
		last = true
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return 0, false, false
	}
	return int64(n), last, true
}

// rewritePostmaster turns "RCPT TO:<postmaster>" (any case, RFC 5321 4.5.1
// and 4.1.1.3) into the configured postmaster address, which go-smtp can
// parse; the session then resolves it as the bare postmaster.
func (c *conn) rewritePostmaster(line []byte) ([]byte, bool) {
	s := strings.TrimRight(string(line), "\r\n")
	rest, ok := cutPrefixFold(s, "RCPT TO:")
	if !ok {
		return nil, false
	}
	rest = strings.TrimLeft(rest, " ")
	params, ok := cutPrefixFold(rest, "<postmaster>")
	if !ok {
		return nil, false
	}
	c.postmasterR = c.srv.opts.Postmaster
	return []byte("RCPT TO:<" + c.postmasterR + ">" + params + "\r\n"), true
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

// startTLS performs STARTTLS (RFC 3207) and returns an injected RSET for
// go-smtp, so that it forgets the transaction; its reply is dropped.
func (c *conn) startTLS(arg string) ([]byte, error) {
	c.refreshDeadline()
	switch {
	case c.ls.tlsConfig == nil:
		c.reply(replyTLSUnavailable())
		return nil, nil
	case c.TLS() != nil:
		c.reply(replyTLSActive())
		return nil, nil
	case arg != "":
		c.reply(replySyntaxNoParams())
		return nil, nil
	}
	c.reply(replyTLSReady())
	if n := c.br.Buffered(); n > 0 {
		// RFC 3207 6 and CVE-2011-0411: plaintext pipelined after
		// STARTTLS must not be read as if it came over TLS.
		c.info.log.Warn("discarding plaintext pipelined after STARTTLS", "bytes", n)
		c.br.Discard(n)
	}
	tc := tls.Server(c.raw, c.ls.tlsConfig)
	ctx, cancel := context.WithTimeout(c.info.ctx, c.srv.opts.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.info.log.Info("starttls handshake failed", "err", err)
		c.info.setEnd("tls handshake failed")
		c.kill()
		return nil, errClosed
	}
	st := tc.ConnectionState()
	c.wmu.Lock()
	c.cur = tc
	c.wmu.Unlock()
	c.br.Reset(tc)
	c.tlsState.Store(&st)
	// RFC 3207 4.2: the server must discard any knowledge obtained from the
	// client; the client must send EHLO again.
	c.greeted, c.greetVerb = false, ""
	c.ehlo.Store(false)
	c.cmdScan, c.cmdStart = crlfScanner{}, true
	c.swallow++
	c.refreshDeadline()
	return []byte("RSET\r\n"), nil
}

// throttle delays the next command of a client with recent errors, or
// answers 421 and closes once it has too many.
func (c *conn) throttle() error {
	delay, refuse := c.srv.limits.errorDelay(c.info.ip)
	if refuse {
		c.info.setEnd("too many errors")
		c.reply(replyTooManyErrors())
		c.kill()
		return errClosed
	}
	if delay <= 0 {
		return nil
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-c.info.ctx.Done():
		return errClosed
	}
}

// smuggled answers a bare CR or LF: 550 5.5.2, then the connection closes.
func (c *conn) smuggled(where string) error {
	c.info.log.Warn("bare CR or LF, closing the connection", "in", where)
	c.info.setEnd("bare CR or LF in " + where)
	c.reply(replyBareNewline())
	c.kill()
	return errClosed
}

// reply writes a reply of conn's own.
func (c *conn) reply(r envelope.Reply) {
	c.Write([]byte(replyLine(r)))
}

// replyLine formats a one-line reply.
func replyLine(r envelope.Reply) string {
	e := r.ToSMTP()
	return fmt.Sprintf("%03d %d.%d.%d %s\r\n", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

// kill closes the socket; go-smtp's later reads fail and its writes are
// dropped.
func (c *conn) kill() {
	c.dead.Store(true)
	c.info.cancel()
	c.raw.Close()
}

// Write writes go-smtp's replies, watching them: 354 starts DATA, 334 means
// the next line is a SASL response, the first line of a HELO/EHLO reply
// tells whether the client is greeted (and is rewritten to our name, and
// gets STARTTLS added), error
// codes count towards the client's throttling, and every reply sent is
// counted in Options.Metrics by class.
func (c *conn) Write(p []byte) (int, error) {
	c.admitOnce.Do(c.runAdmit)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.dead.Load() {
		return 0, errClosed
	}
	if err := c.handshake(); err != nil {
		return 0, err
	}
	c.wpart = append(c.wpart, p...)
	var out []byte
	for {
		i := bytes.IndexByte(c.wpart, '\n')
		if i < 0 {
			break
		}
		out = c.observe(c.wpart[:i+1], out)
		c.wpart = c.wpart[i+1:]
	}
	if len(c.wpart) == 0 {
		c.wpart = nil
	}
	if len(out) > 0 {
		if _, err := c.cur.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// observe looks at one reply line and appends what is to be sent to out.
func (c *conn) observe(line, out []byte) []byte {
	code := 0
	if len(line) >= 3 {
		code, _ = strconv.Atoi(string(line[:3]))
	}
	final := len(line) < 4 || line[3] != '-'
	if c.swallow > 0 {
		if final {
			c.swallow--
		}
		return out
	}
	if code == 502 && bytes.HasPrefix(line, []byte("502 5.5.1 ")) && outOfSequence(line[10:]) {
		// go-smtp answers commands out of sequence (RCPT before MAIL,
		// DATA before RCPT) with 502, "not implemented"; RFC 5321 4.2.4
		// and 4.3.2 say 503.
		code = 503
		line = append([]byte("503"), line[3:]...)
	}
	if c.greetVerb != "" && code == 250 {
		// RFC 5321 4.1.1.1: the reply to HELO or EHLO starts with our own
		// name, as Postfix's does; go-smtp's "Hello <argument>" would write
		// the client's text (a NUL included) into the reply.
		line = []byte("250-" + c.srv.opts.Hostname + "\r\n")
		if final {
			line[3] = ' '
		}
	}
	out = append(out, line...)
	if c.greetVerb != "" {
		verb := c.greetVerb
		c.greetVerb = ""
		if code == 250 {
			c.greeted = true
			c.ehlo.Store(verb == "EHLO")
			if verb == "EHLO" && !final && c.ls.tlsConfig != nil && c.TLS() == nil {
				out = append(out, "250-STARTTLS\r\n"...) // RFC 3207 4
			}
		}
	}
	switch {
	case code == 354:
		c.mode, c.dataStart = modeData, true
		c.bodyScan = crlfScanner{}
		c.skipData = false
		c.longLine.Store(false)
	case code == 334:
		c.expectSASL = true
	}
	if final {
		c.srv.opts.Metrics.Reply(c.ls.kind.String(), code)
		switch {
		case code >= 500 && code <= 504:
			c.info.badCommands.Add(1)
			c.srv.limits.recordError(c.info.ip)
		case code == 535:
			c.info.authFailures.Add(1)
			c.srv.limits.recordError(c.info.ip)
		}
	}
	return out
}

// outOfSequence recognises go-smtp's 502 texts for commands out of order.
func outOfSequence(text []byte) bool {
	t := string(bytes.TrimRight(text, "\r\n"))
	switch t {
	case "Missing MAIL FROM command.", "Missing RCPT TO command.", "Please introduce yourself first.",
		"DATA not allowed for BINARYMIME messages":
		return true
	}
	return strings.HasSuffix(t, " not allowed during message transfer")
}

// Close closes the connection once, logs the session's summary line and
// releases the client's connection slot.
func (c *conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.dead.Store(true)
		err = c.raw.Close()
		c.info.finish()
	})
	return err
}

func (c *conn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *conn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *conn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

var _ net.Conn = (*conn)(nil)

// isClosed reports whether err is the error of a connection conn closed.
func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
