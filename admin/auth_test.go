package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/store"
)

func sessionCookie(t *testing.T, r *resp) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == cookiePlain || c.Name == cookieSecure {
			return c
		}
	}
	t.Fatalf("no session cookie in %v", r.header)
	return nil
}

// withCookie returns a client that sends exactly this session cookie.
func (e *env) withCookie(name, value string) *client {
	c := e.client()
	c.hc.Jar = nil
	c.header.Set("Cookie", name+"="+value)
	return c
}

func TestLoginSetsAHardenedCookieAndLogoutEndsTheSessionServerSide(t *testing.T) {
	w := seed(t, nil)
	c := w.client()
	r := c.do("POST", "/api/v1/login", map[string]string{"username": "ADA ", "password": adaPW})
	want(t, r, 200, "login")
	ck := sessionCookie(t, r)
	if !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || ck.Secure || ck.Name != cookiePlain {
		t.Errorf("cookie over loopback plain HTTP: %+v", ck)
	}
	if len(ck.Value) != 43 {
		t.Errorf("session id %q is not 256 bits of base64url", ck.Value)
	}
	// Only the hash is stored.
	var n int
	if err := w.db.Pool.QueryRow(w.ctx, `SELECT count(*) FROM admin_session WHERE id_hash = $1`, sha256Hex(ck.Value)).Scan(&n); err != nil || n != 1 {
		t.Fatalf("session row by hash: %d %v", n, err)
	}
	if err := w.db.Pool.QueryRow(w.ctx, `SELECT count(*) FROM admin_session WHERE id_hash = $1`, ck.Value).Scan(&n); err != nil || n != 0 {
		t.Fatalf("session stored in clear: %d %v", n, err)
	}
	var who whoami
	r = c.do("GET", "/api/v1/whoami", nil)
	want(t, r, 200, "whoami")
	r.json(t, &who)
	if who.Kind != "admin" || who.Username != "ada" || who.Superadmin || len(who.Domains) != 1 || who.Domains[0] != "a.test" {
		t.Errorf("whoami %+v", who)
	}
	want(t, c.do("POST", "/api/v1/logout", nil), 204, "logout")
	// The old cookie, replayed, is worth nothing: the row is gone.
	stolen := w.withCookie(ck.Name, ck.Value)
	want(t, stolen.do("GET", "/api/v1/whoami", nil), 401, "replayed cookie after logout")
	if err := w.db.Pool.QueryRow(w.ctx, `SELECT count(*) FROM admin_session WHERE id_hash = $1`, sha256Hex(ck.Value)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("session row after logout: %d %v", n, err)
	}
	// Wrong passwords and unknown users are the same 401.
	r1 := w.client().do("POST", "/api/v1/login", map[string]string{"username": "ada", "password": "wrong-password"})
	r2 := w.client().do("POST", "/api/v1/login", map[string]string{"username": "nobody", "password": "wrong-password"})
	if r1.status != 401 || r2.status != 401 || string(r1.body) != string(r2.body) {
		t.Errorf("wrong password %s, unknown user %s", r1, r2)
	}
	// A malformed or unknown cookie is anonymous.
	want(t, w.withCookie(cookiePlain, "x").do("GET", "/api/v1/whoami", nil), 401, "malformed cookie")
	want(t, w.withCookie(cookiePlain, randomToken(32)).do("GET", "/api/v1/whoami", nil), 401, "unknown cookie")
}

func TestLoginIssuesANewSessionID(t *testing.T) {
	w := seed(t, nil)
	c := w.client()
	r := c.do("POST", "/api/v1/login", map[string]string{"username": "ada", "password": adaPW})
	first := sessionCookie(t, r)
	// Logging in again with a session (fixed by an attacker, say) gives a
	// new id and ends the old session.
	r = c.do("POST", "/api/v1/login", map[string]string{"username": "ada", "password": adaPW})
	second := sessionCookie(t, r)
	if first.Value == second.Value {
		t.Fatal("login kept the session id")
	}
	want(t, w.withCookie(cookiePlain, first.Value).do("GET", "/api/v1/whoami", nil), 401, "old session")
	want(t, w.withCookie(cookiePlain, second.Value).do("GET", "/api/v1/whoami", nil), 200, "new session")
}

func TestSessionIdleAndAbsoluteTimeouts(t *testing.T) {
	w := seed(t, func(o *Options) {
		o.SessionIdleTimeout = 30 * time.Minute
		o.SessionMaxAge = 2 * time.Hour
	})
	c := w.login("ada", adaPW)
	w.clock.Advance(29 * time.Minute)
	want(t, c.do("GET", "/api/v1/whoami", nil), 200, "29 minutes idle")
	w.clock.Advance(29 * time.Minute)
	want(t, c.do("GET", "/api/v1/whoami", nil), 200, "29 more minutes: each request extends")
	w.clock.Advance(31 * time.Minute)
	want(t, c.do("GET", "/api/v1/whoami", nil), 401, "31 minutes idle")

	// Active every 20 minutes: still ends at the absolute timeout.
	c = w.login("ada", adaPW)
	for i := 0; i < 5; i++ {
		w.clock.Advance(20 * time.Minute)
		want(t, c.do("GET", "/api/v1/whoami", nil), 200, "active session")
	}
	w.clock.Advance(20 * time.Minute)
	want(t, c.do("GET", "/api/v1/whoami", nil), 401, "past the absolute timeout")
	// Expired sessions are gone, not only refused.
	n, err := w.st.SweepAdminSessions(w.ctx, w.clock.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var left int
	if err := w.db.Pool.QueryRow(w.ctx, `SELECT count(*) FROM admin_session WHERE expires_at <= $1`, w.clock.Now()).Scan(&left); err != nil || left != 0 {
		t.Fatalf("expired sessions left after sweeping %d: %d %v", n, left, err)
	}
}

func TestCrossOriginPostIsRefused(t *testing.T) {
	w := seed(t, nil)
	body := map[string]any{"address": "csrf@a.test", "password": strongPW}
	w.unchanged("cross-origin", func() {
		for _, hd := range []map[string]string{
			{"Sec-Fetch-Site": "cross-site"},
			{"Sec-Fetch-Site": "same-site"},
			{"Origin": "https://evil.example"},
			{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
		} {
			c := w.ada
			for k, v := range hd {
				c.header.Set(k, v)
			}
			r := c.do("POST", "/api/v1/mailboxes", body)
			for k := range hd {
				c.header.Del(k)
			}
			if r.status != 403 || r.errCode() != codeCrossOrigin {
				t.Errorf("%v: %s, want 403 %s", hd, r, codeCrossOrigin)
			}
		}
		// A cross-origin login is refused too (login CSRF).
		c := w.client()
		c.header.Set("Sec-Fetch-Site", "cross-site")
		want(t, c.do("POST", "/api/v1/login", map[string]string{"username": "ada", "password": adaPW}), 403, "cross-origin login")
	})
	// Same origin, as a browser says it, passes.
	w.ada.header.Set("Sec-Fetch-Site", "same-origin")
	w.ada.header.Set("Origin", w.srv.URL)
	want(t, w.ada.do("POST", "/api/v1/mailboxes", body), 201, "same-origin POST")
	w.ada.header = http.Header{}
	// A form post (not JSON) never reaches a handler's decoder.
	r := w.ada.doType("POST", "/api/v1/aliases", "address=x@a.test", "application/x-www-form-urlencoded")
	want(t, r, 415, "form-encoded body")
}

func TestLoginThrottlePerUserAndPerIP(t *testing.T) {
	w := seed(t, func(o *Options) {
		o.Throttle = ThrottleOptions{Window: 15 * time.Minute, MaxUserFailures: 3, MaxIPFailures: 6, Block: 10 * time.Minute}
	})
	c := w.client()
	for i := 0; i < 3; i++ {
		want(t, c.do("POST", "/api/v1/login", map[string]string{"username": "ada", "password": "wrong-" + string(rune('a'+i))}), 401, "wrong password")
	}
	// Blocked: even the right password is refused, before it is checked.
	r := c.do("POST", "/api/v1/login", map[string]string{"username": "ada", "password": adaPW})
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("after 3 failures: %s %v", r, r.header)
	}
	// Case and spaces do not make another user.
	want(t, c.do("POST", "/api/v1/login", map[string]string{"username": " ADA", "password": adaPW}), 429, "variant username")
	// Another user from the same address is not blocked yet.
	want(t, c.do("POST", "/api/v1/login", map[string]string{"username": "bob", "password": bobPW}), 200, "other user")
	w.clock.Advance(11 * time.Minute)
	want(t, c.do("POST", "/api/v1/login", map[string]string{"username": "ada", "password": adaPW}), 200, "after the block")
	w.clock.Advance(5 * time.Minute) // the address's window of 3 failures is over

	// Per address: failures over many usernames.
	for i := 0; i < 6; i++ {
		r := c.do("POST", "/api/v1/login", map[string]string{"username": "guess" + string(rune('a'+i)), "password": "x"})
		want(t, r, 401, "guess")
	}
	want(t, c.do("POST", "/api/v1/login", map[string]string{"username": "root", "password": rootPW}), 429, "address blocked")
	want(t, c.do("POST", "/api/v1/self/login", map[string]string{"address": "u@a.test", "password": mailboxPW}), 429, "address blocked for mailbox login")
	w.clock.Advance(11 * time.Minute)
	want(t, c.do("POST", "/api/v1/login", map[string]string{"username": "root", "password": rootPW}), 200, "address unblocked")

	// Mailbox logins are throttled per mailbox, in any spelling.
	for i := 0; i < 3; i++ {
		want(t, c.do("POST", "/api/v1/self/login", map[string]string{"address": "V@A.TEST.", "password": "nope-nope"}), 401, "mailbox wrong password")
	}
	want(t, c.do("POST", "/api/v1/self/login", map[string]string{"address": "v@a.test", "password": mailboxPW}), 429, "mailbox blocked")
}

func TestTOTPIsRequiredAndACodeWorksOnce(t *testing.T) {
	w := seed(t, nil)
	var sec totpSecretOutput
	r := w.ada.do("POST", "/api/v1/account/totp/secret", nil)
	want(t, r, 200, "new secret")
	r.json(t, &sec)
	if !strings.HasPrefix(sec.URL, "otpauth://totp/") || len(sec.Secret) < 26 {
		t.Fatalf("secret %+v", sec)
	}
	code := func() string {
		c, err := TOTPCode(sec.Secret, w.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	want(t, w.ada.do("PUT", "/api/v1/account/totp", map[string]string{"secret": sec.Secret, "code": "123456", "password": adaPW}), 422, "wrong code")
	want(t, w.ada.do("PUT", "/api/v1/account/totp", map[string]string{"secret": sec.Secret, "code": code(), "password": "wrong"}), 403, "wrong password")
	want(t, w.ada.do("PUT", "/api/v1/account/totp", map[string]string{"secret": sec.Secret, "code": code(), "password": adaPW}), 204, "enable")
	// The token cannot change it.
	want(t, w.adaTok.do("DELETE", "/api/v1/account/totp", map[string]string{"password": adaPW}), 403, "token disables TOTP")

	login := func(code string) *resp {
		return w.client().do("POST", "/api/v1/login", map[string]string{"username": "ada", "password": adaPW, "totp_code": code})
	}
	r = login("")
	if r.status != 401 || r.errCode() != codeTOTPRequired {
		t.Fatalf("without code: %s", r)
	}
	// The code used to enable is spent.
	want(t, login(code()), 401, "the enrolment code again")
	w.clock.Advance(30 * time.Second)
	c := code()
	want(t, login(c), 200, "fresh code")
	want(t, login(c), 401, "same code again (replay)")
	prev, _ := TOTPCode(sec.Secret, w.clock.Now().Add(-30*time.Second))
	want(t, login(prev), 401, "previous step's code after a later one was used")
	w.clock.Advance(30 * time.Second)
	want(t, login("000000"), 401, "wrong code")
	want(t, login(code()), 200, "next step")
	// A superadmin resets a lost authenticator.
	want(t, w.root.do("PATCH", "/api/v1/admins/ada", map[string]any{"disable_totp": true}), 200, "reset TOTP")
	want(t, login(""), 200, "login after reset")
}

func TestAPITokensExpireAreRevokedAndRecordUse(t *testing.T) {
	w := seed(t, nil)
	exp := w.clock.Now().Add(time.Hour)
	var tc tokenCreated
	r := w.ada.do("POST", "/api/v1/tokens", map[string]any{"name": "short", "expires_at": exp})
	want(t, r, 201, "create token")
	r.json(t, &tc)
	if !strings.HasPrefix(tc.Secret, tokenPrefix) || tc.Token.Admin != "ada" {
		t.Fatalf("created %+v", tc)
	}
	// Shown once: never in a listing or by id.
	for _, p := range []string{"/api/v1/tokens", idPath("/api/v1/tokens", tc.Token.ID)} {
		r := w.ada.do("GET", p, nil)
		if strings.Contains(string(r.body), tc.Secret) || strings.Contains(string(r.body), sha256Hex(tc.Secret)) {
			t.Errorf("%s shows the token: %s", p, r)
		}
	}
	tok := w.tokenClient(tc.Secret)
	var who whoami
	r = tok.do("GET", "/api/v1/whoami", nil)
	want(t, r, 200, "token whoami")
	r.json(t, &who)
	if who.Kind != "token" || who.Username != "ada" || who.Token != "short" {
		t.Errorf("whoami %+v", who)
	}
	got := must[store.APIToken](t)(w.st.GetAPIToken(w.ctx, tc.Token.ID))
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(w.clock.Now()) {
		t.Errorf("last_used_at %v", got.LastUsedAt)
	}
	// Its writes are audited as the token.
	want(t, tok.do("POST", "/api/v1/mailboxes", map[string]any{"address": "tok@a.test", "password": strongPW}), 201, "token writes")
	var actor string
	if err := w.db.Pool.QueryRow(w.ctx, `SELECT actor FROM audit_log WHERE table_name = 'mailbox' AND row_key = 'tok@a.test'`).Scan(&actor); err != nil || actor != "token:ada/short" {
		t.Errorf("audit actor %q %v", actor, err)
	}
	// A token cannot manage tokens or the account.
	want(t, tok.do("POST", "/api/v1/tokens", map[string]any{"name": "child"}), 403, "token mints a token")
	want(t, tok.do("GET", "/api/v1/tokens", nil), 403, "token lists tokens")
	// Expiry.
	w.clock.Advance(time.Hour)
	want(t, tok.do("GET", "/api/v1/whoami", nil), 401, "expired token")
	// Revocation, by deactivation and by deletion.
	w.ada = w.login("ada", adaPW) // the session idled out meanwhile
	r = w.ada.do("POST", "/api/v1/tokens", map[string]any{"name": "long"})
	r.json(t, &tc)
	tok = w.tokenClient(tc.Secret)
	want(t, tok.do("GET", "/api/v1/whoami", nil), 200, "new token")
	want(t, w.ada.do("PATCH", idPath("/api/v1/tokens", tc.Token.ID), map[string]any{"active": false}), 200, "deactivate")
	want(t, tok.do("GET", "/api/v1/whoami", nil), 401, "deactivated token")
	want(t, w.ada.do("PATCH", idPath("/api/v1/tokens", tc.Token.ID), map[string]any{"active": true}), 200, "reactivate")
	want(t, tok.do("GET", "/api/v1/whoami", nil), 200, "reactivated token")
	want(t, w.ada.do("DELETE", idPath("/api/v1/tokens", tc.Token.ID), nil), 204, "delete")
	want(t, tok.do("GET", "/api/v1/whoami", nil), 401, "deleted token")
	// Garbage and other schemes.
	want(t, w.tokenClient("fct_nope").do("GET", "/api/v1/whoami", nil), 401, "unknown token")
	c := w.client()
	c.header.Set("Authorization", "Basic YWRhOmFkYQ==")
	want(t, c.do("GET", "/api/v1/whoami", nil), 401, "basic auth")
	// A superadmin sees and can revoke every admin's tokens.
	w.root = w.login("root", rootPW)
	r = w.root.do("GET", "/api/v1/tokens?admin=bob", nil)
	want(t, r, 200, "root lists bob's tokens")
	if !strings.Contains(string(r.body), `"admin":"bob"`) {
		t.Errorf("root's view of bob's tokens: %s", r)
	}
	want(t, w.root.do("DELETE", idPath("/api/v1/tokens", w.ids["token:bob"]), nil), 204, "root revokes bob's token")
}

func TestPlainHTTPOnlyFromLoopbackOrATrustedProxyThatSawHTTPS(t *testing.T) {
	w := seed(t, func(o *Options) { o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	// Through the proxy, with https: a secure __Host- cookie.
	c := w.client()
	c.header.Set("X-Forwarded-Proto", "https")
	c.header.Set("X-Forwarded-For", "198.51.100.7")
	r := c.do("POST", "/api/v1/login", map[string]string{"username": "ada", "password": adaPW})
	want(t, r, 200, "login through proxy")
	ck := sessionCookie(t, r)
	if ck.Name != cookieSecure || !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode {
		t.Errorf("cookie through an https proxy: %+v", ck)
	}
	if r.header.Get("Strict-Transport-Security") == "" {
		t.Error("no HSTS through an https proxy")
	}
	var addr string
	if err := w.db.Pool.QueryRow(w.ctx, `SELECT remote_addr FROM admin_session WHERE id_hash = $1`, sha256Hex(ck.Value)).Scan(&addr); err != nil || addr != "198.51.100.7" {
		t.Errorf("client address %q %v", addr, err)
	}
	s := w.withCookie(cookieSecure, ck.Value)
	s.header.Set("X-Forwarded-Proto", "https")
	want(t, s.do("GET", "/api/v1/whoami", nil), 200, "secure cookie through proxy")
	// The plain cookie name is not read over https.
	s = w.withCookie(cookiePlain, ck.Value)
	s.header.Set("X-Forwarded-Proto", "https")
	want(t, s.do("GET", "/api/v1/whoami", nil), 401, "plain cookie name over https")
	// The proxy forwarding plain http: refused.
	p := w.client()
	p.header.Set("X-Forwarded-Proto", "http")
	r = p.do("POST", "/api/v1/login", map[string]string{"username": "ada", "password": adaPW})
	if r.status != 403 || r.errCode() != codeTLSRequired {
		t.Errorf("plain http through proxy: %s", r)
	}
	// Health checks pass anyway (load balancers probe them over http).
	want(t, p.do("GET", "/healthz", nil), 200, "healthz over plain http")
}

func TestTLSListenerSetsSecureCookies(t *testing.T) {
	e := newEnv(t, nil)
	must[store.Admin](t)(e.st.CreateAdmin(e.ctx, store.Admin{Username: "root", Password: e.hash(rootPW), Superadmin: true, Active: true}, nil))
	srv := httptest.NewTLSServer(e.h)
	t.Cleanup(srv.Close)
	c := e.client()
	c.hc.Transport = srv.Client().Transport
	c.base = srv.URL
	r := c.do("POST", "/api/v1/login", map[string]string{"username": "root", "password": rootPW})
	want(t, r, 200, "login over TLS")
	ck := sessionCookie(t, r)
	if ck.Name != cookieSecure || !ck.Secure {
		t.Errorf("cookie over TLS: %+v", ck)
	}
	want(t, c.do("GET", "/api/v1/whoami", nil), 200, "whoami over TLS with the jar")
	for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Strict-Transport-Security", "Referrer-Policy"} {
		if r.header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q", csp)
	}
}

func TestServeRefusesPlainHTTPOnNonLoopbackAddresses(t *testing.T) {
	e := newEnv(t, nil)
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0", "192.0.2.1:0"} {
		err := Serve(e.ctx, addr, nil, e.h)
		if !errors.Is(err, ErrPlainHTTP) {
			t.Errorf("Serve(%s) without TLS: %v, want ErrPlainHTTP", addr, err)
		}
	}
	// Loopback is served, and stops with its context.
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", nil, e.h) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("loopback Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not stop")
	}
	// With TLS, or behind a trusted proxy, any address.
	proxied := newEnv(t, func(o *Options) { o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} })
	ctx, cancel = context.WithCancel(e.ctx)
	go func() { done <- Serve(ctx, "0.0.0.0:0", nil, proxied.h) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("proxied Serve: %v", err)
	}
	ctx, cancel = context.WithCancel(e.ctx)
	go func() { done <- Serve(ctx, "0.0.0.0:0", &tls.Config{}, e.h) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("TLS Serve: %v", err)
	}
}
