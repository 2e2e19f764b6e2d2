package admin

import (
	"bytes"
	"context"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store"
)

// The web UI without a browser: pages and forms as a client without
// script uses them. (test/browser drives the same pages in Chromium.)

// has fails unless the body of r contains every one of subs.
func has(t *testing.T, r *resp, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(string(r.body), s) {
			t.Errorf("the page lacks %q: %s", s, r)
		}
	}
}

func hasNot(t *testing.T, r *resp, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if strings.Contains(string(r.body), s) {
			t.Errorf("the page has %q: %s", s, r)
		}
	}
}

// redirected fails unless r is a 303 to loc.
func redirected(t *testing.T, r *resp, loc string) {
	t.Helper()
	if r.status != http.StatusSeeOther || r.header.Get("Location") != loc {
		t.Fatalf("got %d to %q, want 303 to %q: %s", r.status, r.header.Get("Location"), loc, r)
	}
}

func TestUIWorksWithoutScript(t *testing.T) {
	w := seed(t, nil)
	c := w.client()
	// Anonymous: to the login page, and back after it.
	redirected(t, c.do("GET", "/mailboxes?domain=a.test", nil), "/login?next=%2Fmailboxes%3Fdomain%3Da.test")
	r := c.do("GET", "/login?next=%2Fmailboxes%3Fdomain%3Da.test", nil)
	want(t, r, 200, "login page")
	has(t, r, `name="next" value="/mailboxes?domain=a.test"`, `name="username"`)
	r = c.do("POST", "/login", formOf("username", "ada", "password", "wrong", "next", "/mailboxes"))
	want(t, r, 401, "wrong password")
	has(t, r, `role="alert"`, "wrong username or password")
	redirected(t, c.do("POST", "/login", formOf("username", "ADA", "password", adaPW, "next", "/mailboxes?domain=a.test")), "/mailboxes?domain=a.test")

	r = c.do("GET", "/mailboxes?domain=a.test", nil)
	want(t, r, 200, "mailbox list")
	has(t, r, "u@a.test", "v@a.test", `<meter`)

	// A new mailbox: errors next to their fields, the form kept.
	r = c.do("POST", "/mailboxes", formOf("local_part", "nina", "domain", "a.test", "password", "short", "password2", "short"))
	want(t, r, 422, "weak password")
	has(t, r, `id="f-password-err"`, "at least 10 characters", `value="nina"`, `aria-invalid="true"`)
	hasNot(t, r, `value="short"`)
	r = c.do("POST", "/mailboxes", formOf("local_part", "nina", "domain", "a.test", "password", strongPW, "password2", strongPW+"x"))
	want(t, r, 422, "mismatched passwords")
	has(t, r, `id="f-password2-err"`)
	r = c.do("POST", "/mailboxes", formOf("local_part", "u", "domain", "a.test", "password", strongPW, "password2", strongPW))
	want(t, r, 409, "existing mailbox")
	has(t, r, `id="f-local_part-err"`)
	r = c.do("POST", "/mailboxes", formOf("local_part", "nina", "domain", "a.test", "password", strongPW, "password2", strongPW, "quota_mb", "lots"))
	want(t, r, 422, "bad quota")
	has(t, r, `id="f-quota_mb-err"`)
	redirected(t, c.do("POST", "/mailboxes", formOf("local_part", "Nina", "domain", "A.TEST", "name", "Nina", "password", strongPW,
		"password2", strongPW, "quota_mb", "512", "active", "off", "active", "on")), "/mailboxes/nina@a.test?done=created")
	m, err := w.st.GetMailbox(w.ctx, "nina@a.test")
	if err != nil || m.QuotaBytes == nil || *m.QuotaBytes != 512<<20 || !m.Active || m.Name != "Nina" {
		t.Fatalf("created mailbox %+v, %v", m, err)
	}
	r = c.do("GET", "/mailboxes/nina@a.test?done=created", nil)
	want(t, r, 200, "mailbox page")
	has(t, r, `role="status"`, "Created.", `value="512"`)

	// Unchecking "active" (the hidden "off" is what is sent) disables it.
	redirected(t, c.do("POST", "/mailboxes/nina@a.test", formOf("name", "Nina B", "quota_mb", "512", "active", "off")),
		"/mailboxes/nina@a.test?done=updated")
	if m, _ := w.st.GetMailbox(w.ctx, "nina@a.test"); m.Active || m.Name != "Nina B" {
		t.Errorf("after the update: %+v", m)
	}

	// An alias that forwards and keeps a copy, then without the copy.
	redirected(t, c.do("POST", "/aliases", formOf("local_part", "nina", "domain", "a.test", "destinations", "x@example.net, y@example.net",
		"keep_copy", "off", "keep_copy", "on", "active", "off", "active", "on")), "/aliases/nina@a.test?done=created")
	a, _ := w.st.GetAlias(w.ctx, "nina@a.test")
	if strings.Join(a.Destinations, " ") != "x@example.net y@example.net nina@a.test" {
		t.Errorf("alias destinations %v", a.Destinations)
	}
	r = c.do("GET", "/aliases/nina@a.test", nil)
	has(t, r, "x@example.net\ny@example.net</textarea>", `name="keep_copy" type="checkbox" value="on" checked`)
	r = c.do("POST", "/aliases/nina@a.test", formOf("destinations", "x@example.net", "keep_copy", "off", "active", "on"))
	want(t, r, 422, "an alias shadowing a mailbox must keep a copy")
	has(t, r, `role="alert"`)
	// A catch-all.
	redirected(t, c.do("POST", "/aliases", formOf("local_part", "*", "domain", "a.test", "destinations", "u@a.test")), "/aliases/@a.test?done=created")

	// A vacation reply with dates.
	redirected(t, c.do("POST", "/mailboxes/nina@a.test/vacation", formOf("subject", "Away", "body", "Back Monday",
		"active_from", "2026-12-20T08:00", "active_until", "2027-01-04T08:00", "interval_seconds", "86400", "active", "off", "active", "on")),
		"/mailboxes/nina@a.test?done=vacation")
	v, err := w.st.GetVacation(w.ctx, "nina@a.test")
	if err != nil || v.Subject != "Away" || v.IntervalSeconds != 86400 || v.ActiveUntil == nil ||
		!v.ActiveUntil.Equal(time.Date(2027, 1, 4, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("vacation %+v, %v", v, err)
	}
	r = c.do("POST", "/mailboxes/nina@a.test/vacation", formOf("subject", "Away", "active_from", "2027-01-04T08:00", "active_until", "2026-12-20T08:00"))
	want(t, r, 422, "until before from")
	has(t, r, `id="f-active_until-err"`)

	// The audit log shows who did it, with before and after.
	r = c.do("GET", "/audit?search=nina", nil)
	want(t, r, 200, "audit")
	has(t, r, "admin:ada", "nina@a.test", "Before and after", "&#34;Nina B&#34;")
	r = c.do("GET", "/audit?table=vacation", nil)
	has(t, r, "vacation <strong>nina@a.test</strong>")
	hasNot(t, r, "mailbox <strong>")

	// Deleting; the protected addresses are a superadmin's.
	redirected(t, c.do("POST", "/aliases/nina@a.test/delete", nil), "/aliases?done=deleted")
	redirected(t, c.do("POST", "/mailboxes/nina@a.test/delete", nil), "/mailboxes?done=deleted")
	r = c.do("POST", "/aliases/postmaster@a.test/delete", nil)
	want(t, r, 403, "protected address")
	has(t, r, "only a superadmin may delete postmaster@a.test")
	r = c.do("GET", "/aliases?search=postmaster", nil)
	has(t, r, "postmaster@a.test")
	if strings.Contains(string(c.do("GET", "/aliases/postmaster@a.test", nil).body), "Delete this alias") {
		t.Error("the page offers a domain admin to delete postmaster@")
	}

	// Logging out ends the session on the server.
	redirected(t, c.do("POST", "/logout", nil), "/login")
	redirected(t, c.do("GET", "/domains", nil), "/login?next=%2Fdomains")
}

func TestUIRefusesCrossOriginPosts(t *testing.T) {
	w := seed(t, nil)
	for _, hd := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Origin": "https://evil.example"},
		{"Origin": "null"},
	} {
		w.unchanged(fmt.Sprint(hd), func() {
			for k, v := range hd {
				w.ada.header.Set(k, v)
			}
			r := w.ada.do("POST", "/mailboxes/u@a.test/delete", nil)
			want(t, r, 403, fmt.Sprintf("cross-origin %v", hd))
			has(t, r, "cross-origin request refused", "<!doctype html>")
			r = w.ada.do("POST", "/logout", nil)
			want(t, r, 403, "cross-origin logout")
			w.ada.header = http.Header{}
		})
	}
	// The browser's own form posts pass.
	w.ada.header.Set("Sec-Fetch-Site", "same-origin")
	w.ada.header.Set("Origin", w.srv.URL)
	redirected(t, w.ada.do("POST", "/mailboxes/w@a.test/vacation/delete", nil), "/mailboxes/w@a.test?done=vacation-off")
}

// inlineRE finds what the Content-Security-Policy would refuse to apply or
// run: inline style, event handler attributes and javascript: URLs.
var inlineRE = regexp.MustCompile(`(?i)\sstyle=|<style|\son[a-z]+=|javascript:`)

// scriptRE finds script elements: each must load a file of ours and hold
// nothing.
var scriptRE = regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`)

func TestUIPagesObeyTheContentSecurityPolicy(t *testing.T) {
	w := seed(t, nil)
	uiFixtures(w)
	pages := 0
	for k, e := range uiMatrix() {
		method, _, _ := strings.Cut(k, " ")
		if method != "GET" || strings.HasPrefix(k, "GET /static/") {
			continue
		}
		who, p, status := e.positive(w)
		if status != 200 {
			continue
		}
		r := send(w.clientFor(who), p)
		want(t, r, 200, p.path)
		pages++
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "style-src 'self'") {
			t.Errorf("%s: Content-Security-Policy %q", p.path, csp)
		}
		if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", p.path, ct)
		}
		for _, m := range inlineRE.FindAllString(string(r.body), -1) {
			t.Errorf("%s: %q would break the CSP", p.path, m)
		}
		scripts := scriptRE.FindAllStringSubmatch(string(r.body), -1)
		if len(scripts) != 2 || strings.Count(string(r.body), "<script") != 2 {
			t.Errorf("%s: %d script elements, want htmx and app.js", p.path, len(scripts))
		}
		for _, m := range scripts {
			if !strings.Contains(m[1], `src="/static/`) || strings.TrimSpace(m[2]) != "" {
				t.Errorf("%s: inline script %q", p.path, m[0])
			}
		}
		if !strings.Contains(string(r.body), `<html lang="en">`) {
			t.Errorf("%s: not a page of the layout", p.path)
		}
	}
	if pages < 25 {
		t.Errorf("only %d pages checked", pages)
	}
}

func TestUIEscapesWhatItShows(t *testing.T) {
	w := seed(t, nil)
	evil := `<script>alert(1)</script>"'><img src=x onerror=alert(2)>`
	redirected(t, w.ada.do("POST", "/mailboxes/u@a.test", formOf("name", evil)), "/mailboxes/u@a.test?done=updated")
	redirected(t, w.ada.do("POST", "/aliases/al@a.test", formOf("description", evil)), "/aliases/al@a.test?done=updated")
	redirected(t, w.ada.do("POST", "/mailboxes/u@a.test/vacation", formOf("subject", evil, "body", evil)), "/mailboxes/u@a.test?done=vacation")
	for _, path := range []string{"/mailboxes", "/mailboxes/u@a.test", "/aliases", "/aliases/al@a.test", "/vacations",
		"/mailboxes/u@a.test/vacation", "/audit"} {
		r := w.ada.do("GET", path, nil)
		want(t, r, 200, path)
		hasNot(t, r, "<script>alert", "<img src=x")
		has(t, r, "&lt;script&gt;alert(1)&lt;/script&gt;")
	}
	// And a search, echoed into the search box.
	r := w.ada.do("GET", "/mailboxes?search="+url.QueryEscape(evil), nil)
	hasNot(t, r, "<script>alert", "<img src=x")
}

func TestUILoginGoesBackOnlyToThisSite(t *testing.T) {
	w := seed(t, nil)
	for next, want := range map[string]string{
		"/mailboxes?domain=a.test": "/mailboxes?domain=a.test",
		"//evil.example/x":         "/domains",
		"https://evil.example/":    "/domains",
		"/\\evil.example":          "/domains",
		"/api/v1/whoami":           "/domains",
		"mailboxes":                "/domains",
		"":                         "/domains",
	} {
		c := w.client()
		redirected(t, c.do("POST", "/login", formOf("username", "ada", "password", adaPW, "next", next)), want)
	}
	c := w.client()
	redirected(t, c.do("POST", "/user/login", formOf("address", "U@A.Test.", "password", mailboxPW, "next", "/domains")), "/user")
	r := c.do("GET", "/user", nil)
	want(t, r, 200, "self-service")
	has(t, r, "u@a.test")
}

func TestUIDomainAdminEditsOnlyDescriptionAndActive(t *testing.T) {
	w := seed(t, nil)
	r := w.ada.do("GET", "/domains/a.test", nil)
	want(t, r, 200, "domain page")
	has(t, r, `name="description"`, `name="active"`)
	hasNot(t, r, `name="max_mailboxes"`, `name="transport"`, "Delete this domain")
	redirected(t, w.ada.do("POST", "/domains/a.test", formOf("description", "Team A", "active", "off", "active", "on")), "/domains/a.test?done=updated")
	d, _ := w.st.GetDomain(w.ctx, "a.test")
	if d.Description != "Team A" || d.MaxMailboxes == nil || *d.MaxMailboxes != 100 {
		t.Errorf("domain %+v", d)
	}
	w.unchanged("limits", func() {
		r := w.ada.do("POST", "/domains/a.test", formOf("description", "x", "max_mailboxes", ""))
		want(t, r, 403, "a domain admin lifting its limit")
	})
	r = w.root.do("GET", "/domains/a.test", nil)
	has(t, r, `name="max_mailboxes" type="number" value="100"`, "Delete this domain")
	redirected(t, w.root.do("POST", "/domains/a.test", formOf("description", "A", "max_mailboxes", "", "max_aliases", "1000",
		"transport", "lmtp:unix:/run/dovecot/lmtp", "active", "on")), "/domains/a.test?done=updated")
	d, _ = w.st.GetDomain(w.ctx, "a.test")
	if d.MaxMailboxes != nil || d.MaxAliases == nil || *d.MaxAliases != 1000 || d.Transport == nil {
		t.Errorf("domain after the superadmin's change %+v", d)
	}
	// A limit below what the domain holds is refused next to the field.
	r = w.root.do("POST", "/domains/a.test", formOf("max_mailboxes", "1"))
	want(t, r, 422, "limit below usage")
	has(t, r, `id="f-max_mailboxes-err"`)
}

func TestUIQueueActionsAreRowUpdatesAndNotify(t *testing.T) {
	w := seed(t, nil)
	uiFixtures(w)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, w.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+store.QueueChannel); err != nil {
		t.Fatal(err)
	}
	notified := func(what string) {
		t.Helper()
		nctx, ncancel := context.WithTimeout(ctx, 5*time.Second)
		defer ncancel()
		n, err := conn.WaitForNotification(nctx)
		if err != nil || n.Payload != "n1" {
			t.Fatalf("%s: no NOTIFY %s n1: %v %v", what, store.QueueChannel, n, err)
		}
	}
	w.exec(`UPDATE queue_recipient SET next_attempt_at = now() + interval '1 hour'`)
	due := func(addr string) bool {
		var ok bool
		if err := w.db.Pool.QueryRow(ctx, `SELECT next_attempt_at <= now() FROM queue_recipient WHERE address = $1`, addr).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}

	// The list shows ada's recipients only.
	r := w.ada.do("GET", "/queue", nil)
	has(t, r, queueA, queueMixed, "v@a.test")
	hasNot(t, r, queueF, "w@b.test")
	r = w.ada.do("GET", "/queue/"+queueMixed, nil)
	has(t, r, "v@a.test")
	hasNot(t, r, "w@b.test")

	// Flush of a shared message: ada's recipient only.
	redirected(t, w.ada.do("POST", "/queue", formOf("action", "flush", "id", queueMixed, "back", "/queue/"+queueMixed)),
		"/queue/"+queueMixed+"?busy=0&changed=1&did=flush&messages=1")
	notified("flush")
	if !due("v@a.test") || due("w@b.test") {
		t.Errorf("flush: v@a.test due %v, w@b.test due %v", due("v@a.test"), due("w@b.test"))
	}
	r = w.ada.do("GET", "/queue/"+queueMixed+"?busy=0&changed=1&did=flush&messages=1", nil)
	has(t, r, "flush: 1 message(s), 1 change(s).")

	// Hold, release and delete of its own message.
	redirected(t, w.ada.do("POST", "/queue", formOf("action", "hold", "id", queueA)), "/queue?busy=0&changed=1&did=hold&messages=1")
	var held bool
	if err := w.db.Pool.QueryRow(ctx, `SELECT held FROM queue_message WHERE id = $1`, queueA).Scan(&held); err != nil || !held {
		t.Fatalf("held %v %v", held, err)
	}
	has(t, w.ada.do("GET", "/queue?status=held", nil), queueA, "held by admin:ada")
	redirected(t, w.ada.do("POST", "/queue", formOf("action", "release", "id", queueA)), "/queue?busy=0&changed=1&did=release&messages=1")
	notified("release")
	redirected(t, w.ada.do("POST", "/queue", formOf("action", "delete", "id", queueA, "back", "/queue/"+queueA)),
		"/queue?busy=0&changed=1&did=delete&messages=1")
	notified("delete")
	var n int
	if err := w.db.Pool.QueryRow(ctx, `SELECT count(*) FROM queue_message WHERE id = $1`, queueA).Scan(&n); err != nil || n != 0 {
		t.Errorf("deleted message still there: %d %v", n, err)
	}
	if err := w.db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE table_name = 'queue_message' AND actor = 'admin:ada'`).Scan(&n); err != nil || n != 4 {
		t.Errorf("%d audit rows of queue actions, want 4 (%v)", n, err)
	}
	// A superadmin may act on the shared message as a whole.
	redirected(t, w.root.do("POST", "/queue", formOf("action", "hold", "id", queueMixed, "id", queueF)),
		"/queue?busy=0&changed=2&did=hold&messages=2")

	// The delivery log, scoped.
	r = w.ada.do("GET", "/log", nil)
	has(t, r, "QueueOld0001")
	hasNot(t, r, "QueueOld0002", "QueueOld0003")
	has(t, w.root.do("GET", "/log?status=bounced", nil), "QueueOld0003")
}

// multipartForm encodes fields and one file field "file".
func multipartForm(t *testing.T, fields map[string]string, file string) ([]byte, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	fw, err := mw.CreateFormFile("file", "import.csv")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write([]byte(file))
	mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

func TestUICSVImportDryRunFirst(t *testing.T) {
	w := seed(t, nil)
	good := "address,name,password\nimp1@a.test,One," + strongPW + "\nimp2@a.test,Two," + strongPW + "\n"
	body, ctype := multipartForm(t, map[string]string{"dry_run": "on"}, good)
	w.unchanged("dry run", func() {
		r := w.ada.doType("POST", "/csv/mailboxes", body, ctype)
		want(t, r, 200, "dry run")
		has(t, r, "Dry run: all 2 rows are good; nothing was written.", "imp1@a.test,One,")
		// The next submission is the real import of the same text.
		has(t, r, `id="f-dry-mailboxes" name="dry_run" type="checkbox" value="on">`)
	})
	bad := "address,password\nimp3@a.test," + strongPW + "\nu@a.test," + strongPW + "\nimp4@a.test,short\nimp5@b.test," + strongPW + "\n"
	w.unchanged("failing import", func() {
		r := w.ada.do("POST", "/csv/mailboxes", formOf("csv", bad, "dry_run", "off"))
		want(t, r, 422, "import with failing lines")
		has(t, r, "3 of 4 rows failed; nothing was written", "<td class=\"num\">3</td>", "<td class=\"num\">4</td>",
			"<td class=\"num\">5</td>", "<td>not found</td>")
		hasNot(t, r, "<td class=\"num\">2</td>")
	})
	r := w.ada.do("POST", "/csv/mailboxes", formOf("csv", good, "dry_run", "off"))
	want(t, r, 200, "import")
	has(t, r, "Imported 2 rows.")
	if _, err := w.st.GetMailbox(w.ctx, "imp2@a.test"); err != nil {
		t.Errorf("imported mailbox: %v", err)
	}
	r = w.ada.do("POST", "/csv/aliases", formOf("csv", "address,destinations\nsales@a.test,x@example.net y@example.net\n", "dry_run", "off"))
	want(t, r, 200, "alias import")
	// Export is the API's, with the session.
	r = w.ada.do("GET", "/api/v1/csv/mailboxes?domain=a.test", nil)
	want(t, r, 200, "export")
	has(t, r, "imp1@a.test,One,")
	has(t, w.ada.do("GET", "/csv", nil), `href="/api/v1/csv/mailboxes?domain=a.test"`)
}

func TestUISecretsAreShownOnce(t *testing.T) {
	w := seed(t, nil)
	r := w.ada.do("POST", "/tokens", formOf("name", "panel2", "expires_at", "2030-01-01T00:00"))
	want(t, r, 200, "new token")
	m := regexp.MustCompile(`<code id="secret-value">(fct_[A-Za-z0-9_-]+)</code>`).FindSubmatch(r.body)
	if m == nil {
		t.Fatalf("no token on the page: %s", r)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	tok := string(m[1])
	want(t, w.tokenClient(tok).do("GET", "/api/v1/whoami", nil), 200, "the token works")
	r = w.ada.do("GET", "/tokens", nil)
	has(t, r, "panel2", "2030-01-01 00:00 UTC")
	hasNot(t, r, tok)
	r = w.ada.do("POST", "/tokens", formOf("name", ""))
	want(t, r, 422, "a token without a name")
	has(t, r, `id="f-name-err"`)

	r = w.userA.do("POST", "/user/app-passwords", formOf("ap_name", "laptop2"))
	want(t, r, 200, "new app password")
	if !regexp.MustCompile(`<code id="secret-value">[a-z2-9-]{23}</code>`).Match(r.body) {
		t.Errorf("no app password on the page: %s", r)
	}
}

func TestUIStaticFiles(t *testing.T) {
	w := seed(t, nil)
	c := w.client()
	for name, ctype := range map[string]string{"facteur.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
		"htmx.min.js": "text/javascript; charset=utf-8"} {
		r := c.do("GET", "/static/"+name+"?v="+w.h.ui.version[name], nil)
		want(t, r, 200, name)
		if r.header.Get("Content-Type") != ctype || !strings.Contains(r.header.Get("Cache-Control"), "immutable") ||
			r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %v", name, r.header)
		}
	}
	if r := c.do("GET", "/static/app.js", nil); r.header.Get("Cache-Control") != "public, max-age=300" {
		t.Errorf("unversioned: %v", r.header)
	}
	r := c.do("GET", "/nowhere", nil)
	want(t, r, 404, "unknown page")
	has(t, r, "<!doctype html>", "Not found")
	r = c.do("DELETE", "/domains", nil)
	want(t, r, 405, "unknown method")
	if r.header.Get("Allow") != "GET, POST, HEAD" {
		t.Errorf("Allow %q", r.header.Get("Allow"))
	}
	// The API keeps answering JSON.
	r = c.do("GET", "/api/v1/nowhere", nil)
	want(t, r, 404, "unknown API route")
	if r.errCode() != codeNotFound {
		t.Errorf("API 404: %s", r)
	}
}
