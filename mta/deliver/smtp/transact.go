package smtp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/envelope"
)

// delivery is the state of one Deliver call for one destination: which
// recipients still wait for a final answer, and the last temporary result of
// each, which becomes its result if no host gives a final one.
type delivery struct {
	msg     *deliver.Message
	sender  string
	rcpts   []deliver.Recipient
	res     []deliver.Result
	pending []int
	last    map[int]deliver.Result
	// stop: a local failure (the spool file) that no other host can fix.
	stop bool
}

func (dv *delivery) setLast(idx []int, r deliver.Result) {
	for _, i := range idx {
		dv.last[i] = r
	}
}

// deliverTo delivers msg to the recipients idx of one destination: a next
// hop, or the MX hosts of domain.
func (a *Agent) deliverTo(ctx context.Context, log *slog.Logger, nexthop, domain string, msg *deliver.Message, sender string, rcpts []deliver.Recipient, idx []int, res []deliver.Result) {
	dv := &delivery{msg: msg, sender: sender, rcpts: rcpts, res: res, pending: idx, last: map[int]deliver.Result{}}
	defer func() {
		for _, i := range dv.pending {
			r, ok := dv.last[i]
			if !ok {
				r = local(451, envelope.Status{4, 4, 1}, "delivery interrupted")
				if err := ctx.Err(); err != nil {
					r.Reply.Text += ": " + err.Error()
				}
			}
			res[i] = r
		}
	}()

	d, err := parseDest(nexthop, domain, a.o.Port)
	if err != nil {
		log.Error("bad next hop", "nexthop", nexthop, "domain", domain, "error", err)
		dv.setLast(idx, local(451, envelope.Status{4, 3, 5}, "mail system configuration error: "+err.Error()))
		return
	}
	pol := a.policy(d)
	var cred *credential
	if d.explicit() && a.o.Credentials != nil {
		user, pass, ok, err := a.o.Credentials.RelayCredentials(ctx, d.nexthop)
		if err != nil {
			log.Error("relay credential lookup failed", "nexthop", d.nexthop, "error", err)
			dv.setLast(idx, local(451, envelope.Status{4, 3, 0}, "relay credential lookup failed for "+d.nexthop))
			return
		}
		if ok {
			cred = &credential{user: user, pass: pass}
		}
	}

	tried := map[netip.AddrPort]bool{}
	sessions := 0
	// A connection kept from an earlier delivery to this destination first,
	// before any DNS lookup (Postfix looks in its connection cache first).
	for len(dv.pending) > 0 && !dv.stop && ctx.Err() == nil {
		s := a.pool.get(d.key)
		if s == nil {
			break
		}
		s.watch(ctx)
		s.c.CommandTimeout = a.o.CommandTimeout
		if err := s.c.Reset(); err != nil {
			// The server closed it while idle, or it broke: not a failure
			// of this delivery, just a connection less.
			log.Debug("cached connection unusable", "relay", s.relay(), "error", err)
			s.unwatch()
			s.c.Close()
			continue
		}
		sessions++
		tried[netip.AddrPortFrom(s.addr, uint16(s.port))] = true
		a.release(s, a.transact(log, s, dv))
		break
	}
	if len(dv.pending) == 0 || dv.stop {
		return
	}

	targets, fail := a.resolve(ctx, d)
	if fail != nil {
		log.Info("cannot resolve destination", "destination", d.key, "reply", fail.Reply.String())
		if fail.Status == deliver.Bounced {
			for _, i := range dv.pending {
				res[i] = *fail
			}
			dv.pending = nil
			return
		}
		dv.setLast(dv.pending, *fail)
		return
	}
	addrs := 0
	for _, t := range targets {
		for _, ip := range t.addrs {
			if len(dv.pending) == 0 || dv.stop || ctx.Err() != nil ||
				addrs >= a.o.MaxAddresses || sessions >= a.o.MaxSessions {
				return
			}
			ap := netip.AddrPortFrom(ip, uint16(d.port))
			if tried[ap] {
				continue
			}
			tried[ap] = true
			addrs++
			s, f := a.open(ctx, log, d, t.name, ip, pol, cred)
			if f != nil {
				if f.greeted {
					sessions++
				}
				dv.setLast(dv.pending, f.res)
				continue
			}
			sessions++
			a.release(s, a.transact(log, s, dv))
		}
	}
}

// release puts s back into the pool when it may be reused, else ends it:
// QUIT when it is in step with the server, a plain close when not.
func (a *Agent) release(s *session, state after) {
	if !s.unwatch() {
		// The caller's context ended and closed the connection.
		s.c.Close()
		return
	}
	s.uses++
	if state == reuse && s.uses < a.o.ReuseCount && time.Since(s.born) < a.o.ReuseTime && a.pool.put(s.key, s) {
		return
	}
	if state != broken {
		a.quitClient(s.c)
	}
	s.c.Close()
	s.raw.Close()
}

// after says what becomes of a session after a transaction.
type after int

const (
	broken  after = iota // the connection failed: close it
	healthy              // in step with the server: QUIT
	reuse                // it delivered a message: keep it for the next one
)

// transact runs one mail transaction on s for the pending recipients of dv:
// final results (2yz, 5yz, unknown outcome) go to dv.res, temporary ones to
// dv.last, and those recipients stay pending for the next host. Only a
// session that delivered a message is kept for reuse, as Postfix's cache
// does.
func (a *Agent) transact(log *slog.Logger, s *session, dv *delivery) after {
	c, relay := s.c, s.relay()
	idx := dv.pending
	final := func(ids []int, r deliver.Result) {
		for _, i := range ids {
			dv.res[i] = r
		}
		dv.pending = without(dv.pending, ids)
	}
	temporary := func(ids []int, r deliver.Result) { dv.setLast(ids, r) }

	// RFC 1870 6: a message larger than the server's SIZE will be refused.
	c.CommandTimeout = a.o.CommandTimeout
	if max, ok := c.MaxMessageSize(); ok && max > 0 && dv.msg.Size > int64(max) {
		final(idx, deliver.Result{Status: deliver.Bounced, Relay: relay, RemoteMTA: s.host, Reply: envelope.Reply{
			Code: 552, Enhanced: envelope.Status{5, 3, 4},
			Text: fmt.Sprintf("message size %d exceeds size limit %d of server %s", dv.msg.Size, max, relay)}})
		return healthy
	}

	// RFC 6531 3.4: SMTPUTF8 only to a server that offers it. A message
	// that asked for it but whose envelope and header are ASCII goes
	// without (Postfix does the same); one that needs it bounces.
	utf8 := false
	if dv.msg.SMTPUTF8 {
		if ok, _ := c.Extension("SMTPUTF8"); ok {
			utf8 = true
		} else {
			need, err := needsSMTPUTF8(dv.msg, dv.sender, dv.rcpts, idx)
			if err != nil {
				log.Error("cannot read the message", "error", err)
				temporary(idx, local(451, envelope.Status{4, 3, 0}, "error reading message file"))
				dv.stop = true
				return healthy
			}
			if need {
				final(idx, deliver.Result{Status: deliver.Bounced, Relay: relay, RemoteMTA: s.host, Reply: envelope.Reply{
					Code: 553, Enhanced: envelope.Status{5, 6, 7},
					Text: "SMTPUTF8 is required, but was not offered by host " + relay}})
				return healthy
			}
		}
	}
	dsn, _ := c.Extension("DSN")

	if err := c.Mail(dv.sender, mailOptions(dv.msg, utf8, dsn)); err != nil {
		var se *gosmtp.SMTPError
		if !errors.As(err, &se) {
			temporary(idx, lost(s, err, "sending MAIL FROM"))
			return broken
		}
		r := result(s, remote(se))
		log.Info("sender rejected", "relay", relay, "reply", r.Reply.String())
		if r.Status == deliver.Bounced {
			final(idx, r)
		} else {
			temporary(idx, r)
		}
		return healthy
	}

	var accepted, rejected []int
	for _, i := range idx {
		rc := dv.rcpts[i]
		if strings.ContainsAny(rc.Address, "\r\n") {
			final([]int{i}, local(501, envelope.Status{5, 1, 3}, "bad recipient address syntax"))
			continue
		}
		err := c.Rcpt(rc.Address, rcptOptions(rc, dsn))
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		var se *gosmtp.SMTPError
		if !errors.As(err, &se) {
			// Recipients with a reply of their own keep it.
			temporary(without(dv.pending, rejected), lost(s, err, "sending RCPT TO"))
			return broken
		}
		r := result(s, remote(se))
		if r.Status == deliver.Delivered { // a 2yz that go-smtp took for an error
			accepted = append(accepted, i)
			continue
		}
		rejected = append(rejected, i)
		if r.Status == deliver.Bounced {
			final([]int{i}, r)
		} else {
			temporary([]int{i}, r)
		}
	}
	if len(accepted) == 0 {
		return resetAfter(c)
	}

	body, err := dv.msg.Open()
	if err != nil {
		log.Error("cannot open the message", "error", err)
		temporary(accepted, local(451, envelope.Status{4, 3, 0}, "error reading message file"))
		dv.stop = true
		return resetAfter(c)
	}
	defer body.Close()

	c.CommandTimeout = a.o.DataInitTimeout
	w, err := c.Data()
	if err != nil {
		var se *gosmtp.SMTPError
		if !errors.As(err, &se) {
			temporary(accepted, lost(s, err, "sending DATA command"))
			return broken
		}
		r := result(s, remote(se))
		if r.Status == deliver.Bounced {
			final(accepted, r)
		} else {
			temporary(accepted, r)
		}
		return resetAfter(c)
	}
	src := &errReader{r: body}
	if _, err := io.Copy(w, src); err != nil {
		if src.err != nil {
			// Our side failed: never send the final dot of a truncated
			// message; dropping the connection aborts the transaction.
			log.Error("cannot read the message", "error", src.err)
			temporary(accepted, local(451, envelope.Status{4, 3, 0}, "error reading message file"))
			dv.stop = true
			return broken
		}
		temporary(accepted, lost(s, err, "sending message body"))
		return broken
	}
	c.SubmissionTimeout = a.o.DataDoneTimeout
	resp, err := w.CloseWithResponse()
	if err != nil {
		var se *gosmtp.SMTPError
		if !errors.As(err, &se) {
			// The final dot may have arrived: the outcome is unknown, so the
			// recipients are deferred (at-least-once), and not offered to
			// another host now.
			r := lost(s, err, "sending end of data -- message may be sent more than once")
			log.Warn("connection lost after the end of data", "relay", relay, "error", err)
			final(accepted, r)
			return broken
		}
		r := result(s, remote(se))
		if r.Status == deliver.Bounced {
			final(accepted, r)
		} else {
			temporary(accepted, r)
		}
		return healthy
	}
	r := remoteReply(250, resp.StatusText)
	for _, i := range accepted {
		out := deliver.Result{Status: deliver.Delivered, Reply: r, Relay: relay, RemoteMTA: s.host}
		// RFC 3461 5.2.2: a server without DSN accepted the message, so a
		// requested success notice says "relayed".
		if !dsn && notifies(dv.rcpts[i].DSNNotify, envelope.NotifySuccess) {
			out.Relayed = true
		}
		final([]int{i}, out)
	}
	log.Debug("delivered", "relay", relay, "tls", s.tls, "recipients", len(accepted), "reply", r.String())
	return reuse
}

// resetAfter ends a failed transaction with RSET (RFC 5321 4.1.1.5).
func resetAfter(c *gosmtp.Client) after {
	if err := c.Reset(); err != nil {
		return broken
	}
	return healthy
}

// without returns ids without the members of drop.
func without(ids, drop []int) []int {
	out := make([]int, 0, len(ids))
	for _, i := range ids {
		keep := true
		for _, j := range drop {
			if i == j {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, i)
		}
	}
	return out
}

// errReader remembers the error of the underlying reader, to tell a spool
// read error from a network write error after io.Copy.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// maxHeaderScan bounds how much of a message is read to see whether its
// header needs SMTPUTF8.
const maxHeaderScan = 1 << 20

// needsSMTPUTF8 reports whether the envelope or the header of msg has
// non-ASCII characters (RFC 6531 3.2), so that it cannot go to a server
// without SMTPUTF8.
func needsSMTPUTF8(msg *deliver.Message, sender string, rcpts []deliver.Recipient, idx []int) (bool, error) {
	if !isASCII(sender) {
		return true, nil
	}
	for _, i := range idx {
		if !isASCII(rcpts[i].Address) {
			return true, nil
		}
	}
	body, err := msg.Open()
	if err != nil {
		return false, err
	}
	defer body.Close()
	br := bufio.NewReader(io.LimitReader(body, maxHeaderScan))
	for cont := false; ; {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && !isASCII(string(line)) {
			return true, nil
		}
		if err == bufio.ErrBufferFull {
			cont = true
			continue
		}
		blank := !cont && len(strings.TrimRight(string(line), "\r\n")) == 0
		cont = false
		if err != nil || blank {
			// The end of the header (or of the message): its body may
			// have 8-bit text, which 8BITMIME covers, not SMTPUTF8.
			if err != nil && err != io.EOF {
				return false, err
			}
			return false, nil
		}
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// mailOptions builds the MAIL FROM parameters: SIZE (RFC 1870), SMTPUTF8
// (RFC 6531), and RET and ENVID when the server speaks DSN (RFC 3461 4.3,
// 4.4). go-smtp adds BODY=8BITMIME itself when the server offers 8BITMIME.
func mailOptions(msg *deliver.Message, utf8, dsn bool) *gosmtp.MailOptions {
	o := &gosmtp.MailOptions{Size: msg.Size, UTF8: utf8}
	if !dsn {
		return o
	}
	switch strings.ToUpper(msg.DSNRet) {
	case envelope.RetFull:
		o.Return = gosmtp.DSNReturnFull
	case envelope.RetHeaders:
		o.Return = gosmtp.DSNReturnHeaders
	}
	// RFC 3461 4.4: printable ASCII, at most 100 characters; anything else
	// is left out rather than failing the delivery.
	if id := msg.DSNEnvID; id != "" && len(id) <= 100 && printable(id) {
		o.EnvelopeID = id
	}
	return o
}

// rcptOptions builds the RCPT TO parameters NOTIFY and ORCPT when the
// server speaks DSN (RFC 3461 4.1, 4.2). Without an ORCPT from the client,
// the original recipient is sent as one, as Postfix does.
func rcptOptions(r deliver.Recipient, dsn bool) *gosmtp.RcptOptions {
	if !dsn {
		return nil
	}
	o := &gosmtp.RcptOptions{Notify: parseNotify(r.DSNNotify)}
	typ, addr, ok := strings.Cut(r.DSNORcpt, ";")
	if !ok {
		typ, addr = "rfc822", r.Orig
	}
	if addr != "" && !strings.ContainsAny(addr, "\r\n") {
		switch {
		case strings.EqualFold(typ, "rfc822") && printable(addr):
			o.OriginalRecipientType, o.OriginalRecipient = gosmtp.DSNAddressTypeRFC822, addr
		case strings.EqualFold(typ, "rfc822"), strings.EqualFold(typ, "utf-8"):
			o.OriginalRecipientType, o.OriginalRecipient = gosmtp.DSNAddressTypeUTF8, addr
		}
	}
	return o
}

// parseNotify reads a NOTIFY value as stored ("SUCCESS,FAILURE"); an
// invalid one (NEVER with others, unknown words) gives none, so that the
// server applies its default rather than refusing the recipient.
func parseNotify(s string) []gosmtp.DSNNotify {
	if s == "" {
		return nil
	}
	var out []gosmtp.DSNNotify
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.ToUpper(strings.TrimSpace(f))
		switch f {
		case envelope.NotifyNever, envelope.NotifySuccess, envelope.NotifyFailure, envelope.NotifyDelay:
		default:
			return nil
		}
		if seen[f] {
			continue
		}
		seen[f] = true
		out = append(out, gosmtp.DSNNotify(f))
	}
	if seen[envelope.NotifyNever] && len(out) > 1 {
		return nil
	}
	return out
}

// notifies reports whether the NOTIFY value s asks for kind.
func notifies(s, kind string) bool {
	for _, f := range parseNotify(s) {
		if strings.EqualFold(string(f), kind) {
			return true
		}
	}
	return false
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
