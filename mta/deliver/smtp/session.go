package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/envelope"
)

// session is one SMTP connection after EHLO (and STARTTLS and AUTH). It is
// used by one delivery at a time.
type session struct {
	c    *gosmtp.Client
	raw  net.Conn // the TCP connection, closed to abort
	key  string   // the destination it belongs to
	host string
	addr netip.Addr
	port int
	tls  bool
	auth bool

	born time.Time
	uses int

	stop  func() bool // stops the context watch of the current delivery
	timer *time.Timer // while idle in the pool (guarded by the pool's lock)
}

// relay names the server as Postfix logs it: host[addr]:port.
func (s *session) relay() string { return relayName(s.host, s.addr, s.port) }

func relayName(host string, addr netip.Addr, port int) string {
	return fmt.Sprintf("%s[%s]:%d", host, addr, port)
}

// watch closes the connection when ctx ends, so that every read and write
// of the session stops with the caller's deadline.
func (s *session) watch(ctx context.Context) {
	s.stop = context.AfterFunc(ctx, func() { s.raw.Close() })
}

// unwatch stops the watch and reports whether the connection is still open
// (the context did not end).
func (s *session) unwatch() bool {
	if s.stop == nil {
		return true
	}
	ok := s.stop()
	s.stop = nil
	return ok
}

// credential is what AUTH sends.
type credential struct{ user, pass string }

// attemptFailure is why a session could not be set up.
type attemptFailure struct {
	res deliver.Result
	// greeted: the server answered, so a session was used up (MaxSessions).
	greeted bool
	// handshake: the TLS handshake failed (TLSMay retries without TLS).
	handshake bool
}

// open connects to addr and sets up a session: greeting, EHLO, STARTTLS as
// pol says, AUTH when cred is set. With TLSMay, a failed TLS handshake is
// followed by a second connection without TLS, as Postfix does.
func (a *Agent) open(ctx context.Context, log *slog.Logger, d dest, host string, addr netip.Addr, pol TLSPolicy, cred *credential) (*session, *attemptFailure) {
	s, f := a.dial(ctx, log, d, host, addr, pol, cred, false)
	if f != nil && f.handshake && pol == TLSMay && ctx.Err() == nil {
		log.Info("TLS handshake failed, trying again without TLS",
			"relay", relayName(host, addr, d.port), "reason", f.res.Reply.Text)
		s, f = a.dial(ctx, log, d, host, addr, pol, cred, true)
	}
	return s, f
}

func (a *Agent) dial(ctx context.Context, log *slog.Logger, d dest, host string, addr netip.Addr, pol TLSPolicy, cred *credential, plain bool) (*session, *attemptFailure) {
	relay := relayName(host, addr, d.port)
	dctx, cancel := context.WithTimeout(ctx, a.o.ConnectTimeout)
	raw, err := a.o.Dialer.DialContext(dctx, "tcp", netip.AddrPortFrom(addr, uint16(d.port)).String())
	cancel()
	if err != nil {
		text := fmt.Sprintf("connect to %s: %s", relay, connectError(err))
		log.Info("connect failed", "relay", relay, "error", err)
		return nil, &attemptFailure{res: local(451, envelope.Status{4, 4, 1}, text)}
	}
	s := &session{raw: raw, key: d.key, host: host, addr: addr, port: d.port, born: time.Now()}
	s.watch(ctx)
	fail := func(f *attemptFailure) (*session, *attemptFailure) {
		s.unwatch()
		raw.Close()
		f.res.Relay, f.res.RemoteMTA = relay, host
		log.Info("session failed", "relay", relay, "reply", f.res.Reply.String())
		return nil, f
	}
	quitFail := func(f *attemptFailure) (*session, *attemptFailure) {
		a.quitClient(s.c)
		return fail(f)
	}

	dc := &deadlineConn{Conn: raw, timeout: a.o.DataXferTimeout}
	s.c = gosmtp.NewClient(dc)
	s.c.CommandTimeout = a.o.HeloTimeout
	if err := s.c.Hello(a.o.Hostname); err != nil {
		return fail(&attemptFailure{res: sessionError(s, err, "receiving the initial server greeting or performing the EHLO handshake", "host "+relay+" refused to talk to me"), greeted: greeted(err)})
	}

	offered, _ := s.c.Extension("STARTTLS")
	switch {
	case pol == TLSNone || plain:
	case !offered && pol == TLSMay:
	case !offered:
		return quitFail(&attemptFailure{greeted: true, res: local(451, envelope.Status{4, 7, 4},
			"TLS is required, but was not offered by host "+relay)})
	default:
		code, text, err := rawCommand(dc, "STARTTLS", a.o.StartTLSTimeout)
		if err != nil {
			return fail(&attemptFailure{greeted: true, res: lost(s, err, "sending STARTTLS")})
		}
		if code != 220 {
			r := remoteReply(code, text)
			if pol == TLSMay {
				// The session is still in plaintext and in step: go on.
				log.Info("STARTTLS refused, continuing without TLS", "relay", relay, "reply", r.String())
				break
			}
			return quitFail(&attemptFailure{greeted: true, res: local(451, envelope.Status{4, 7, 4},
				"TLS is required, but host "+relay+" refused to start TLS: "+r.String())})
		}
		// Plaintext that the old client may have buffered after the EHLO
		// reply is dropped with it (CVE-2011-0411).
		tc := tls.Client(dc, a.tlsConfig(host, pol))
		hctx, cancel := context.WithTimeout(ctx, a.o.StartTLSTimeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			st := envelope.Status{4, 7, 5}
			text := "Cannot start TLS: handshake failure with " + relay + ": " + err.Error()
			var ve *tls.CertificateVerificationError
			if errors.As(err, &ve) {
				text = "Server certificate not verified: " + relay + ": " + ve.Err.Error()
			}
			return fail(&attemptFailure{greeted: true, handshake: true, res: local(451, st, text)})
		}
		s.tls = true
		s.c = gosmtp.NewClient(&prefixConn{Conn: tc, prefix: []byte("220 " + host + " TLS\r\n")})
		s.c.CommandTimeout = a.o.HeloTimeout
		if err := s.c.Hello(a.o.Hostname); err != nil {
			return fail(&attemptFailure{greeted: true, res: sessionError(s, err, "performing the EHLO handshake after STARTTLS", "host "+relay+" refused to talk to me")})
		}
	}

	if cred != nil {
		if f, gone := a.authenticate(log, s, cred); f != nil {
			f.greeted = true
			if gone {
				return fail(f)
			}
			return quitFail(f)
		}
	}
	return s, nil
}

// authenticate runs AUTH PLAIN (or LOGIN when PLAIN is not offered), never
// over plaintext unless AllowPlaintextAuth. A server that does not offer
// AUTH gets the mail without it, as Postfix does. A rejection defers, so that
// a wrong password does not bounce mail (Postfix smtp_sasl_auth_soft_bounce).
// gone reports that the connection was lost.
func (a *Agent) authenticate(log *slog.Logger, s *session, cred *credential) (f *attemptFailure, gone bool) {
	relay := s.relay()
	if ok, _ := s.c.Extension("AUTH"); !ok {
		log.Warn("relay host does not offer AUTH; sending without authentication", "relay", relay)
		return nil, false
	}
	if !s.tls && !a.o.AllowPlaintextAuth {
		return &attemptFailure{res: local(454, envelope.Status{4, 7, 0},
			"SASL authentication failed; cannot authenticate to server "+relay+": TLS is not established")}, false
	}
	var mech sasl.Client
	switch {
	case s.c.SupportsAuth(sasl.Plain):
		mech = sasl.NewPlainClient("", cred.user, cred.pass)
	case s.c.SupportsAuth(sasl.Login):
		mech = sasl.NewLoginClient(cred.user, cred.pass)
	default:
		return &attemptFailure{res: local(454, envelope.Status{4, 7, 0},
			"SASL authentication failed; cannot authenticate to server "+relay+": no mechanism available")}, false
	}
	s.c.CommandTimeout = a.o.CommandTimeout
	if err := s.c.Auth(mech); err != nil {
		var se *gosmtp.SMTPError
		if !errors.As(err, &se) {
			return &attemptFailure{res: lost(s, err, "authenticating")}, true
		}
		r := soften(remote(se))
		r.Text = "SASL authentication failed; server " + relay + " said: " + remote(se).String()
		return &attemptFailure{res: deliver.Result{Status: deliver.Deferred, Reply: r}}, false
	}
	s.auth = true
	return nil, false
}

// tlsConfig returns the client TLS configuration for host under pol.
func (a *Agent) tlsConfig(host string, pol TLSPolicy) *tls.Config {
	cfg := &tls.Config{}
	if a.o.TLSConfig != nil {
		cfg = a.o.TLSConfig.Clone()
	}
	cfg.ServerName = strings.TrimSuffix(host, ".")
	// RFC 7435: opportunistic and mandatory-but-unauthenticated TLS take any
	// certificate; only verify checks it against the host name.
	cfg.InsecureSkipVerify = pol != TLSVerify
	return cfg
}

// policy returns the TLS policy of d: by next hop or domain, else the default.
func (a *Agent) policy(d dest) TLSPolicy {
	if p, ok := a.o.TLSPolicies[d.key]; ok {
		return p
	}
	if p, ok := a.o.TLSPolicies[d.host]; ok {
		return p
	}
	return a.o.TLSPolicy
}

// quit ends a session politely: QUIT with a short timeout, then close.
func (a *Agent) quit(s *session) {
	s.unwatch()
	a.quitClient(s.c)
	s.raw.Close()
}

func (a *Agent) quitClient(c *gosmtp.Client) {
	if c == nil {
		return
	}
	c.CommandTimeout = a.o.QuitTimeout
	if err := c.Quit(); err != nil {
		c.Close()
	}
}

// greeted reports whether an error of Hello came after the server spoke.
func greeted(err error) bool {
	var se *gosmtp.SMTPError
	return errors.As(err, &se)
}

// sessionError turns an error of the greeting or EHLO into a temporary
// result: a 5yz reply there moves on to the next host like a 4yz one
// (Postfix smtp_skip_5xx_greeting), so it is softened to 4yz.
func sessionError(s *session, err error, while, refused string) deliver.Result {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		r := remote(se)
		soft := soften(r)
		soft.Text = refused + ": " + r.String()
		return deliver.Result{Status: deliver.Deferred, Reply: soft, Relay: s.relay(), RemoteMTA: s.host}
	}
	return lost(s, err, while)
}

// lost is the result of a connection that broke or timed out (4.4.2).
func lost(s *session, err error, while string) deliver.Result {
	text := "lost connection with " + s.relay() + " while " + while
	if isTimeout(err) {
		text = "conversation with " + s.relay() + " timed out while " + while
	}
	return deliver.Result{
		Status:    deliver.Deferred,
		Reply:     envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 4, 2}, Text: text},
		Relay:     s.relay(),
		RemoteMTA: s.host,
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// connectError shortens a dial error to its cause, as Postfix logs it
// ("Connection refused").
func connectError(err error) string {
	if isTimeout(err) {
		return "Connection timed out"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return strings.TrimPrefix(oe.Err.Error(), "connect: ")
	}
	return err.Error()
}

// remote converts a server's reply; a reply without an enhanced status gets
// class.0.0, so that every result carries a DSN status (RFC 3463 3.1).
func remote(se *gosmtp.SMTPError) envelope.Reply {
	r := envelope.FromSMTP(se)
	if r.Enhanced.IsZero() {
		if c := r.Code / 100; c == 2 || c == 4 || c == 5 {
			r.Enhanced = envelope.Status{c, 0, 0}
		}
	}
	return r
}

// remoteReply builds a reply from a code and the text of readReply.
func remoteReply(code int, text string) envelope.Reply {
	return remote(&gosmtp.SMTPError{Code: code, EnhancedCode: gosmtp.NoEnhancedCode, Message: text})
}

// soften turns a 5yz reply into its 4yz counterpart.
func soften(r envelope.Reply) envelope.Reply {
	if r.Code >= 500 && r.Code <= 599 {
		r.Code -= 100
		if r.Enhanced.Valid() {
			r.Enhanced[0] = 4
		}
	}
	return r
}

// result turns a server's reply to one recipient into a result: 2yz
// delivered, 5yz bounced, anything else deferred.
func result(s *session, r envelope.Reply) deliver.Result {
	st := deliver.Deferred
	switch {
	case r.Code >= 200 && r.Code <= 299:
		st = deliver.Delivered
	case r.Permanent():
		st = deliver.Bounced
	}
	return deliver.Result{Status: st, Reply: r, Relay: s.relay(), RemoteMTA: s.host}
}
