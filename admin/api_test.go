package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/store"
)

func TestErrorBodiesAndStatuses(t *testing.T) {
	w := seed(t, nil)
	type errBody struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
	}
	check := func(r *resp, status int, code, field string) {
		t.Helper()
		var b errBody
		r.json(t, &b)
		if r.status != status || b.Error.Code != code || b.Error.Field != field || b.Error.Message == "" {
			t.Errorf("got %s, want %d %s field %q", r, status, code, field)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("content type %q", ct)
		}
	}
	w.unchanged("bad input", func() {
		check(w.ada.doType("POST", "/api/v1/mailboxes", `{"address": "x@a.test"`, "application/json"), 400, codeBadRequest, "")
		check(w.ada.doType("POST", "/api/v1/mailboxes", `{"address": "x@a.test"} {}`, "application/json"), 400, codeBadRequest, "")
		check(w.ada.do("POST", "/api/v1/mailboxes", map[string]any{"address": 5}), 400, codeBadRequest, "address")
		check(w.ada.do("POST", "/api/v1/mailboxes", map[string]any{"address": "x@a.test", "pasword": strongPW}), 400, codeBadRequest, "pasword")
		check(w.ada.doType("POST", "/api/v1/mailboxes", `{"address": "x@a.test"}`, "text/plain"), 415, codeUnsupportedMedia, "")
		check(w.ada.do("POST", "/api/v1/mailboxes", map[string]any{"address": "not an address", "password": strongPW}), 422, codeInvalid, "address")
		check(w.ada.do("POST", "/api/v1/mailboxes", map[string]any{"address": "x@a.test"}), 422, codeInvalid, "password")
		check(w.ada.do("POST", "/api/v1/mailboxes", map[string]any{"address": "x@a.test", "password": "short"}), 422, codeWeakPassword, "password")
		check(w.ada.do("POST", "/api/v1/mailboxes", map[string]any{"address": "Long.Enough.Name@a.test", "password": "long.enough.name@A.TEST"}), 422, codeWeakPassword, "password")
		check(w.ada.do("POST", "/api/v1/mailboxes", map[string]any{"address": "u@a.test", "password": strongPW}), 409, codeConflict, "address")
		check(w.ada.do("POST", "/api/v1/mailboxes", map[string]any{"address": "al@a.test", "password": strongPW}), 422, codeInvalid, "address")
		check(w.ada.do("GET", "/api/v1/mailboxes/nobody@a.test", nil), 404, codeNotFound, "")
		check(w.ada.do("GET", "/api/v1/nothing-here", nil), 404, codeNotFound, "")
		check(w.ada.do("GET", "/api/v1/mailboxes?limit=0", nil), 400, codeBadRequest, "limit")
		check(w.ada.do("GET", "/api/v1/mailboxes?offset=-1", nil), 400, codeBadRequest, "offset")
		check(w.ada.do("GET", "/api/v1/audit?since=yesterday", nil), 400, codeBadRequest, "since")
		check(w.ada.do("DELETE", "/api/v1/mailboxes", nil), 405, codeMethod, "")
		check(w.client().do("GET", "/api/v1/mailboxes", nil), 401, codeUnauthenticated, "")
		check(w.ada.do("GET", "/api/v1/admins", nil), 403, codeForbidden, "")
		big := strings.Repeat("x", maxBody+1)
		check(w.ada.do("POST", "/api/v1/aliases", map[string]any{"address": "x@a.test", "description": big}), 413, codeTooLarge, "")
	})
	r := w.ada.do("DELETE", "/api/v1/mailboxes", nil)
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Errorf("Allow %q", allow)
	}
	// Domain limits: 422 limit_exceeded, nothing written.
	for _, m := range []string{"u", "v", "w"} {
		want(t, w.ada.do("PATCH", "/api/v1/mailboxes/"+m+"@a.test", map[string]any{"quota_bytes": 1 << 20}), 200, "quota")
	}
	want(t, w.root.do("PATCH", "/api/v1/domains/a.test", map[string]any{"max_mailboxes": 3, "max_quota_bytes": 1 << 30}), 200, "limits")
	w.unchanged("limits", func() {
		check(w.ada.do("POST", "/api/v1/mailboxes", map[string]any{"address": "x@a.test", "password": strongPW, "quota_bytes": 1 << 20}), 422, codeLimitExceeded, "address")
		// The field is the limit's, when the change names one.
		check(w.ada.do("PATCH", "/api/v1/mailboxes/u@a.test", map[string]any{"quota_bytes": 1 << 31}), 422, codeLimitExceeded, "quota_bytes")
		check(w.root.do("PATCH", "/api/v1/domains/a.test", map[string]any{"max_mailboxes": 2}), 422, codeLimitExceeded, "max_mailboxes")
		check(w.root.do("PATCH", "/api/v1/domains/a.test", map[string]any{"max_mailboxes": 2, "max_aliases": 100}), 422, codeLimitExceeded, "")
	})
}

func TestPagingAndSearch(t *testing.T) {
	w := seed(t, nil)
	for i := range 7 {
		want(t, w.ada.do("POST", "/api/v1/mailboxes", map[string]any{"address": fmt.Sprintf("page%d@a.test", i),
			"name": fmt.Sprintf("Person %d", i), "password": strongPW}), 201, "create")
	}
	var p page[store.Mailbox]
	r := w.ada.do("GET", "/api/v1/mailboxes?search=page&limit=3&offset=3", nil)
	want(t, r, 200, "page")
	r.json(t, &p)
	if p.Total != 7 || len(p.Items) != 3 || p.Items[0].Address != "page3@a.test" || p.Limit != 3 || p.Offset != 3 {
		t.Errorf("page %+v", p)
	}
	r = w.ada.do("GET", "/api/v1/mailboxes?search=PERSON%205", nil)
	r.json(t, &p)
	if p.Total != 1 || p.Items[0].Address != "page5@a.test" {
		t.Errorf("search by name %+v", p)
	}
	// LIKE metacharacters match themselves.
	r = w.ada.do("GET", "/api/v1/mailboxes?search=%25", nil)
	r.json(t, &p)
	if p.Total != 0 {
		t.Errorf("search %% %+v", p)
	}
	// The superadmin's count spans domains; the domain filter takes variants.
	r = w.root.do("GET", "/api/v1/mailboxes?domain=B%C3%9CCHER.TEST.", nil)
	r.json(t, &p)
	if p.Total != 3 || p.Items[0].Domain != idnForeign {
		t.Errorf("IDN domain filter %+v", p)
	}
	var dp page[domainListItem]
	r = w.root.do("GET", "/api/v1/domains", nil)
	r.json(t, &dp)
	if dp.Total != 3 || dp.Items[2].NameUnicode != "bücher.test" {
		t.Errorf("domains %+v", dp)
	}
}

func TestDomainDetailHasLimitsAndUsage(t *testing.T) {
	w := seed(t, nil)
	w.exec(`INSERT INTO quota_usage (username, bytes, messages) VALUES ('u@a.test', 1000, 3), ('v@a.test', 500, 2)`)
	want(t, w.ada.do("PATCH", "/api/v1/mailboxes/u@a.test", map[string]any{"quota_bytes": 1 << 20}), 200, "quota")
	var d domainView
	r := w.ada.do("GET", "/api/v1/domains/A.TEST.", nil)
	want(t, r, 200, "domain")
	r.json(t, &d)
	if d.UsedBytes != 1500 || d.UsedMessages != 5 || d.Mailboxes != 3 || d.QuotaAllocatedBytes != 1<<20 ||
		d.MaxMailboxes == nil || *d.MaxMailboxes != 100 || d.NameUnicode != "a.test" {
		t.Errorf("domain %+v", d)
	}
	var m store.Mailbox
	r = w.ada.do("GET", "/api/v1/mailboxes/u@a.test", nil)
	r.json(t, &m)
	if m.UsedBytes != 1000 || *m.QuotaBytes != 1<<20 {
		t.Errorf("mailbox usage %+v", m)
	}
}

func TestAliasesCatchAllAndForwardAndKeep(t *testing.T) {
	w := seed(t, nil)
	var a store.Alias
	r := w.ada.do("POST", "/api/v1/aliases", map[string]any{"address": "@A.TEST", "destinations": []string{"U@A.test", "x@Example.NET"}})
	want(t, r, 201, "catch-all")
	r.json(t, &a)
	if a.Address != "@a.test" || a.LocalPart != "" || strings.Join(a.Destinations, ",") != "u@a.test,x@example.net" {
		t.Errorf("catch-all %+v", a)
	}
	want(t, w.ada.do("PATCH", "/api/v1/aliases/@a.test", map[string]any{"keep_copy": true}), 422, "keep a copy of a catch-all")
	// An alias on a mailbox's address must keep a copy.
	r = w.ada.do("POST", "/api/v1/aliases", map[string]any{"address": "v@a.test", "destinations": []string{"elsewhere@example.net"}})
	want(t, r, 422, "alias shadowing a mailbox")
	r = w.ada.do("POST", "/api/v1/aliases", map[string]any{"address": "v@a.test", "destinations": []string{"elsewhere@example.net"}, "keep_copy": true})
	want(t, r, 201, "forward and keep")
	r.json(t, &a)
	if strings.Join(a.Destinations, ",") != "elsewhere@example.net,v@a.test" {
		t.Errorf("forward and keep %+v", a)
	}
	r = w.ada.do("PATCH", "/api/v1/aliases/v@a.test", map[string]any{"add_destinations": []string{"two@example.net"}, "remove_destinations": []string{"elsewhere@example.net"}})
	want(t, r, 200, "edit destinations")
	r.json(t, &a)
	if strings.Join(a.Destinations, ",") != "v@a.test,two@example.net" {
		t.Errorf("edited %+v", a)
	}
}

func TestAuditLogIsScopedAndFiltered(t *testing.T) {
	w := seed(t, nil)
	var now time.Time
	if err := w.db.Pool.QueryRow(w.ctx, `SELECT clock_timestamp()`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // since has whole seconds
	since := now.Add(time.Second).UTC().Format(time.RFC3339)
	want(t, w.ada.do("PATCH", "/api/v1/mailboxes/v@a.test", map[string]any{"name": "Vee"}), 200, "ada writes")
	want(t, w.bob.do("PATCH", "/api/v1/mailboxes/v@b.test", map[string]any{"name": "Vee"}), 200, "bob writes")
	var p page[store.AuditEntry]
	r := w.ada.do("GET", "/api/v1/audit?table=mailbox&actor=admin%3Aada&since="+since, nil)
	want(t, r, 200, "audit")
	r.json(t, &p)
	if p.Total != 1 || p.Items[0].RowKey != "v@a.test" || p.Items[0].Operation != "UPDATE" || p.Items[0].Actor != "admin:ada" {
		t.Fatalf("ada's audit %s", r)
	}
	if strings.Contains(string(p.Items[0].New), "password") {
		t.Errorf("audit shows the password column: %s", p.Items[0].New)
	}
	r = w.ada.do("GET", "/api/v1/audit?limit=1000", nil)
	r.json(t, &p)
	for _, e := range p.Items {
		if e.Domain == nil || *e.Domain != "a.test" {
			t.Errorf("ada sees %+v", e)
		}
	}
	r = w.root.do("GET", "/api/v1/audit?table=mailbox&since="+since, nil)
	r.json(t, &p)
	if p.Total != 2 {
		t.Errorf("root's audit %s", r)
	}
	r = w.root.do("GET", "/api/v1/audit?table=admin", nil)
	r.json(t, &p)
	if p.Total == 0 {
		t.Errorf("root sees no admin rows: %s", r)
	}
}

func TestSelfService(t *testing.T) {
	w := seed(t, nil)
	u := w.loginMailbox("V@A.Test", mailboxPW)
	var who whoami
	r := u.do("GET", "/api/v1/whoami", nil)
	r.json(t, &who)
	if who.Kind != "mailbox" || who.Mailbox != "v@a.test" || who.Domains != nil {
		t.Errorf("whoami %+v", who)
	}
	// A mailbox user is not an admin.
	want(t, u.do("GET", "/api/v1/mailboxes", nil), 403, "user lists mailboxes")
	// Password: the current one is required, the policy applies.
	want(t, u.do("PUT", "/api/v1/self/password", map[string]string{"current_password": "wrong", "new_password": strongPW}), 403, "wrong current")
	want(t, u.do("PUT", "/api/v1/self/password", map[string]string{"current_password": mailboxPW, "new_password": "v@a.test"}), 422, "weak")
	other := w.loginMailbox("v@a.test", mailboxPW)
	want(t, u.do("PUT", "/api/v1/self/password", map[string]string{"current_password": mailboxPW, "new_password": strongPW}), 204, "change")
	want(t, other.do("GET", "/api/v1/self", nil), 401, "the other session ended")
	want(t, u.do("GET", "/api/v1/self", nil), 200, "this session lives")
	want(t, w.client().do("POST", "/api/v1/self/login", map[string]string{"address": "v@a.test", "password": mailboxPW}), 401, "old password")
	w.loginMailbox("v@a.test", strongPW)
	// The new password is a Dovecot-compatible hash.
	hash, _, err := w.st.MailboxPassword(w.ctx, "v@a.test")
	if err != nil || !strings.HasPrefix(hash, "{ARGON2ID}") {
		t.Errorf("stored %q %v", hash, err)
	}
	// Vacation.
	want(t, u.do("GET", "/api/v1/self/vacation", nil), 404, "no vacation")
	from := w.clock.Now()
	r = u.do("PUT", "/api/v1/self/vacation", map[string]any{"subject": "Away", "body": "Back Monday", "active_from": from, "active_until": from.Add(48 * time.Hour)})
	want(t, r, 201, "set vacation")
	var v store.Vacation
	r = u.do("GET", "/api/v1/self/vacation", nil)
	r.json(t, &v)
	if v.Subject != "Away" || v.Mailbox != "v@a.test" || v.IntervalSeconds != store.DefaultVacationIntervalSeconds {
		t.Errorf("vacation %+v", v)
	}
	want(t, u.do("PUT", "/api/v1/self/vacation", map[string]any{"subject": "Away", "active_from": from, "active_until": from}), 422, "until before from")
	want(t, u.do("DELETE", "/api/v1/self/vacation", nil), 204, "end vacation")
	// Forwarding keeps a copy.
	r = u.do("PUT", "/api/v1/self/forwarding", map[string]any{"destinations": []string{"Me@Example.ORG", "v@a.test"}})
	want(t, r, 201, "forward")
	var f forwarding
	r.json(t, &f)
	if !f.KeepCopy || strings.Join(f.Destinations, ",") != "me@example.org" {
		t.Errorf("forwarding %+v", f)
	}
	a := must[store.Alias](t)(w.st.GetAlias(w.ctx, "v@a.test"))
	if strings.Join(a.Destinations, ",") != "me@example.org,v@a.test" {
		t.Errorf("alias %+v", a)
	}
	want(t, u.do("PUT", "/api/v1/self/forwarding", map[string]any{"destinations": []string{}}), 422, "no destination")
	want(t, u.do("DELETE", "/api/v1/self/forwarding", nil), 204, "stop forwarding")
	// App passwords: shown once, hashed, not a web login.
	var ap appPasswordCreated
	r = u.do("POST", "/api/v1/self/app-passwords", map[string]any{"name": "tablet"})
	want(t, r, 201, "app password")
	r.json(t, &ap)
	if len(ap.Password) < 20 || ap.AppPassword.Mailbox != "v@a.test" {
		t.Errorf("app password %+v", ap)
	}
	stored := must[store.AppPassword](t)(w.st.GetAppPassword(w.ctx, ap.AppPassword.ID))
	if ok, _, err := w.opts.Hasher.Verify(stored.Password, ap.Password); !ok || err != nil {
		t.Errorf("stored app password does not verify: %v", err)
	}
	r = u.do("GET", "/api/v1/self/app-passwords", nil)
	if strings.Contains(string(r.body), ap.Password) || strings.Contains(string(r.body), stored.Password) {
		t.Errorf("listing shows the password: %s", r)
	}
	want(t, w.client().do("POST", "/api/v1/self/login", map[string]string{"address": "v@a.test", "password": ap.Password}), 401, "app password login")
	want(t, u.do("DELETE", idPath("/api/v1/self/app-passwords", ap.AppPassword.ID), nil), 204, "revoke")
	// Disabling the mailbox ends its sessions.
	want(t, w.ada.do("PATCH", "/api/v1/mailboxes/v@a.test", map[string]any{"active": false}), 200, "disable")
	want(t, u.do("GET", "/api/v1/self", nil), 401, "disabled mailbox's session")
}

func TestAdminManagement(t *testing.T) {
	w := seed(t, nil)
	var a store.Admin
	r := w.root.do("POST", "/api/v1/admins", map[string]any{"username": "Carol", "password": strongPW, "domains": []string{"A.TEST.", "bücher.test"}})
	want(t, r, 201, "create admin")
	r.json(t, &a)
	if a.Username != "carol" || a.Superadmin || strings.Join(a.Domains, ",") != "a.test,"+idnForeign {
		t.Errorf("admin %+v", a)
	}
	if strings.Contains(string(r.body), "ARGON2") {
		t.Errorf("admin body shows the hash: %s", r)
	}
	want(t, w.root.do("POST", "/api/v1/admins", map[string]any{"username": "x", "password": strongPW, "domains": []string{"nowhere.test"}}), 404, "unknown domain")
	want(t, w.root.do("POST", "/api/v1/admins", map[string]any{"username": "y", "password": "y"}), 422, "weak admin password")
	want(t, w.root.do("PATCH", "/api/v1/admins/root", map[string]any{"superadmin": false}), 409, "demote self")
	want(t, w.root.do("DELETE", "/api/v1/admins/root", nil), 409, "delete self")
	c := w.login("carol", strongPW)
	want(t, w.root.do("PATCH", "/api/v1/admins/carol", map[string]any{"password": strongPW + "2"}), 200, "reset password")
	want(t, c.do("GET", "/api/v1/whoami", nil), 401, "sessions end with a password reset")
	want(t, w.root.do("DELETE", "/api/v1/domain-admins/carol/"+esc("BÜCHER.test"), nil), 204, "remove grant by IDN")
	r = w.root.do("GET", "/api/v1/domain-admins?username=carol", nil)
	var p page[store.DomainAdmin]
	r.json(t, &p)
	if p.Total != 1 || p.Items[0].Domain != "a.test" {
		t.Errorf("grants %s", r)
	}
	// Account password change.
	want(t, w.ada.do("PUT", "/api/v1/account/password", map[string]string{"current_password": "nope", "new_password": strongPW}), 403, "wrong current")
	want(t, w.ada.do("PUT", "/api/v1/account/password", map[string]string{"current_password": adaPW, "new_password": strongPW}), 204, "change own")
	w.login("ada", strongPW)
}

func TestReadiness(t *testing.T) {
	bad := errors.New("schema is at 3, need 6")
	e := newEnv(t, func(o *Options) {
		o.MigrationsCurrent = func(context.Context) error { return bad }
		o.SpoolWritable = func(context.Context) error { return nil }
	})
	c := e.client()
	want(t, c.do("GET", "/healthz", nil), 200, "healthz")
	r := c.do("GET", "/readyz", nil)
	want(t, r, 503, "readyz with an outdated schema")
	if !strings.Contains(string(r.body), `"migrations":"failed"`) || !strings.Contains(string(r.body), `"database":"ok"`) ||
		strings.Contains(string(r.body), "schema is at") {
		t.Errorf("readyz body %s", r)
	}
	e.db.Pool.Close()
	time.Sleep(readyTTL)
	want(t, c.do("GET", "/readyz", nil), 503, "readyz without a database")
	// The real schema check passes on a migrated database.
	if err := SchemaCurrent(newEnv(t, nil).st)(e.ctx); err != nil {
		t.Errorf("SchemaCurrent: %v", err)
	}
}
