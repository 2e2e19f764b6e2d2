// Package qmqpd receives mail over QMQP, the Quick Mail Queueing Protocol
// (D. J. Bernstein, https://cr.yp.to/proto/qmqp.html; there is no RFC), as
// Postfix's qmqpd does. nullmailer's qmqp remote and qmail's qmail-qmqpc are
// its usual clients: web and application hosts that hand all their mail to
// a central relay.
//
// # Protocol
//
// One message per connection. The client sends one netstring (a decimal
// length, ':', that many bytes, ','), which holds a netstring with the
// message, one with the envelope sender and one per recipient. The message
// has LF line ends (qmail's format). The server answers with one netstring
// whose first byte is K (accepted), Z (temporary failure: try again later)
// or D (permanent failure: bounce), followed by a text, then closes the
// connection. facteur's texts start with the enhanced status code:
// "K2.0.0 Ok: queued as ID", "D5.1.1 <x@y>: Recipient address rejected: User
// unknown".
//
// # Policy
//
// Only clients whose address is in a client_access network with the
// permit_qmqp action may send (Postfix's qmqpd_authorized_clients); others
// get D 5.7.1 and the connection is closed. A failing client_access lookup
// gets Z. Such clients are trusted relays: any sender, any recipient domain
// (relaying is allowed), but recipients in our own domains are checked as
// smtpd checks them, so a message for an unknown local user gets D 5.1.1
// for the whole message (QMQP has no per-recipient answer), a malformed
// address D 5.1.3, sender routing or an address literal D 5.7.1, and a
// lookup failure Z 4.3.0. The message is converted to the spool format: LF
// becomes CRLF (CRLF stays), and a bare CR gets D 5.5.2. The size limit
// (Options.MaxMessageBytes, and cleanup's per-domain limits) gives D 5.3.4.
// Accepted messages go through mta/cleanup with Protocol "QMQP".
//
// SECURITY: this package listens on the network (port 628 by convention; the
// qmqp role is off unless listen.qmqp is set). Unauthorized clients get
// their answer before anything else is read. Every length is checked before
// it is read (the whole request, the message, each address), reads and
// writes have an idle timeout, and concurrent connections are bounded. The
// message is held in an unlinked temporary file while the envelope that
// follows it is read, never in memory. The package writes nothing else: the
// queue is reached only through cleanup, and client_access and recipients
// are read through lookups.
package qmqpd

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
)

// Defaults of Options.
const (
	DefaultMaxMessageBytes = cleanup.DefaultMaxMessageBytes
	DefaultMaxRecipients   = 1000
	DefaultMaxConns        = 100
	DefaultTimeout         = 5 * time.Minute
	DefaultShutdownGrace   = 10 * time.Second
	// maxAddress bounds one address netstring: more than any address may
	// be (RFC 5321 4.5.3.1.3).
	maxAddress = 1000
	// lingerTime is how long a refused client may go on sending before the
	// connection is closed, so that it reads the refusal rather than a
	// reset.
	lingerTime = 5 * time.Second
)

// Enqueuer is what qmqpd needs of mta/cleanup.
type Enqueuer interface {
	Enqueue(ctx context.Context, m *cleanup.Message, body io.Reader) (queueID string, err error)
}

// Resolver is what qmqpd needs of lookups.
type Resolver interface {
	Resolve(ctx context.Context, addr string) (res lookups.Result, found bool, err error)
	ClientAccess(ctx context.Context, ip netip.Addr) (permitRelay, permitQMQP, reject bool, err error)
}

// Options configure a Server. Zero values take the defaults.
type Options struct {
	// MaxMessageBytes is the largest message accepted (50 MiB, as
	// cleanup's); cleanup lowers it per recipient domain.
	MaxMessageBytes int64
	// MaxRecipients bounds the recipients of one message (1000).
	MaxRecipients int
	// MaxConns bounds concurrent connections (100); more get Z 4.7.0.
	MaxConns int
	// Timeout bounds each read and write (5 minutes).
	Timeout time.Duration
	// TempDir holds the unlinked temporary file of each message while its
	// envelope is read (default: os.TempDir()).
	TempDir string
	// ShutdownGrace is how long connections in progress may run on once the
	// context is cancelled (10 s).
	ShutdownGrace time.Duration
	// Metrics, if set, counts connections and open sessions under the
	// listener name "qmqp" (internal/metrics' *Metrics).
	Metrics Metrics
}

// Metrics receives a count per connection: Connection when it is accepted,
// and the function it returns when it ends.
type Metrics interface {
	Connection(listener string) (end func())
}

// Deps are a Server's dependencies.
type Deps struct {
	Cleanup Enqueuer
	Lookups Resolver
	// Log receives one line per event with the session id; nil discards.
	Log *slog.Logger
}

// Server is a QMQP server. Create it with New.
type Server struct {
	opts Options
	deps Deps
	log  *slog.Logger
	sem  chan struct{}
}

// New returns a Server.
func New(opts Options, deps Deps) *Server {
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.MaxRecipients <= 0 {
		opts.MaxRecipients = DefaultMaxRecipients
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = DefaultShutdownGrace
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, deps: deps, log: log.With("service", "qmqpd"), sem: make(chan struct{}, opts.MaxConns)}
}

// ListenAndServe listens on the TCP address addr and serves until ctx is
// cancelled.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("qmqpd: listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve answers connections on ln until ctx is cancelled, then lets the
// connections in progress finish for Options.ShutdownGrace before closing
// them. It closes ln, and returns nil after a cancellation.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	s.log.Info("qmqp listening", "addr", ln.Addr().String())

	var wg sync.WaitGroup
	var serveErr error
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if !errors.Is(err, net.ErrClosed) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			serveErr = fmt.Errorf("qmqpd: accept: %w", err)
			break
		}
		delay = 0
		end := func() {}
		if s.opts.Metrics != nil {
			end = s.opts.Metrics.Connection("qmqp")
		}
		select {
		case s.sem <- struct{}{}:
		default:
			end()
			wg.Go(func() {
				s.log.Warn("connection refused: too many connections", "client", remoteIP(c), "max", s.opts.MaxConns)
				s.refuse(c, envelope.TooManyConnections())
			})
			continue
		}
		wg.Go(func() {
			defer func() { end(); <-s.sem }()
			s.handle(hctx, c)
		})
	}
	_ = ln.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.opts.ShutdownGrace):
		s.log.Warn("qmqp connections still open after the grace period; closing them")
		hcancel()
		<-done
	}
	s.log.Info("qmqp stopped")
	return serveErr
}

// handle serves one connection: one message.
func (s *Server) handle(ctx context.Context, c net.Conn) {
	ip := remoteIP(c)
	log := s.log.With("session", rand.Text()[:10], "client", ip.String())
	stopClose := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stopClose()

	// Postfix qmqpd_authorized_clients: client_access permit_qmqp.
	_, permit, _, err := s.deps.Lookups.ClientAccess(ctx, ip)
	if err != nil {
		log.Warn("client access lookup failed", "err", err)
		s.refuse(c, envelope.LookupFailed())
		return
	}
	if !permit {
		log.Warn("client not authorized for QMQP")
		s.refuse(c, envelope.Reply{Code: 554, Enhanced: envelope.Status{5, 7, 1}, Text: "Client not authorized to use QMQP"})
		return
	}
	dc := &deadlineConn{c: c, timeout: s.opts.Timeout}
	rep, ok := s.receive(ctx, log, bufio.NewReaderSize(dc, 64<<10), ip)
	if !ok {
		_ = c.Close()
		return
	}
	if _, err := io.WriteString(dc, netstring(replyText(rep))); err != nil {
		log.Info("reply not sent", "err", err)
	}
	_ = c.Close()
}

// refuse answers before reading the request, then reads (and drops) what
// the client still sends for a moment, so that it reads the answer instead
// of a connection reset.
func (s *Server) refuse(c net.Conn, r envelope.Reply) {
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(lingerTime))
	if _, err := io.WriteString(c, netstring(replyText(r))); err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, c, s.opts.MaxMessageBytes+1<<20)
}

// replyText is the QMQP answer for a reply: K, Z or D, then the enhanced
// status and the text.
func replyText(r envelope.Reply) string {
	kind := "D"
	switch {
	case r.Code >= 200 && r.Code < 300:
		kind = "K"
	case r.Temporary():
		kind = "Z"
	}
	text := strings.TrimPrefix(r.String()[3:], " ")
	return kind + text
}

// netstring encodes s as a netstring.
func netstring(s string) string { return fmt.Sprintf("%d:%s,", len(s), s) }

// receive reads one QMQP request and enqueues its message. ok is false when
// the client went away or broke the protocol beyond an answer.
func (s *Server) receive(ctx context.Context, log *slog.Logger, br *bufio.Reader, ip netip.Addr) (envelope.Reply, bool) {
	// The whole request: the message, the sender and the recipients, each
	// a netstring with its framing.
	maxTotal := s.opts.MaxMessageBytes + 32 + int64(s.opts.MaxRecipients+1)*(maxAddress+8)
	total, err := readLength(br, maxTotal)
	if err != nil {
		return s.framingReply(log, err)
	}
	req := &io.LimitedReader{R: br, N: total}
	msgLen, err := readLength(req, s.opts.MaxMessageBytes)
	if err != nil {
		return s.framingReply(log, err)
	}

	tmp, err := os.CreateTemp(s.opts.TempDir, "qmqpd-*")
	if err != nil {
		log.Error("temporary file", "err", err)
		return envelope.StorageFull(), true
	}
	_ = os.Remove(tmp.Name()) // unlinked: nothing is left behind, whatever happens
	defer tmp.Close()
	bw := bufio.NewWriterSize(tmp, 64<<10)
	conv := &crlfWriter{w: bw}
	if _, err := io.CopyN(conv, req, msgLen); err != nil {
		var we *writeError
		if errors.As(err, &we) {
			log.Error("temporary file", "err", err)
			return envelope.StorageFull(), true
		}
		log.Info("message not received", "err", err)
		return envelope.Reply{}, false
	}
	if err := conv.finish(); err != nil {
		log.Error("temporary file", "err", err)
		return envelope.StorageFull(), true
	}
	if err := bw.Flush(); err != nil {
		log.Error("temporary file", "err", err)
		return envelope.StorageFull(), true
	}
	if err := expectComma(req); err != nil {
		return s.framingReply(log, err)
	}
	sender, err := readNetstring(req, maxAddress)
	if err != nil {
		return s.framingReply(log, err)
	}
	var rcpts []string
	for req.N > 0 {
		if len(rcpts) >= s.opts.MaxRecipients {
			log.Info("message refused", "why", "too many recipients")
			return envelope.Reply{Code: 552, Enhanced: envelope.Status{5, 5, 3}, Text: "Too many recipients"}, true
		}
		r, err := readNetstring(req, maxAddress)
		if err != nil {
			return s.framingReply(log, err)
		}
		rcpts = append(rcpts, r)
	}
	if err := expectComma(br); err != nil {
		return s.framingReply(log, err)
	}
	if conv.bareCR {
		log.Info("message refused", "why", "bare CR")
		return envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 5, 2}, Text: "Bare CR not allowed in the message"}, true
	}
	if len(rcpts) == 0 {
		return envelope.Reply{Code: 554, Enhanced: envelope.Status{5, 5, 1}, Text: "No recipients"}, true
	}

	env := envelope.Envelope{}
	if conv.eightBit {
		env.BodyType = envelope.Body8BitMIME
	}
	if sender != "" {
		a, err := address.ParseInternal(sender)
		if err != nil {
			log.Info("message refused", "from", printable(sender), "err", err)
			return envelope.BadSenderSyntax(), true
		}
		env.Sender = a.String()
		env.SMTPUTF8 = a.NeedsSMTPUTF8()
	}
	for _, raw := range rcpts {
		r, utf8, rep := s.recipient(ctx, log, raw)
		if rep != nil {
			return *rep, true
		}
		env.Recipients = append(env.Recipients, r)
		env.SMTPUTF8 = env.SMTPUTF8 || utf8
	}

	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		log.Error("temporary file", "err", err)
		return envelope.StorageFull(), true
	}
	msg := &cleanup.Message{Envelope: env, Client: cleanup.Client{Addr: ip.String(), Protocol: "QMQP"}}
	id, err := s.deps.Cleanup.Enqueue(ctx, msg, bufio.NewReaderSize(tmp, 64<<10))
	if err != nil {
		var rep envelope.Reply
		if !errors.As(err, &rep) || !(rep.Temporary() || rep.Permanent()) {
			log.Error("enqueue failed", "err", err)
			rep = envelope.InternalError("")
		}
		log.Info("message refused", "reply", rep.String())
		return rep, true
	}
	log.Info("queued", "queue_id", id, "from", env.Sender, "nrcpt", len(env.Recipients), "size", msgLen)
	return envelope.Queued(id), true
}

// recipient checks one recipient. QMQP clients may relay, but an unknown
// user of one of our domains is refused, as smtpd refuses it at RCPT time.
func (s *Server) recipient(ctx context.Context, log *slog.Logger, raw string) (envelope.Recipient, bool, *envelope.Reply) {
	a, err := address.ParseInternal(raw)
	if err != nil {
		log.Info("message refused", "to", printable(raw), "err", err)
		rep := envelope.BadRecipientSyntax()
		return envelope.Recipient{}, false, &rep
	}
	// No sender-specified routing or address literals (RFC 5321 3.6.1
	// and 7.1), as smtpd.
	if address.HasRouting(a.Local) || address.IsIPLiteral(a.Domain) {
		log.Info("message refused", "to", printable(raw), "why", "routing or address literal")
		rep := envelope.RelayDenied(a.String())
		return envelope.Recipient{}, false, &rep
	}
	res, found, err := s.deps.Lookups.Resolve(ctx, raw)
	switch {
	case err != nil && errors.Is(err, lookups.ErrBadAddress):
		rep := envelope.BadRecipientSyntax()
		return envelope.Recipient{}, false, &rep
	case err != nil && lookups.Permanent(err):
		// A loop or a limit: cleanup queues it to bounce.
	case err != nil:
		// A lookup error is never "unknown user" (Postfix resolve_class).
		log.Warn("recipient lookup failed", "to", printable(raw), "err", err)
		rep := envelope.LookupFailed()
		return envelope.Recipient{}, false, &rep
	case found, res.Domain == lookups.DomainRemote:
	default:
		log.Info("message refused", "to", printable(raw), "why", "unknown user")
		rep := envelope.UnknownUser(a.String())
		return envelope.Recipient{}, false, &rep
	}
	return envelope.Recipient{Address: a.String()}, a.NeedsSMTPUTF8(), nil
}

// framingReply answers a broken request: a request or message over the
// limit gets D 5.3.4; a client that went away gets nothing; other framing
// errors get D 5.5.2 (a protocol error is not going to fix itself).
func (s *Server) framingReply(log *slog.Logger, err error) (envelope.Reply, bool) {
	switch {
	case errors.Is(err, errTooLong):
		log.Info("message refused", "why", "size limit", "err", err)
		return envelope.MessageTooBig(), true
	case errors.Is(err, errFormat):
		log.Info("protocol error", "err", err)
		return envelope.Reply{Code: 554, Enhanced: envelope.Status{5, 5, 2}, Text: "Protocol error: malformed netstring"}, true
	}
	log.Info("message not received", "err", err)
	return envelope.Reply{}, false
}

// deadlineConn sets a fresh deadline before each read and write.
type deadlineConn struct {
	c       net.Conn
	timeout time.Duration
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	_ = d.c.SetReadDeadline(time.Now().Add(d.timeout))
	return d.c.Read(p)
}

func (d *deadlineConn) Write(p []byte) (int, error) {
	_ = d.c.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.c.Write(p)
}

func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// printable makes a client string safe to log.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
