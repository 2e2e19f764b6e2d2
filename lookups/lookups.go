// Package lookups resolves addresses: it is Postfix's trivial-rewrite plus
// the virtual maps, reading facteur's domains, alias domains, mailboxes,
// aliases and transports from the store. smtpd asks it at RCPT time whether a
// recipient exists (and whether its domain is ours at all), cleanup asks it
// for the final recipients and their next hops, and submission asks it
// whether an authenticated user may use an envelope sender.
//
// # Resolution
//
// An address is normalised (local part lower case, domain in IDNA A-labels),
// its domain rewritten through an active alias domain (u@alias.tld becomes
// u@target.tld), and then searched as virtual(5) does:
//
//  1. user+ext@domain (only when the local part has an extension),
//  2. user@domain (the extension is kept for delivery),
//  3. @domain (the catch-all).
//
// At each step an active alias wins over an active mailbox of the same
// address. An alias that lists its own address delivers to that address's
// mailbox too (forward and keep a copy). Alias destinations are resolved
// recursively the same way; the extension of an alias matched at step 2 is
// copied to its address destinations (Postfix's
// propagate_unmatched_extensions), and a destination "@other.tld" means the
// same local part at other.tld. Duplicates are removed; a cycle through
// aliases that do not keep a copy is ErrLoop, a chain deeper than
// Options.MaxDepth is ErrTooDeep, more than Options.MaxFanout recipients is
// ErrTooMany. An alias destination in one of our domains that names nothing
// becomes a recipient of class Unknown on the error transport, so it bounces
// as in Postfix. Postmaster without a domain, and postmaster@ any local
// domain that has neither alias nor mailbox, reach Options.Postmaster
// (RFC 5321 4.5.1).
//
// Inactive domains, alias domains, mailboxes, aliases and transports are
// treated as absent; an inactive domain is therefore not ours (as in
// PostfixAdmin, where it leaves virtual_mailbox_domains).
//
// # Errors
//
// A lookup error is never "not found": Resolve returns (result, found, err).
// Errors for which Permanent reports true (a malformed address, a loop, a
// limit) deserve a 5xx reply; any other error is temporary (451 4.3.0).
//
// # Cache
//
// Results, found or not, are cached in process by normalised address for
// Options.CacheTTL. Run listens on facteur_config and drops the whole cache
// on every notification and on every (re)connection of its LISTEN
// connection; while that connection is down the cache is bypassed.
package lookups

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
)

// Permanent errors. Test with errors.Is, or with Permanent.
var (
	// ErrBadAddress means the address is malformed.
	ErrBadAddress = errors.New("malformed address")
	// ErrLoop means alias expansion came back to an address it was expanding.
	ErrLoop = errors.New("alias loop")
	// ErrTooDeep means alias expansion nested deeper than Options.MaxDepth.
	ErrTooDeep = errors.New("alias expansion too deep")
	// ErrTooMany means alias expansion gave more than Options.MaxFanout
	// recipients.
	ErrTooMany = errors.New("alias expansion gives too many recipients")
)

// Permanent reports whether err is a permanent resolution error (the address
// or the configuration is wrong, and asking again will not help). Any other
// error is temporary.
func Permanent(err error) bool {
	return errors.Is(err, ErrBadAddress) || errors.Is(err, ErrLoop) ||
		errors.Is(err, ErrTooDeep) || errors.Is(err, ErrTooMany)
}

// DomainClass says what an address's domain is to this host, as Postfix's
// address classes do.
type DomainClass int

// Domain classes.
const (
	// DomainRemote: not ours (no domain row, or an inactive one). smtpd
	// applies its relay check; Resolve reports found = false.
	DomainRemote DomainClass = iota
	// DomainVirtual: a hosted virtual domain (mailboxes and aliases). An
	// address that resolves to nothing there is unknown (550 5.1.1).
	DomainVirtual
	// DomainLocal: the host's own domain (domain.local, or
	// Options.LocalDomains): aliases may name commands and files, and
	// Options.LocalUser says which system users exist.
	DomainLocal
	// DomainRelay: a backup-MX or relay domain: every address is accepted and
	// relayed (aliases still apply).
	DomainRelay
)

var domainClassNames = [...]string{"remote", "virtual", "local", "relay"}

func (c DomainClass) String() string {
	if c < 0 || int(c) >= len(domainClassNames) {
		return fmt.Sprintf("DomainClass(%d)", int(c))
	}
	return domainClassNames[c]
}

// MarshalText writes the class name (for JSON).
func (c DomainClass) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// Class says how a final recipient is delivered.
type Class int

// Recipient classes.
const (
	// ClassMailbox: a virtual mailbox (Maildir, QuotaBytes apply).
	ClassMailbox Class = iota + 1
	// ClassRemote: an address of a domain that is not ours, sent on.
	ClassRemote
	// ClassRelay: an address of a relay (backup-MX) domain.
	ClassRelay
	// ClassLocal: a system user of a local domain.
	ClassLocal
	// ClassCommand: "|command", on aliases of local domains only.
	ClassCommand
	// ClassFile: "/path/to/file", on aliases of local domains only.
	ClassFile
	// ClassInclude: ":include:/path", read by the local delivery agent.
	ClassInclude
	// ClassUnknown: an alias destination in one of our domains that names no
	// active mailbox or alias; its transport is the error transport, so it
	// bounces.
	ClassUnknown
)

var classNames = [...]string{"", "mailbox", "remote", "relay", "local", "command", "file", "include", "unknown"}

func (c Class) String() string {
	if c <= 0 || int(c) >= len(classNames) {
		return fmt.Sprintf("Class(%d)", int(c))
	}
	return classNames[c]
}

// MarshalText writes the class name (for JSON).
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// Rules that a Result matched at the top level.
const (
	RuleMailbox    = "mailbox"
	RuleAlias      = "alias"
	RuleCatchAll   = "catch-all"
	RulePostmaster = "postmaster"
	RuleLocalUser  = "local-user"
	RuleRelay      = "relay"
	RuleRemote     = "remote"
	RuleSRS        = "srs"
)

// Result is the resolution of one address.
//
// Results may come from the cache: Recipients is a copy, but the strings of
// Via and Explain are shared and must not be modified.
type Result struct {
	// Address is the address looked up, normalised ("postmaster" for the
	// bare postmaster).
	Address string `json:"address"`
	// Domain is what the address's domain is to this host.
	Domain DomainClass `json:"domain_class"`
	// DomainName is the domain after the alias-domain rewrite.
	DomainName string `json:"domain"`
	// MaxMessageBytes is the domain's message size limit (0: none).
	MaxMessageBytes int64 `json:"max_message_bytes,omitempty"`
	// Rule is what matched at the top level (RuleAlias, RuleMailbox, ...), ""
	// when nothing did.
	Rule string `json:"rule"`
	// Recipients are the final recipients. For a remote domain there is one,
	// of class ClassRemote, although found is false.
	Recipients []Recipient `json:"recipients"`
	// Explain traces the resolution for people (facteur lookup).
	Explain []string `json:"explain"`
}

// Recipient is one final recipient with its next hop.
type Recipient struct {
	Class Class `json:"class"`
	// Address is where the message goes: an address (its extension kept),
	// or "|command", "/file", ":include:/path".
	Address string `json:"address"`
	// Transport is the next hop as in the transport table: "maildir",
	// "smtp", "smtp:[host]:port", "lmtp:unix:/path", "lmtp:host:port",
	// "pipe:…", "local", "discard", "error:5.x.x text", "relay:…".
	Transport string `json:"transport"`
	// Mailbox is the mailbox's address (ClassMailbox), without the extension.
	Mailbox string `json:"mailbox,omitempty"`
	// Extension is the address extension (without the delimiter) kept for
	// delivery to Mailbox.
	Extension string `json:"extension,omitempty"`
	// Maildir is the mailbox's Maildir, relative to the mail root.
	Maildir string `json:"maildir,omitempty"`
	// QuotaBytes is the mailbox quota; 0 is unlimited.
	QuotaBytes int64 `json:"quota_bytes,omitempty"`
	// Via lists the aliases expanded to reach this recipient, outermost first.
	Via []string `json:"via,omitempty"`
}

// Options configures a Resolver. The zero value is usable.
type Options struct {
	// RecipientDelimiter is the set of characters that separate a user from
	// an address extension ("+" by default; "+-" allows both). The setting
	// recipient_delimiter in the database, when present, overrides it on
	// every node ("" there turns extensions off).
	RecipientDelimiter string
	// MaxDepth bounds the nesting of aliases (default 20).
	MaxDepth int
	// MaxFanout bounds the recipients of one address (default 1000).
	MaxFanout int
	// CacheTTL is how long a result is kept (default 60 s); a negative value
	// turns the cache off.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached results (default 100000); a
	// negative value turns the cache off.
	CacheSize int
	// Hostname is this host's name; the default Postmaster is
	// postmaster@Hostname.
	Hostname string
	// Postmaster receives mail for the bare postmaster and for postmaster@
	// local domains that have no such alias or mailbox.
	Postmaster string
	// LocalDomains are names treated as DomainLocal even without a domain
	// row (Postfix's mydestination); none by default.
	LocalDomains []string
	// LocalUser reports whether a system user exists, for addresses of local
	// domains that match no alias or mailbox. Nil: no system users.
	LocalUser func(ctx context.Context, name string) (bool, error)
	// Default next hops: MailboxTransport for virtual mailboxes ("maildir"),
	// RemoteTransport for remote addresses ("smtp", by MX), RelayTransport
	// for relay domains ("smtp"), LocalTransport for system users, commands
	// and files ("local").
	MailboxTransport string
	RemoteTransport  string
	RelayTransport   string
	LocalTransport   string
	// Logger receives the listener's connection events (default: discard).
	Logger *slog.Logger
	// OnInvalidate, when set, is called by Run for every facteur_config
	// notification with the payload split at its first ':' (table and key,
	// as facteur_changed sends them: "dkim_key", "mail._domainkey.example.org"),
	// and with table "" and key "" whenever Run (re)connects, since changes
	// may have been missed meanwhile. It lets other caches of the process
	// follow the control plane over this one connection. It runs on Run's
	// goroutine, after the resolver's cache is dropped: it must not block.
	OnInvalidate func(table, key string)
	// SRS, when set, reverses SRS0/SRS1 addresses (DESIGN "Forwarding"): a
	// bounce to one in SRSDomain or in one of our domains goes to the
	// address it encodes (checked: hash and age). An SRS address that does
	// not verify is resolved as any other address (normally 550 5.1.1).
	SRS SRSReverser
	// SRSDomain is the domain this host's SRS addresses are made in (the
	// host name by default); it need not have a domain row.
	SRSDomain string
}

// SRSReverser undoes one SRS forwarding step: for an SRS0 address the
// original sender, for an SRS1 address the SRS0 address at the first
// forwarder; an error when the address does not verify. mta/srs provides
// it.
type SRSReverser interface {
	Reverse(addr string) (string, error)
}

// The cache's defaults (Options.CacheTTL and Options.CacheSize), which
// `facteur serve` uses.
const (
	DefaultCacheTTL  = 60 * time.Second
	DefaultCacheSize = 100000
)

const (
	defaultMaxDepth  = 20
	defaultMaxFanout = 1000
	unknownTransport = "error:5.1.1 user unknown"
	// maxVisitsPerFanout bounds the addresses one resolution may look up,
	// as a multiple of MaxFanout.
	maxVisitsPerFanout = 2
)

// Stats are the resolver's counters, for metrics.
type Stats struct {
	Hits          uint64 // lookups answered from the cache
	Misses        uint64 // lookups that went to the database
	Entries       int    // results in the cache now
	Invalidations uint64 // times the cache was dropped
	Connects      uint64 // LISTEN connections made by Run
}

// Resolver resolves addresses against the store. It is safe for concurrent
// use.
type Resolver struct {
	st           *store.Store
	opts         Options
	localDomains map[string]bool

	results *cache[resultEntry]
	access  *cache[Access]

	// listen is the state of Run's LISTEN connection: listenNever before
	// Run is first called, then listenUp or listenDown.
	listen  atomic.Int32
	running atomic.Bool

	settings atomic.Pointer[settingsSnap]

	hits, misses, connects atomic.Uint64
}

const (
	listenNever int32 = iota
	listenUp
	listenDown
)

type resultEntry struct {
	res   Result
	found bool
}

type settingsSnap struct {
	gen   uint64
	at    time.Time
	delim string
}

// New returns a resolver over st.
func New(st *store.Store, opts Options) *Resolver {
	if opts.RecipientDelimiter == "" {
		opts.RecipientDelimiter = "+"
	}
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = defaultMaxDepth
	}
	if opts.MaxFanout <= 0 {
		opts.MaxFanout = defaultMaxFanout
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Postmaster == "" && opts.Hostname != "" {
		opts.Postmaster = "postmaster@" + opts.Hostname
	}
	if opts.MailboxTransport == "" {
		opts.MailboxTransport = "maildir"
	}
	if opts.RemoteTransport == "" {
		opts.RemoteTransport = "smtp"
	}
	if opts.RelayTransport == "" {
		opts.RelayTransport = "smtp"
	}
	if opts.LocalTransport == "" {
		opts.LocalTransport = "local"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SRSDomain == "" {
		opts.SRSDomain = opts.Hostname
	}
	if d, err := address.Domain(opts.SRSDomain); err == nil {
		opts.SRSDomain = d
	}
	r := &Resolver{st: st, opts: opts, localDomains: map[string]bool{}}
	for _, d := range opts.LocalDomains {
		if n, err := address.Domain(d); err == nil {
			r.localDomains[n] = true
		}
	}
	size, ttl := opts.CacheSize, opts.CacheTTL
	if size < 0 || ttl < 0 {
		size, ttl = 0, 0
	}
	r.results = newCache[resultEntry](size, ttl)
	r.access = newCache[Access](min(size, 10000), ttl)
	return r
}

// Stats returns the resolver's counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		Hits:          r.hits.Load(),
		Misses:        r.misses.Load(),
		Entries:       r.results.len(),
		Invalidations: r.results.drops.Load(),
		Connects:      r.connects.Load(),
	}
}

// Invalidate drops every cached result. Run calls it on every notification;
// a process that changes the data itself may call it too.
func (r *Resolver) Invalidate() {
	r.results.drop()
	r.access.drop()
}

// cacheUsable reports whether results may be cached now: not while Run's
// LISTEN connection is down, since a change would go unnoticed.
func (r *Resolver) cacheUsable() bool { return r.listen.Load() != listenDown }

// Resolve resolves address, given as go-smtp hands it to a session
// (everything before the last '@' is the local part), or as the bare
// "postmaster". found reports whether the address is deliverable here: an
// existing address of a virtual or local domain, or any address of a relay
// domain. For a remote domain found is false, res.Domain is DomainRemote and
// res.Recipients holds the one remote recipient with its transport (for
// clients allowed to relay). For an unknown address of one of our domains
// found is false and res.Domain is not DomainRemote: 550 5.1.1.
//
// err is a permanent error when Permanent(err), else temporary; it is never
// reported as "not found". With an error, res holds only Address and the
// Explain trace so far (to show where a loop or a limit was met).
func (r *Resolver) Resolve(ctx context.Context, addr string) (res Result, found bool, err error) {
	key, fast := asciiKey(addr)
	if fast {
		if e, ok := r.results.get(key); ok {
			r.hits.Add(1)
			return e.res.clone(), e.found, nil
		}
	}
	local, domain, bare, err := r.parse(addr)
	if err != nil {
		return Result{}, false, err
	}
	if !fast {
		key = local + "@" + domain
		if bare {
			key = "postmaster"
		}
		if e, ok := r.results.get(key); ok {
			r.hits.Add(1)
			return e.res.clone(), e.found, nil
		}
	}
	r.misses.Add(1)
	gen := r.results.generation()
	usable := r.cacheUsable()
	res, found, err = r.resolve(ctx, local, domain, bare)
	if err != nil {
		return res, false, err
	}
	if usable {
		r.results.put(key, resultEntry{res: res, found: found}, gen)
	}
	return res.clone(), found, nil
}

// parse normalises an address for lookups.
func (r *Resolver) parse(addr string) (local, domain string, bare bool, err error) {
	if !strings.Contains(addr, "@") {
		if strings.EqualFold(addr, "postmaster") {
			return "postmaster", "", true, nil
		}
		return "", "", false, fmt.Errorf("%w: %q has no domain", ErrBadAddress, addr)
	}
	a, err := address.ParseInternal(addr)
	if err != nil {
		return "", "", false, fmt.Errorf("%w: %w", ErrBadAddress, err)
	}
	return strings.ToLower(a.Local), a.Domain, false, nil
}

// asciiKey returns the cache key of an ASCII address without parsing it: the
// address lower-cased. For ASCII input that is exact (the domain's IDNA
// mapping folds ASCII case as ToLower does), so two inputs with the same key
// resolve alike. Non-ASCII input is keyed after normalisation.
func asciiKey(s string) (string, bool) {
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			return "", false
		}
		if c >= 'A' && c <= 'Z' {
			upper = true
		}
	}
	if upper {
		return strings.ToLower(s), true
	}
	return s, true
}

func (res Result) clone() Result {
	res.Recipients = slices.Clone(res.Recipients)
	return res
}

// delimiter returns the recipient delimiter: the database setting when it
// exists, else Options.RecipientDelimiter. The setting is read once per cache
// generation.
func (r *Resolver) delimiter(ctx context.Context) (string, error) {
	gen := r.results.generation()
	if s := r.settings.Load(); s != nil && s.gen == gen && r.cacheUsable() && r.results.enabled() &&
		time.Since(s.at) < r.results.ttl {
		return s.delim, nil
	}
	m, err := r.st.LookupSettings(ctx)
	if err != nil {
		return "", err
	}
	delim := r.opts.RecipientDelimiter
	if v, ok := m[store.SettingRecipientDelimiter]; ok {
		delim = v
	}
	r.settings.Store(&settingsSnap{gen: gen, at: time.Now(), delim: delim})
	return delim, nil
}
