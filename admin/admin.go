// Package admin is facteur's admin service: the HTTP JSON API under
// /api/v1/ and the web UI (server-rendered pages, ui*.go and templates/)
// through which superadmins, domain admins, API tokens and mailbox users
// manage the control plane. It uses the same store methods as the CLI, so
// limits, validation and audit are the database's, identical everywhere.
// It never imports mta/*: queue actions (queue.go) are row updates plus
// NOTIFY facteur_queue.
//
// The parts: routes.go is the one table of routes, each with its access
// rule, used both to register the routes and by the authorisation matrix
// test; principal.go authenticates a request (session cookie or API token)
// and checks the route's rule; scope.go normalises every name a client
// gives and checks it against the principal's domains; the resource files
// (domains.go, mailboxes.go, …) hold the operations and their JSON
// handlers. Each operation (createMailbox, updateAlias, putVacation,
// queueAction, …) takes the principal and a decoded input and does every
// check itself; the JSON handler and the web UI's form handler (ui_*.go)
// only decode and present, so the API and the UI cannot disagree.
//
// The web UI's pages are in the same route table (uiRoutes), with the access
// rule of the operations they call, so that the authorisation matrix covers
// them too; a page's handler passes every name from the path or the form
// through scopedDomain, scopedAddress or scopedAliasAddress (or a *In store
// lookup for ids) before using it, as the API's do. Forms post
// application/x-www-form-urlencoded (multipart for a CSV file), which
// CrossOriginProtection covers; every change is a POST answered by a
// redirect, or by the form again with each error next to its field
// (apiError carries the field). Pages are html/template with embedded
// assets (a stylesheet, app.js and a vendored htmx, VENDORED.md), no
// inline script or style: the Content-Security-Policy forbids them.
//
// SECURITY: this package is exposed to the network (the admin listener)
// and writes the whole control plane. Every route but /healthz, /readyz,
// the OpenAPI document and the two login routes needs a session cookie or
// an API token; a domain admin's reads and writes are restricted to its
// domains in SQL (store.ListOptions.Scope) or by a check on the
// normalised name before any query, and an object outside its domains is
// "not found", never "forbidden" with its name. Sessions live in
// PostgreSQL (admin_session) under a random 256-bit id of which only the
// SHA-256 is stored; cookies are HttpOnly, SameSite=Lax, and Secure (with
// the __Host- prefix) whenever the client reached us over TLS; a new id is
// issued at login; sessions end after an idle and an absolute timeout, at
// logout (server-side), and when their account is disabled or its password
// changes. State changes never happen on GET/HEAD, unsafe methods pass
// http.CrossOriginProtection, and JSON bodies must be application/json with
// no unknown fields. Logins are throttled per user and per client address
// (login_throttle), verified under a semaphore, with a constant-cost check
// for unknown users; admins may require TOTP, whose last accepted time step
// is stored so that a code works once. API tokens are stored as SHA-256,
// shown once, expire and can be revoked, and act with their admin's current
// rights. Command, file and :include: alias destinations, transports and
// Maildir paths are never accepted from a domain admin or a token.
// Responses carry a strict Content-Security-Policy and nosniff; JSON is
// HTML-escaped. Plain HTTP is served only to loopback clients or through a
// trusted proxy that says the client used https (X-Forwarded-Proto); Serve
// refuses to listen without TLS on other addresses unless such a proxy is
// configured.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"time"

	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store"
)

// Options configure the admin service. Zero fields take the defaults
// documented on each.
type Options struct {
	// Hasher hashes and verifies passwords (required): the configured,
	// Dovecot-compatible scheme, the same as the CLI's.
	Hasher *passwd.Hasher
	// TrustedProxies are the addresses of reverse proxies that terminate
	// TLS in front of the admin listener: their X-Forwarded-Proto and
	// X-Forwarded-For are believed. Empty: none.
	TrustedProxies []netip.Prefix
	// SessionIdleTimeout ends a session without requests for this long
	// (default 30 minutes).
	SessionIdleTimeout time.Duration
	// SessionMaxAge ends any session this long after login (default 12 hours).
	SessionMaxAge time.Duration
	// Password is the policy for new passwords of mailboxes and admins.
	Password PasswordPolicy
	// Throttle limits failed logins.
	Throttle ThrottleOptions
	// TOTPIssuer names the service in authenticator apps (default "facteur").
	TOTPIssuer string
	// ProtectedLocalParts are the local parts of addresses that only a
	// superadmin may delete or disable (default postmaster and abuse).
	ProtectedLocalParts []string
	// MaxConcurrentHashes bounds password hashing and verification at once
	// (default the number of CPUs): each Argon2 hash takes its memory cost.
	MaxConcurrentHashes int
	// MigrationsCurrent, when set, is a readiness check: it returns an
	// error unless the database schema is the one this build needs
	// (SchemaCurrent).
	MigrationsCurrent func(ctx context.Context) error
	// SpoolWritable, when set, is a readiness check for the spool.
	SpoolWritable func(ctx context.Context) error
	// Metrics, when set, is served at GET /metrics to loopback clients
	// only (metrics.go); other hosts scrape the metrics role's listener.
	Metrics http.Handler
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// PasswordPolicy is what a new password must satisfy. Whatever the policy,
// a password may not be the account's own address, local part or username.
type PasswordPolicy struct {
	MinLength  int // characters (default 10)
	MaxLength  int // characters (default 256; BLF-CRYPT also refuses over 72 bytes)
	MinClasses int // of lower case, upper case, digits, others (default 0: no rule)
}

// ThrottleOptions limit failed logins. Failures are counted per username
// (or mailbox) and per client address (an IPv6 client by its /64) within
// Window; reaching the maximum blocks that key for Block.
type ThrottleOptions struct {
	Window          time.Duration // default 15 minutes
	MaxUserFailures int           // default 5
	MaxIPFailures   int           // default 30
	Block           time.Duration // default 15 minutes
}

// tokenTouchEvery is how often a token's last_used_at is written at most.
const tokenTouchEvery = time.Minute

func (o *Options) applyDefaults() error {
	if o.Hasher == nil {
		return errors.New("admin: Options.Hasher is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.SessionIdleTimeout, 30*time.Minute)
	def(&o.SessionMaxAge, 12*time.Hour)
	if o.SessionIdleTimeout > o.SessionMaxAge {
		o.SessionIdleTimeout = o.SessionMaxAge
	}
	defInt(&o.Password.MinLength, 10)
	defInt(&o.Password.MaxLength, 256)
	if o.Password.MaxLength < o.Password.MinLength {
		return fmt.Errorf("admin: password MaxLength %d is below MinLength %d", o.Password.MaxLength, o.Password.MinLength)
	}
	def(&o.Throttle.Window, 15*time.Minute)
	def(&o.Throttle.Block, 15*time.Minute)
	defInt(&o.Throttle.MaxUserFailures, 5)
	defInt(&o.Throttle.MaxIPFailures, 30)
	if o.TOTPIssuer == "" {
		o.TOTPIssuer = "facteur"
	}
	if o.ProtectedLocalParts == nil {
		o.ProtectedLocalParts = []string{"postmaster", "abuse"}
	}
	defInt(&o.MaxConcurrentHashes, runtime.NumCPU())
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Handler is the admin service's http.Handler.
type Handler struct {
	st      *store.Store
	opts    Options
	log     *slog.Logger
	routes  []route
	handler http.Handler
	// hashSem bounds concurrent password hashing and verification.
	hashSem chan struct{}
	// dummyHash is verified for unknown users, so that a login takes as
	// long whether or not the account exists.
	dummyHash string
	ready     readyCache
	// ui holds the web UI's templates and static files.
	ui *uiAssets
}

// New returns the admin service over st. log receives one line per failed
// request and per security event (failed login, block).
func New(st *store.Store, opts Options, log *slog.Logger) (*Handler, error) {
	if err := opts.applyDefaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dummy, err := opts.Hasher.Hash(randomToken(16))
	if err != nil {
		return nil, fmt.Errorf("admin: hash: %w", err)
	}
	h := &Handler{
		st:        st,
		opts:      opts,
		log:       log.With("component", "admin"),
		hashSem:   make(chan struct{}, opts.MaxConcurrentHashes),
		dummyHash: dummy,
	}
	if h.ui, err = loadUI(); err != nil {
		return nil, err
	}
	h.routes = h.routeTable()
	mux, err := h.buildMux()
	if err != nil {
		return nil, err
	}
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.log.WarnContext(r.Context(), "cross-origin request refused", "method", r.Method, "path", r.URL.Path,
			"origin", r.Header.Get("Origin"), "client", h.clientAddr(r))
		err := &apiError{Status: http.StatusForbidden, Code: codeCrossOrigin, Message: "cross-origin request refused"}
		if isUIPath(r.URL.Path) {
			h.uiErrorPage(w, r, nil, err)
			return
		}
		writeError(w, r, h.log, err)
	}))
	h.handler = h.secure(h.withMetrics(cop.Handler(mux)))
	return h, nil
}

func (h *Handler) now() time.Time { return h.opts.Now() }

// ServeHTTP serves the admin service.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.handler.ServeHTTP(w, r) }

// contentSecurityPolicy allows the service's own scripts, styles and images
// and nothing else: no inline script, no framing, forms post to us only.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// secure sets the security headers of every response and refuses plain
// HTTP from anyone but a loopback client or a trusted proxy that saw https.
func (h *Handler) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		secure, ok := h.transport(r)
		if secure {
			hd.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if !ok && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			writeError(w, r, h.log, &apiError{Status: http.StatusForbidden, Code: codeTLSRequired,
				Message: "use https"})
			return
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				h.log.ErrorContext(r.Context(), "panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
				writeError(w, r, h.log, errors.New("panic"))
			}
		}()
		next.ServeHTTP(w, r.WithContext(withSecure(r.Context(), secure)))
	})
}

type secureKey struct{}

func withSecure(ctx context.Context, secure bool) context.Context {
	return context.WithValue(ctx, secureKey{}, secure)
}

// isSecure reports whether the client reached us over TLS (directly or
// through a trusted proxy).
func isSecure(r *http.Request) bool {
	s, _ := r.Context().Value(secureKey{}).(bool)
	return s
}
