package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/milter"
)

// This file wires the milters of a listener (Deps.Milters, mta/milter) into
// the session, at the stages Postfix's smtpd_milters see:
//
//   - first HELO/EHLO: Connect and Helo (go-smtp gives no earlier hook with
//     a reply); a reject or tempfail answers that HELO and every later one,
//     so the client never gets to MAIL. HELO is sent again at MAIL when the
//     client greeted again or started TLS since (the TLS macros go with it).
//   - MAIL, RCPT: after facteur's own checks passed, so that milters see
//     only what facteur would accept; a verdict at RCPT is for that
//     recipient only.
//   - DATA: before the message is read (the reply comes at its end: go-smtp
//     sends 354 before Session.Data runs).
//   - end of DATA: the message content, as a cleanup Message.Filter, once
//     the message is complete in its spool temp file: each milter reads it
//     from there (nothing is held in memory), with the fields of cleanup's
//     Check (Authentication-Results, DKIM-Signature) at the top as they
//     will be delivered. The milters' verdict is the reply: reject and
//     tempfail refuse the message, discard answers 250 and queues nothing,
//     quarantine queues it held with the milter's reason.
//
// What the milters change is applied before the message is committed.
// Header fields they add go to queue_message.prepend, at the top of the
// header whatever position the milter asked for (as facteur's own
// Authentication-Results: trace fields belong there, and a field added
// under a name the message already has is then the one readers see first,
// while a DKIM signature over the original, counted from the bottom, still
// verifies): the spool file is still written once. A header field changed
// or deleted, or the body replaced, cannot be prepended: cleanup writes the
// message a second time, only for those messages. Recipients added or
// deleted and a new sender change the envelope, which cleanup expands
// again; a message without recipients left is discarded.
//
// A milter that changes a submitted message after facteur's own DKIM
// signature (Deps.Signer) was computed may break it, as the signature covers
// the message as received: sign with one or the other, or have the milter
// only add fields.

// maxMilterHeader bounds the header block given to milters, held in memory
// (as dkimsign bounds the one it signs); a larger one is refused as too big.
const maxMilterHeader = 1 << 20

// milterConn is the milter side of one SMTP connection: its listener's
// milter.Session, under a lock of its own (with BDAT, Data runs beside Reset
// and Logout), closed when the connection ends.
type milterConn struct {
	mu       sync.Mutex
	s        *milter.Session
	closed   bool
	heloName string // the HELO name the milters were told
	heloTLS  bool   // ... and whether the session was under TLS then
}

// closedVerdict is the verdict of a stage after the connection ended.
func closedVerdict() milter.Verdict {
	return milter.Verdict{Decision: milter.TempFail, Reply: milter.TempFailReply()}
}

func (mc *milterConn) close() {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.closed {
		return
	}
	mc.closed = true
	_ = mc.s.Close()
}

// helo reports the HELO name with the TLS macros of the session.
func (mc *milterConn) helo(ctx context.Context, name string, st *tls.ConnectionState) milter.Verdict {
	mc.heloName, mc.heloTLS = name, st != nil
	version, cipher, bits := "", "", ""
	if st != nil {
		version, cipher, _ = strings.Cut(tlsString(st), " ")
		bits = cipherBits(cipher)
	}
	mc.s.SetMacro("{tls_version}", version)
	mc.s.SetMacro("{cipher}", cipher)
	mc.s.SetMacro("{cipher_bits}", bits)
	return mc.s.Helo(ctx, name)
}

// abort ends the current message, if any, for the milters.
func (mc *milterConn) abort(ctx context.Context) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if !mc.closed {
		mc.s.Abort(ctx)
	}
}

// cipherBits is the symmetric key size of a TLS cipher suite, by its name.
func cipherBits(suite string) string {
	switch {
	case strings.Contains(suite, "_128_"):
		return "128"
	case strings.Contains(suite, "_256_"), strings.Contains(suite, "CHACHA20"):
		return "256"
	}
	return ""
}

// milterReply turns a milter verdict into the reply to the command: the
// milter's for reject and tempfail (logged and counted as a refusal), nil
// otherwise. A discard is logged; the transaction goes on and its message
// is discarded at the end.
func milterReply(info *connInfo, v milter.Verdict, stage string, attrs ...any) *smtp.SMTPError {
	switch v.Decision {
	case milter.Reject, milter.TempFail:
		info.mu.Lock()
		info.rejected++
		info.mu.Unlock()
		info.log.Info("rejected", append([]any{"reply", v.Reply.String(), "milter", v.Milter, "stage", stage}, attrs...)...)
		return v.Reply.ToSMTP()
	case milter.Discard:
		info.log.Info("milter discards the message", append([]any{"milter", v.Milter, "stage", stage}, attrs...)...)
	}
	return nil
}

// milterGreet starts the milter side of a connection at its first HELO
// (Connect, then Helo) and returns the reply that refuses it, if any. Later
// HELOs of a refused connection get the same reply.
func (s *Server) milterGreet(c *conn, helo string) *smtp.SMTPError {
	cl := s.deps.Milters[c.info.kind]
	if cl == nil || cl.Len() == 0 {
		return nil
	}
	info := c.info
	mc := info.milters
	if mc == nil {
		macros := map[string]string{}
		if ta, ok := c.LocalAddr().(*net.TCPAddr); ok {
			macros["{daemon_addr}"] = ta.AddrPort().Addr().Unmap().String()
		}
		mc = &milterConn{s: cl.NewSession(info.log, macros)}
		info.milters = mc
		context.AfterFunc(info.ctx, mc.close)
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.closed {
		return milterReply(info, closedVerdict(), "connect")
	}
	var port uint16
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		port = uint16(ta.Port)
	}
	v := mc.s.Connect(info.ctx, "", info.ip, port)
	if v.Decision != milter.Continue {
		return milterReply(info, v, "connect")
	}
	return milterReply(info, mc.helo(info.ctx, helo, c.TLS()), "helo", "helo", printable(helo))
}

// milterMail reports MAIL FROM, after HELO again if the client greeted
// again or started TLS since.
func (s *session) milterMail(sender string, opts *smtp.MailOptions) *smtp.SMTPError {
	mc := s.info.milters
	if mc == nil {
		return nil
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.closed {
		return milterReply(s.info, closedVerdict(), "mail")
	}
	ctx := s.info.ctx
	st := s.c.TLS()
	if helo := s.sc.Hostname(); helo != mc.heloName || (st != nil) != mc.heloTLS {
		if rep := milterReply(s.info, mc.helo(ctx, helo, st), "helo", "helo", printable(helo)); rep != nil {
			return rep
		}
	}
	mc.s.SetMacro("i", "") // the queue id is known at the end of the message only
	mc.s.SetMacro("{auth_authen}", s.authUser)
	authType := ""
	if s.authUser != "" {
		authType = s.authMech
	}
	mc.s.SetMacro("{auth_type}", authType)
	return milterReply(s.info, mc.s.Mail(ctx, sender, mailArgs(opts)), "mail", "from", printable(sender))
}

// milterRcpt reports one recipient that facteur accepts.
func (s *session) milterRcpt(rcpt string, opts *smtp.RcptOptions) *smtp.SMTPError {
	mc := s.info.milters
	if mc == nil {
		return nil
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.closed {
		return milterReply(s.info, closedVerdict(), "rcpt")
	}
	return milterReply(s.info, mc.s.Rcpt(s.info.ctx, rcpt, rcptArgs(opts)), "rcpt", "to", printable(rcpt))
}

// milterData reports DATA (or the first BDAT), before the message is read.
func (s *session) milterData(mc *milterConn) *smtp.SMTPError {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.closed {
		return milterReply(s.info, closedVerdict(), "data")
	}
	return milterReply(s.info, mc.s.Data(s.info.ctx), "data")
}

// milterFilter is the cleanup Message.Filter of a message: the milters'
// end of message over the spooled message, and their verdict and changes
// as cleanup applies them.
func (s *session) milterFilter(mc *milterConn, env envelope.Envelope) func(context.Context, *cleanup.Spooled) (*cleanup.Filtered, error) {
	return func(ctx context.Context, sp *cleanup.Spooled) (*cleanup.Filtered, error) {
		mc.mu.Lock()
		defer mc.mu.Unlock()
		if mc.closed {
			return nil, milter.TempFailReply()
		}
		hdr, body, err := milter.SplitMessage(sp.Message, sp.Message.Size(), maxMilterHeader)
		if err != nil {
			mc.s.Abort(ctx)
			if errors.Is(err, milter.ErrHeaderTooLong) {
				return nil, fmt.Errorf("%w: header block over %d bytes for the milters", envelope.MessageTooBig(), maxMilterHeader)
			}
			return nil, fmt.Errorf("milters: read the spooled message: %w", err)
		}
		pre := milter.ParseHeader([]byte(sp.Prepend))
		full := append(pre[:len(pre):len(pre)], hdr...)
		mc.s.SetMacro("i", sp.QueueID)
		res, err := mc.s.Message(ctx, full, body)
		if err != nil {
			return nil, fmt.Errorf("milters: %w", err)
		}
		log := s.info.log.With("queue_id", sp.QueueID)
		switch res.Decision {
		case milter.Discard:
			log.Info("milter discards the message", "milter", res.Milter, "stage", "end-of-message")
			return &cleanup.Filtered{Discard: true}, nil
		case milter.Reject, milter.TempFail:
			log.Info("milter refuses the message", "milter", res.Milter, "reply", res.Reply.String())
			return nil, res.Reply
		}
		f := milterFiltered(res, full, len(pre), body, sp.Prepend, &env, log)
		if res.Modified() || res.Quarantine != "" {
			log.Info("milter changes", "changes", changeSummary(res), "body_replaced", res.BodyReplaced,
				"sender_changed", res.SenderChanged, "quarantine", res.Quarantine, "rewrite", f.Rewrite != nil)
		}
		return f, nil
	}
}

// milterFiltered turns what the milters changed into what cleanup applies
// (see the comment at the top of the file). full is the header they saw:
// npre fields of the prepend, then the spooled header; body the spooled
// body.
func milterFiltered(res *milter.Result, full milter.Header, npre int, body *io.SectionReader, prepend string,
	env *envelope.Envelope, log *slog.Logger) *cleanup.Filtered {
	f := &cleanup.Filtered{Prepend: prepend, Hold: res.Quarantine}
	if res.SenderChanged {
		if sender, ok := milterAddress(res.Sender, true); ok {
			f.SenderChanged, f.Sender = true, sender
		} else {
			log.Warn("milter sender change ignored: bad address", "sender", printable(res.Sender))
		}
	}
	rcptChanged, headerChanged, addsOnly := false, false, true
	for _, c := range res.Changes {
		switch c.Kind {
		case milter.AddRcpt, milter.DelRcpt:
			rcptChanged = true
		case milter.AddHeader, milter.InsertHeader:
			headerChanged = true
		default:
			headerChanged, addsOnly = true, false
		}
	}
	if rcptChanged {
		f.Recipients = milterRecipients(env.Recipients, res.Changes, log)
	}
	if !headerChanged && !res.BodyReplaced {
		return f
	}
	if addsOnly && !res.BodyReplaced {
		if p, ok := addedPrepend(res.Header(full), full, npre); ok {
			f.Prepend = p
			return f
		}
	}
	f.Rewrite = func(w io.Writer) error {
		_, err := res.Apply(w, full, io.NewSectionReader(body, 0, body.Size()), nil)
		return err
	}
	return f
}

// addedPrepend returns the prepend of a header to which fields were only
// added: the fields of final that are not the spooled header's (the first
// npre fields of orig came from the prepend), in order. ok is false when
// the result cannot be a prepend (too long, not UTF-8 for its text column,
// or final is not orig with fields added); the message is rewritten then.
func addedPrepend(final, orig milter.Header, npre int) (string, bool) {
	var b strings.Builder
	j := 0
	for _, f := range final {
		if j < len(orig) && f == orig[j] {
			j++
			if j > npre {
				continue // a field of the spool file
			}
		}
		if f.Name == "" {
			return "", false
		}
		b.WriteString(f.Name)
		b.WriteByte(':')
		b.WriteString(f.Value)
		b.WriteString("\r\n")
	}
	p := b.String()
	if j != len(orig) || len(p) > cleanup.MaxPrependBytes || !utf8.ValidString(p) || strings.IndexByte(p, 0) >= 0 {
		return "", false
	}
	return p, true
}

// milterRecipients applies the milters' recipient changes to the envelope
// recipients: deleted ones (compared without regard to case) go, added
// ones (normalised; a bad address is logged and ignored) come without DSN
// parameters. The result is never nil.
func milterRecipients(rcpts []envelope.Recipient, changes []milter.Change, log *slog.Logger) []envelope.Recipient {
	out := slices.Clone(rcpts)
	for _, c := range changes {
		switch c.Kind {
		case milter.DelRcpt:
			out = slices.DeleteFunc(out, func(r envelope.Recipient) bool { return strings.EqualFold(r.Address, c.Addr) })
		case milter.AddRcpt:
			addr, ok := milterAddress(c.Addr, false)
			if !ok {
				log.Warn("milter recipient ignored: bad address", "milter", c.Milter, "rcpt", printable(c.Addr))
				continue
			}
			if !slices.ContainsFunc(out, func(r envelope.Recipient) bool { return strings.EqualFold(r.Address, addr) }) {
				out = append(out, envelope.Recipient{Address: addr})
			}
		}
	}
	if out == nil {
		out = []envelope.Recipient{}
	}
	return out
}

// milterAddress normalises an address a milter sent; "" is the null
// sender when null is allowed.
func milterAddress(s string, null bool) (string, bool) {
	if s == "" {
		return "", null
	}
	a, err := address.ParseInternal(s)
	if err != nil {
		return "", false
	}
	return a.String(), true
}

// changeSummary lists the changes for the log: "add-header DKIM-Signature
// (opendkim)".
func changeSummary(res *milter.Result) string {
	parts := make([]string, 0, len(res.Changes))
	for _, c := range res.Changes {
		what := c.Name
		if c.Kind == milter.AddRcpt || c.Kind == milter.DelRcpt {
			what = c.Addr
		}
		parts = append(parts, c.Kind.String()+" "+printable(what)+" ("+c.Milter+")")
	}
	return strings.Join(parts, ", ")
}

// mailArgs rebuilds the ESMTP arguments of MAIL FROM for the milters.
func mailArgs(o *smtp.MailOptions) []string {
	if o == nil {
		return nil
	}
	var a []string
	if o.Size > 0 {
		a = append(a, "SIZE="+strconv.FormatInt(o.Size, 10))
	}
	if o.Body != "" {
		a = append(a, "BODY="+string(o.Body))
	}
	if o.UTF8 {
		a = append(a, "SMTPUTF8")
	}
	if o.RequireTLS {
		a = append(a, "REQUIRETLS")
	}
	if o.Return != "" {
		a = append(a, "RET="+string(o.Return))
	}
	if o.EnvelopeID != "" {
		a = append(a, "ENVID="+xtext(o.EnvelopeID))
	}
	if o.Auth != nil {
		if *o.Auth == "" {
			a = append(a, "AUTH=<>")
		} else {
			a = append(a, "AUTH="+xtext(*o.Auth))
		}
	}
	return a
}

// rcptArgs rebuilds the ESMTP arguments of RCPT TO for the milters.
func rcptArgs(o *smtp.RcptOptions) []string {
	if o == nil {
		return nil
	}
	var a []string
	if len(o.Notify) > 0 {
		n := make([]string, len(o.Notify))
		for i, v := range o.Notify {
			n[i] = string(v)
		}
		a = append(a, "NOTIFY="+strings.Join(n, ","))
	}
	if o.OriginalRecipient != "" {
		a = append(a, "ORCPT="+string(o.OriginalRecipientType)+";"+xtext(o.OriginalRecipient))
	}
	return a
}

// xtext encodes s as RFC 3461 4 xtext: "+", "=" and anything outside
// "!".."~" as "+HH".
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
