package smtpd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/milter"
)

// Kind is what a listener is for.
type Kind int

const (
	// MX receives mail for our domains from anywhere (port 25): no AUTH
	// unless Options.MXAuth, STARTTLS when a certificate is configured, the
	// null sender accepted.
	MX Kind = iota
	// Submission receives mail from our users (port 587, RFC 6409):
	// STARTTLS, then AUTH, which MAIL requires.
	Submission
	// Submissions is Submission over implicit TLS (port 465, RFC 8314).
	Submissions
)

func (k Kind) String() string {
	switch k {
	case MX:
		return "smtp"
	case Submission:
		return "submission"
	case Submissions:
		return "submissions"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Options configure a Server. Zero values take the defaults.
type Options struct {
	// Hostname is this host's name, in the greeting.
	Hostname string
	// Postmaster is the address that "RCPT TO:<postmaster>" without a domain
	// is written as in the session (default postmaster@Hostname); lookups
	// resolves the bare postmaster itself.
	Postmaster string
	// MaxMessageBytes is advertised in SIZE and checked against MAIL
	// FROM's SIZE= (default 50 MiB). cleanup enforces the exact limit,
	// lowered by the recipients' domains, at the end of DATA.
	MaxMessageBytes int64
	// SpaceCheck, when set, is asked at each MAIL FROM whether the spool
	// has room for a message of the given size (SIZE=, 0 when absent); its
	// error refuses the command, 452 4.3.1 for a full spool (envelope.
	// StorageFull), so a client is not told only after sending the whole
	// message (RFC 1870, Postfix's queue_minfree). FreeSpaceCheck makes one.
	SpaceCheck func(size int64) error
	// MaxRecipients bounds RCPT TO per transaction (default 1000).
	MaxRecipients int
	// MaxLineLength bounds a command line (default 2000, as go-smtp).
	MaxLineLength int
	// ReadTimeout bounds the wait for each command and each read of message
	// data (default 5 minutes, RFC 5321 4.5.3.2.7); WriteTimeout each reply
	// (default 5 minutes).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// HandshakeTimeout bounds a TLS handshake (default 30 s).
	HandshakeTimeout time.Duration
	// ShutdownTimeout is how long Serve waits for sessions to end once its
	// context is cancelled, before closing them (default 30 s).
	ShutdownTimeout time.Duration
	// MXAuth offers AUTH on the MX listener too (after STARTTLS).
	MXAuth bool
	// Limits are the per-client-address limits.
	Limits Limits
	// PregreetWait is how long the MX listener waits, after the first
	// line of a two-line banner ("220-"), before the rest of it; a client
	// that talks in that time gets "554 5.5.0" and is disconnected
	// (postscreen's pregreet test: spam bots do not wait for the banner).
	// 0 turns it off. Every connection waits this long before its first
	// command: 1 s catches the bots that pipeline blindly at no real cost
	// to mail servers, which wait minutes for a banner (RFC 5321
	// 4.5.3.2.1); postscreen uses 6 s but remembers passed clients, which
	// facteur does not.
	PregreetWait time.Duration
	// Metrics counts connections, open sessions and replies by listener
	// (internal/metrics' *Metrics); nil counts nothing.
	Metrics Metrics
}

// Metrics receives the counts of the listeners: Connection when a
// connection is accepted (its result is called when the session ends), Reply
// for every reply sent (a multi-line reply once). It must be safe for
// concurrent use; *metrics.Metrics is one.
type Metrics interface {
	Connection(listener string) (end func())
	Reply(listener string, code int)
}

type noMetrics struct{}

func (noMetrics) Connection(string) func() { return func() {} }
func (noMetrics) Reply(string, int)        {}

func (o *Options) setDefaults() {
	if o.Hostname == "" {
		o.Hostname = "localhost"
	}
	if o.Postmaster == "" {
		o.Postmaster = "postmaster@" + o.Hostname
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = cleanup.DefaultMaxMessageBytes
	}
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = 1000
	}
	if o.MaxLineLength <= 0 {
		o.MaxLineLength = 2000
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 5 * time.Minute
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 5 * time.Minute
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
}

// Enqueuer is the way into the queue: mta/cleanup's Cleanup. It returns the
// queue id only once the message is durably queued, and errors carrying an
// envelope.Reply.
type Enqueuer interface {
	Enqueue(ctx context.Context, m *cleanup.Message, body io.Reader) (queueID string, err error)
}

// Resolver answers the policy questions of a session: lookups' Resolver.
// Errors are never "not found": Resolve's permanent errors
// (lookups.Permanent) mean a bad address, any other is temporary.
type Resolver interface {
	Resolve(ctx context.Context, addr string) (res lookups.Result, found bool, err error)
	SenderAllowed(ctx context.Context, user, sender string) (bool, error)
	ClientAccess(ctx context.Context, ip netip.Addr) (permitRelay, permitQMQP, reject bool, err error)
}

// Authenticator checks AUTH credentials (MailboxAuth). It returns the
// mailbox address the client is logged in as, ErrAuthFailed for wrong
// credentials, or another error when it could not check.
type Authenticator interface {
	Authenticate(ctx context.Context, user, password string) (mailbox string, err error)
}

// Deps are a Server's collaborators.
type Deps struct {
	Cleanup Enqueuer
	Lookups Resolver
	// Auth checks AUTH credentials; nil offers no AUTH anywhere (and so
	// accepts no mail on submission).
	Auth Authenticator
	// TLS is the server TLS configuration (a CertReloader's TLSConfig); nil
	// offers no STARTTLS and cannot serve Submissions. TLS 1.2 is the
	// minimum whatever it says.
	TLS *tls.Config
	Log *slog.Logger

	// Abuse defence and mail authentication (see policy.go). Each is
	// optional: nil turns its check off.

	// DNSBL scores MX clients at connection time against the dnsbl table's
	// lists: a listed client gets 554 5.7.1 instead of the banner, and every
	// command after it is refused (client_access permit_relay networks are
	// not checked).
	DNSBL DNSBL
	// Greylist defers, on the MX listener, RCPT TO for the local domains
	// that greylist (451 4.7.1); authenticated clients, permit_relay
	// networks and DNSWL-allowlisted clients are exempt.
	Greylist Greylister
	// Messages is the per-client-address message rate (ratelimit.Anvil):
	// MAIL over it gets 450 4.7.1. Connection counts and rates stay with
	// Options.Limits, their one owner.
	Messages MessageRate
	// Outbound holds the per-mailbox and per-domain sending limits of
	// authenticated users (ratelimit.Outbound): 450 4.7.1 at MAIL or RCPT.
	Outbound Outbound
	// MsgAuth authenticates mail from unauthenticated MX clients that are
	// not in a permit_relay network: SPF of MAIL FROM (from the first
	// accepted RCPT on), DKIM and DMARC at the end of DATA, one Authentication-Results field under Options.Hostname,
	// and the recipient domains' DMARC failure policy (Policies, required
	// with it): 550 5.7.1 or a quarantine mark.
	MsgAuth  MsgAuth
	Policies DomainPolicies
	// Signer DKIM-signs mail of authenticated users whose From: they may
	// use (cleanup.SignCheck with Lookups.SenderAllowed; mta/dkimsign).
	Signer cleanup.Signer
	// Milters are the content filters of each listener kind (Postfix's
	// smtpd_milters, per service); a kind without a Client, or with an empty
	// one, has none (see milter.go).
	Milters map[Kind]*milter.Client
}

// Server runs SMTP listeners of any Kind over one set of dependencies and
// one set of per-client limits.
type Server struct {
	opts   Options
	deps   Deps
	log    *slog.Logger
	limits *limiter
	tls    *tls.Config
}

// New returns a Server.
func New(opts Options, deps Deps) *Server {
	opts.setDefaults()
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, deps: deps, log: deps.Log, limits: newLimiter(opts.Limits)}
	if deps.TLS != nil {
		s.tls = deps.TLS.Clone()
		if s.tls.MinVersion < tls.VersionTLS12 {
			s.tls.MinVersion = tls.VersionTLS12
		}
	}
	return s
}

// listenerState is what a connection needs to know of its listener.
type listenerState struct {
	kind      Kind
	tlsConfig *tls.Config // nil: no TLS on this listener
}

// ListenAndServe listens on the TCP address addr and serves it as Serve
// does.
func (s *Server) ListenAndServe(ctx context.Context, kind Kind, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen: %w", kind, err)
	}
	return s.Serve(ctx, kind, ln)
}

// Serve serves ln as a listener of the given kind until ctx is cancelled;
// then it stops accepting, waits up to Options.ShutdownTimeout for sessions
// to end, closes the rest and returns nil. It returns an error when ln fails.
func (s *Server) Serve(ctx context.Context, kind Kind, ln net.Listener) error {
	ls := &listenerState{kind: kind, tlsConfig: s.tls}
	if kind == Submissions && s.tls == nil {
		ln.Close()
		return fmt.Errorf("%s: no TLS certificate configured", kind)
	}
	gs := smtp.NewServer(smtp.BackendFunc(s.newSession))
	gs.Domain = s.opts.Hostname
	gs.MaxMessageBytes = s.opts.MaxMessageBytes
	gs.MaxRecipients = s.opts.MaxRecipients
	gs.MaxLineLength = s.opts.MaxLineLength
	gs.ReadTimeout = s.opts.ReadTimeout
	gs.WriteTimeout = s.opts.WriteTimeout
	// TLS is done by conn, beneath go-smtp (see conn); the session offers
	// AUTH only under TLS.
	gs.AllowInsecureAuth = true
	gs.EnableSMTPUTF8 = true
	gs.EnableDSN = true
	gs.ErrorLog = errorLog{s.log.With("listener", kind.String())}

	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
		case <-stopped:
			return
		}
		// Close the listener ourselves too: go-smtp's Shutdown closes only
		// the listeners its Serve has registered already.
		ln.Close()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ShutdownTimeout)
		defer cancel()
		if err := gs.Shutdown(sctx); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			s.log.Warn("sessions still open at shutdown; closing them", "listener", kind.String(), "err", err)
			gs.Close()
		}
	}()
	s.log.Info("listening", "listener", kind.String(), "addr", ln.Addr().String())
	err := gs.Serve(&listener{Listener: ln, srv: s, ls: ls})
	close(stopped)
	<-done
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: serve: %w", kind, err)
	}
	return nil
}

// errorLog sends go-smtp's internal error messages to slog.
type errorLog struct{ log *slog.Logger }

func (e errorLog) Printf(format string, v ...any) {
	e.log.Debug("smtp server: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (e errorLog) Println(v ...any) {
	e.log.Debug("smtp server: " + strings.TrimSpace(fmt.Sprintln(v...)))
}

// listener admits connections under the per-client limits and wraps them.
type listener struct {
	net.Listener
	srv *Server
	ls  *listenerState
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(raw)
		if why := l.srv.limits.admit(ip); why != admitOK {
			go l.srv.refuse(raw, l.ls.kind, ip, why)
			continue
		}
		info := l.srv.newConnInfo(ip, l.ls.kind)
		info.endMetrics = l.srv.opts.Metrics.Connection(l.ls.kind.String())
		return newConn(raw, l.srv, l.ls, info), nil
	}
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

// refuse answers a connection over a limit with 421 4.7.0 and closes it
// (RFC 5321 3.8). On implicit TLS nothing can be said before the handshake,
// which is what the limit saves: the connection is just closed.
func (s *Server) refuse(raw net.Conn, kind Kind, ip netip.Addr, why int) {
	defer raw.Close()
	r := envelope.TooManyConnections()
	reason := "too many connections"
	switch why {
	case admitRate:
		r, reason = envelope.RateLimited(), "connection rate"
	case admitErrors:
		r, reason = envelope.RateLimited(), "too many errors"
	}
	s.log.Info("connection refused", "client", ip.String(), "listener", kind.String(), "reason", reason)
	s.opts.Metrics.Connection(kind.String())() // counted, and no session
	if kind == Submissions {
		return
	}
	s.opts.Metrics.Reply(kind.String(), r.Code)
	raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
	e := r.ToSMTP()
	fmt.Fprintf(raw, "%03d %d.%d.%d %s\r\n", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

// connInfo is one connection's identity, context, logger and counters,
// shared by conn and session.
type connInfo struct {
	srv    *Server
	id     string
	ip     netip.Addr
	kind   Kind
	start  time.Time
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	conn   *conn
	// endMetrics ends the session in the metrics (Options.Metrics).
	endMetrics func()

	dnswl        atomic.Bool // a DNS allow list vouches for the client
	bytesIn      atomic.Int64
	badCommands  atomic.Int64
	authFailures atomic.Int64

	mu       sync.Mutex
	helo     string
	authUser string
	messages int
	rcpts    int
	rejected int
	end      string

	// milters is the milter side of the connection, from its first HELO
	// (milter.go); nil without milters.
	milters *milterConn
}

func (s *Server) newConnInfo(ip netip.Addr, kind Kind) *connInfo {
	id := newSessionID()
	ctx, cancel := context.WithCancel(context.Background())
	return &connInfo{
		srv: s, id: id, ip: ip, kind: kind, start: time.Now(), ctx: ctx, cancel: cancel,
		log: s.log.With("session", id, "client", ip.String(), "listener", kind.String()),
	}
}

// newSessionID returns 12 random characters of [0-9a-z].
func newSessionID() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [12]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// setEnd records why the session ended, when it was not the client's
// choice; the first reason wins.
func (i *connInfo) setEnd(reason string) {
	i.mu.Lock()
	if i.end == "" {
		i.end = reason
	}
	i.mu.Unlock()
}

// finish logs the session's summary line and releases its slot.
func (i *connInfo) finish() {
	i.cancel()
	i.srv.limits.release(i.ip)
	if i.endMetrics != nil {
		i.endMetrics()
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	tlsDesc := ""
	if st := i.conn.TLS(); st != nil {
		tlsDesc = tlsString(st)
	}
	end := i.end
	if end == "" {
		end = "disconnect"
	}
	i.log.Info("session end",
		"helo", i.helo, "tls", tlsDesc, "auth_user", i.authUser,
		"messages", i.messages, "rcpts", i.rcpts, "rejected", i.rejected,
		"bad_commands", i.badCommands.Load(), "auth_failures", i.authFailures.Load(),
		"bytes_in", i.bytesIn.Load(), "duration", time.Since(i.start).Round(time.Millisecond).String(),
		"end", end)
}

// tlsString describes a TLS connection as Received: shows it:
// "TLSv1.3 TLS_AES_128_GCM_SHA256".
func tlsString(st *tls.ConnectionState) string {
	v := "TLS"
	switch st.Version {
	case tls.VersionTLS10:
		v = "TLSv1"
	case tls.VersionTLS11:
		v = "TLSv1.1"
	case tls.VersionTLS12:
		v = "TLSv1.2"
	case tls.VersionTLS13:
		v = "TLSv1.3"
	}
	return v + " " + tls.CipherSuiteName(st.CipherSuite)
}
