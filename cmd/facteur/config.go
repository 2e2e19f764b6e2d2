package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/mta/srs"
)

// Config holds process settings only. Everything about domains, mailboxes and
// policy lives in the database.
type Config struct {
	// DatabaseURL is a PostgreSQL URL or key=value connection string.
	DatabaseURL string `toml:"database_url"`
	// SpoolDir holds message bodies (and pickup.sock by default).
	SpoolDir string `toml:"spool_dir"`
	// SpoolMinFree is the free space the spool's file system keeps
	// (Postfix's queue_minfree), as "100M": below it, and for a MAIL FROM
	// whose SIZE= does not fit above it, smtpd answers 452 4.3.1 and no
	// new spool file is created. Default 100M (twice the 50 MiB message
	// limit: at least 1.5 times it, as Postfix advises); "0" keeps no
	// minimum (a SIZE= over half the free space is still refused).
	SpoolMinFree string `toml:"spool_min_free"`
	// MailRoot is the root of virtual Maildirs (mailbox.maildir is relative to it).
	MailRoot string `toml:"mail_root"`
	// Hostname is this host's name in banners, Received: headers and DSNs.
	Hostname string `toml:"hostname"`
	// Node names this node's spool in queue rows; defaults to Hostname.
	Node string `toml:"node"`
	// Postmaster receives double bounces and mail to postmaster of domains
	// without such an alias.
	Postmaster string `toml:"postmaster"`

	Listen    ListenConfig    `toml:"listen"`
	TLS       TLSConfig       `toml:"tls"`
	Passwords PasswordsConfig `toml:"passwords"`
	Log       LogConfig       `toml:"log"`
	Queue     QueueConfig     `toml:"queue"`
	Admin     AdminConfig     `toml:"admin"`
	DNS       DNSConfig       `toml:"dns"`
	Policy    PolicyConfig    `toml:"policy"`
	// Milters are the content filters of the SMTP listeners, in the order
	// they run ([[milter]] tables; Postfix's smtpd_milters).
	Milters []MilterConfig `toml:"milter"`
	// SRS rewrites the envelope sender of forwarded mail (DESIGN
	// "Forwarding"); off without a secret file.
	SRS SRSConfig `toml:"srs"`
	// MailOwner owns virtual Maildirs ("user" or "uid:gid"; default vmail
	// when running as root). Never root: Dovecot refuses uid 0.
	MailOwner string `toml:"mail_owner"`
	// DevPostgres is set by `facteur dev`: the private cluster to start.
	DevPostgres *DevPostgresConfig `toml:"dev_postgres"`

	path string // the file this was read from
}

// ListenConfig holds listen addresses per role; empty turns a role off.
type ListenConfig struct {
	SMTP        string `toml:"smtp"`
	Submission  string `toml:"submission"`
	Submissions string `toml:"submissions"`
	QMQP        string `toml:"qmqp"`
	Pickup      string `toml:"pickup"`
	Admin       string `toml:"admin"`
	Metrics     string `toml:"metrics"`
}

// TLSConfig names the certificate and key files (PEM), reloaded when they change.
type TLSConfig struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// PasswordsConfig chooses how new passwords are hashed.
type PasswordsConfig struct {
	Scheme        string `toml:"scheme"`         // ARGON2ID (default), BLF-CRYPT, SHA512-CRYPT
	Argon2Memory  uint32 `toml:"argon2_memory"`  // KiB
	Argon2Time    uint32 `toml:"argon2_time"`    // iterations
	Argon2Threads uint8  `toml:"argon2_threads"` // lanes
	BcryptCost    int    `toml:"bcrypt_cost"`
	// DefaultScheme applies to stored hashes without a {SCHEME} prefix.
	DefaultScheme string `toml:"default_scheme"`
}

// LogConfig chooses the log format and level.
type LogConfig struct {
	Format string `toml:"format"` // text (default) or json
	Level  string `toml:"level"`  // debug, info (default), warn, error
}

// QueueConfig tunes the queue manager (Postfix's qmgr settings). Durations
// are Go durations ("300s", "4h", "120h"); zero means the default.
type QueueConfig struct {
	MinBackoff             Duration `toml:"min_backoff"`             // 300s
	MaxBackoff             Duration `toml:"max_backoff"`             // 4000s
	MaxLifetime            Duration `toml:"max_lifetime"`            // 120h
	BounceLifetime         Duration `toml:"bounce_lifetime"`         // 120h
	DelayWarning           Duration `toml:"delay_warning"`           // 4h; "-1s" turns delay notices off
	Concurrency            int      `toml:"concurrency"`             // 100
	DestinationConcurrency int      `toml:"destination_concurrency"` // 20
	PollInterval           Duration `toml:"poll_interval"`           // 30s
}

// AdminConfig configures the admin service.
type AdminConfig struct {
	// TrustedProxies are the networks of reverse proxies that terminate TLS
	// in front of the admin listener ("10.0.0.5/32"); their
	// X-Forwarded-Proto and X-Forwarded-For are believed.
	TrustedProxies []string `toml:"trusted_proxies"`
}

// DNSConfig chooses the resolver every DNS consumer shares.
type DNSConfig struct {
	// Resolver is "system" (the default) or "none": every name is unknown,
	// so remote mail bounces instead of leaving the machine (facteur dev).
	Resolver string `toml:"resolver"`
}

// PolicyConfig tunes the abuse defence and mail authentication of the
// SMTP listeners (issue 8). What applies to which domain (greylisting,
// DMARC failure handling, outbound limits), the DNSBL sites and the DKIM keys
// live in the database; these are the process-wide knobs. Zero values take
// the defaults.
type PolicyConfig struct {
	// PregreetWait holds the MX banner back this long after its first
	// line; a client that talks meanwhile gets 554 5.5.0 (postscreen's
	// pregreet test). Default 0s, off; 1s is a good production value (see
	// smtpd.Options.PregreetWait).
	PregreetWait Duration `toml:"pregreet_wait"`
	// Authenticate turns SPF, DKIM verification and DMARC on for inbound
	// mail (default true; false adds no Authentication-Results and applies
	// no DMARC policy).
	Authenticate *bool `toml:"authenticate"`
	// UnauthorizedFrom is what happens to submitted mail whose From: the
	// user may not send as: "reject" (553 5.7.1, the default) or
	// "unsigned" (queued without a DKIM signature).
	UnauthorizedFrom string `toml:"unauthorized_from"`
	// DNSBLThreshold is the score at which a client is refused (default 1);
	// DNSWLThreshold, when positive, exempts clients scoring -threshold or
	// lower from greylisting.
	DNSBLThreshold int `toml:"dnsbl_threshold"`
	DNSWLThreshold int `toml:"dnswl_threshold"`
	// Greylisting timings (postgrey's): delay 5m, retry window 4h, expiry
	// 35 days (840h), auto-allow after 5 passed triplets (-1: never).
	GreylistDelay       Duration `toml:"greylist_delay"`
	GreylistRetryWindow Duration `toml:"greylist_retry_window"`
	GreylistExpiry      Duration `toml:"greylist_expiry"`
	GreylistAutoAllow   int      `toml:"greylist_auto_allow"`
	// MessageRate is the most MAIL commands one client address may send
	// per minute (smtpd_client_message_rate_limit); 0, the default, is
	// unlimited.
	MessageRate int `toml:"message_rate"`
}

// MilterConfig is one milter: a content filter speaking the Sendmail milter
// protocol (OpenDKIM, rspamd, ClamAV-milter...), asked about every
// connection, command and message of the listeners it is on. Durations are
// Go durations; zero takes the default.
type MilterConfig struct {
	// Name names the milter in logs (default: its address).
	Name string `toml:"name"`
	// Addr is where it listens: "unix:/path", "inet:host:port",
	// "inet:port@host" or "tcp://host:port".
	Addr string `toml:"addr"`
	// Listeners are the SMTP listeners it filters: "smtp", "submission",
	// "submissions" (default: all three).
	Listeners []string `toml:"listeners"`
	// DefaultAction applies when the milter is down, too slow or broken:
	// "tempfail" (451 4.7.1, the default), "accept" (carry on without it)
	// or "reject" (554 5.7.1); Postfix's milter_default_action.
	DefaultAction string `toml:"default_action"`
	// ConnectTimeout bounds connecting (30s), CommandTimeout each protocol
	// packet (30s), ContentTimeout a whole stage, the message content
	// included (300s): milter_connect_timeout, milter_command_timeout,
	// milter_content_timeout.
	ConnectTimeout Duration `toml:"connect_timeout"`
	CommandTimeout Duration `toml:"command_timeout"`
	ContentTimeout Duration `toml:"content_timeout"`
}

// authenticate reports whether inbound mail is authenticated.
func (p PolicyConfig) authenticate() bool { return p.Authenticate == nil || *p.Authenticate }

// Duration is a time.Duration written as a Go duration string.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration ("90s", "4h").
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration back in the same form.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// DevPostgresConfig describes the private cluster of `facteur dev`.
type DevPostgresConfig struct {
	Dir  string `toml:"dir"`
	Port int    `toml:"port"`
}

// configCandidates lists where the configuration is looked for, in order.
func configCandidates() []string {
	var c []string
	if env := os.Getenv("FACTEUR_CONFIG"); env != "" {
		c = append(c, env)
	}
	return append(c, "facteur.toml", filepath.Join(".facteur", "facteur.toml"), "/etc/facteur/facteur.toml")
}

// loadConfig reads the configuration from path, or from the first candidate
// that exists. Unknown keys are an error, so a typo never passes silently.
func loadConfig(path string) (*Config, error) {
	if path == "" {
		for _, p := range configCandidates() {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("config %s: %w", p, err)
			}
		}
	}
	cfg := &Config{}
	if path != "" {
		md, err := toml.DecodeFile(path, cfg)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			keys := make([]string, len(und))
			for i, k := range und {
				keys[i] = k.String()
			}
			return nil, fmt.Errorf("config %s: unknown settings: %s", path, strings.Join(keys, ", "))
		}
		cfg.path = path
	}
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = os.Getenv("FACTEUR_DATABASE_URL")
	}
	cfg.applyDefaults()
	return cfg, nil
}

func (c *Config) applyDefaults() {
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
		if c.Hostname == "" {
			c.Hostname = "localhost"
		}
	}
	if c.Node == "" {
		c.Node = c.Hostname
	}
	if c.SpoolDir == "" {
		c.SpoolDir = "/var/spool/facteur"
	}
	if c.SpoolMinFree == "" {
		c.SpoolMinFree = defaultSpoolMinFree
	}
	if c.MailRoot == "" {
		c.MailRoot = "/var/mail/vhosts"
	}
	if c.Postmaster == "" {
		c.Postmaster = "postmaster@" + c.Hostname
	}
	if c.Listen.Pickup == "" {
		c.Listen.Pickup = filepath.Join(c.SpoolDir, "pickup.sock")
	}
	if c.Passwords.Scheme == "" {
		c.Passwords.Scheme = "ARGON2ID"
	}
	if c.Passwords.DefaultScheme == "" {
		c.Passwords.DefaultScheme = "CRYPT"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.DNS.Resolver == "" {
		c.DNS.Resolver = "system"
	}
	if c.Policy.UnauthorizedFrom == "" {
		c.Policy.UnauthorizedFrom = "reject"
	}
}

// defaultSpoolMinFree is spool_min_free's default.
const defaultSpoolMinFree = "100M"

// spoolMinFree returns spool_min_free in bytes (0: no minimum).
func (c *Config) spoolMinFree() (uint64, error) {
	if strings.TrimSpace(c.SpoolMinFree) == "0" {
		return 0, nil
	}
	n, err := dataParseSize(c.SpoolMinFree)
	if err != nil {
		return 0, fmt.Errorf("spool_min_free: %w", err)
	}
	return uint64(n), nil
}

// hasher returns the password hasher the configuration describes.
func (c *Config) hasher() (*passwd.Hasher, error) {
	pw := c.Passwords
	h, err := passwd.New(passwd.Options{Scheme: pw.Scheme, Argon2Memory: pw.Argon2Memory, Argon2Time: pw.Argon2Time,
		Argon2Threads: pw.Argon2Threads, BcryptCost: pw.BcryptCost, DefaultScheme: pw.DefaultScheme})
	if err != nil {
		return nil, fmt.Errorf("passwords: %w", err)
	}
	return h, nil
}

// SRSConfig configures the Sender Rewriting Scheme: mail that an alias
// forwards to another host from a sender outside our domains leaves with an
// SRS0 envelope sender in Domain, and bounces to SRS addresses of ours are
// sent back to the sender they encode.
type SRSConfig struct {
	// SecretFile holds the HMAC secrets, one per line ("#" comments and
	// blank lines skipped): the first signs new addresses, all of them
	// verify, so a new secret goes first and the old one stays below it for
	// MaxAge days. Empty: SRS is off.
	SecretFile string `toml:"secret_file"`
	// Domain is the domain of SRS addresses (default: hostname). Mail to it
	// must reach this host (an MX record); it needs no domain row.
	Domain string `toml:"domain"`
	// MaxAge is how many days an SRS address stays valid (default 21).
	MaxAge int `toml:"max_age"`
}

// srs returns the SRS rewriter, nil when SRS is off.
func (c *Config) srs() (*srs.SRS, error) {
	if c.SRS.SecretFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.SRS.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("srs secret file: %w", err)
	}
	var secrets []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			secrets = append(secrets, line)
		}
	}
	if len(secrets) == 0 {
		return nil, fmt.Errorf("srs secret file %s: no secret in it", c.SRS.SecretFile)
	}
	r, err := srs.New(srs.Options{Secrets: secrets, MaxAge: c.SRS.MaxAge})
	if err != nil {
		return nil, fmt.Errorf("srs secret file %s: %w", c.SRS.SecretFile, err)
	}
	return r, nil
}

// srsDomain is the domain of this host's SRS addresses.
func (c *Config) srsDomain() string {
	if c.SRS.Domain != "" {
		return c.SRS.Domain
	}
	return c.Hostname
}

// lookupsSRS sets the SRS reversal of resolver options o when SRS is on.
func (c *Config) lookupsSRS(o *lookups.Options) error {
	r, err := c.srs()
	if err != nil || r == nil {
		return err
	}
	o.SRS, o.SRSDomain = r, c.srsDomain()
	return nil
}
