package pickup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/emersion/go-smtp"

	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
)

// newSMTPServer returns the go-smtp server of sendmail -bs sessions. Its
// sessions run under ctx.
func (s *Server) newSMTPServer(ctx context.Context) *smtp.Server {
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		lc, ok := c.Conn().(*localConn)
		if !ok {
			return nil, errors.New("pickup: smtp session on a foreign connection")
		}
		lc.log.Info("smtp session")
		return &smtpSession{srv: s, ctx: ctx, lc: lc, sc: c, log: lc.log}, nil
	}))
	srv.Domain = s.opts.Hostname
	srv.MaxRecipients = s.opts.MaxRecipients
	srv.ReadTimeout = s.opts.IdleTimeout
	srv.WriteTimeout = s.opts.IdleTimeout
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ErrorLog = errorLog{s.log}
	return srv
}

// errorLog sends go-smtp's own messages to slog.
type errorLog struct{ log *slog.Logger }

func (e errorLog) Printf(format string, v ...any) { e.log.Warn("smtp: " + fmt.Sprintf(format, v...)) }
func (e errorLog) Println(v ...any)               { e.log.Warn("smtp: " + strings.TrimSpace(fmt.Sprintln(v...))) }

// smtpSession is one sendmail -bs session: SMTP from a local user, under
// the policy of SUBMIT.
type smtpSession struct {
	srv *Server
	ctx context.Context
	lc  *localConn
	sc  *smtp.Conn
	log *slog.Logger

	// mu guards the transaction: with BDAT, go-smtp runs Data in its own
	// goroutine, so Reset may run while Data reads.
	mu     sync.Mutex
	env    envelope.Envelope
	mailOK bool
}

func (s *smtpSession) reject(err error) *smtp.SMTPError {
	rep := replyOf(err, s.log)
	s.log.Info("smtp command refused", "reply", rep.String())
	return rep.ToSMTP()
}

// Reset discards the transaction (RSET, or a new MAIL).
func (s *smtpSession) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.env, s.mailOK = envelope.Envelope{}, false
}

// Logout ends the session.
func (s *smtpSession) Logout() error {
	s.log.Info("smtp session ended")
	return nil
}

// Mail checks the sender against the local user's permission (RFC 5321
// 4.1.1.2; Postfix local_login_sender_maps).
func (s *smtpSession) Mail(from string, opts *smtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mailOK = false
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	sender, utf8, err := s.srv.sender(s.ctx, s.log, s.lc.user, from, true, false)
	if err != nil {
		return s.reject(err)
	}
	if utf8 && !opts.UTF8 {
		return s.reject(envelope.NonASCIIAddress()) // RFC 6531 3.5
	}
	s.env = envelope.Envelope{
		Sender:   sender,
		BodyType: string(opts.Body),
		SMTPUTF8: opts.UTF8,
		DSNRet:   string(opts.Return),
		DSNEnvID: opts.EnvelopeID,
	}
	s.mailOK = true
	return nil
}

// Rcpt checks a recipient (RFC 5321 4.1.1.3) as SUBMIT does.
func (s *smtpSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mailOK {
		return s.reject(envelope.BadSequence("need MAIL command"))
	}
	if len(s.env.Recipients) >= s.srv.opts.MaxRecipients {
		return s.reject(envelope.TooManyRecipients()) // RFC 5321 4.5.3.1.10
	}
	r, utf8, err := s.srv.recipient(s.ctx, s.log, to, true)
	if err != nil {
		return s.reject(err)
	}
	if utf8 && !s.env.SMTPUTF8 {
		return s.reject(envelope.NonASCIIAddress()) // RFC 6531 3.5
	}
	if opts != nil {
		for _, n := range opts.Notify {
			r.DSNNotify = append(r.DSNNotify, string(n))
		}
		if opts.OriginalRecipient != "" {
			r.DSNORcpt = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	s.env.Recipients = append(s.env.Recipients, r)
	return nil
}

// Data hands the message to cleanup; the reply carries the queue id and
// comes only once the message is durably queued.
func (s *smtpSession) Data(r io.Reader) error {
	s.mu.Lock()
	env := s.env
	env.Recipients = slices.Clone(env.Recipients)
	ok := s.mailOK && len(env.Recipients) > 0
	s.mu.Unlock()
	if !ok {
		return s.reject(envelope.BadSequence("need RCPT command"))
	}
	msg := &cleanup.Message{
		Envelope: env,
		Client: cleanup.Client{Protocol: "local", Helo: s.sc.Hostname(), LocalUser: s.lc.user.name,
			Submission: true},
		Check: s.srv.signCheck(s.lc.user),
	}
	id, err := s.srv.deps.Cleanup.Enqueue(s.ctx, msg, r)
	if err != nil {
		if errors.Is(err, smtp.ErrDataReset) {
			s.log.Info("message transfer aborted")
		}
		var rep envelope.Reply
		if errors.As(err, &rep) {
			return s.reject(rep)
		}
		s.log.Error("enqueue failed", "err", err)
		return envelope.Funnel(err, s.lc.id)
	}
	s.log.Info("queued", "queue_id", id, "from", env.Sender, "nrcpt", len(env.Recipients))
	return envelope.Queued(id).ToSMTP()
}

// localConn is a pickup connection handed to the SMTP server: reads go
// through the request reader (which may hold bytes already), and Close
// releases the connection's slot.
type localConn struct {
	*net.UnixConn
	r       io.Reader
	user    *localUser
	id      string
	log     *slog.Logger
	release func()
	once    sync.Once
}

func (c *localConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *localConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(c.release)
	return err
}

// chanListener hands connections to the SMTP server.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

// push hands c to the server; false if the listener is closed.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
