package admin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/facteur/facteur/store"
)

// principalKind says how a request authenticated.
type principalKind int

const (
	kindAdmin   principalKind = iota + 1 // an admin's session cookie
	kindToken                            // an API token (Authorization: Bearer)
	kindMailbox                          // a mailbox user's session cookie (self-service)
)

func (k principalKind) String() string {
	switch k {
	case kindAdmin:
		return "admin"
	case kindToken:
		return "token"
	case kindMailbox:
		return "mailbox"
	}
	return "none"
}

// principal is who a request acts as. Its rights are read from the database
// on every request (an admin's active domain grants, whether it is still
// active), so a revoked grant or a disabled account takes effect at once,
// for sessions and tokens alike.
type principal struct {
	kind       principalKind
	username   string   // the admin (kindAdmin, kindToken)
	superadmin bool     // kindAdmin, kindToken
	domains    []string // active grants of a non-superadmin (never nil)
	mailbox    string   // kindMailbox
	tokenID    int64
	tokenName  string
	// sessionHash is the SHA-256 (hex) of the session id (cookie sessions).
	sessionHash string
}

// isAdmin reports whether p acts as an admin (by session or token).
func (p *principal) isAdmin() bool { return p != nil && (p.kind == kindAdmin || p.kind == kindToken) }

// isSuper reports whether p acts as a superadmin.
func (p *principal) isSuper() bool { return p.isAdmin() && p.superadmin }

// scope is the ListOptions.Scope of p: nil (everything) for a superadmin,
// its domains otherwise; an empty non-nil slice for anything else, which
// matches nothing.
func (p *principal) scope() []string {
	if p.isSuper() {
		return nil
	}
	if p.isAdmin() {
		return p.domains
	}
	return []string{}
}

// inScope reports whether p may manage domain (canonical form).
func (p *principal) inScope(domain string) bool {
	if p.isSuper() {
		return true
	}
	return p.isAdmin() && slices.Contains(p.domains, domain)
}

// actor is what the audit log records for p's writes.
func (p *principal) actor() string {
	switch p.kind {
	case kindAdmin:
		return "admin:" + p.username
	case kindToken:
		// Token names are unique per admin only, so the admin is named too.
		return "token:" + p.username + "/" + p.tokenName
	case kindMailbox:
		return "user:" + p.mailbox
	}
	return "admin-service"
}

// access is the rule a route's principal must satisfy.
type access int

const (
	// public routes need no credentials (health, OpenAPI, login).
	public access = iota + 1
	// anyAdmin routes take an admin session or an API token; what they
	// touch is scoped to the admin's domains.
	anyAdmin
	// superOnly routes take a superadmin's session or token.
	superOnly
	// adminSession routes take an admin's session only, never a token
	// (a token cannot mint tokens or change its admin's password or TOTP).
	adminSession
	// mailboxSession routes take a mailbox user's session (self-service).
	mailboxSession
	// anySession routes take any session cookie (logout).
	anySession
	// anyPrincipal routes take any credentials (whoami).
	anyPrincipal
)

func (a access) String() string {
	return [...]string{"", "public", "any-admin", "superadmin", "admin-session", "mailbox-session", "any-session", "any-principal"}[a]
}

// allows reports whether p satisfies a; p is nil for anonymous requests.
// An unauthenticated request to a protected route is a 401, an
// authenticated one without the right a 403.
func (a access) check(p *principal) error {
	if a == public {
		return nil
	}
	if p == nil {
		return errUnauthenticated()
	}
	ok := false
	switch a {
	case anyAdmin:
		ok = p.isAdmin()
	case superOnly:
		ok = p.isSuper()
	case adminSession:
		ok = p.kind == kindAdmin
	case mailboxSession:
		ok = p.kind == kindMailbox
	case anySession:
		ok = p.kind == kindAdmin || p.kind == kindMailbox
	case anyPrincipal:
		ok = true
	}
	if !ok {
		return errForbidden("", "not allowed for this account")
	}
	return nil
}

// sha256Hex is how session ids and API tokens are stored.
func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// tokenPrefix starts every API token, so that a leaked token is easy to
// find in logs and repositories.
const tokenPrefix = "fct_"

// authenticate returns the principal of r: from an Authorization: Bearer
// token if the header is present (a bad token is a 401, never a fall back
// to the cookie), else from the session cookie; nil when there is neither.
func (h *Handler) authenticate(ctx context.Context, r *http.Request, secure bool) (*principal, error) {
	if authz := r.Header.Get("Authorization"); authz != "" {
		scheme, tok, ok := strings.Cut(authz, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || !strings.HasPrefix(strings.TrimSpace(tok), tokenPrefix) {
			return nil, &apiError{Status: http.StatusUnauthorized, Code: codeUnauthenticated, Message: "malformed Authorization header"}
		}
		return h.tokenPrincipal(ctx, strings.TrimSpace(tok))
	}
	c, err := r.Cookie(cookieName(secure))
	if err != nil || c.Value == "" {
		return nil, nil
	}
	return h.sessionPrincipal(ctx, c.Value)
}

func (h *Handler) tokenPrincipal(ctx context.Context, tok string) (*principal, error) {
	bad := &apiError{Status: http.StatusUnauthorized, Code: codeUnauthenticated, Message: "invalid, expired or revoked token"}
	t, err := h.st.GetAPITokenByHash(ctx, sha256Hex(tok))
	if errors.Is(err, store.ErrNotFound) {
		return nil, bad
	}
	if err != nil {
		return nil, err
	}
	now := h.now()
	if !t.Active || (t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)) {
		return nil, bad
	}
	p, err := h.adminPrincipal(ctx, t.Admin)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, bad
		}
		return nil, err
	}
	p.kind = kindToken
	p.tokenID = t.ID
	p.tokenName = t.Name
	if err := h.st.TouchAPIToken(store.WithActor(ctx, p.actor()), t.ID, now, tokenTouchEvery); err != nil {
		h.log.WarnContext(ctx, "record API token use", "token", t.ID, "err", err)
	}
	return p, nil
}

// adminPrincipal reads the rights of the admin username; ErrNotFound when
// it does not exist or is disabled.
func (h *Handler) adminPrincipal(ctx context.Context, username string) (*principal, error) {
	domains, super, err := h.st.AdminDomains(ctx, username)
	if err != nil {
		return nil, err
	}
	return &principal{kind: kindAdmin, username: username, superadmin: super, domains: domains}, nil
}

func (h *Handler) sessionPrincipal(ctx context.Context, id string) (*principal, error) {
	if !validSessionID(id) {
		return nil, nil
	}
	hash := sha256Hex(id)
	sess, err := h.st.TouchAdminSession(ctx, hash, h.now(), h.opts.SessionIdleTimeout)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil // expired: the client is anonymous
	}
	if err != nil {
		return nil, err
	}
	var p *principal
	switch sess.Kind {
	case store.SessionAdmin:
		p, err = h.adminPrincipal(ctx, sess.Principal)
	case store.SessionMailbox:
		var active bool
		_, active, err = h.st.MailboxPassword(ctx, sess.Principal)
		if err == nil && !active {
			err = store.ErrNotFound
		}
		p = &principal{kind: kindMailbox, mailbox: sess.Principal}
	default:
		err = fmt.Errorf("session of unknown kind %q: %w", sess.Kind, store.ErrNotFound)
	}
	if errors.Is(err, store.ErrNotFound) {
		// The account is gone or disabled: so is the session.
		if derr := h.st.DeleteAdminSession(ctx, hash); derr != nil {
			return nil, derr
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	p.sessionHash = hash
	return p, nil
}
