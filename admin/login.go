package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
)

// Session cookies. Over TLS the cookie has the __Host- prefix, which
// browsers accept only with Secure, Path=/ and no Domain, so no other host
// or plain-HTTP page can set it.
const (
	cookieSecure = "__Host-facteur_session"
	cookiePlain  = "facteur_session"
)

func cookieName(secure bool) string {
	if secure {
		return cookieSecure
	}
	return cookiePlain
}

// randomToken returns n random bytes, base64url without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sessionIDBytes is the size of a session id: 256 random bits.
const sessionIDBytes = 32

func validSessionID(id string) bool {
	if len(id) != base64.RawURLEncoding.EncodedLen(sessionIDBytes) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(id)
	return err == nil
}

// startSession creates a session for principal of kind with a new random
// id, ends the session the request came with (if any: a fixed id never
// survives a login), and sets the cookie.
func (h *Handler) startSession(ctx context.Context, w http.ResponseWriter, r *http.Request, kind, who string) error {
	secure := isSecure(r)
	if c, err := r.Cookie(cookieName(secure)); err == nil && validSessionID(c.Value) {
		if err := h.st.DeleteAdminSession(ctx, sha256Hex(c.Value)); err != nil {
			return err
		}
	}
	id := randomToken(sessionIDBytes)
	now := h.now()
	ua := r.UserAgent()
	if len(ua) > 256 {
		ua = ua[:256]
	}
	err := h.st.CreateAdminSession(ctx, store.AdminSession{
		IDHash:        sha256Hex(id),
		Kind:          kind,
		Principal:     who,
		CreatedAt:     now,
		LastSeenAt:    now,
		IdleExpiresAt: now.Add(h.opts.SessionIdleTimeout),
		ExpiresAt:     now.Add(h.opts.SessionMaxAge),
		RemoteAddr:    h.clientAddr(r).String(),
		UserAgent:     strings.ToValidUTF8(ua, "?"),
	})
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName(secure),
		Value:    id,
		Path:     "/",
		MaxAge:   int(h.opts.SessionMaxAge / time.Second),
		HttpOnly: true,
		Secure:   secure,
		SameSite: http.SameSiteLaxMode,
	})
	return nil
}

func clearCookie(w http.ResponseWriter, r *http.Request) {
	secure := isSecure(r)
	http.SetCookie(w, &http.Cookie{Name: cookieName(secure), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode})
}

// withHashSlot runs fn while holding one of the hashing slots.
func (h *Handler) withHashSlot(ctx context.Context, fn func()) error {
	select {
	case h.hashSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-h.hashSem }()
	fn()
	return nil
}

// verify checks password against stored; a malformed stored value is a
// failed login (and a log line), never a server error the client sees.
func (h *Handler) verify(ctx context.Context, stored, password string) (ok, upgrade bool, err error) {
	var verr error
	if err := h.withHashSlot(ctx, func() { ok, upgrade, verr = h.opts.Hasher.Verify(stored, password) }); err != nil {
		return false, false, err
	}
	if verr != nil {
		h.log.WarnContext(ctx, "stored password hash cannot be verified", "err", verr)
		return false, false, nil
	}
	return ok, upgrade, nil
}

// hash hashes a new password.
func (h *Handler) hash(ctx context.Context, password string) (string, error) {
	var out string
	var herr error
	if err := h.withHashSlot(ctx, func() { out, herr = h.opts.Hasher.Hash(password) }); err != nil {
		return "", err
	}
	if herr != nil {
		return "", storeError(herr, "password")
	}
	return out, nil
}

// throttleKeys are the login_throttle keys of a login attempt.
func (h *Handler) throttleKeys(r *http.Request, kind, who string) []string {
	return []string{kind + ":" + who, throttleIPKey(h.clientAddr(r))}
}

// checkThrottle refuses an attempt while any of keys is blocked, before the
// password is looked at.
func (h *Handler) checkThrottle(ctx context.Context, w http.ResponseWriter, keys []string) error {
	until, blocked, err := h.st.LoginBlockedUntil(ctx, keys, h.now())
	if err != nil {
		return err
	}
	if blocked {
		secs := int(until.Sub(h.now()).Seconds()) + 1
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		return &apiError{Status: http.StatusTooManyRequests, Code: codeThrottled,
			Message: "too many failed logins; try again later"}
	}
	return nil
}

// loginFailed counts a failure against keys ([user key, IP key]) and
// returns the client's error.
func (h *Handler) loginFailed(ctx context.Context, r *http.Request, keys []string, why string) error {
	t := h.opts.Throttle
	for i, k := range keys {
		max := t.MaxUserFailures
		if i > 0 {
			max = t.MaxIPFailures
		}
		until, blocked, err := h.st.RecordLoginFailure(ctx, k, h.now(), t.Window, max, t.Block)
		if err != nil {
			return err
		}
		if blocked {
			h.log.WarnContext(ctx, "login blocked", "key", k, "until", until)
		}
	}
	h.log.WarnContext(ctx, "login failed", "user", keys[0], "client", h.clientAddr(r).String(), "why", why)
	return &apiError{Status: http.StatusUnauthorized, Code: codeUnauthenticated, Message: "wrong username or password"}
}

type adminLoginInput struct {
	Username string `json:"username"`
	Password string `json:"password"`
	TOTPCode string `json:"totp_code"`
}

// whoami is the body of the login and whoami routes.
type whoami struct {
	Kind       string   `json:"kind"` // admin, token or mailbox
	Username   string   `json:"username,omitempty"`
	Superadmin bool     `json:"superadmin"`
	Domains    []string `json:"domains"` // null for a superadmin: every domain
	Mailbox    string   `json:"mailbox,omitempty"`
	Token      string   `json:"token,omitempty"` // the token's name
}

func whoamiOf(p *principal) whoami {
	w := whoami{Kind: p.kind.String(), Username: p.username, Superadmin: p.isSuper(), Mailbox: p.mailbox, Token: p.tokenName}
	if p.isAdmin() {
		w.Domains = p.scope()
	}
	return w
}

// apiLogin is POST /api/v1/login: an admin's username, password and, when
// the admin has TOTP, the current code.
func (h *Handler) apiLogin(w http.ResponseWriter, r *http.Request, _ *principal) error {
	var in adminLoginInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	p, err := h.loginAdmin(w, r, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, whoamiOf(p))
	return nil
}

// loginAdmin checks an admin's credentials (throttled; TOTP when the admin
// has it), starts a session with a new id, sets its cookie on w and
// returns the admin's principal.
func (h *Handler) loginAdmin(w http.ResponseWriter, r *http.Request, in adminLoginInput) (*principal, error) {
	ctx := r.Context()
	username := strings.ToLower(strings.TrimSpace(in.Username))
	if username == "" || len(username) > 254 {
		return nil, errInvalid("username", "a username is required")
	}
	keys := h.throttleKeys(r, "admin", username)
	if err := h.checkThrottle(ctx, w, keys); err != nil {
		return nil, err
	}
	a, err := h.st.GetAdmin(ctx, username)
	found := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	stored := h.dummyHash
	if found {
		stored = a.Password
	}
	ok, upgrade, err := h.verify(ctx, stored, in.Password)
	if err != nil {
		return nil, err
	}
	if !found || !ok || !a.Active {
		return nil, h.loginFailed(ctx, r, keys, "password")
	}
	actx := store.WithActor(ctx, "admin:"+username)
	if a.TOTPEnabled {
		if in.TOTPCode == "" {
			return nil, &apiError{Status: http.StatusUnauthorized, Code: codeTOTPRequired, Field: "totp_code",
				Message: "a TOTP code is required"}
		}
		step, ok := totpStep(*a.TOTPSecret, in.TOTPCode, h.now())
		if !ok {
			return nil, h.loginFailed(ctx, r, keys, "totp")
		}
		fresh, err := h.st.SetAdminTOTPStep(actx, username, step)
		if err != nil {
			return nil, err
		}
		if !fresh {
			return nil, h.loginFailed(ctx, r, keys, "totp replay")
		}
	}
	if upgrade {
		if nh, err := h.hash(ctx, in.Password); err == nil {
			if err := h.st.SetAdminPassword(actx, username, nh); err != nil {
				h.log.WarnContext(ctx, "upgrade admin password hash", "user", username, "err", err)
			}
		}
	}
	if err := h.st.ClearLoginFailures(ctx, keys[0], h.now()); err != nil {
		return nil, err
	}
	if err := h.startSession(ctx, w, r, store.SessionAdmin, username); err != nil {
		return nil, err
	}
	p, err := h.adminPrincipal(ctx, username)
	if err != nil {
		return nil, err
	}
	h.log.InfoContext(ctx, "admin logged in", "user", username, "client", h.clientAddr(r).String())
	return p, nil
}

type mailboxLoginInput struct {
	Address  string `json:"address"`
	Password string `json:"password"`
}

// apiSelfLogin is POST /api/v1/self/login: a mailbox user's address and
// password (not an app password: those are for IMAP and SMTP).
func (h *Handler) apiSelfLogin(w http.ResponseWriter, r *http.Request, _ *principal) error {
	var in mailboxLoginInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	p, err := h.loginMailbox(w, r, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, whoamiOf(p))
	return nil
}

// loginMailbox checks a mailbox user's credentials (throttled), starts a
// session with a new id, sets its cookie on w and returns the principal.
func (h *Handler) loginMailbox(w http.ResponseWriter, r *http.Request, in mailboxLoginInput) (*principal, error) {
	ctx := r.Context()
	addr, err := address.Normalize(strings.TrimSpace(in.Address))
	if err != nil {
		return nil, errInvalid("address", "invalid address")
	}
	keys := h.throttleKeys(r, "mailbox", addr)
	if err := h.checkThrottle(ctx, w, keys); err != nil {
		return nil, err
	}
	stored, active, err := h.st.MailboxPassword(ctx, addr)
	found := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if !found || stored == "" {
		stored = h.dummyHash
	}
	ok, upgrade, err := h.verify(ctx, stored, in.Password)
	if err != nil {
		return nil, err
	}
	if !found || !ok || !active {
		return nil, h.loginFailed(ctx, r, keys, "password")
	}
	if upgrade {
		if nh, err := h.hash(ctx, in.Password); err == nil {
			if _, err := h.st.UpgradeMailboxPassword(store.WithActor(ctx, "user:"+addr), addr, stored, nh); err != nil {
				h.log.WarnContext(ctx, "upgrade mailbox password hash", "mailbox", addr, "err", err)
			}
		}
	}
	if err := h.st.ClearLoginFailures(ctx, keys[0], h.now()); err != nil {
		return nil, err
	}
	if err := h.startSession(ctx, w, r, store.SessionMailbox, addr); err != nil {
		return nil, err
	}
	h.log.InfoContext(ctx, "mailbox user logged in", "mailbox", addr, "client", h.clientAddr(r).String())
	return &principal{kind: kindMailbox, mailbox: addr}, nil
}

// apiLogout is POST /api/v1/logout: the session ends on the server, not
// only in the browser.
func (h *Handler) apiLogout(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.logout(w, r, p); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// logout ends p's session on the server and clears its cookie.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.st.DeleteAdminSession(r.Context(), p.sessionHash); err != nil {
		return err
	}
	clearCookie(w, r)
	return nil
}

func (h *Handler) apiWhoami(w http.ResponseWriter, _ *http.Request, p *principal) error {
	writeJSON(w, http.StatusOK, whoamiOf(p))
	return nil
}

// TOTP (RFC 6238) with the authenticator apps' defaults: SHA-1, 6 digits,
// 30-second steps; one step of clock skew either way.
const (
	totpPeriod = 30
	totpSkew   = 1
)

func totpOpts() hotp.ValidateOpts {
	return hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}
}

// totpStep returns the time step whose code is code, within the skew
// around now. The caller must still check that the step is later than the
// last one accepted: pquerna/otp does not stop replay.
func totpStep(secret, code string, now time.Time) (int64, bool) {
	code = strings.TrimSpace(code)
	if len(code) != totpOpts().Digits.Length() {
		return 0, false
	}
	cur := now.Unix() / totpPeriod
	for d := int64(-totpSkew); d <= totpSkew; d++ {
		step := cur + d
		want, err := hotp.GenerateCodeCustom(secret, uint64(step), totpOpts())
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return step, true
		}
	}
	return 0, false
}

// TOTPCode returns the code of secret at t: for `facteur` tooling and tests.
func TOTPCode(secret string, t time.Time) (string, error) {
	return hotp.GenerateCodeCustom(secret, uint64(t.Unix()/totpPeriod), totpOpts())
}

type passwordChangeInput struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

// apiAccountPassword is PUT /api/v1/account/password: an admin changes its
// own password, which ends its other sessions.
func (h *Handler) apiAccountPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in passwordChangeInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := h.accountPassword(r, p, in); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// accountPassword changes the admin's own password, which ends its other
// sessions.
func (h *Handler) accountPassword(r *http.Request, p *principal, in passwordChangeInput) error {
	ctx := r.Context()
	a, err := h.st.GetAdmin(ctx, p.username)
	if err != nil {
		return err
	}
	if err := h.confirmPassword(ctx, r, "admin", p.username, a.Password, in.CurrentPassword); err != nil {
		return err
	}
	if err := h.checkPassword(in.NewPassword, p.username); err != nil {
		return renameField(err, "password", "new_password")
	}
	hash, err := h.hash(ctx, in.NewPassword)
	if err != nil {
		return renameField(err, "password", "new_password")
	}
	if err := h.st.SetAdminPassword(store.WithActor(ctx, p.actor()), p.username, hash); err != nil {
		return storeError(err, "")
	}
	if _, err := h.st.DeleteAdminSessionsOf(ctx, store.SessionAdmin, p.username, p.sessionHash); err != nil {
		return err
	}
	return nil
}

// confirmPassword checks the current password of an account before a
// sensitive change, throttled as a login is.
func (h *Handler) confirmPassword(ctx context.Context, r *http.Request, kind, who, stored, given string) error {
	var discard http.ResponseWriter = noHeaders{}
	keys := h.throttleKeys(r, kind, who)
	if err := h.checkThrottle(ctx, discard, keys); err != nil {
		return err
	}
	ok, _, err := h.verify(ctx, stored, given)
	if err != nil {
		return err
	}
	if !ok {
		_ = h.loginFailed(ctx, r, keys, "confirmation")
		return errForbidden("current_password", "the current password is wrong")
	}
	return nil
}

// noHeaders is a ResponseWriter that only collects headers, for checks
// whose headers are not wanted.
type noHeaders struct{}

func (noHeaders) Header() http.Header         { return http.Header{} }
func (noHeaders) Write(b []byte) (int, error) { return len(b), nil }
func (noHeaders) WriteHeader(int)             {}

// totpSecretOutput is a new TOTP secret for an admin to enrol.
type totpSecretOutput struct {
	Secret string `json:"secret"`
	URL    string `json:"otpauth_url"`
}

// apiTOTPSecret is POST /api/v1/account/totp/secret: a fresh secret and its
// otpauth:// URL. Nothing is stored until PUT /api/v1/account/totp proves,
// with a code, that the authenticator has it.
func (h *Handler) apiTOTPSecret(w http.ResponseWriter, _ *http.Request, p *principal) error {
	out, err := h.newTOTPSecret(p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// newTOTPSecret generates a TOTP secret for p's admin to enrol; nothing is
// stored.
func (h *Handler) newTOTPSecret(p *principal) (totpSecretOutput, error) {
	key, err := totp.Generate(totp.GenerateOpts{Issuer: h.opts.TOTPIssuer, AccountName: p.username, SecretSize: 20})
	if err != nil {
		return totpSecretOutput{}, fmt.Errorf("generate TOTP secret: %w", err)
	}
	return totpSecretOutput{Secret: key.Secret(), URL: key.URL()}, nil
}

type totpEnableInput struct {
	Secret   string `json:"secret"`
	Code     string `json:"code"`
	Password string `json:"password"`
}

// apiTOTPEnable is PUT /api/v1/account/totp: turn on (or replace) TOTP for
// the admin, with its password and a code of the new secret.
func (h *Handler) apiTOTPEnable(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in totpEnableInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := h.enableTOTP(r, p, in); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// enableTOTP turns on (or replaces) TOTP for the admin, with its password
// and a code of the new secret.
func (h *Handler) enableTOTP(r *http.Request, p *principal, in totpEnableInput) error {
	ctx := r.Context()
	secret := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(in.Secret), " ", ""))
	if raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret); err != nil || len(raw) < 16 {
		return errInvalid("secret", "the secret must be base32 of at least 128 bits")
	}
	a, err := h.st.GetAdmin(ctx, p.username)
	if err != nil {
		return err
	}
	if err := h.confirmPassword(ctx, r, "admin", p.username, a.Password, in.Password); err != nil {
		return renameField(err, "current_password", "password")
	}
	step, ok := totpStep(secret, in.Code, h.now())
	if !ok {
		return errInvalid("code", "the code does not match the secret")
	}
	_, err = h.st.UpdateAdmin(store.WithActor(ctx, p.actor()), p.username, store.AdminPatch{
		TOTPSecret: store.SetValue(secret), TOTPLastStep: store.SetValue(step)})
	if err != nil {
		return storeError(err, "")
	}
	return nil
}

type totpDisableInput struct {
	Password string `json:"password"`
}

// apiTOTPDisable is DELETE /api/v1/account/totp, with the admin's password.
func (h *Handler) apiTOTPDisable(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in totpDisableInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := h.disableTOTP(r, p, in); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// disableTOTP turns TOTP off for the admin, with its password.
func (h *Handler) disableTOTP(r *http.Request, p *principal, in totpDisableInput) error {
	ctx := r.Context()
	a, err := h.st.GetAdmin(ctx, p.username)
	if err != nil {
		return err
	}
	if err := h.confirmPassword(ctx, r, "admin", p.username, a.Password, in.Password); err != nil {
		return renameField(err, "current_password", "password")
	}
	_, err = h.st.UpdateAdmin(store.WithActor(ctx, p.actor()), p.username, store.AdminPatch{
		TOTPSecret: store.SetNull[string](), TOTPLastStep: store.SetNull[int64]()})
	if err != nil {
		return storeError(err, "")
	}
	return nil
}
