// Package smtp is the SMTP delivery agent, Postfix's smtp(8): it delivers a
// queued message to the mail exchangers of the recipients' domain, or to a
// configured next hop (a relay host, "smtp:[host]:port"), and reports one
// result per recipient to the queue manager through deliver.Agent.
//
// For each delivery it
//
//   - finds the hosts to try: the MX records of the domain in preference
//     order (randomised among equal preferences), the domain's own A/AAAA
//     records when it has no MX records (RFC 5321 5.1), or the host of an
//     explicit next hop ("[host]:port" without an MX lookup, "host:port" with
//     one, as Postfix reads them); a null MX (RFC 7505) bounces, and so does
//     an MX list that leads back to this node ("mail for X loops back to
//     myself", Postfix smtp_addr.c);
//   - tries the hosts' addresses in order until one gives a final answer:
//     a refused connection, a 4yz reply or a lost connection moves on to the
//     next address (at most MaxAddresses addresses and MaxSessions SMTP
//     sessions per delivery, Postfix smtp_mx_address_limit and
//     smtp_mx_session_limit); recipients that got a 4yz reply are offered to
//     the next host too, those with a 2yz or 5yz reply are done;
//   - speaks ESMTP through go-smtp's client: EHLO with Options.Hostname,
//     STARTTLS as the TLS policy of the destination says (none, may, encrypt,
//     verify), client AUTH with a relay_credential for explicit next hops,
//     SIZE, SMTPUTF8 and the DSN parameters checked against the EHLO reply,
//     one RCPT per recipient with its reply recorded, DATA whose reply counts
//     for every accepted recipient;
//   - keeps a connection that delivered a message open for a few seconds, so
//     the next message to the same destination reuses it (RSET first).
//
// The go-smtp client does not pipeline: each command waits for its reply.
// A message with 8-bit content is sent as it is to a host that does not
// announce 8BITMIME; Postfix would convert it to quoted-printable unless
// disable_mime_output_conversion is set, but nearly every server accepts
// 8-bit data, and conversion would break signatures over the body.
//
// A connection lost after the final dot leaves the outcome unknown: the
// recipients are deferred and the message may arrive twice, never zero times
// (deliver.Agent's contract).
//
// SECURITY: the agent makes outgoing TCP connections to hosts named by DNS
// or by the transport table, and reads replies from servers that may be
// hostile: replies are bounded in length by go-smtp (and by readReply for
// STARTTLS), every phase has a timeout, and everything runs under the
// caller's context. It reads message bodies through deliver.Message.Open and
// relay passwords through Credentials; it writes no files. Passwords are sent
// only over TLS unless AllowPlaintextAuth is set. Opportunistic TLS (may,
// encrypt) does not authenticate the server (RFC 7435); verify checks the
// certificate against the MX host name, which an attacker who controls DNS
// answers can still choose. Plaintext buffered before STARTTLS is discarded
// (CVE-2011-0411).
package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/srs"
)

// Resolver is the DNS the agent uses: *net.Resolver has this shape, and so
// does the in-process fake of the tests (go-mockdns). A name that does not
// exist (NXDOMAIN) or has no records of the type asked (NODATA) must come
// back as a *net.DNSError with IsNotFound set; any other error is temporary.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Credentials gives the user name and password to authenticate with at a
// next hop (Postfix smtp_sasl_password_maps). nexthop is the transport's next
// hop as written, such as "[smtp.provider.example]:587". ok is false when
// there is none; err means the lookup failed, and the delivery is deferred.
// *store.Store satisfies it (store/relaycred.go).
type Credentials interface {
	RelayCredentials(ctx context.Context, nexthop string) (user, pass string, ok bool, err error)
}

// TLSPolicy says how a destination is to be encrypted (Postfix
// smtp_tls_security_level).
type TLSPolicy string

// TLS policies.
const (
	// TLSNone never uses STARTTLS.
	TLSNone TLSPolicy = "none"
	// TLSMay uses STARTTLS when the server offers it, without checking the
	// certificate (RFC 7435 opportunistic security). When STARTTLS is not
	// offered, or the server refuses it, the message goes in plaintext; when
	// the TLS handshake fails, the same host is tried again in plaintext,
	// as Postfix does.
	TLSMay TLSPolicy = "may"
	// TLSEncrypt requires TLS but does not check the certificate.
	TLSEncrypt TLSPolicy = "encrypt"
	// TLSVerify requires TLS and a certificate that is valid for the MX host
	// name (or the next hop's host) under the configured roots.
	TLSVerify TLSPolicy = "verify"
)

// Options configures the agent. Hostname and Resolver are required; every
// other field has a default. Resolver, Credentials and Forwarded are called
// from concurrent deliveries.
type Options struct {
	// Hostname is the name in EHLO (Postfix smtp_helo_name, myhostname),
	// and an MX host of this name is this node.
	Hostname string
	// LocalAddrs are this node's addresses: an MX host that resolves to one
	// of them is this node, and mail for the domain "loops back to myself"
	// unless a more preferred MX exists (Postfix inet_interfaces and
	// proxy_interfaces). cmd/facteur fills it from the listening addresses.
	LocalAddrs []netip.Addr
	// ListenPorts are the ports this node receives SMTP on (default 25):
	// an explicit next hop at one of LocalAddrs loops only on these.
	ListenPorts []int
	// Resolver answers every DNS question (DESIGN "DNS").
	Resolver Resolver
	// Credentials, when set, is asked for a user name and password for each
	// explicit next hop ("[host]:port" and the like, never for MX delivery).
	Credentials Credentials
	// AllowPlaintextAuth lets AUTH send a password without TLS (a relay on
	// a trusted network). Without it, a next hop with credentials that does
	// not offer TLS is deferred with 4.7.0.
	AllowPlaintextAuth bool

	// TLSPolicy applies to destinations not in TLSPolicies; "" means TLSMay.
	TLSPolicy TLSPolicy
	// TLSPolicies maps a destination, the next hop as written
	// ("[host]:port") or a recipient domain, to its policy (Postfix
	// smtp_tls_policy_maps).
	TLSPolicies map[string]TLSPolicy
	// TLSConfig is the base of every client TLS configuration (root CAs
	// for verify, minimum version, client certificate); it is cloned, and
	// ServerName and InsecureSkipVerify are set per connection.
	TLSConfig *tls.Config

	// Port is the port of MX hosts and of next hops without one; 0 means 25
	// (Postfix smtp_tcp_port).
	Port int
	// Dialer makes the TCP connections (a source address, for instance);
	// nil means a zero net.Dialer. Its Timeout is not used: ConnectTimeout
	// is.
	Dialer *net.Dialer

	// SRS, when set, rewrites the envelope sender of forwarded mail into
	// SRSDomain (DESIGN "Forwarding"); Forwarded tells which messages are
	// forwarded. Both must be set for SRS to apply.
	SRS       *srs.SRS
	SRSDomain string
	// Forwarded reports whether msg, delivered to rcpts, is being forwarded
	// from a sender outside the local domains (an alias expanded to a
	// non-local address): the queue manager decides. An error defers the
	// delivery (451 4.3.0); nil means never.
	Forwarded func(ctx context.Context, msg *deliver.Message, rcpts []deliver.Recipient) (bool, error)

	// Timeouts per phase, with Postfix's defaults in brackets. Each one is
	// also bounded by the context of Deliver.
	ConnectTimeout  time.Duration // TCP connect (30s, smtp_connect_timeout)
	HeloTimeout     time.Duration // greeting and EHLO (300s, smtp_helo_timeout)
	StartTLSTimeout time.Duration // STARTTLS and the handshake (300s, smtp_starttls_timeout)
	CommandTimeout  time.Duration // AUTH, MAIL, RCPT, RSET (300s, smtp_mail_timeout, smtp_rcpt_timeout)
	DataInitTimeout time.Duration // the 354 reply to DATA (120s, smtp_data_init_timeout)
	DataXferTimeout time.Duration // each write of the body (180s, smtp_data_xfer_timeout)
	DataDoneTimeout time.Duration // the reply after the final dot (600s, smtp_data_done_timeout)
	QuitTimeout     time.Duration // QUIT (300s in Postfix; 10s here, nothing depends on it)

	// MaxAddresses and MaxSessions bound the work of one delivery: how many
	// addresses it connects to and how many SMTP sessions it starts (5 and
	// 2, Postfix smtp_mx_address_limit and smtp_mx_session_limit).
	MaxAddresses int
	MaxSessions  int

	// Connection reuse (Postfix's connection cache): a connection that
	// delivered a message waits CacheIdle (5s) for the next message to the
	// same destination, at most CacheMax (20) connections wait in all, and
	// a connection is used for at most ReuseCount (100) messages and
	// ReuseTime (300s, smtp_connection_reuse_time_limit). CacheMax < 0
	// turns reuse off.
	CacheIdle  time.Duration
	CacheMax   int
	ReuseCount int
	ReuseTime  time.Duration

	// Logger is used when a message carries none.
	Logger *slog.Logger
}

// Agent is the SMTP delivery agent. It is safe for concurrent use: the
// queue manager calls Deliver from many goroutines.
type Agent struct {
	o    Options
	log  *slog.Logger
	pool *pool
}

var _ deliver.Agent = (*Agent)(nil)

// New checks o, fills in the defaults and returns an agent. Close it to
// close the connections it keeps for reuse.
func New(o Options) (*Agent, error) {
	if o.Hostname == "" || strings.ContainsAny(o.Hostname, " \t\r\n") {
		return nil, fmt.Errorf("smtp agent: invalid hostname %q", o.Hostname)
	}
	if o.Resolver == nil {
		return nil, errors.New("smtp agent: no resolver")
	}
	if o.TLSPolicy == "" {
		o.TLSPolicy = TLSMay
	}
	if !o.TLSPolicy.valid() {
		return nil, fmt.Errorf("smtp agent: unknown TLS policy %q", o.TLSPolicy)
	}
	for k, p := range o.TLSPolicies {
		if !p.valid() {
			return nil, fmt.Errorf("smtp agent: unknown TLS policy %q for %s", p, k)
		}
	}
	if (o.SRS == nil) != (o.SRSDomain == "") {
		return nil, errors.New("smtp agent: SRS and SRSDomain go together")
	}
	if len(o.ListenPorts) == 0 {
		o.ListenPorts = []int{25}
	}
	if o.Port == 0 {
		o.Port = 25
	}
	if o.Port < 1 || o.Port > 65535 {
		return nil, fmt.Errorf("smtp agent: port %d out of range", o.Port)
	}
	if o.Dialer == nil {
		o.Dialer = &net.Dialer{}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ConnectTimeout, 30*time.Second)
	def(&o.HeloTimeout, 300*time.Second)
	def(&o.StartTLSTimeout, 300*time.Second)
	def(&o.CommandTimeout, 300*time.Second)
	def(&o.DataInitTimeout, 120*time.Second)
	def(&o.DataXferTimeout, 180*time.Second)
	def(&o.DataDoneTimeout, 600*time.Second)
	def(&o.QuitTimeout, 10*time.Second)
	def(&o.CacheIdle, 5*time.Second)
	def(&o.ReuseTime, 300*time.Second)
	if o.MaxAddresses <= 0 {
		o.MaxAddresses = 5
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 2
	}
	if o.CacheMax == 0 {
		o.CacheMax = 20
	}
	if o.ReuseCount <= 0 {
		o.ReuseCount = 100
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Agent{o: o, log: log}
	a.pool = newPool(o.CacheMax, o.CacheIdle, a.quit)
	return a, nil
}

// Close closes the connections kept for reuse (with QUIT) and stops keeping
// new ones. Deliver still works after Close, without reuse.
func (a *Agent) Close() error {
	for _, s := range a.pool.closeAll() {
		a.quit(s)
	}
	return nil
}

func (p TLSPolicy) valid() bool {
	switch p {
	case TLSNone, TLSMay, TLSEncrypt, TLSVerify:
		return true
	}
	return false
}

// Deliver implements deliver.Agent. nexthop is "" for delivery to the MX
// hosts of the recipients' domain, else "[host]:port", "[host]",
// "host:port" or "host".
func (a *Agent) Deliver(ctx context.Context, nexthop string, msg *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	res := make([]deliver.Result, len(rcpts))
	if len(rcpts) == 0 {
		return res
	}
	log := msg.Log
	if log == nil {
		log = a.log.With("queue_id", msg.QueueID)
	}
	log = log.With("agent", "smtp")
	if err := ctx.Err(); err != nil {
		return deliver.All(rcpts, local(451, envelope.Status{4, 4, 2}, "delivery interrupted: "+err.Error()))
	}

	sender := msg.Sender
	if a.o.SRS != nil && a.o.Forwarded != nil && sender != "" {
		fwd, err := a.o.Forwarded(ctx, msg, rcpts)
		if err != nil {
			log.Error("cannot tell whether the message is forwarded", "error", err)
			return deliver.All(rcpts, local(451, envelope.Status{4, 3, 0}, "sender rewriting lookup failed"))
		}
		if fwd {
			sender = a.o.SRS.Forward(sender, a.o.SRSDomain)
			log.Debug("sender rewritten with SRS", "from", msg.Sender, "to", sender)
		}
	}

	if nexthop != "" {
		idx := make([]int, len(rcpts))
		for i := range idx {
			idx[i] = i
		}
		a.deliverTo(ctx, log, nexthop, "", msg, sender, rcpts, idx, res)
		return res
	}
	// MX delivery: the queue groups recipients by next hop, so they share a
	// domain; if they do not, each domain is delivered on its own.
	var order []string
	groups := map[string][]int{}
	for i, r := range rcpts {
		d := strings.ToLower(domainOf(r.Address))
		if _, ok := groups[d]; !ok {
			order = append(order, d)
		}
		groups[d] = append(groups[d], i)
	}
	for _, d := range order {
		a.deliverTo(ctx, log, "", d, msg, sender, rcpts, groups[d], res)
	}
	return res
}

// domainOf returns the part of addr after its last '@'.
func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// local builds a result for a failure found here, before or without any
// remote reply (Postfix logs relay=none).
func local(code int, st envelope.Status, text string) deliver.Result {
	r := deliver.Result{Reply: envelope.Reply{Code: code, Enhanced: st, Text: text}, Relay: "none"}
	switch {
	case code >= 500:
		r.Status = deliver.Bounced
	case code >= 400:
		r.Status = deliver.Deferred
	}
	return r
}
