package smtpd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/dnsbl"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/greylist"
	"github.com/facteur/facteur/mta/msgauth"
	"github.com/facteur/facteur/mta/ratelimit"
	"github.com/facteur/facteur/store"
)

// This file holds the abuse defence and mail authentication of a session,
// in the order a session meets them:
//
//   - connection (MX): the DNSBL check and the pregreet test, done by conn
//     before the banner (admit);
//   - MAIL: the client's message rate (Deps.Messages), the outbound limits
//     of an authenticated user (Deps.Outbound);
//   - RCPT: greylisting (Deps.Greylist), the recipients-per-message limit;
//     at the first recipient accepted, SPF of MAIL FROM (Deps.MsgAuth),
//     which runs in the background until the end of DATA (no DNS work for
//     transactions whose recipients are all refused);
//   - end of DATA: DKIM and DMARC with the recipient domains' policy, or
//     DKIM signing for an authenticated user, as a cleanup Message.Check,
//     which sees the message while it is spooled; the outbound counters
//     after the 250.

// DNSBL is mta/dnsbl's Checker.
type DNSBL interface {
	Check(ctx context.Context, ip netip.Addr) (dnsbl.Verdict, error)
}

// Greylister is mta/greylist's Greylister.
type Greylister interface {
	Check(ctx context.Context, r greylist.Request) (greylist.Verdict, error)
}

// MessageRate is the per-client message rate: mta/ratelimit's Anvil. It
// returns a 450 4.7.1 Reply over the limit.
type MessageRate interface {
	Message(ip netip.Addr) error
}

// Outbound is mta/ratelimit's Outbound.
type Outbound interface {
	Mail(ctx context.Context, mailbox string) (*ratelimit.Transaction, error)
	Record(ctx context.Context, mailbox string, recipients int) error
}

// MsgAuth is mta/msgauth's Checker.
type MsgAuth interface {
	CheckSPF(ctx context.Context, ip netip.Addr, helo, mailFrom string) msgauth.SPFResult
	VerifyDKIM(ctx context.Context, msg io.Reader) []msgauth.DKIMResult
	EvaluateDMARC(ctx context.Context, fromDomain string, spf msgauth.SPFResult, dkims []msgauth.DKIMResult) msgauth.DMARCResult
}

// DomainPolicies gives a recipient domain's policy (store.Store).
type DomainPolicies interface {
	EffectiveDomainPolicy(ctx context.Context, domain string) (store.DomainPolicy, error)
}

// maxRefusedCommands is how many commands a client refused at connection
// may send before it is disconnected.
const maxRefusedCommands = 5

// admit runs the connection checks of the MX listener before its banner:
// the DNSBL lookup (in the background) and the pregreet wait. It returns
// the reply to send instead of the banner, if the client is refused, and
// whether to close the connection at once.
func (c *conn) admit() (refuse *envelope.Reply, closeNow bool) {
	if c.ls.kind != MX {
		return nil, false
	}
	srv := c.srv
	type result struct {
		v   dnsbl.Verdict
		err error
	}
	var verdict chan result
	if srv.deps.DNSBL != nil && !c.trustedNetwork() {
		verdict = make(chan result, 1)
		go func() {
			v, err := srv.deps.DNSBL.Check(c.info.ctx, c.info.ip)
			verdict <- result{v, err}
		}()
	}
	if wait := srv.opts.PregreetWait; wait > 0 {
		// The first line of a two-line banner, then silence: a client
		// that talks now has not waited for the greeting (RFC 5321 3.1,
		// 4.3.1; Postfix postscreen_greet_wait).
		c.raw.SetWriteDeadline(time.Now().Add(srv.opts.WriteTimeout))
		if _, err := c.cur.Write([]byte("220-" + srv.opts.Hostname + " ESMTP\r\n")); err != nil {
			c.info.setEnd("write failed")
			return nil, true
		}
		c.raw.SetReadDeadline(time.Now().Add(wait))
		_, err := c.br.Peek(1)
		c.raw.SetReadDeadline(time.Time{})
		switch {
		case err == nil:
			c.info.log.Info("client talked before the greeting", "pregreet_wait", wait.String())
			c.info.setEnd("pregreet")
			r := envelope.Pregreet()
			return &r, true
		case !isTimeout(err):
			c.info.setEnd("disconnect before the greeting")
			return nil, true
		}
	}
	if verdict == nil {
		return nil, false
	}
	res := <-verdict
	if res.err != nil {
		// The lists are a hint: without them, the client is let in.
		c.info.log.Warn("dnsbl check failed; client let in", "err", res.err)
		return nil, false
	}
	v := res.v
	c.info.dnswl.Store(v.Allowlisted)
	if r, listed := v.Reply(); listed {
		zones := make([]string, len(v.Hits))
		for i, h := range v.Hits {
			zones[i] = h.Zone
		}
		c.info.log.Info("client listed by dnsbl", "score", v.Score, "lists", strings.Join(zones, ","), "cached", v.Cached)
		c.info.setEnd("dnsbl")
		return &r, false
	}
	if v.Score != 0 || v.Incomplete {
		c.info.log.Debug("dnsbl", "score", v.Score, "allowlisted", v.Allowlisted, "incomplete", v.Incomplete)
	}
	return nil, false
}

// trustedNetwork reports whether client_access permits the client to relay:
// such networks (our own servers) skip the DNSBL. A lookup failure is "no".
func (c *conn) trustedNetwork() bool {
	relay, _, _, err := c.srv.deps.Lookups.ClientAccess(c.info.ctx, c.info.ip)
	if err != nil {
		c.info.log.Warn("client access lookup failed", "err", err)
		return false
	}
	return relay
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// spfCheck is an SPF evaluation started at the first accepted RCPT and
// awaited at the end of DATA, so that its DNS lookups overlap the rest of
// the transaction.
type spfCheck struct {
	done chan struct{}
	res  msgauth.SPFResult
}

func startSPF(ctx context.Context, m MsgAuth, ip netip.Addr, helo, mailFrom string) *spfCheck {
	s := &spfCheck{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.res = m.CheckSPF(ctx, ip, helo, mailFrom)
	}()
	return s
}

func (s *spfCheck) wait(ctx context.Context) msgauth.SPFResult {
	select {
	case <-s.done:
		return s.res
	case <-ctx.Done():
		return msgauth.SPFResult{Result: msgauth.ResultTempError, Reason: ctx.Err().Error()}
	}
}

// authenticate is the cleanup Message.Check of inbound mail: DKIM
// verification of the message as it is spooled, then DMARC with the SPF
// result of the transaction, and the DMARC failure policy of the recipients' domains
// (domain_policy.dmarc_failure): the message is refused (550 5.7.1) only
// when every recipient's domain rejects it; otherwise it is delivered, with
// an X-Facteur-Quarantine mark when any recipient's domain quarantines (or
// rejects) it, for the mailbox user's filters (a Sieve rule, or Junk
// folder filing by the Maildir agent, not done yet). It prepends one
// Authentication-Results field under this host's name.
func (s *session) authenticate(spf *spfCheck, rcpts []envelope.Recipient) func(context.Context, io.Reader) (string, error) {
	return func(ctx context.Context, msg io.Reader) (string, error) {
		m := s.srv.deps.MsgAuth
		hdr := &headerCapture{max: 256 << 10}
		dkims := m.VerifyDKIM(ctx, io.TeeReader(msg, hdr))
		from, _ := msgauth.FromDomain(hdr.header()) // "": DMARC permerror
		spfRes := spf.wait(ctx)
		dm := m.EvaluateDMARC(ctx, from, spfRes, dkims)

		// The recipients' policies: reject only if all reject.
		seen := map[string]bool{}
		rejectAll, quarantine := true, false
		var reply envelope.Reply
		for _, r := range rcpts {
			d := ""
			if i := strings.LastIndexByte(r.Address, '@'); i >= 0 {
				d, _ = address.Domain(r.Address[i+1:])
			}
			if seen[d] {
				continue
			}
			seen[d] = true
			local := msgauth.LocalHonour
			if d != "" && s.srv.deps.Policies != nil {
				p, err := s.srv.deps.Policies.EffectiveDomainPolicy(ctx, d)
				if err != nil {
					return "", errors.Join(envelope.LookupFailed(), err)
				}
				local = p.DMARCFailure
			}
			switch dm.Disposition(local) {
			case msgauth.PolicyReject:
				quarantine = true
				reply, _ = dm.Reply(local)
			case msgauth.PolicyQuarantine:
				quarantine, rejectAll = true, false
			default:
				rejectAll = false
			}
		}
		ar := msgauth.AuthResultsHeader(s.srv.opts.Hostname, spfRes, dkims, dm)
		s.info.log.Info("authentication", "spf", string(spfRes.Result), "dkim", dkimSummary(dkims),
			"dmarc", string(dm.Result), "header_from", dm.From, "dmarc_policy", string(dm.Policy),
			"action", string(dm.Action))
		if rejectAll && reply.Code != 0 {
			return "", reply
		}
		if quarantine {
			ar += msgauth.QuarantineField(dm)
		}
		return ar, nil
	}
}

func dkimSummary(ds []msgauth.DKIMResult) string {
	if len(ds) == 0 {
		return string(msgauth.ResultNone)
	}
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = string(d.Result)
		if d.Domain != "" {
			parts[i] += "(" + d.Domain + ")"
		}
	}
	return strings.Join(parts, ",")
}

// headerCapture keeps the first bytes written to it, up to the end of the
// header block or max.
type headerCapture struct {
	buf  bytes.Buffer
	max  int
	done bool
}

func (h *headerCapture) Write(p []byte) (int, error) {
	if h.done {
		return len(p), nil
	}
	from := max(h.buf.Len()-3, 0) // an end split between writes
	n := min(len(p), h.max-h.buf.Len())
	h.buf.Write(p[:n])
	if h.buf.Len() >= h.max || bytes.Contains(h.buf.Bytes()[from:], []byte("\r\n\r\n")) {
		h.done = true
	}
	return len(p), nil
}

// header returns the header block captured (without what followed it).
func (h *headerCapture) header() []byte {
	b := h.buf.Bytes()
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return b[:i+4]
	}
	return b
}
