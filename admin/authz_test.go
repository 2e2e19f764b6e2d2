package admin

import (
	"strings"
	"testing"
)

// attackers are ada's session and ada's API token.
func (w *world) attackers() map[string]*client {
	return map[string]*client{"session": w.ada, "token": w.adaTok}
}

func TestCommandFileIncludeDestinationsGet403(t *testing.T) {
	w := seed(t, nil)
	dests := []string{"|/bin/sh -c 'id'", " |cat", "/tmp/mbox", " /etc/passwd", ":include:/etc/aliases.d/x",
		":INCLUDE:/x", " :Include:/x"}
	for name, c := range w.attackers() {
		w.unchanged(name, func() {
			for _, d := range dests {
				list := []string{"ok@example.net", d}
				for _, p := range []probe{
					{method: "POST", path: "/api/v1/aliases", body: map[string]any{"address": "cmd@a.test", "destinations": list}},
					{method: "POST", path: "/api/v1/aliases", body: map[string]any{"address": "@a.test", "destinations": list}},
					{method: "PATCH", path: "/api/v1/aliases/al@a.test", body: map[string]any{"destinations": list}},
					{method: "PATCH", path: "/api/v1/aliases/al@a.test", body: map[string]any{"add_destinations": []string{d}}},
					{method: "POST", path: "/api/v1/csv/aliases", body: "address,destinations\ncmd@a.test,\"" + d + "\"\n"},
				} {
					r := send(c, p)
					if p.method == "POST" && p.path == "/api/v1/csv/aliases" {
						// One failing line: the import writes nothing and
						// names the rule.
						if r.status != 422 || !strings.Contains(string(r.body), codeForbiddenDest) {
							t.Errorf("%s CSV %q: %s", name, d, r)
						}
						continue
					}
					if r.status != 403 || r.errCode() != codeForbiddenDest {
						t.Errorf("%s %s %s %q: %s, want 403 %s", name, p.method, p.path, d, r, codeForbiddenDest)
					}
				}
			}
		})
	}
	// The mailbox user's forwarding too.
	w.unchanged("self forwarding", func() {
		for _, d := range dests {
			r := w.userA.do("PUT", "/api/v1/self/forwarding", map[string]any{"destinations": []string{d}})
			if r.status != 403 || r.errCode() != codeForbiddenDest {
				t.Errorf("self forwarding %q: %s", d, r)
			}
		}
	})
	// And a superadmin through the admin service: those are the CLI's.
	w.unchanged("root", func() {
		r := w.root.do("POST", "/api/v1/aliases", map[string]any{"address": "cmd@a.test", "destinations": []string{"|/bin/true"}})
		want(t, r, 403, "superadmin command destination")
	})
}

func TestTransportsAndMaildirAreSuperadminOnly(t *testing.T) {
	w := seed(t, nil)
	for name, c := range w.attackers() {
		w.unchanged(name, func() {
			for _, p := range []probe{
				{method: "POST", path: "/api/v1/mailboxes", body: map[string]any{"address": "t@a.test", "password": strongPW, "transport": "smtp:[evil.example]"}},
				{method: "POST", path: "/api/v1/mailboxes", body: map[string]any{"address": "t@a.test", "password": strongPW, "transport": nil}},
				{method: "PATCH", path: "/api/v1/mailboxes/u@a.test", body: map[string]any{"transport": "smtp:[evil.example]"}},
				{method: "PATCH", path: "/api/v1/mailboxes/u@a.test", body: map[string]any{"transport": nil}},
				{method: "PATCH", path: "/api/v1/mailboxes/u@a.test", body: map[string]any{"transport": "pipe:/bin/sh"}},
				// A Maildir path is a way into another domain's mail.
				{method: "POST", path: "/api/v1/mailboxes", body: map[string]any{"address": "t@a.test", "password": strongPW, "maildir": "b.test/u/"}},
				{method: "PATCH", path: "/api/v1/mailboxes/u@a.test", body: map[string]any{"maildir": "b.test/u/"}},
				{method: "PATCH", path: "/api/v1/domains/a.test", body: map[string]any{"transport": "smtp:[evil.example]"}},
				{method: "POST", path: "/api/v1/transports", body: map[string]any{"key": "u@a.test", "nexthop": "smtp:[evil.example]"}},
				{method: "PATCH", path: "/api/v1/transports/b.test", body: map[string]any{"nexthop": "discard"}},
			} {
				if r := send(c, p); r.status != 403 {
					t.Errorf("%s %s %s %v: %s, want 403", name, p.method, p.path, p.body, r)
				}
			}
		})
	}
	// A superadmin may.
	r := w.root.do("PATCH", "/api/v1/mailboxes/u@a.test", map[string]any{"transport": "lmtp:unix:/run/dovecot/lmtp"})
	want(t, r, 200, "superadmin transport override")
	r = w.root.do("PATCH", "/api/v1/mailboxes/u@a.test", map[string]any{"transport": "bogus"})
	want(t, r, 422, "malformed transport")
}

func TestMassAssignmentIsRefused(t *testing.T) {
	w := seed(t, nil)
	probes := []probe{
		{method: "POST", path: "/api/v1/mailboxes", body: map[string]any{"address": "m@a.test", "password": strongPW, "superadmin": true}},
		{method: "POST", path: "/api/v1/mailboxes", body: map[string]any{"address": "m@a.test", "password": strongPW, "domain": "b.test"}},
		{method: "POST", path: "/api/v1/mailboxes", body: map[string]any{"address": "m@a.test", "password": strongPW, "local_part": "x", "used_bytes": 0}},
		{method: "PATCH", path: "/api/v1/mailboxes/u@a.test", body: map[string]any{"domain": "b.test"}},
		{method: "PATCH", path: "/api/v1/mailboxes/u@a.test", body: map[string]any{"address": "u@b.test"}},
		{method: "POST", path: "/api/v1/aliases", body: map[string]any{"address": "m@a.test", "destinations": []string{"x@example.net"}, "domain": "b.test"}},
		{method: "PATCH", path: "/api/v1/aliases/al@a.test", body: map[string]any{"address": "al@b.test"}},
		{method: "POST", path: "/api/v1/sender-grants", body: map[string]any{"mailbox": "u@a.test", "sender": "z@a.test", "domain": "b.test"}},
		{method: "PATCH", path: "/api/v1/sender-grants/1", body: map[string]any{"mailbox": "u@b.test"}},
		{method: "POST", path: "/api/v1/app-passwords", body: map[string]any{"mailbox": "u@a.test", "name": "x", "domain": "b.test"}},
		{method: "POST", path: "/api/v1/app-passwords", body: map[string]any{"mailbox": "u@a.test", "name": "x", "password": "chosen"}},
		{method: "PUT", path: "/api/v1/mailboxes/u@a.test/vacation", body: map[string]any{"subject": "x", "mailbox": "u@b.test"}},
		{method: "PATCH", path: "/api/v1/alias-domains/alias-a.test", body: map[string]any{"alias_domain": "alias-b.test"}},
		{method: "PATCH", path: "/api/v1/alias-domains/alias-a.test", body: map[string]any{"target_domain": "b.test"}},
		{method: "POST", path: "/api/v1/domain-admins", body: map[string]any{"username": "ada", "domain": "b.test"}},
		{method: "PATCH", path: "/api/v1/admins/ada", body: map[string]any{"superadmin": true}},
	}
	for name, c := range w.attackers() {
		w.unchanged(name, func() {
			for _, p := range probes {
				if r := send(c, p); r.status < 400 || r.status >= 500 {
					t.Errorf("%s %s %s %v: %s, want a 4xx", name, p.method, p.path, p.body, r)
				}
			}
			// Unknown fields are named.
			r := c.do("POST", "/api/v1/mailboxes", map[string]any{"address": "m@a.test", "password": strongPW, "superadmin": true})
			if r.status != 400 || r.errCode() != codeBadRequest || !strings.Contains(string(r.body), `"field":"superadmin"`) {
				t.Errorf("%s unknown field: %s", name, r)
			}
		})
	}
	w.unchanged("session", func() {
		for _, p := range []probe{
			{method: "PUT", path: "/api/v1/account/password", body: map[string]any{"current_password": adaPW, "new_password": strongPW, "superadmin": true}},
			{method: "POST", path: "/api/v1/tokens", body: map[string]any{"name": "t", "admin": "root"}},
			{method: "POST", path: "/api/v1/tokens", body: map[string]any{"name": "t", "token_hash": "00"}},
		} {
			if r := send(w.ada, p); r.status != 400 {
				t.Errorf("%s %s %v: %s, want 400", p.method, p.path, p.body, r)
			}
		}
		r := w.userA.do("POST", "/api/v1/self/app-passwords", map[string]any{"name": "x", "mailbox": "v@a.test"})
		want(t, r, 400, "self app password for another mailbox")
		r = w.userA.do("PUT", "/api/v1/self/vacation", map[string]any{"subject": "x", "mailbox": "v@a.test"})
		want(t, r, 400, "self vacation for another mailbox")
	})
}

func TestProtectedAddressesOnlySuperadminDeletes(t *testing.T) {
	w := seed(t, nil)
	// A mailbox at postmaster@ is protected too.
	want(t, w.root.do("POST", "/api/v1/mailboxes", map[string]any{"address": "abuse@a.test", "password": strongPW}), 422,
		"a mailbox cannot shadow the abuse@ alias")
	want(t, w.root.do("DELETE", "/api/v1/aliases/abuse@a.test", nil), 204, "superadmin deletes abuse@ alias")
	want(t, w.root.do("POST", "/api/v1/mailboxes", map[string]any{"address": "abuse@a.test", "password": strongPW}), 201,
		"abuse@ mailbox")
	for name, c := range w.attackers() {
		w.unchanged(name, func() {
			for _, a := range []string{"postmaster@a.test", "POSTMASTER@A.TEST.", "Postmaster@a.test"} {
				r := c.do("DELETE", "/api/v1/aliases/"+esc(a), nil)
				if r.status != 403 {
					t.Errorf("%s delete %s: %s", name, a, r)
				}
				r = c.do("PATCH", "/api/v1/aliases/"+esc(a), map[string]any{"active": false})
				if r.status != 403 {
					t.Errorf("%s disable %s: %s", name, a, r)
				}
			}
			if r := c.do("DELETE", "/api/v1/mailboxes/ABUSE@a.test", nil); r.status != 403 {
				t.Errorf("%s delete abuse@ mailbox: %s", name, r)
			}
			if r := c.do("PATCH", "/api/v1/mailboxes/abuse@a.test", map[string]any{"active": false}); r.status != 403 {
				t.Errorf("%s disable abuse@ mailbox: %s", name, r)
			}
		})
	}
	// Editing its destinations is allowed.
	want(t, w.ada.do("PATCH", "/api/v1/aliases/postmaster@a.test", map[string]any{"destinations": []string{"ada@example.net"}}), 200,
		"domain admin edits postmaster@")
	want(t, w.root.do("DELETE", "/api/v1/aliases/Postmaster@A.TEST", nil), 204, "superadmin deletes postmaster@")
	want(t, w.root.do("DELETE", "/api/v1/mailboxes/abuse@a.test", nil), 204, "superadmin deletes abuse@ mailbox")
}

func TestDomainAdminGrantRevocationTakesEffectAtOnce(t *testing.T) {
	w := seed(t, nil)
	want(t, w.adaTok.do("GET", "/api/v1/mailboxes/u@a.test", nil), 200, "token before")
	want(t, w.root.do("PATCH", "/api/v1/domain-admins/ada/a.test", map[string]any{"active": false}), 200, "suspend grant")
	want(t, w.ada.do("GET", "/api/v1/mailboxes/u@a.test", nil), 404, "session after")
	want(t, w.adaTok.do("GET", "/api/v1/mailboxes/u@a.test", nil), 404, "token after")
	r := w.ada.do("GET", "/api/v1/mailboxes", nil)
	emptyPage(t, r)
	want(t, w.root.do("DELETE", "/api/v1/domain-admins/ada/a.test", nil), 204, "remove grant")
	want(t, w.root.do("PATCH", "/api/v1/admins/ada", map[string]any{"active": false}), 200, "disable ada")
	want(t, w.ada.do("GET", "/api/v1/whoami", nil), 401, "disabled admin's session")
	want(t, w.adaTok.do("GET", "/api/v1/whoami", nil), 401, "disabled admin's token")
}
