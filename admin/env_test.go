package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// testClock is the service's clock in tests: fixed until moved.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one test's admin service: a fresh database, the handler with
// cheap hashing and a test clock, and a real HTTP server on 127.0.0.1.
type env struct {
	t     *testing.T
	ctx   context.Context
	db    *storetest.DB
	st    *store.Store
	h     *Handler
	srv   *httptest.Server
	clock *testClock
	opts  Options
}

// Passwords of the seeded accounts.
const (
	rootPW    = "root-password-1"
	adaPW     = "ada-password-1"
	bobPW     = "bob-password-1"
	mailboxPW = "mailbox-password-1"
)

func newEnv(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	db := storetest.New(t)
	hasher, err := passwd.New(passwd.CheapOptions())
	if err != nil {
		t.Fatal(err)
	}
	clock := &testClock{t: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}
	opts := Options{Hasher: hasher, Now: clock.Now, MaxConcurrentHashes: 2}
	if mod != nil {
		mod(&opts)
	}
	st := store.New(db.Pool)
	h, err := New(st, opts, slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{t: t, ctx: context.Background(), db: db, st: st, h: h, srv: srv, clock: clock, opts: h.opts}
}

func (e *env) hash(pw string) string {
	e.t.Helper()
	s, err := e.opts.Hasher.Hash(pw)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// exec runs SQL as the test (fixtures the API does not make).
func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Pool.Exec(e.ctx, sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// tlogWriter sends the service's log to the test's log.
type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// client is an HTTP client of the service with its own cookie jar, and
// optionally an API token.
type client struct {
	e      *env
	hc     *http.Client
	token  string
	header http.Header // added to every request
	base   string
}

func (e *env) client() *client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	// Redirects are not followed: the web UI answers every change with
	// one (303), which the tests check as it is.
	return &client{e: e, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		header: http.Header{}, base: e.srv.URL}
}

func (e *env) tokenClient(token string) *client {
	c := e.client()
	c.token = token
	return c
}

// resp is a response, read.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r *resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errCode returns error.code of an error body ("" if none).
func (r *resp) errCode() string {
	var b struct {
		Error struct {
			Code  string `json:"code"`
			Field string `json:"field"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.body, &b)
	return b.Error.Code
}

func (r *resp) String() string { return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body)) }

// do sends a request; body is JSON-encoded unless it is a string (sent
// as is, as text/csv when ctype is empty) or nil.
func (c *client) do(method, path string, body any) *resp {
	return c.doType(method, path, body, "")
}

func (c *client) doType(method, path string, body any, ctype string) *resp {
	c.e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
		if ctype == "" {
			ctype = "text/csv"
		}
	case []byte:
		rd = bytes.NewReader(b)
	case url.Values:
		// A web UI form.
		rd = strings.NewReader(b.Encode())
		if ctype == "" {
			ctype = "application/x-www-form-urlencoded"
		}
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
		if ctype == "" {
			ctype = "application/json"
		}
	}
	req, err := http.NewRequestWithContext(c.e.ctx, method, c.base+path, rd)
	if err != nil {
		c.e.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	res, err := c.hc.Do(req)
	if err != nil {
		c.e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.e.t.Fatal(err)
	}
	return &resp{status: res.StatusCode, header: res.Header, body: b}
}

// want fails unless r has status.
func want(t *testing.T, r *resp, status int, what string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: got %s, want %d", what, r, status)
	}
}

func (e *env) login(user, pw string) *client {
	e.t.Helper()
	c := e.client()
	r := c.do("POST", "/api/v1/login", map[string]string{"username": user, "password": pw})
	want(e.t, r, 200, "login "+user)
	return c
}

func (e *env) loginMailbox(addr, pw string) *client {
	e.t.Helper()
	c := e.client()
	r := c.do("POST", "/api/v1/self/login", map[string]string{"address": addr, "password": pw})
	want(e.t, r, 200, "mailbox login "+addr)
	return c
}

// controlTables are the control-plane tables compared before and after an
// action that must change nothing (the admin service's own session and
// throttle tables are not among them).
var controlTables = []string{"setting", "domain", "alias_domain", "mailbox", "alias", "transport",
	"sender_grant", "client_access", "admin", "domain_admin", "api_token", "app_password", "quota_usage",
	"vacation", "vacation_notified", "relay_credential", "audit_log", "queue_message", "queue_recipient"}

// dump returns every control-plane row, as JSON text per table.
func (e *env) dump() map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, tbl := range controlTables {
		var s *string
		err := e.db.Pool.QueryRow(e.ctx, fmt.Sprintf(
			`SELECT json_agg(t ORDER BY t::text)::text FROM %s t`, tbl)).Scan(&s)
		if err != nil {
			e.t.Fatalf("dump %s: %v", tbl, err)
		}
		if s != nil {
			out[tbl] = *s
		}
	}
	return out
}

func diffDumps(a, b map[string]string) []string {
	var d []string
	for _, tbl := range controlTables {
		if a[tbl] != b[tbl] {
			d = append(d, tbl)
		}
	}
	return d
}

// unchanged fails if fn changed any control-plane row.
func (e *env) unchanged(what string, fn func()) {
	e.t.Helper()
	before := e.dump()
	fn()
	if d := diffDumps(before, e.dump()); len(d) > 0 {
		e.t.Errorf("%s changed tables %v", what, d)
	}
}

func esc(s string) string { return url.PathEscape(s) }
