package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/facteur/facteur/mta/envelope"
)

// What facteur offers a milter in the negotiation (SMFIC_OPTNEG). Actions:
// every modification but adding a recipient with ESMTP arguments
// (SMFIF_ADDRCPT_PAR, which go-milter cannot read) and macro lists
// (SMFIF_SETSYMLIST). Events: every "do not send" and "no reply" bit, skip,
// and leading space in header values; not SMFIP_RCPT_REJ (milters do not see
// recipients that an earlier check rejected).
const (
	offeredActions = gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt |
		gomilter.OptRemoveRcpt | gomilter.OptChangeHeader | gomilter.OptQuarantine | gomilter.OptChangeFrom
	offeredProtocol = gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom |
		gomilter.OptNoRcptTo | gomilter.OptNoBody | gomilter.OptNoHeaders | gomilter.OptNoEOH |
		gomilter.OptNoHeaderReply | gomilter.OptNoUnknown | gomilter.OptNoData | gomilter.OptSkip |
		gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoMailReply |
		gomilter.OptNoRcptReply | gomilter.OptNoDataReply | gomilter.OptNoUnknownReply |
		gomilter.OptNoEOHReply | gomilter.OptNoBodyReply | gomilter.OptHeaderLeadingSpace
	// A milter older than version 6 only knows these bits (go-milter
	// refuses to downgrade with more).
	legacyActions  = gomilter.OptAction(0x3f)
	legacyProtocol = gomilter.OptProtocol(0x7f)
)

// stage is an SMTP stage, for the state machine and the logs.
type stage int

const (
	stageConnect stage = iota
	stageHelo
	stageMail
	stageRcpt
	stageData
	stageContent
)

func (s stage) String() string {
	return [...]string{"connect", "helo", "mail", "rcpt", "data", "end-of-message"}[s]
}

// connStage reports whether a decision at s is about the whole connection.
func (s stage) connStage() bool { return s == stageConnect || s == stageHelo }

// state is where one milter is in the session.
type state int

const (
	stReady      state = iota // connected, between messages
	stMessage                 // in a message (after MAIL)
	stAcceptMsg               // accepted the current message: not asked again until it ends
	stAcceptConn              // accepted the connection: never asked again
	stRejectConn              // rejected the connection: its reply stands for everything
	stFailed                  // down, timed out or broke the protocol: DefaultAction
)

// conn is one milter's connection in a session.
type conn struct {
	cfg    *milterConfig
	sess   *gomilter.ClientSession
	nc     net.Conn
	legacy bool // negotiated a protocol older than 6
	state  state
	reject Verdict // for stRejectConn
}

// Session is the milter side of one SMTP connection. Its methods follow the
// SMTP session: Connect, Helo, then per message Mail, Rcpt (each recipient),
// Data and Message, or Abort; Close at the end. It is not safe for
// concurrent use: the smtpd session calls it under its own lock.
//
// A stage whose Verdict is Reject or TempFail ends the transaction as SMTP
// does: after Mail the Session has already told the milters; after Data or
// Message, likewise. After a rejected Connect or Helo every later stage gives
// the same reply, as in Postfix; the caller may as well close the connection.
type Session struct {
	c       *Client
	log     *slog.Logger
	macros  map[string]string
	conns   []*conn
	started bool
	connV   Verdict // the verdict of Connect
	inMsg   bool
	discard *Verdict // the message is to be discarded
}

// NewSession starts the milter side of an SMTP connection. It does not
// connect yet (Connect does). log is the connection's logger (the Client's
// when nil). macros are initial macro values, such as "{daemon_addr}",
// "{tls_version}" or "{auth_authen}"; more can be set with SetMacro.
func (c *Client) NewSession(log *slog.Logger, macros map[string]string) *Session {
	if log == nil {
		log = c.opts.Logger
	}
	s := &Session{c: c, log: log, macros: map[string]string{"v": "facteur"}}
	if c.opts.Hostname != "" {
		s.macros["j"] = c.opts.Hostname
	}
	if c.opts.DaemonName != "" {
		s.macros["{daemon_name}"] = c.opts.DaemonName
	}
	for k, v := range macros {
		s.macros[k] = v
	}
	return s
}

// SetMacro sets the value of a macro for the following stages, such as
// "i" (the queue id) once known, "{auth_authen}" after AUTH or
// "{tls_version}" after STARTTLS. An empty value removes it.
func (s *Session) SetMacro(name, value string) {
	if value == "" {
		delete(s.macros, name)
		return
	}
	s.macros[name] = value
}

// Connect opens a connection to every milter and reports the SMTP client:
// its host name ("" when unknown: "[addr]" is sent, as Sendmail does), its
// address (the zero Addr for a local client) and port. Call it once, first.
func (s *Session) Connect(ctx context.Context, hostname string, addr netip.Addr, port uint16) Verdict {
	if s.started {
		return s.connV
	}
	s.started = true
	addr = addr.Unmap()
	family := gomilter.FamilyUnknown
	switch {
	case addr.Is4():
		family = gomilter.FamilyInet
	case addr.Is6():
		family = gomilter.FamilyInet6
	}
	if hostname == "" {
		hostname = "localhost"
		if addr.IsValid() {
			hostname = "[" + addr.String() + "]"
		}
	}
	if addr.IsValid() {
		s.macros["{client_addr}"] = addr.String()
		s.macros["{client_port}"] = strconv.Itoa(int(port))
		s.macros["_"] = hostname + " [" + addr.String() + "]"
	}
	s.macros["{client_name}"] = hostname
	for i := range s.c.milters {
		m := &conn{cfg: &s.c.milters[i]}
		s.conns = append(s.conns, m)
		if err := s.open(ctx, m); err != nil {
			s.fail(m, stageConnect, err)
		}
	}
	s.connV = s.run(ctx, stageConnect, func(m *conn) (*gomilter.Action, error) {
		if err := s.sendMacros(m, gomilter.CodeConn, m.cfg.Macros.Connect); err != nil {
			return nil, err
		}
		a := ""
		if family != gomilter.FamilyUnknown {
			a = addr.String()
		}
		return m.sess.Conn(hostname, family, port, a)
	})
	return s.connV
}

// Helo reports the HELO or EHLO name.
func (s *Session) Helo(ctx context.Context, name string) Verdict {
	if v := s.start(ctx); v.Decision != Continue {
		return v
	}
	return s.run(ctx, stageHelo, func(m *conn) (*gomilter.Action, error) {
		if err := s.sendMacros(m, gomilter.CodeHelo, m.cfg.Macros.Helo); err != nil {
			return nil, err
		}
		return m.sess.Helo(name)
	})
}

// Mail starts a message: the envelope sender ("" for the null sender) and
// the ESMTP arguments of MAIL FROM as sent ("SIZE=1000", "BODY=8BITMIME").
// A message still open (no Message or Abort since the last Mail) is aborted
// first. After a Reject or TempFail, the milters have been told that the
// transaction is over.
func (s *Session) Mail(ctx context.Context, from string, args []string) Verdict {
	if v := s.start(ctx); v.Decision != Continue {
		return v
	}
	if s.inMsg {
		s.Abort(ctx)
	}
	s.inMsg, s.discard = true, nil
	s.SetMacro("{mail_addr}", from)
	for _, m := range s.conns {
		if m.state == stReady {
			m.state = stMessage
		}
	}
	v := s.run(ctx, stageMail, func(m *conn) (*gomilter.Action, error) {
		if err := s.sendMacros(m, gomilter.CodeMail, m.cfg.Macros.Mail); err != nil {
			return nil, err
		}
		return m.sess.Mail(from, args)
	})
	if v.Decision == Reject || v.Decision == TempFail {
		s.Abort(ctx)
	}
	return v
}

// Rcpt reports one recipient and its ESMTP arguments. Reject and TempFail
// are for this recipient only; the transaction goes on.
func (s *Session) Rcpt(ctx context.Context, to string, args []string) Verdict {
	if v := s.inMessage(); v.Decision != Continue {
		return v
	}
	s.SetMacro("{rcpt_addr}", to)
	return s.run(ctx, stageRcpt, func(m *conn) (*gomilter.Action, error) {
		if err := s.sendMacros(m, gomilter.CodeRcpt, m.cfg.Macros.Rcpt); err != nil {
			return nil, err
		}
		return m.sess.Rcpt(to, args)
	})
}

// Data reports the DATA (or first BDAT) command, before the message is read.
// After a Reject or TempFail the milters have been told that the
// transaction is over.
func (s *Session) Data(ctx context.Context) Verdict {
	if v := s.inMessage(); v.Decision != Continue {
		return v
	}
	v := s.run(ctx, stageData, func(m *conn) (*gomilter.Action, error) {
		if m.legacy {
			// SMFIC_DATA exists from protocol version 4 (Postfix does the same).
			return &gomilter.Action{Code: gomilter.ActContinue}, nil
		}
		if err := s.sendMacros(m, gomilter.CodeData, m.cfg.Macros.Data); err != nil {
			return nil, err
		}
		return dataCommand(m)
	})
	if v.Decision == Reject || v.Decision == TempFail {
		s.Abort(ctx)
	}
	return v
}

// Abort ends the current message without Message: RSET, a transaction that
// failed, a client that left during DATA. Milters in the middle of the
// message are sent SMFIC_ABORT. It does nothing outside a message.
func (s *Session) Abort(ctx context.Context) {
	for _, m := range s.conns {
		if m.state == stAcceptMsg {
			// The milter is done with this message (Postfix sends nothing).
			m.state = stReady
		}
		if m.state != stMessage {
			continue
		}
		done := s.guard(ctx, m)
		err := m.sess.Abort()
		done()
		if err != nil {
			s.fail(m, stageContent, fmt.Errorf("abort: %w", err))
			continue
		}
		m.state = stReady
	}
	s.inMsg, s.discard = false, nil
}

// Close ends the session: an open message is aborted and every milter is
// sent SMFIC_QUIT and disconnected.
func (s *Session) Close() error {
	var errs []error
	for _, m := range s.conns {
		if m.sess == nil {
			continue
		}
		if m.state != stFailed && m.state != stRejectConn && m.state != stAcceptConn {
			if err := m.sess.Close(); err != nil {
				errs = append(errs, fmt.Errorf("milter %s: %w", m.cfg.Name, err))
			}
		}
		m.nc.Close()
		m.sess, m.state = nil, stFailed
	}
	s.conns = nil
	return errors.Join(errs...)
}

// start connects with an unknown client when Connect was not called (a
// local submission).
func (s *Session) start(ctx context.Context) Verdict {
	if s.started {
		return Verdict{}
	}
	return s.Connect(ctx, "", netip.Addr{}, 0)
}

// inMessage returns TempFail when a message stage comes without Mail (a
// caller's bug, made visible rather than skipping the milters), Discard when
// the message is to be discarded, and Continue otherwise.
func (s *Session) inMessage() Verdict {
	if !s.inMsg {
		return Verdict{Decision: TempFail, Reply: envelope.InternalError("")}
	}
	if s.discard != nil {
		return *s.discard
	}
	return Verdict{}
}

// open connects to a milter and negotiates; a milter older than protocol
// version 6 is reconnected with the options it knows.
func (s *Session) open(ctx context.Context, m *conn) error {
	for _, legacy := range []bool{false, true} {
		actions, protocol := offeredActions, offeredProtocol
		if legacy {
			actions, protocol = actions&legacyActions, protocol&legacyProtocol
		}
		d := &dialer{ctx: ctx, timeout: m.cfg.ConnectTimeout, dial: s.c.opts.DialContext}
		cl := gomilter.NewClientWithOptions(m.cfg.network, m.cfg.address, gomilter.ClientOptions{
			Dialer:       d,
			ReadTimeout:  m.cfg.CommandTimeout,
			WriteTimeout: m.cfg.CommandTimeout,
			ActionMask:   actions,
			ProtocolMask: protocol,
		})
		sess, err := cl.Session()
		d.done()
		if err == nil {
			// Only what we offered counts, whatever the milter says.
			sess.ProtocolOpts &= protocol
			m.sess, m.nc, m.legacy, m.state = sess, d.conn, legacy, stReady
			return nil
		}
		if d.conn != nil {
			d.conn.Close()
		}
		if !legacy && errors.Is(err, gomilter.ErrUnsupportedMilterVersion) {
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %v", ctx.Err(), err)
		}
		return err
	}
	return gomilter.ErrUnsupportedMilterVersion
}

// dialer is the go-milter Dialer of one connection: it bounds the dial,
// keeps the connection (to bound whole stages and send what go-milter does
// not) and closes it if ctx ends during the negotiation.
type dialer struct {
	ctx     context.Context
	timeout time.Duration
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	conn    net.Conn
	stop    func() bool
}

func (d *dialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.timeout)
	defer cancel()
	dial := d.dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	c, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.conn = c
	d.stop = context.AfterFunc(d.ctx, func() { c.Close() })
	return c, nil
}

func (d *dialer) done() {
	if d.stop != nil {
		d.stop()
	}
}

// guard bounds one stage of one milter by its ContentTimeout and by ctx:
// when either ends, the connection is closed, so that the blocked read or
// write fails. Call the returned function when the stage is over.
func (s *Session) guard(ctx context.Context, m *conn) func() {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ContentTimeout)
	nc := m.nc
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	return func() {
		stop()
		cancel()
	}
}

// fail puts a milter in its default action for the rest of the session.
func (s *Session) fail(m *conn, st stage, err error) {
	s.log.Warn("milter failed, applying default action",
		slog.String("milter", m.cfg.Name), slog.String("stage", st.String()),
		slog.String("default_action", string(m.cfg.DefaultAction)), slog.Any("error", err))
	if m.nc != nil {
		m.nc.Close()
	}
	m.state = stFailed
}

// gate says whether a milter takes part in a stage: skip it, or stop the
// stage with its standing verdict (a rejected connection, a failed milter
// whose default is not accept).
func (s *Session) gate(m *conn, st stage) (v Verdict, skip, stop bool) {
	switch m.state {
	case stFailed:
		if v, ok := m.cfg.defaultVerdict(); ok {
			return v, false, true
		}
		return Verdict{}, true, false
	case stRejectConn:
		return m.reject, false, true
	case stAcceptConn:
		return Verdict{}, true, false
	case stAcceptMsg:
		return Verdict{}, st >= stageMail, false
	}
	return Verdict{}, false, false
}

// run sends one stage's event to each milter in order and combines their
// answers: the first reject, tempfail or discard ends the stage.
func (s *Session) run(ctx context.Context, st stage, send func(m *conn) (*gomilter.Action, error)) Verdict {
	for _, m := range s.conns {
		v, skip, stop := s.gate(m, st)
		if stop {
			return v
		}
		if skip {
			continue
		}
		done := s.guard(ctx, m)
		act, err := send(m)
		done()
		if err == nil {
			var accept bool
			if v, accept, err = actionVerdict(m.cfg.Name, act); err == nil {
				if st.connStage() && v.Decision == Discard {
					err = fmt.Errorf("%w: discard at %s", errProtocol, st)
				}
			}
			if err == nil {
				switch {
				case accept && st.connStage():
					// libmilter closes the connection after this.
					m.state = stAcceptConn
					m.nc.Close()
				case accept:
					m.state = stAcceptMsg
				}
				switch v.Decision {
				case Continue:
					continue
				case Discard:
					m.state = stAcceptMsg
					s.discard = &v
				default:
					if st.connStage() {
						// libmilter closes the connection after this.
						m.state, m.reject = stRejectConn, v
						m.nc.Close()
					}
				}
				return v
			}
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %v", ctx.Err(), err)
		}
		s.fail(m, st, err)
		if v, ok := m.cfg.defaultVerdict(); ok {
			return v
		}
	}
	return Verdict{}
}

// sendMacros sends the values of the named macros that have one.
func (s *Session) sendMacros(m *conn, code gomilter.Code, names []string) error {
	var kv []string
	for _, n := range names {
		if v, ok := s.macros[n]; ok {
			kv = append(kv, n, strings.ReplaceAll(v, "\x00", ""))
		}
	}
	if len(kv) == 0 {
		return nil
	}
	return m.sess.Macros(code, kv...)
}
