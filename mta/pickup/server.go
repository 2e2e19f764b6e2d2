package pickup

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
)

// Defaults of Options.
const (
	DefaultMaxRecipients  = 1000
	DefaultMaxHeaderBytes = 1 << 20
	DefaultMaxConns       = 100
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultShutdownGrace  = 10 * time.Second
)

// Limits of the request lines.
const (
	maxRequestLine  = 4096 // one line of a request (an address, a full name)
	maxChunkSize    = 1 << 20
	maxExtraRequest = 16 // lines of a SUBMIT request besides rcpt lines
)

// Enqueuer is what pickup needs of mta/cleanup.
type Enqueuer interface {
	Enqueue(ctx context.Context, m *cleanup.Message, body io.Reader) (queueID string, err error)
}

// Resolver is what pickup needs of lookups.
type Resolver interface {
	Resolve(ctx context.Context, addr string) (res lookups.Result, found bool, err error)
}

// Options configure a Server. Zero values take the defaults.
type Options struct {
	// Path is the socket's path (<spool>/pickup.sock); ListenAndServe
	// creates it.
	Path string
	// Hostname is this host's name, in the SMTP greeting (default: the
	// system's host name).
	Hostname string
	// MyOrigin is the domain that qualifies unqualified addresses and makes
	// the default sender user@MyOrigin (Postfix's myorigin; default:
	// Hostname).
	MyOrigin string
	// Node restricts SHOWQ to this node's messages ("" lists every node).
	Node string
	// TrustedUIDs may use any envelope sender and see the whole queue, as
	// root and the daemon's own user do: the mail owner.
	TrustedUIDs []uint32
	// RecipientDelimiter separates an address extension ("+" by default):
	// a user may send as user+ext@MyOrigin.
	RecipientDelimiter string
	// MaxRecipients bounds the recipients of one message (1000).
	MaxRecipients int
	// MaxHeaderBytes bounds the header block of a SUBMIT message, which is
	// kept in memory while it is edited (1 MiB); more gets 552 5.3.4.
	MaxHeaderBytes int
	// MaxConns bounds concurrent connections (100); more get 421 4.3.2.
	MaxConns int
	// IdleTimeout bounds each read and write (5 minutes).
	IdleTimeout time.Duration
	// ShutdownGrace is how long connections in progress may run on once
	// the context is cancelled (10 s).
	ShutdownGrace time.Duration
	// Metrics, if set, counts connections and open sessions under the
	// listener name "pickup" (internal/metrics' *Metrics).
	Metrics Metrics
}

// Metrics receives a count per connection: Connection when it is accepted,
// and the function it returns when it ends.
type Metrics interface {
	Connection(listener string) (end func())
}

// Deps are a Server's dependencies.
type Deps struct {
	// Store reads the local_sender table and the queue (SHOWQ).
	Store *store.Store
	// Cleanup enqueues messages: the only way into the queue.
	Cleanup Enqueuer
	// Lookups checks recipients.
	Lookups Resolver
	// Signer, if set, DKIM-signs each message with the key of its From:
	// domain when the local user may use every From: address as an
	// envelope sender (DESIGN "Signing authority": the same local_sender
	// permission as for the envelope sender, so a web server's user cannot
	// sign as a hosted domain it was not granted). Otherwise the Signer's
	// policy applies: 553 5.7.1, or no signature. *dkimsign.Signer.
	Signer cleanup.Signer
	// Log receives one line per event, with the session id; nil discards.
	Log *slog.Logger
}

// Server is the pickup service. Create it with New; it is safe for
// concurrent use.
type Server struct {
	opts Options
	deps Deps
	log  *slog.Logger
	euid uint32
	sem  chan struct{}
}

// New returns a Server.
func New(opts Options, deps Deps) *Server {
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
		if opts.Hostname == "" {
			opts.Hostname = "localhost"
		}
	}
	if opts.MyOrigin == "" {
		opts.MyOrigin = opts.Hostname
	}
	opts.MyOrigin = strings.TrimSuffix(strings.ToLower(opts.MyOrigin), ".")
	if opts.RecipientDelimiter == "" {
		opts.RecipientDelimiter = "+"
	}
	if opts.MaxRecipients <= 0 {
		opts.MaxRecipients = DefaultMaxRecipients
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = DefaultShutdownGrace
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		opts: opts,
		deps: deps,
		log:  log.With("service", "pickup"),
		euid: uint32(os.Geteuid()),
		sem:  make(chan struct{}, opts.MaxConns),
	}
}

// ListenAndServe creates the socket at Options.Path (see Listen) and serves
// it until ctx is cancelled; the socket is removed when it returns.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := Listen(s.opts.Path, s.log)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve answers connections on ln until ctx is cancelled, then lets the
// connections in progress finish for Options.ShutdownGrace before closing
// them. It closes ln. It returns nil after a cancellation, or the error
// that stopped it.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	// Connections run under their own context, cancelled after the grace
	// period, so that a submission in progress at shutdown can finish.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()

	smtpLn := newChanListener(ln.Addr())
	srv := s.newSMTPServer(hctx)
	smtpDone := make(chan struct{})
	go func() {
		defer close(smtpDone)
		if err := srv.Serve(smtpLn); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("smtp sessions stopped", "err", err)
		}
	}()

	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	s.log.Info("pickup listening", "path", ln.Addr().String())

	var wg sync.WaitGroup
	var serveErr error
	var delay time.Duration
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				// EMFILE and the like: wait and try again.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			serveErr = fmt.Errorf("pickup: accept: %w", err)
			break
		}
		delay = 0
		end := func() {}
		if s.opts.Metrics != nil {
			end = s.opts.Metrics.Connection("pickup")
		}
		select {
		case s.sem <- struct{}{}:
		default:
			end()
			s.busy(c)
			continue
		}
		wg.Add(1)
		go func() {
			handedOff := false
			defer func() {
				if !handedOff {
					end()
					<-s.sem
					wg.Done()
				}
			}()
			handedOff = s.handle(hctx, c, smtpLn, func() { end(); <-s.sem; wg.Done() })
		}()
	}
	_ = ln.Close()
	_ = smtpLn.Close() // no new SMTP sessions

	// Let connections finish, then cut them.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.opts.ShutdownGrace):
		s.log.Warn("pickup connections still open after the grace period; closing them")
		hcancel()
		_ = srv.Close() // closes the SMTP sessions' connections
		<-done
	}
	hcancel()
	_ = srv.Close()
	<-smtpDone
	s.log.Info("pickup stopped")
	return serveErr
}

// signCheck returns the cleanup Message.Check that signs u's message, or
// nil without a Signer.
func (s *Server) signCheck(u *localUser) func(context.Context, io.Reader) (string, error) {
	if s.deps.Signer == nil {
		return nil
	}
	return cleanup.SignCheck(s.deps.Signer, func(ctx context.Context, addr string) (bool, error) {
		a, err := s.parseAddr(addr, true)
		if err != nil {
			return false, nil
		}
		ok, _, err := s.senderAllowed(ctx, u, a)
		return ok, err
	})
}

// busy answers a connection over the limit.
func (s *Server) busy(c *net.UnixConn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeReply(c, envelope.Reply{Code: 421, Enhanced: envelope.Status{4, 3, 2}, Text: "Too many connections, try again later"})
	_ = c.Close()
	s.log.Warn("connection refused: too many connections", "max", s.opts.MaxConns)
}

// localUser is the identity of a connection's peer.
type localUser struct {
	uid        uint32
	name       string
	fullName   string // from the password database (GECOS)
	privileged bool   // root, the daemon's user, or a trusted uid
}

// identify names the peer of c from its credentials.
func (s *Server) identify(c *net.UnixConn) (*localUser, error) {
	uid, err := peerUID(c)
	if err != nil {
		return nil, err
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return &localUser{uid: uid}, fmt.Errorf("look up uid %d: %w", uid, err)
	}
	full, _, _ := strings.Cut(u.Name, ",") // GECOS: full name, room, phones
	return &localUser{
		uid:        uid,
		name:       u.Username,
		fullName:   full,
		privileged: uid == 0 || uid == s.euid || slices.Contains(s.opts.TrustedUIDs, uid),
	}, nil
}

// handle serves one connection. It returns true when the connection was
// handed to the SMTP server, which then owns it and calls release when it
// closes.
func (s *Server) handle(ctx context.Context, c *net.UnixConn, smtpLn *chanListener, release func()) (handedOff bool) {
	id := newSessionID()
	log := s.log.With("session", id)
	stopClose := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer func() {
		if !handedOff {
			stopClose()
			_ = c.Close()
		}
	}()
	dc := &deadlineConn{c: c, idle: s.opts.IdleTimeout}
	u, err := s.identify(c)
	if err != nil {
		uid := "unknown"
		if u != nil {
			uid = strconv.FormatUint(uint64(u.uid), 10)
		}
		log.Warn("local user refused", "uid", uid, "err", err)
		_ = writeReply(dc, envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 7, 1},
			Text: "Local user id " + uid + " has no login name"})
		return false
	}
	log = log.With("local_user", u.name, "uid", u.uid)
	br := bufio.NewReaderSize(dc, 16<<10)
	line, err := readLine(br, maxRequestLine)
	if err != nil {
		log.Info("no request", "err", err)
		return false
	}
	switch strings.ToUpper(line) {
	case "SUBMIT":
		s.submit(ctx, log, u, br, dc)
	case "SHOWQ":
		s.showq(ctx, log, u, dc)
	case "SMTP":
		stopClose() // the SMTP server closes it from now on
		lc := &localConn{UnixConn: c, r: br, user: u, id: id, log: log, release: release}
		if !smtpLn.push(lc) {
			_ = writeReply(dc, envelope.Reply{Code: 421, Enhanced: envelope.Status{4, 3, 2}, Text: "Service shutting down"})
			return false
		}
		return true
	default:
		log.Info("unknown request", "request", printable(line))
		_ = writeReply(dc, envelope.Reply{Code: 500, Enhanced: envelope.Status{5, 5, 1}, Text: "Unknown request; expected SUBMIT, SMTP or SHOWQ"})
	}
	return false
}

// deadlineConn sets a fresh deadline before each read and write: an idle
// timeout rather than a total one, so a large message may take its time.
type deadlineConn struct {
	c    net.Conn
	idle time.Duration
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	_ = d.c.SetReadDeadline(time.Now().Add(d.idle))
	return d.c.Read(p)
}

func (d *deadlineConn) Write(p []byte) (int, error) {
	_ = d.c.SetWriteDeadline(time.Now().Add(d.idle))
	return d.c.Write(p)
}

// writeReply writes r as one protocol line: "code x.y.z text" LF.
func writeReply(w io.Writer, r envelope.Reply) error {
	_, err := io.WriteString(w, r.String()+"\n")
	return err
}

// readLine reads one request line ended by LF, without the line end (and a
// CR before it), of at most max bytes.
func readLine(br *bufio.Reader, max int) (string, error) {
	var b []byte
	for {
		frag, err := br.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > max+2 {
			return "", errLineTooLong
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(b) > 0 {
			return "", io.ErrUnexpectedEOF
		}
		return "", err
	}
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return string(b), nil
}

var errLineTooLong = errors.New("request line too long")

// printable makes a client string safe to log: control characters become
// '?', and it is cut to 200 bytes.
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

// newSessionID returns a short random id for log lines.
func newSessionID() string {
	return rand.Text()[:10]
}
