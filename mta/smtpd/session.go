package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/greylist"
	"github.com/facteur/facteur/mta/ratelimit"
)

// session is the go-smtp Session of one connection: the policy of every
// command. Every error it returns goes through fail, the one funnel
// (envelope.Funnel): replies keep their code, anything else becomes
// "451 4.3.0 Internal error, session ID" and is logged.
//
// With BDAT, go-smtp runs Data in its own goroutine while Reset and Logout
// may run on the connection's goroutine, so the state is under mu; Data
// takes a copy of the envelope and does not hold mu while it reads.
type session struct {
	srv  *Server
	c    *conn
	info *connInfo
	sc   *smtp.Conn

	mu       sync.Mutex
	authUser string // the mailbox logged in as, "" before AUTH
	authMech string // the SASL mechanism of the last AUTH, for the milters
	access   *clientAccess
	mailOK   bool // MAIL was accepted in this transaction
	env      envelope.Envelope
	sendTx   *ratelimit.Transaction // outbound limits of an authenticated user
	wantSPF  bool                   // this transaction is to be authenticated
	spf      *spfCheck              // its SPF check, started at the first recipient
	lastSPF  *spfCheck              // the session's latest SPF check
}

type clientAccess struct{ permitRelay, reject bool }

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

// newSession is go-smtp's Backend: called at the first HELO or EHLO.
func (s *Server) newSession(sc *smtp.Conn) (smtp.Session, error) {
	c, ok := sc.Conn().(*conn)
	if !ok {
		return nil, envelope.InternalError("").ToSMTP()
	}
	c.info.mu.Lock()
	c.info.helo = sc.Hostname()
	c.info.mu.Unlock()
	if rep := s.milterGreet(c, sc.Hostname()); rep != nil {
		return nil, rep
	}
	return &session{srv: s, c: c, info: c.info, sc: sc}, nil
}

// fail is the funnel: it logs err unless it is a reply, and returns what
// go-smtp sends.
func (s *session) fail(op string, err error) *smtp.SMTPError {
	r := envelope.Funnel(err, s.info.id)
	var rep envelope.Reply
	var se *smtp.SMTPError
	if !errors.As(err, &rep) && !errors.As(err, &se) {
		s.info.log.Error(op+" failed", "err", err)
	}
	return r
}

// reject counts a refused command and returns its reply.
func (s *session) reject(r envelope.Reply, attrs ...any) *smtp.SMTPError {
	s.info.mu.Lock()
	s.info.rejected++
	s.info.mu.Unlock()
	s.info.log.Info("rejected", append([]any{"reply", r.String()}, attrs...)...)
	return r.ToSMTP()
}

// Reset discards the transaction.
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mailOK = false
	s.env = envelope.Envelope{}
	s.sendTx, s.spf, s.wantSPF = nil, nil, false
	if mc := s.info.milters; mc != nil {
		mc.abort(s.info.ctx)
	}
}

// Logout ends the session: its context is cancelled, so a BDAT Data still
// running stops.
func (s *session) Logout() error {
	s.info.cancel()
	return nil
}

// authAllowed reports whether AUTH is offered: on the submission listeners
// (and on MX when configured), under TLS only, with an authenticator.
func (s *session) authAllowed() bool {
	if s.srv.deps.Auth == nil || s.c.TLS() == nil {
		return false
	}
	return s.info.kind != MX || s.srv.opts.MXAuth
}

// AuthMechanisms lists the SASL mechanisms for EHLO: none before TLS (RFC
// 4954 4: no plaintext passwords in the clear).
func (s *session) AuthMechanisms() []string {
	if !s.authAllowed() {
		return nil
	}
	return []string{mechPlain, mechLogin}
}

// Auth starts a SASL exchange.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.srv.deps.Auth == nil || (s.info.kind == MX && !s.srv.opts.MXAuth) {
		return nil, replyAuthUnavailable().ToSMTP()
	}
	if s.c.TLS() == nil {
		return nil, replyEncryptionRequired().ToSMTP()
	}
	s.mu.Lock()
	s.authMech = strings.ToUpper(mech)
	s.mu.Unlock()
	switch strings.ToUpper(mech) {
	case mechPlain:
		return newPlainServer(s.checkCredentials), nil
	case mechLogin:
		return newLoginServer(s.checkCredentials), nil
	}
	return nil, replyUnknownMechanism().ToSMTP()
}

func (s *session) checkCredentials(user, password string) error {
	mbox, err := s.srv.deps.Auth.Authenticate(s.info.ctx, user, password)
	switch {
	case errors.Is(err, ErrAuthFailed):
		s.info.log.Info("authentication failed", "user", printable(user))
		return envelope.AuthFailed().ToSMTP()
	case err != nil:
		s.info.log.Error("authentication check failed", "user", printable(user), "err", err)
		return replyAuthTemporary().ToSMTP()
	}
	s.mu.Lock()
	s.authUser = mbox
	s.mu.Unlock()
	s.info.mu.Lock()
	s.info.authUser = mbox
	s.info.mu.Unlock()
	s.info.log.Info("authenticated", "user", mbox)
	return nil
}

// printable shortens and cleans a client-supplied string for the log.
func printable(s string) string {
	if len(s) > 100 {
		s = s[:100]
	}
	return strings.ToValidUTF8(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s), "?")
}

// clientAccessOf reads client_access for the client once per session.
func (s *session) clientAccessOf() (*clientAccess, error) {
	if s.access != nil {
		return s.access, nil
	}
	relay, _, reject, err := s.srv.deps.Lookups.ClientAccess(s.info.ctx, s.info.ip)
	if err != nil {
		return nil, err
	}
	s.access = &clientAccess{permitRelay: relay, reject: reject}
	return s.access, nil
}

// Mail checks the sender (RFC 5321 4.1.1.2).
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mailOK = false
	s.sendTx, s.spf, s.wantSPF = nil, nil, false
	s.info.mu.Lock()
	s.info.helo = s.sc.Hostname() // EHLO may have been repeated
	s.info.mu.Unlock()
	if s.info.kind != MX && s.authUser == "" {
		// RFC 6409 4.3 and RFC 4954 6: submission needs AUTH.
		return s.reject(envelope.AuthRequired())
	}
	acc, err := s.clientAccessOf()
	if err != nil {
		s.info.log.Warn("client access lookup failed", "err", err)
		return s.reject(envelope.LookupFailed())
	}
	if acc.reject && s.authUser == "" {
		return s.reject(replyClientRejected(s.info.ip.String()))
	}
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	sender := ""
	if from != "" {
		a, err := address.ParseInternal(from)
		if err != nil {
			return s.reject(envelope.BadSenderSyntax(), "from", printable(from))
		}
		if a.NeedsSMTPUTF8() && !opts.UTF8 {
			return s.reject(envelope.NonASCIIAddress(), "from", printable(from)) // RFC 6531 3.5
		}
		sender = a.String()
	}
	if s.authUser != "" {
		ok, err := s.srv.deps.Lookups.SenderAllowed(s.info.ctx, s.authUser, from)
		switch {
		case err != nil && lookups.Permanent(err):
			return s.reject(envelope.BadSenderSyntax(), "from", printable(from))
		case err != nil:
			s.info.log.Warn("sender permission lookup failed", "err", err)
			return s.reject(envelope.LookupFailed())
		case !ok:
			return s.reject(envelope.SenderNotOwned(from), "user", s.authUser)
		}
	}
	if opts.Size > s.srv.opts.MaxMessageBytes { // RFC 1870 6
		return s.reject(envelope.MessageTooBig(), "size", opts.Size)
	}
	if check := s.srv.opts.SpaceCheck; check != nil {
		if err := check(opts.Size); err != nil {
			return s.rejectErr("free space", err, "size", opts.Size, "why", err.Error())
		}
	}
	if d := s.srv.deps.Messages; d != nil {
		if err := d.Message(s.info.ip); err != nil {
			return s.rejectErr("message rate", err)
		}
	}
	if d := s.srv.deps.Outbound; d != nil && s.authUser != "" {
		tx, err := d.Mail(s.info.ctx, s.authUser)
		if err != nil {
			return s.rejectErr("outbound limits", err, "user", s.authUser)
		}
		s.sendTx = tx
	}
	if rep := s.milterMail(sender, opts); rep != nil {
		return rep
	}
	s.wantSPF = s.srv.deps.MsgAuth != nil && s.info.kind == MX && !s.trusted()
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

// rejectErr refuses a command for an error of a policy check: its Reply
// when it carries one, else (the database could not answer) 451 4.3.0.
func (s *session) rejectErr(what string, err error, attrs ...any) *smtp.SMTPError {
	var rep envelope.Reply
	if errors.As(err, &rep) {
		return s.reject(rep, attrs...)
	}
	s.info.log.Warn(what+" check failed", append([]any{"err", err}, attrs...)...)
	return s.reject(envelope.LookupFailed(), attrs...)
}

// trusted reports whether the client is one of ours: authenticated, or in
// a client_access permit_relay network. Its mail is not authenticated
// (SPF, DMARC) nor greylisted.
func (s *session) trusted() bool {
	return s.authUser != "" || (s.access != nil && s.access.permitRelay)
}

// mayRelay reports whether the client may send to domains that are not
// ours: authenticated, or from a client_access permit_relay network.
func (s *session) mayRelay() bool {
	return s.authUser != "" || (s.access != nil && s.access.permitRelay)
}

// Rcpt checks a recipient (RFC 5321 4.1.1.3) against lookups and the relay
// policy.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mailOK {
		return s.reject(envelope.BadSequence("need MAIL command"))
	}
	if opts == nil {
		opts = &smtp.RcptOptions{}
	}
	rcpt := envelope.Recipient{}
	lookup := to
	if s.c.postmasterR != "" && to == s.c.postmasterR {
		// "RCPT TO:<postmaster>" without a domain, which conn rewrote:
		// always accepted (RFC 5321 4.5.1), resolved by lookups.
		lookup, rcpt.Address = "postmaster", "postmaster"
	} else {
		a, err := address.ParseInternal(to)
		if err != nil {
			return s.reject(envelope.BadRecipientSyntax(), "to", printable(to))
		}
		if a.NeedsSMTPUTF8() && !s.env.SMTPUTF8 {
			return s.reject(envelope.NonASCIIAddress(), "to", printable(to)) // RFC 6531 3.5
		}
		// Sender-specified routing (user%other@us, other!user@us,
		// "user@other"@us, whose quotes go-smtp removes) and address
		// literals are refused for everyone: relaying through them is the
		// classic open-relay hole (Postfix allow_untrusted_routing, RFC
		// 5321 3.6.1 and 7.1), and facteur delivers to no address literal.
		if address.HasRouting(a.Local) || address.IsIPLiteral(a.Domain) {
			return s.reject(envelope.RelayDenied(to), "to", printable(to), "why", "routing or address literal")
		}
		rcpt.Address = a.String()
	}
	res, found, err := s.srv.deps.Lookups.Resolve(s.info.ctx, lookup)
	switch {
	case err != nil && lookups.Permanent(err):
		return s.reject(envelope.BadRecipientSyntax(), "to", printable(to), "err", err)
	case err != nil:
		// A lookup error is never "unknown user" (Postfix resolve_class).
		s.info.log.Warn("recipient lookup failed", "to", printable(to), "err", err)
		return s.reject(envelope.LookupFailed(), "to", printable(to))
	case found:
	case res.Domain == lookups.DomainRemote:
		if !s.mayRelay() {
			return s.reject(envelope.RelayDenied(to), "to", printable(to))
		}
	default:
		return s.reject(envelope.UnknownUser(to), "to", printable(to))
	}
	if g := s.srv.deps.Greylist; g != nil && found && s.info.kind == MX {
		v, err := g.Check(s.info.ctx, greylist.Request{Client: s.info.ip, Sender: s.env.Sender, Recipient: rcpt.Address,
			Exempt: s.trusted() || s.info.dnswl.Load()})
		if err != nil {
			return s.rejectErr("greylisting", err, "to", printable(to))
		}
		if r, deferred := v.Reply(); deferred {
			return s.reject(r, "to", printable(to), "greylist", v.Reason)
		}
	}
	if rep := s.milterRcpt(rcpt.Address, opts); rep != nil {
		return rep
	}
	if s.sendTx != nil {
		if err := s.sendTx.Rcpt(); err != nil {
			return s.rejectErr("outbound limits", err, "to", printable(to), "user", s.authUser)
		}
	}
	if s.wantSPF && s.spf == nil {
		// SPF (RFC 7208 2.4: MAIL FROM, or the HELO name for the null
		// sender) for a transaction that has a recipient, in the background
		// until the end of DATA; one check at a time per session, so that
		// a client cannot multiply the DNS queries by aborting
		// transactions.
		if s.lastSPF != nil {
			s.lastSPF.wait(s.info.ctx)
		}
		s.spf = startSPF(s.info.ctx, s.srv.deps.MsgAuth, s.info.ip, s.sc.Hostname(), s.env.Sender)
		s.lastSPF = s.spf
	}
	for _, n := range opts.Notify {
		rcpt.DSNNotify = append(rcpt.DSNNotify, string(n))
	}
	if opts.OriginalRecipient != "" {
		rcpt.DSNORcpt = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
	}
	s.env.Recipients = append(s.env.Recipients, rcpt)
	s.info.mu.Lock()
	s.info.rcpts++
	s.info.mu.Unlock()
	return nil
}

// Data hands the message to cleanup, the only way to a 250: the reply
// carries the queue id and comes only after the message is durably queued.
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	env := s.env
	env.Recipients = slices.Clone(env.Recipients)
	authUser := s.authUser
	ok := s.mailOK && len(env.Recipients) > 0
	sendTx, spf := s.sendTx, s.spf
	s.mu.Unlock()
	if !ok {
		return s.reject(envelope.BadSequence("need RCPT command"))
	}
	tlsDesc := ""
	if st := s.c.TLS(); st != nil {
		tlsDesc = tlsString(st)
	}
	msg := &cleanup.Message{
		Envelope: env,
		Client: cleanup.Client{
			Addr:       s.info.ip.String(),
			Helo:       s.sc.Hostname(),
			Protocol:   protocol(s.c.greetedEHLO(), tlsDesc != "", authUser != ""),
			TLS:        tlsDesc,
			AuthUser:   authUser,
			Submission: s.info.kind != MX,
		},
	}
	switch {
	case spf != nil:
		msg.Check = s.authenticate(spf, env.Recipients)
	case authUser != "" && s.srv.deps.Signer != nil:
		msg.Check = cleanup.SignCheck(s.srv.deps.Signer, func(ctx context.Context, addr string) (bool, error) {
			return s.srv.deps.Lookups.SenderAllowed(ctx, authUser, addr)
		})
	}
	body := &bodyReader{r: r, c: s.c}
	mc := s.info.milters
	if mc != nil {
		if rep := s.milterData(mc); rep != nil {
			// The reply comes after the message (go-smtp sent 354).
			if _, err := io.Copy(io.Discard, body); err != nil && s.c.dead.Load() {
				return envelope.BareLineEnding().ToSMTP()
			}
			return rep
		}
		msg.Filter = s.milterFilter(mc, env)
	}
	id, err := s.srv.deps.Cleanup.Enqueue(s.info.ctx, msg, body)
	if mc != nil {
		mc.abort(s.info.ctx) // a message refused before its milters ran
	}
	if errors.Is(err, cleanup.ErrDiscarded) {
		// Postfix's answer to a milter's discard: as if queued.
		s.info.log.Info("discarded", "queue_id", id, "from", env.Sender, "nrcpt", len(env.Recipients))
		return envelope.Queued(id).ToSMTP()
	}
	if err != nil {
		switch {
		case s.c.dead.Load() && body.err != nil:
			// conn answered and closed the connection already.
			return envelope.BareLineEnding().ToSMTP()
		case errors.Is(err, smtp.ErrDataTooLarge):
			return s.reject(envelope.MessageTooBig())
		case errors.Is(err, smtp.ErrTooLongLine):
			// conn's errLongLine (the session goes on) or, should go-smtp's
			// own limit fire first, go-smtp's (it then closes the connection).
			return s.reject(envelope.LineTooLong(), "limit", s.srv.opts.MaxLineLength)
		case errors.Is(err, smtp.ErrDataReset):
			s.info.log.Info("message transfer aborted")
			return s.fail("data", err)
		}
		var rep envelope.Reply
		if errors.As(err, &rep) {
			return s.reject(rep)
		}
		return s.fail("data", err)
	}
	s.info.mu.Lock()
	s.info.messages++
	s.info.mu.Unlock()
	s.info.log.Info("queued", "queue_id", id, "from", env.Sender, "nrcpt", len(env.Recipients))
	if sendTx != nil {
		if err := s.srv.deps.Outbound.Record(s.info.ctx, authUser, sendTx.Recipients()); err != nil {
			s.info.log.Warn("outbound counters not updated", "queue_id", id, "err", err)
		}
	}
	return envelope.Queued(id).ToSMTP()
}

// protocol names the receiving protocol as RFC 3848 does.
func protocol(ehlo, tls, auth bool) string {
	if !ehlo {
		return "SMTP"
	}
	p := "ESMTP"
	if tls {
		p += "S"
	}
	if auth {
		p += "A"
	}
	return p
}

// bodyReader passes the message through, remembers a read error, and never
// reports the end of a message that conn refused: a bare CR or LF kills the
// connection before go-smtp sees the bytes, and this makes sure of it; a
// line too long ends the message early (conn.limitDataLine), and that end
// is errLongLine.
type bodyReader struct {
	r   io.Reader
	c   *conn
	err error
}

// errLongLine is the end of a message that had a line over MaxLineLength.
var errLongLine = fmt.Errorf("smtpd: message line too long: %w", smtp.ErrTooLongLine)

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && b.c.dead.Load() {
		err = fmt.Errorf("message not received: %w", errClosed)
	} else if err == io.EOF && b.c.longLine.Load() {
		err = errLongLine
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}
