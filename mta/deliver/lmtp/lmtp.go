// Package lmtp is facteur's lmtp(8): it hands messages to a mailbox server
// such as Dovecot over LMTP (RFC 2033), on a unix socket or TCP, and reports
// the server's reply for each recipient.
//
// Next hops (the transport after "lmtp:"):
//
//	unix:/run/dovecot/lmtp      a unix socket
//	inet:host:port, host:port   TCP; the port defaults to 24 (RFC 2033 5)
//	[host]:port, [192.0.2.1]    the same; brackets allow an IPv6 literal
//
// A host name is resolved (A/AAAA, never MX) through Options.Resolver and
// its addresses are tried in order.
//
// One connection per delivery: greeting, LHLO, STARTTLS on TCP when offered
// and Options.TLSPolicy allows (then LHLO again, RFC 3207 4.2), MAIL, one
// RCPT per distinct recipient (a recipient listed twice is sent once and
// both get its result: the server's per-recipient replies are matched by
// address), DATA, and after the final dot one reply per accepted recipient
// (RFC 2033 4.2). 2xx is Delivered, 4xx Deferred, 5xx Bounced; a failure to
// connect, a refusal before MAIL (greeting, LHLO, STARTTLS: the server
// refuses service, not the message, as Postfix's lmtp_skip_5xx_greeting), a
// lost connection or a timeout is Deferred for every recipient without a
// reply yet, since the outcome is unknown (deliver.Agent's at-least-once
// contract). Result.Reply carries the server's own reply, and Result.Relay
// names the hop as Postfix logs it: "name[unix:/path]" with the name from
// the greeting, or "host[address]:port".
//
// SECURITY: this agent only makes outbound connections, to next hops that
// the transport table (superadmin-only) names; it sends the spooled message
// as it is and reads short replies with go-smtp's line limits. Over TCP,
// STARTTLS is opportunistic by default ("may": no certificate check, as
// Postfix's smtp_tls_security_level=may), "encrypt" requires it and "verify"
// also checks the server's certificate against Options.TLSConfig; a reply
// pipelined after the STARTTLS 220 is refused (plaintext injection, CVE-2011-
// 0411 and kin). Reply texts from the server are kept for logs and DSNs;
// envelope.Reply strips control characters before they reach an SMTP peer.
package lmtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/envelope"
)

// TLSPolicy says when STARTTLS is used on TCP next hops (never on unix
// sockets), as Postfix's smtp_tls_security_level.
type TLSPolicy string

// TLS policies.
const (
	TLSNone    TLSPolicy = "none"    // never
	TLSMay     TLSPolicy = "may"     // when offered; no certificate check; plaintext if the handshake fails
	TLSEncrypt TLSPolicy = "encrypt" // required; no certificate check
	TLSVerify  TLSPolicy = "verify"  // required, certificate checked against TLSConfig
)

// Resolver looks up a next hop's addresses; *net.Resolver satisfies it, and
// tests inject a fake one (DESIGN.md: DNS goes through one injected
// resolver).
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Defaults of Options.
const (
	DefaultPort           = "24"
	DefaultConnectTimeout = 30 * time.Second
	DefaultCommandTimeout = 5 * time.Minute
	DefaultDataTimeout    = 10 * time.Minute
)

// Options configure an Agent. Zero values take the defaults.
type Options struct {
	// LocalName is sent in LHLO; "" is "localhost".
	LocalName string
	// TLSPolicy is for TCP next hops; "" is TLSMay.
	TLSPolicy TLSPolicy
	// TLSConfig is the base configuration for STARTTLS (root CAs for
	// TLSVerify, a client certificate); ServerName defaults to the next
	// hop's host name.
	TLSConfig *tls.Config
	// Resolver resolves host names of TCP next hops; nil is
	// net.DefaultResolver.
	Resolver Resolver
	// ConnectTimeout bounds each connection attempt, CommandTimeout each
	// command's reply, DataTimeout the replies after the final dot.
	ConnectTimeout, CommandTimeout, DataTimeout time.Duration
}

// Agent delivers over LMTP. It is safe for concurrent use.
type Agent struct {
	opts Options
}

// New returns an Agent.
func New(opts Options) (*Agent, error) {
	switch opts.TLSPolicy {
	case "":
		opts.TLSPolicy = TLSMay
	case TLSNone, TLSMay, TLSEncrypt, TLSVerify:
	default:
		return nil, fmt.Errorf("lmtp: unknown TLS policy %q", opts.TLSPolicy)
	}
	if opts.LocalName == "" {
		opts.LocalName = "localhost"
	}
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	if opts.DataTimeout <= 0 {
		opts.DataTimeout = DefaultDataTimeout
	}
	return &Agent{opts: opts}, nil
}

// target is a parsed next hop.
type target struct {
	network string // "unix" or "tcp"
	path    string // unix
	host    string // tcp: name or IP literal, without brackets
	port    string
}

// parseNexthop parses an LMTP next hop (see the package comment).
func parseNexthop(nexthop string) (target, error) {
	switch {
	case strings.HasPrefix(nexthop, "unix:"):
		p := strings.TrimPrefix(nexthop, "unix:")
		if p == "" {
			return target{}, errors.New("empty unix socket path")
		}
		return target{network: "unix", path: p}, nil
	case nexthop == "":
		return target{}, errors.New("no next hop")
	}
	hp := strings.TrimPrefix(nexthop, "inet:")
	var host, port string
	if strings.HasPrefix(hp, "[") {
		end := strings.Index(hp, "]")
		if end < 0 {
			return target{}, fmt.Errorf("next hop %q: missing ]", nexthop)
		}
		host, port = hp[1:end], strings.TrimPrefix(hp[end+1:], ":")
		if rest := hp[end+1:]; rest != "" && !strings.HasPrefix(rest, ":") {
			return target{}, fmt.Errorf("next hop %q: junk after ]", nexthop)
		}
	} else if h, p, err := net.SplitHostPort(hp); err == nil {
		host, port = h, p
	} else if !strings.Contains(hp, ":") {
		host = hp
	} else {
		return target{}, fmt.Errorf("next hop %q: %w", nexthop, err)
	}
	if port == "" {
		port = DefaultPort
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return target{}, fmt.Errorf("next hop %q: bad port %q", nexthop, port)
	}
	if host == "" {
		return target{}, fmt.Errorf("next hop %q: no host", nexthop)
	}
	return target{network: "tcp", host: host, port: port}, nil
}

// session is one delivery's connection state.
type session struct {
	relay     string // for Result.Relay
	remoteMTA string
}

// Deliver sends msg to the LMTP server named by nexthop; see the package
// comment for the per-recipient results.
func (a *Agent) Deliver(ctx context.Context, nexthop string, msg *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	log := msg.Log
	if log == nil {
		log = slog.Default().With("queue_id", msg.QueueID)
	}
	tg, err := parseNexthop(nexthop)
	if err != nil {
		log.Error("lmtp: bad next hop", "nexthop", nexthop, "err", err)
		return deliver.All(rcpts, deliver.Result{Status: deliver.Deferred, Relay: "none",
			Reply: envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 3, 5}, Text: "Mail system configuration error: bad LMTP next hop"}})
	}

	// Distinct addresses, in order: the server's replies are keyed by them.
	var uniq []deliver.Recipient
	first := make(map[string]int, len(rcpts))
	for _, rc := range rcpts {
		if _, ok := first[rc.Address]; !ok {
			first[rc.Address] = len(uniq)
			uniq = append(uniq, rc)
		}
	}
	res := a.deliver(ctx, tg, msg, uniq, log)
	out := make([]deliver.Result, len(rcpts))
	for i, rc := range rcpts {
		out[i] = res[first[rc.Address]]
		log.Debug("lmtp: result", "to", rc.Address, "relay", out[i].Relay, "status", out[i].Status.String(), "reply", out[i].Reply.String())
	}
	return out
}

// deliver runs one LMTP transaction for distinct recipients.
func (a *Agent) deliver(ctx context.Context, tg target, msg *deliver.Message, rcpts []deliver.Recipient, log *slog.Logger) []deliver.Result {
	s := &session{relay: relayName(tg, "", "")}
	tempfail := func(es envelope.Status, format string, args ...any) []deliver.Result {
		return deliver.All(rcpts, s.result(deliver.Deferred, envelope.Reply{Code: 451, Enhanced: es, Text: fmt.Sprintf(format, args...)}))
	}

	c, conn, err := a.connect(ctx, tg, s, log)
	if err != nil {
		var r *envelope.Reply
		if errors.As(err, &r) {
			// A refusal before MAIL (greeting, LHLO, TLS) defers even when
			// it is a 5xx, as Postfix's lmtp_skip_5xx_greeting: the server
			// refuses service, not this message.
			return deliver.All(rcpts, s.result(deliver.Deferred, *r))
		}
		log.Warn("lmtp: connect", "relay", s.relay, "err", err)
		return tempfail(envelope.Status{4, 4, 1}, "connect to %s: %s", s.relay, reason(err))
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer c.Close()

	lost := func(stage string, err error) []deliver.Result {
		if ctx.Err() != nil {
			return tempfail(envelope.Status{4, 4, 7}, "delivery to %s interrupted %s", s.relay, stage)
		}
		log.Warn("lmtp: "+stage, "relay", s.relay, "err", err)
		return tempfail(envelope.Status{4, 4, 2}, "lost connection with %s %s: %s", s.relay, stage, reason(err))
	}
	// replyAll gives a server reply (or a lost connection) to every
	// recipient.
	replyAll := func(stage string, err error) []deliver.Result {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			r := envelope.FromSMTP(se)
			return deliver.All(rcpts, s.result(statusOf(r.Code), r))
		}
		return lost(stage, err)
	}

	utf8 := false
	if msg.SMTPUTF8 {
		if ok, _ := c.Extension("SMTPUTF8"); ok {
			utf8 = true
		} else if !allASCII(msg.Sender, rcpts) {
			// RFC 6531 3.4: without SMTPUTF8 at the next hop, a UTF-8
			// envelope cannot be delivered.
			_ = c.Quit()
			return deliver.All(rcpts, s.result(deliver.Bounced, envelope.Reply{Code: 553, Enhanced: envelope.Status{5, 6, 7},
				Text: "SMTPUTF8 is required, but was not offered by " + s.relay}))
		}
	}
	mo := &smtp.MailOptions{Size: msg.Size, UTF8: utf8, EnvelopeID: msg.DSNEnvID}
	switch msg.DSNRet {
	case envelope.RetFull:
		mo.Return = smtp.DSNReturnFull
	case envelope.RetHeaders:
		mo.Return = smtp.DSNReturnHeaders
	}
	if !printableASCII(mo.EnvelopeID) {
		mo.EnvelopeID = ""
	}
	if err := c.Mail(msg.Sender, mo); err != nil {
		return replyAll("after MAIL FROM", err)
	}

	results := make([]deliver.Result, len(rcpts))
	pending := make(map[string]int, len(rcpts)) // accepted address → index
	for i, rc := range rcpts {
		err := c.Rcpt(rc.Address, rcptOptions(rc))
		var se *smtp.SMTPError
		switch {
		case err == nil:
			pending[rc.Address] = i
		case errors.As(err, &se):
			r := envelope.FromSMTP(se)
			results[i] = s.result(statusOf(r.Code), r)
		default:
			// Replies already given stand; the rest never got one.
			r := lost("after RCPT TO", err)[0]
			for j := range rcpts {
				if results[j].Reply.Code == 0 {
					results[j] = r
				}
			}
			return results
		}
	}
	if len(pending) == 0 {
		_ = c.Quit()
		return results
	}
	// allPending sets the result of every recipient still waiting.
	allPending := func(r deliver.Result) []deliver.Result {
		for _, i := range pending {
			results[i] = r
		}
		return results
	}

	w, err := c.Data()
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			r := envelope.FromSMTP(se)
			return allPending(s.result(statusOf(r.Code), r))
		}
		return allPending(lost("after DATA", err)[0])
	}
	body, err := msg.Open()
	if err != nil {
		log.Error("lmtp: open queued message", "err", err)
		return allPending(s.result(deliver.Deferred, envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 3, 0}, Text: "cannot read queued message"}))
	}
	_, err = io.Copy(w, body)
	body.Close()
	if err != nil {
		return allPending(lost("while sending message", err)[0])
	}
	resp, err := w.CloseWithLMTPResponse()
	var lmtpErr smtp.LMTPDataError
	errors.As(err, &lmtpErr)
	for addr, i := range pending {
		if dr, ok := resp[addr]; ok {
			r := envelope.FromSMTP(&smtp.SMTPError{Code: 250, Message: dr.StatusText})
			results[i] = s.result(deliver.Delivered, r)
			delete(pending, addr)
		} else if se, ok := lmtpErr[addr]; ok && se != nil {
			r := envelope.FromSMTP(se)
			results[i] = s.result(statusOf(r.Code), r)
			delete(pending, addr)
		}
	}
	if len(pending) > 0 {
		// No reply for these after the final dot: the outcome is unknown,
		// so try again later (at least once, never zero times).
		if err == nil {
			err = errors.New("missing reply")
		}
		return allPending(lost("after end of data", err)[0])
	}
	_ = c.Quit()
	return results
}

func (s *session) result(st deliver.Status, r envelope.Reply) deliver.Result {
	return deliver.Result{Status: st, Reply: r, Relay: s.relay, RemoteMTA: s.remoteMTA}
}

// statusOf maps a reply code: 2xx delivered, 5xx bounced, anything else
// (4xx, or nonsense) deferred.
func statusOf(code int) deliver.Status {
	switch code / 100 {
	case 2:
		return deliver.Delivered
	case 5:
		return deliver.Bounced
	}
	return deliver.Deferred
}

// reason is an error's text without Go's "dial unix /path:" prefixes.
func reason(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed"
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return "timeout"
	}
	return err.Error()
}

func relayName(tg target, name, addr string) string {
	if tg.network == "unix" {
		if name == "" {
			name = "localhost"
		}
		return name + "[unix:" + tg.path + "]"
	}
	if name == "" {
		name = tg.host
	}
	if addr == "" {
		addr = tg.host
	}
	return name + "[" + addr + "]:" + tg.port
}

func allASCII(sender string, rcpts []deliver.Recipient) bool {
	ascii := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return false
			}
		}
		return true
	}
	if !ascii(sender) {
		return false
	}
	for _, rc := range rcpts {
		if !ascii(rc.Address) {
			return false
		}
	}
	return true
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// rcptOptions passes the DSN parameters on (go-smtp sends them only when
// the server offers DSN, RFC 3461 4); values it would refuse are left out.
func rcptOptions(rc deliver.Recipient) *smtp.RcptOptions {
	o := &smtp.RcptOptions{}
	if rc.DSNNotify != "" {
		var ns []smtp.DSNNotify
		valid := true
		for _, n := range strings.Split(rc.DSNNotify, ",") {
			switch v := smtp.DSNNotify(strings.ToUpper(strings.TrimSpace(n))); v {
			case smtp.DSNNotifyNever, smtp.DSNNotifySuccess, smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed:
				ns = append(ns, v)
			default:
				valid = false
			}
		}
		// RFC 3461 4.1: NEVER stands alone.
		if valid && (len(ns) == 1 || !slices.Contains(ns, smtp.DSNNotifyNever)) {
			o.Notify = ns
		}
	}
	if typ, addr, ok := strings.Cut(rc.DSNORcpt, ";"); ok && addr != "" {
		switch strings.ToUpper(typ) {
		case "RFC822":
			if printableASCII(addr) {
				o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, addr
			}
		case "UTF-8":
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, addr
		}
	}
	return o
}

// connect dials the next hop, reads the greeting and, on TCP, negotiates
// STARTTLS; it returns a go-smtp LMTP client ready for LHLO (sent by its
// first command) and the raw connection (closed when ctx ends). A greeting
// or STARTTLS refusal comes back as an *envelope.Reply error.
func (a *Agent) connect(ctx context.Context, tg target, s *session, log *slog.Logger) (*smtp.Client, net.Conn, error) {
	if tg.network == "unix" {
		d := net.Dialer{Timeout: a.opts.ConnectTimeout}
		conn, err := d.DialContext(ctx, "unix", tg.path)
		if err != nil {
			return nil, nil, err
		}
		c, err := a.start(ctx, conn, tg, s, "", false)
		return c, conn, err
	}

	var addrs []string
	if ip := net.ParseIP(tg.host); ip != nil {
		addrs = []string{ip.String()}
	} else {
		ips, err := a.opts.Resolver.LookupIPAddr(ctx, tg.host)
		if err != nil {
			var de *net.DNSError
			if errors.As(err, &de) && de.IsNotFound {
				// A next hop that does not exist is a configuration
				// error: defer, so that the operator can fix it.
				return nil, nil, &envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 4, 4}, Text: "LMTP next hop " + tg.host + " not found"}
			}
			return nil, nil, &envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 4, 3}, Text: "cannot resolve LMTP next hop " + tg.host + ": " + reason(err)}
		}
		for _, ip := range ips {
			addrs = append(addrs, ip.IP.String())
		}
		if len(addrs) == 0 {
			return nil, nil, &envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 4, 4}, Text: "LMTP next hop " + tg.host + " has no address"}
		}
	}
	var lastErr error
	for _, addr := range addrs {
		s.relay = relayName(tg, "", addr)
		useTLS := a.opts.TLSPolicy != TLSNone
		for {
			d := net.Dialer{Timeout: a.opts.ConnectTimeout}
			conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(addr, tg.port))
			if err != nil {
				lastErr = err
				log.Info("lmtp: connect", "relay", s.relay, "err", err)
				break
			}
			c, err := a.start(ctx, conn, tg, s, addr, useTLS)
			var he handshakeError
			if errors.As(err, &he) && a.opts.TLSPolicy == TLSMay {
				// Opportunistic TLS: a failed handshake falls back to a
				// plaintext connection, as Postfix does.
				log.Info("lmtp: TLS handshake failed; trying without TLS", "relay", s.relay, "err", he.err)
				conn.Close()
				useTLS = false
				continue
			}
			return c, conn, err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, lastErr
}

// handshakeError is a failed TLS handshake.
type handshakeError struct{ err error }

func (e handshakeError) Error() string { return "TLS handshake: " + e.err.Error() }

// start reads the greeting and optionally negotiates STARTTLS on conn. The
// go-smtp client cannot start TLS in LMTP mode, so this part is done here,
// and the client gets a connection that replays the greeting (after
// STARTTLS the server sends none; the client then sends LHLO again, as RFC
// 3207 4.2 wants).
func (a *Agent) start(ctx context.Context, conn net.Conn, tg target, s *session, addr string, useTLS bool) (c *smtp.Client, err error) {
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(a.opts.CommandTimeout))
	br := bufio.NewReader(conn)
	tp := textproto.NewReader(br)
	code, text, err := tp.ReadResponse(0)
	if err != nil {
		return nil, err
	}
	name, _, _ := strings.Cut(strings.SplitN(text, "\n", 2)[0], " ")
	s.remoteMTA = name
	if tg.network == "unix" {
		s.relay = relayName(tg, name, "")
	} else {
		s.relay = relayName(tg, tg.host, addr)
	}
	if code != 220 {
		// RFC 5321 3.1: a 554 greeting (or a 421) refuses service; the
		// caller defers.
		r := envelope.FromSMTP(&smtp.SMTPError{Code: code, Message: text})
		if code/100 != 4 && code/100 != 5 {
			r = envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 4, 2}, Text: fmt.Sprintf("bad greeting from %s: %d %s", s.relay, code, text)}
		}
		return nil, &r
	}
	greeting := "220 " + strings.SplitN(text, "\n", 2)[0] + "\r\n"

	var rw net.Conn = conn
	if useTLS {
		if _, err := fmt.Fprintf(conn, "LHLO %s\r\n", a.opts.LocalName); err != nil {
			return nil, err
		}
		code, text, err := tp.ReadResponse(0)
		if err != nil {
			return nil, err
		}
		if code != 250 {
			r := envelope.FromSMTP(&smtp.SMTPError{Code: code, Message: text})
			if r.Code/100 != 4 && r.Code/100 != 5 {
				r = envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 5, 0}, Text: fmt.Sprintf("bad LHLO reply from %s: %d %s", s.relay, code, text)}
			}
			return nil, &r
		}
		offered := false
		for _, l := range strings.Split(text, "\n")[1:] {
			if strings.EqualFold(strings.TrimSpace(l), "STARTTLS") {
				offered = true
			}
		}
		required := a.opts.TLSPolicy == TLSEncrypt || a.opts.TLSPolicy == TLSVerify
		switch {
		case offered:
			if _, err := io.WriteString(conn, "STARTTLS\r\n"); err != nil {
				return nil, err
			}
			code, text, err := tp.ReadResponse(0)
			if err != nil {
				return nil, err
			}
			if code != 220 {
				if required {
					return nil, &envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 7, 5},
						Text: fmt.Sprintf("STARTTLS refused by %s: %d %s", s.relay, code, text)}
				}
				// "may": go on without TLS, on a new connection.
				return nil, handshakeError{fmt.Errorf("STARTTLS refused: %d %s", code, text)}
			}
			if br.Buffered() > 0 {
				// Data after the 220 was sent in plaintext before TLS:
				// refuse it (STARTTLS command injection).
				return nil, &envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 7, 0},
					Text: "protocol error: " + s.relay + " sent data after its STARTTLS reply"}
			}
			tc := a.tlsConfig(tg.host)
			tlsConn := tls.Client(conn, tc)
			if err := tlsConn.HandshakeContext(ctx); err != nil {
				if a.opts.TLSPolicy == TLSMay {
					return nil, handshakeError{err}
				}
				return nil, &envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 7, 5},
					Text: fmt.Sprintf("TLS handshake with %s failed: %s", s.relay, reason(err))}
			}
			rw = tlsConn
			br = nil
		case required:
			return nil, &envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 7, 4},
				Text: "TLS is required, but was not offered by " + s.relay}
		}
	}
	conn.SetDeadline(time.Time{})
	var rest io.Reader = rw
	if br != nil {
		rest = br // a plaintext session goes on reading through br
	}
	c = smtp.NewClientLMTP(&replayConn{Conn: rw, r: io.MultiReader(strings.NewReader(greeting), rest)})
	c.CommandTimeout = a.opts.CommandTimeout
	c.SubmissionTimeout = a.opts.DataTimeout
	if err := c.Hello(a.opts.LocalName); err != nil {
		c.Close()
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			r := envelope.FromSMTP(se)
			if r.Code/100 != 4 && r.Code/100 != 5 {
				r = envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 5, 0}, Text: fmt.Sprintf("bad LHLO reply from %s: %s", s.relay, r)}
			}
			return nil, &r
		}
		return nil, err
	}
	return c, nil
}

func (a *Agent) tlsConfig(host string) *tls.Config {
	var tc *tls.Config
	if a.opts.TLSConfig != nil {
		tc = a.opts.TLSConfig.Clone()
	} else {
		tc = &tls.Config{}
	}
	if tc.ServerName == "" && net.ParseIP(host) == nil {
		tc.ServerName = host
	}
	if a.opts.TLSPolicy != TLSVerify {
		// Opportunistic or encrypt-only: no certificate check (Postfix
		// "may" and "encrypt"); "verify" keeps Go's full check.
		tc.InsecureSkipVerify = true
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	return tc
}

// replayConn is a net.Conn whose reads start with bytes already read.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }
