// Package milter is facteur's milter client: it speaks the Sendmail milter
// protocol (version 6, as Postfix's smtpd_milters do, and down to version 2
// for old filters) to external content filters such as OpenDKIM, rspamd or
// ClamAV-milter, and turns their answers into SMTP replies
// (envelope.Reply) and message modifications. The wire protocol is
// github.com/emersion/go-milter's client; this package adds what an MTA
// needs around it: several milters in order, per-stage verdicts, timeouts,
// the default action when a milter is down, macros, and applying the
// modifications to a message.
//
// One Client is built per listener from its configuration (New). Each SMTP
// connection gets a Session, which opens one connection to every milter
// (libmilter closes it when the SMTP client leaves, so connections are not
// shared) and is told about each SMTP stage:
//
//	Connect, Helo          connection verdicts (a reject applies to the whole SMTP session)
//	Mail, Rcpt, Data       envelope verdicts (Rcpt: per recipient)
//	Message                header, end of header, body and end of message, after the
//	                       message is spooled: the final verdict and the modifications
//	Abort, Close           RSET or an aborted transaction; QUIT
//
// Several milters run in the configured order, as Sendmail and Postfix do:
// at each stage a milter's reject or tempfail ends the stage and later
// milters are not asked; a milter that accepts is not asked again for the
// rest of the message (or the connection, at Connect and Helo). At the end of
// the message the milters run one after the other, each on the message as the
// milters before it left it (headers changed, body replaced), so a header
// index that a later milter sends refers to the header it saw; Result holds
// every change in the order to apply them, and Result.Apply writes the
// final message.
//
// A milter that cannot be reached, breaks the protocol or does not answer in
// time gets its DefaultAction for the rest of the SMTP session: accept
// (carry on without it), tempfail (451 4.7.1) or reject (554 5.7.1).
//
// SECURITY: the package connects to the milters named in the configuration
// (unix sockets or TCP, normally on loopback) and sends them everything the
// SMTP client sent: envelope, headers and body. It touches no file and no
// database. What milters send back is untrusted input too: replies are
// checked (4yz or 5yz only, control characters removed by envelope.Reply),
// header names and values are checked so that a milter cannot end the header
// early or inject a line, a replacement body is bounded (MaxReplacementSize),
// and packets are bounded by go-milter (1 MiB).
package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultAction is what a Session does when a milter cannot be reached,
// times out or breaks the protocol (Postfix milter_default_action).
type DefaultAction string

const (
	// ActionAccept carries on without the milter.
	ActionAccept DefaultAction = "accept"
	// ActionTempFail answers 451 4.7.1 (Postfix's default).
	ActionTempFail DefaultAction = "tempfail"
	// ActionReject answers 554 5.7.1.
	ActionReject DefaultAction = "reject"
)

// Default timeouts, Postfix's (milter_connect_timeout, milter_command_timeout,
// milter_content_timeout).
const (
	DefaultConnectTimeout = 30 * time.Second
	DefaultCommandTimeout = 30 * time.Second
	DefaultContentTimeout = 300 * time.Second
)

// DefaultMaxReplacementSize bounds a body that a milter sends back when
// Options.MaxReplacementSize is zero.
const DefaultMaxReplacementSize = 64 << 20

// Config is one milter.
type Config struct {
	// Name identifies the milter in logs and in Verdict.Milter; Addr when
	// empty.
	Name string
	// Addr is where the milter listens: "unix:/path" (or "local:/path",
	// "unix:///path"), "inet:host:port" (Postfix), "inet:port@host"
	// (Sendmail, OpenDKIM), "inet6:[::1]:port" or "tcp://host:port".
	Addr string
	// ConnectTimeout bounds connecting to the milter
	// (DefaultConnectTimeout when zero).
	ConnectTimeout time.Duration
	// CommandTimeout bounds every read and write of one protocol packet
	// (DefaultCommandTimeout when zero).
	CommandTimeout time.Duration
	// ContentTimeout bounds one whole stage, the message content at the end
	// of DATA included (DefaultContentTimeout when zero).
	ContentTimeout time.Duration
	// DefaultAction applies when the milter is down, times out or breaks the
	// protocol; ActionTempFail when empty.
	DefaultAction DefaultAction
	// Macros names the macros sent at each stage; nil means Postfix's
	// defaults (DefaultMacros).
	Macros *Macros
}

// Macros lists, per stage, the names of the macros sent to a milter before
// the stage's command, as Postfix's milter_*_macros do. A macro without a
// value in the Session is not sent.
type Macros struct {
	Connect, Helo, Mail, Rcpt, Data, EOH, EOM []string
}

// DefaultMacros returns Postfix's default macro lists.
func DefaultMacros() *Macros {
	return &Macros{
		Connect: []string{"j", "{daemon_name}", "{daemon_addr}", "v", "_", "{client_addr}", "{client_name}", "{client_port}"},
		Helo:    []string{"{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"},
		Mail:    []string{"i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}", "{mail_host}", "{mail_mailer}"},
		Rcpt:    []string{"i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"},
		Data:    []string{"i"},
		EOH:     []string{"i"},
		EOM:     []string{"i"},
	}
}

// Options configures a Client.
type Options struct {
	// Milters run in this order.
	Milters []Config
	// Hostname is this host's name, the "j" macro (Postfix $myhostname).
	Hostname string
	// DaemonName is the "{daemon_name}" macro (Postfix
	// milter_macro_daemon_name), such as the listener's name.
	DaemonName string
	// MaxReplacementSize bounds a replacement body (SMFIR_REPLBODY) that a
	// milter sends, which is held in memory; set it to the message size
	// limit. DefaultMaxReplacementSize when zero. A milter that sends more
	// is treated as failed (its DefaultAction applies).
	MaxReplacementSize int64
	// Logger receives one record per milter failure; slog.Default() when
	// nil.
	Logger *slog.Logger
	// DialContext replaces net.Dialer.DialContext (tests).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Client holds the milters of one listener. It is safe for concurrent use;
// each SMTP connection gets its own Session.
type Client struct {
	opts    Options
	milters []milterConfig
}

// milterConfig is a Config with defaults applied and its address parsed.
type milterConfig struct {
	Config
	network, address string
}

// New checks the configuration and returns a Client. It does not connect:
// each Session connects to every milter.
func New(opts Options) (*Client, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxReplacementSize <= 0 {
		opts.MaxReplacementSize = DefaultMaxReplacementSize
	}
	c := &Client{opts: opts}
	for i, cfg := range opts.Milters {
		network, address, err := ParseAddr(cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("milter %d (%s): %w", i+1, cfg.Name, err)
		}
		if cfg.Name == "" {
			cfg.Name = cfg.Addr
		}
		switch cfg.DefaultAction {
		case "":
			cfg.DefaultAction = ActionTempFail
		case ActionAccept, ActionTempFail, ActionReject:
		default:
			return nil, fmt.Errorf("milter %s: default action %q: want accept, tempfail or reject", cfg.Name, cfg.DefaultAction)
		}
		if cfg.ConnectTimeout <= 0 {
			cfg.ConnectTimeout = DefaultConnectTimeout
		}
		if cfg.CommandTimeout <= 0 {
			cfg.CommandTimeout = DefaultCommandTimeout
		}
		if cfg.ContentTimeout <= 0 {
			cfg.ContentTimeout = DefaultContentTimeout
		}
		if cfg.Macros == nil {
			cfg.Macros = DefaultMacros()
		}
		c.milters = append(c.milters, milterConfig{Config: cfg, network: network, address: address})
	}
	return c, nil
}

// Len returns the number of milters; a Client without milters gives
// Sessions that accept everything and change nothing.
func (c *Client) Len() int { return len(c.milters) }

// ParseAddr turns a milter address as Postfix, Sendmail or a URL write it
// into a network ("unix" or "tcp") and an address for net.Dial.
func ParseAddr(addr string) (network, address string, err error) {
	scheme, rest, ok := strings.Cut(addr, ":")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("address %q: want unix:/path, inet:host:port or tcp://host:port", addr)
	}
	switch strings.ToLower(scheme) {
	case "unix", "local":
		path := strings.TrimPrefix(rest, "//")
		if !strings.HasPrefix(path, "/") {
			return "", "", fmt.Errorf("address %q: unix socket path must be absolute", addr)
		}
		return "unix", path, nil
	case "inet", "inet6", "tcp", "tcp4", "tcp6":
		rest = strings.TrimPrefix(rest, "//")
		var host, port string
		if p, h, ok := strings.Cut(rest, "@"); ok {
			// Sendmail: inet:port@host.
			host, port = strings.Trim(h, "[]"), p
		} else if host, port, err = net.SplitHostPort(rest); err != nil {
			return "", "", fmt.Errorf("address %q: %w", addr, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("address %q: bad port %q", addr, port)
		}
		if host == "" {
			host = "localhost"
		}
		return "tcp", net.JoinHostPort(host, port), nil
	}
	return "", "", fmt.Errorf("address %q: unknown transport %q", addr, scheme)
}

// errProtocol marks a milter that broke the protocol.
var errProtocol = errors.New("milter protocol violation")
