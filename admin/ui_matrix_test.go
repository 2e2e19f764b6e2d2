package admin

import (
	"fmt"
	"html/template"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/facteur/facteur/store"
)

// The web UI's part of the authorisation matrix: every page and form of
// uiRoutes, attacked as the API's routes are (ada's session and token, the
// mailbox user u@a.test), with the same rule: 403 or 404, or a page that
// names nothing foreign, and no row changed. Forms are posted as a browser
// without script posts them (application/x-www-form-urlencoded).

// formOf builds a form body from name, value pairs (a name may repeat).
func formOf(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// withoutEcho returns r without what the page repeats of the request
// itself: the values of a posted form (a form shown again keeps what was
// typed), and the value="…" of the query's filters (a list shows its
// search box filled). What is left must name nothing foreign.
func withoutEcho(r *resp, p probe) *resp {
	body := string(r.body)
	if vals, ok := p.body.(url.Values); ok {
		var all []string
		for _, vs := range vals {
			all = append(all, vs...)
		}
		// Longest first: a short value may be part of a longer one.
		slices.SortFunc(all, func(a, b string) int { return len(b) - len(a) })
		for _, v := range all {
			if v != "" {
				body = strings.ReplaceAll(body, template.HTMLEscapeString(v), "")
			}
		}
	}
	if u, err := url.Parse(p.path); err == nil {
		for _, vs := range u.Query() {
			for _, v := range vs {
				body = strings.ReplaceAll(body, `value="`+template.HTMLEscapeString(v)+`"`, "")
			}
		}
		body = strings.ReplaceAll(body, `value="`+template.HTMLEscapeString(u.RequestURI())+`"`, "")
	}
	return &resp{status: r.status, header: r.header, body: []byte(body)}
}

// uiListProbes filters a list page by every variant of the foreign domains
// and searches for them: the page must name nothing foreign.
func uiListProbes(path string, extra ...string) []probe {
	var ps []probe
	add := func(q string) {
		ps = append(ps, probe{method: "GET", path: path + "?" + q, wantStatus: []int{200}, check: noForeign})
	}
	for _, d := range foreignDomains() {
		add("domain=" + url.QueryEscape(d))
	}
	for _, s := range []string{"b.test", "xn--bcher", "bob", "u@b"} {
		add("search=" + url.QueryEscape(s))
	}
	for _, q := range extra {
		add(q)
	}
	return append(ps, probe{method: "GET", path: path, wantStatus: []int{200}, check: noForeign})
}

// uiRowsNotFound checks that every failing line of a CSV import page is
// "not found", as for a domain that does not exist.
func uiRowsNotFound(lines int) func(t *testing.T, r *resp) {
	return func(t *testing.T, r *resp) {
		t.Helper()
		if n := strings.Count(string(r.body), "<td>not found</td>"); n != lines {
			t.Errorf("%d lines not found, want %d: %s", n, lines, r)
		}
		noForeign(t, r)
	}
}

// Queue fixtures: a message of a.test, one of b.test, one of both.
const (
	queueA     = "QueueAAAA01"
	queueF     = "QueueFFFF01"
	queueMixed = "QueueMMMM01"
)

// uiFixtures adds what the web UI's positive probes act on, so that they
// leave the API's fixtures as the API's probes expect them.
func uiFixtures(w *world) {
	t := w.t
	ctx := store.WithActor(w.ctx, "test:seed")
	st := w.st
	pw := w.hash(mailboxPW)
	for _, a := range []string{"uidel@a.test", "uivac@a.test"} {
		must[store.Mailbox](t)(st.CreateMailbox(ctx, store.Mailbox{Address: a, Password: pw, Active: true}))
	}
	must[store.Vacation](t)(st.CreateVacation(ctx, store.Vacation{Mailbox: "uivac@a.test", Subject: "away", Active: true}))
	for _, a := range []string{"uialias@a.test", "uialdel@a.test"} {
		must[store.Alias](t)(st.CreateAlias(ctx, store.Alias{Address: a, Destinations: []string{"x@example.net"}, Active: true}))
	}
	must[store.AliasDomain](t)(st.CreateAliasDomain(ctx, store.AliasDomain{AliasDomain: "ui-alias.test", TargetDomain: "a.test", Active: true}))
	ap := must[store.AppPassword](t)(st.CreateAppPassword(ctx, store.AppPassword{Mailbox: "u@a.test", Name: "uiapp", Password: pw, Active: true}))
	w.ids["uiapp"] = ap.ID
	ap = must[store.AppPassword](t)(st.CreateAppPassword(ctx, store.AppPassword{Mailbox: "v@a.test", Name: "uiself", Password: pw, Active: true}))
	w.ids["uiself"] = ap.ID
	g := must[store.SenderGrant](t)(st.CreateSenderGrant(ctx, store.SenderGrant{Mailbox: "u@a.test", Sender: "s3@a.test", Active: true}))
	w.ids["uigrant"] = g.ID
	must[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "uidel.test", Active: true}))
	for _, u := range []string{"uiadm", "uidel"} {
		must[store.Admin](t)(st.CreateAdmin(ctx, store.Admin{Username: u, Password: w.hash(strongPW), Active: true}, nil))
	}
	tok := must[store.APIToken](t)(st.CreateAPIToken(ctx, store.APIToken{Admin: "ada", Name: "uitok", TokenHash: sha256Hex("uitok"), Active: true}))
	w.ids["uitok"] = tok.ID
	w.exec(`INSERT INTO queue_message (id, node, spool_key, sender, size) VALUES
		($1, 'n1', 'k1', 'someone@example.org', 100), ($2, 'n1', 'k2', 'someone@example.org', 100),
		($3, 'n1', 'k3', 'someone@example.org', 100)`, queueA, queueF, queueMixed)
	w.exec(`INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport, status) VALUES
		($1, 'u@a.test', 'u@a.test', 'a.test', 'maildir', 'deferred'),
		($2, 'u@b.test', 'u@b.test', 'b.test', 'maildir', 'deferred'),
		($2, 'u@xn--bcher-kva.test', 'u@xn--bcher-kva.test', 'xn--bcher-kva.test', 'maildir', 'queued'),
		($3, 'v@a.test', 'v@a.test', 'a.test', 'maildir', 'deferred'),
		($3, 'w@b.test', 'w@b.test', 'b.test', 'maildir', 'deferred')`, queueA, queueF, queueMixed)
	w.exec(`INSERT INTO delivery_log (queue_id, sender, recipient, domain, status, reply) VALUES
		('QueueOld0001', 'someone@example.org', 'u@a.test', 'a.test', 'sent', 'ok'),
		('QueueOld0002', 'someone@example.org', 'u@b.test', 'b.test', 'sent', 'ok'),
		('QueueOld0003', 'someone@example.org', 'u@xn--bcher-kva.test', 'xn--bcher-kva.test', 'bounced', 'no')`)
	w.userV = w.loginMailbox("v@a.test", mailboxPW)
}

func uiMatrix() map[string]matrixEntry {
	ok := func(who, method, path string, body any, status int) func(*world) (string, probe, int) {
		return func(*world) (string, probe, int) { return who, probe{method: method, path: path, body: body}, status }
	}
	get := func(path string) probe { return probe{method: "GET", path: path} }
	post := func(path string, body url.Values) probe { return probe{method: "POST", path: path, body: body} }
	pw2 := func(kv ...string) url.Values {
		return formOf(append(kv, "password", strongPW, "password2", strongPW)...)
	}
	// foreignLocal splits the foreign addresses of local into local part
	// and domain, as the forms that create addresses take them.
	foreignLocal := func(local string) [][2]string {
		var out [][2]string
		for i, d := range foreignDomains() {
			l := local
			if i%2 == 1 {
				l = toUpper(local)
			}
			out = append(out, [2]string{l, d})
		}
		return out
	}
	byID := func(w *world, prefix, suffix string, ids ...int64) []probe {
		var ps []probe
		for _, id := range ids {
			ps = append(ps, post(fmt.Sprintf("%s/%d%s", prefix, id, suffix), nil))
		}
		return ps
	}
	return map[string]matrixEntry{
		"GET /static/{file}": {
			foreign: func(*world) []probe {
				return []probe{get("/static/..%2fadmin.go"), get("/static/.hidden"), get("/static/nothing.css"),
					get("/static/%2e%2e%2fui.go")}
			},
			positive: ok("anon", "GET", "/static/facteur.css", nil, 200),
		},
		"GET /{$}":         {positive: ok("ada", "GET", "/", nil, 303)},
		"GET /login":       {positive: ok("anon", "GET", "/login?next=%2Fmailboxes", nil, 200)},
		"POST /login":      {positive: ok("anon", "POST", "/login", formOf("username", "ada", "password", adaPW, "next", "/mailboxes"), 303)},
		"GET /user/login":  {positive: ok("anon", "GET", "/user/login", nil, 200)},
		"POST /user/login": {positive: ok("anon", "POST", "/user/login", formOf("address", "v@a.test", "password", mailboxPW), 303)},
		"POST /logout":     {positive: ok("fresh", "POST", "/logout", nil, 303)},
		"GET /account":     {positive: ok("dave", "GET", "/account", nil, 200)},
		"POST /account/password": {positive: ok("dave", "POST", "/account/password",
			formOf("current_password", davePW, "new_password", davePW, "new_password2", davePW), 303)},
		"POST /account/totp/secret": {positive: ok("dave", "POST", "/account/totp/secret", nil, 200)},
		"POST /account/totp": {positive: func(w *world) (string, probe, int) {
			code, err := TOTPCode(testTOTPSecret, w.clock.Now())
			if err != nil {
				w.t.Fatal(err)
			}
			return "dave", post("/account/totp", formOf("secret", testTOTPSecret, "code", code, "password", davePW)), 303
		}},
		"POST /account/totp/delete": {positive: ok("dave", "POST", "/account/totp/delete", formOf("off_password", davePW), 303)},
		"GET /tokens": {
			foreign: func(*world) []probe {
				return []probe{{method: "GET", path: "/tokens?search=panel", wantStatus: []int{200}, check: noForeign}}
			},
			positive: ok("ada", "GET", "/tokens", nil, 200),
		},
		"POST /tokens": {positive: ok("ada", "POST", "/tokens", formOf("name", "ui-new"), 200)},
		"POST /tokens/{id}/delete": {
			foreign: func(w *world) []probe { return byID(w, "/tokens", "/delete", w.ids["token:bob"]) },
			positive: func(w *world) (string, probe, int) {
				return "ada", post(fmt.Sprintf("/tokens/%d/delete", w.ids["uitok"]), nil), 303
			},
		},

		"GET /domains": {
			foreign:  func(*world) []probe { return uiListProbes("/domains") },
			positive: ok("ada", "GET", "/domains", nil, 200),
		},
		"GET /domains/new": {positive: ok("root", "GET", "/domains/new", nil, 200)},
		"POST /domains": {
			foreign: func(*world) []probe {
				return []probe{post("/domains", formOf("name", "new2.test")), post("/domains", formOf("name", "b.test"))}
			},
			positive: ok("root", "POST", "/domains", formOf("name", "ui-new.test", "active", "off", "active", "on", "max_mailboxes", "5"), 303),
		},
		"GET /domains/{domain}": {
			foreign: func(*world) []probe {
				return each(foreignDomains(), func(d string) probe { return get("/domains/" + esc(d)) })
			},
			positive: ok("ada", "GET", "/domains/A.Test.", nil, 200),
		},
		"POST /domains/{domain}": {
			foreign: func(*world) []probe {
				ps := each(foreignDomains(), func(d string) probe {
					return post("/domains/"+esc(d), formOf("description", "pwned", "active", "off"))
				})
				// Not its own domain's limits, flags or transport either.
				for _, f := range [][2]string{{"max_mailboxes", "1000"}, {"max_quota_mb", ""}, {"transport", "smtp:[evil.example]"},
					{"backup_mx", "on"}, {"local", "on"}, {"default_quota_mb", "1"}} {
					ps = append(ps, post("/domains/a.test", formOf("description", "x", f[0], f[1])))
				}
				return ps
			},
			positive: ok("ada", "POST", "/domains/a.test", formOf("description", "A", "active", "off", "active", "on"), 303),
		},
		"POST /domains/{domain}/delete": {
			foreign: func(*world) []probe {
				return append(each(foreignDomains(), func(d string) probe { return post("/domains/"+esc(d)+"/delete", nil) }),
					post("/domains/a.test/delete", nil))
			},
			positive: ok("root", "POST", "/domains/uidel.test/delete", nil, 303),
		},

		"GET /alias-domains": {
			foreign:  func(*world) []probe { return uiListProbes("/alias-domains", "search=alias-b", "search=alias-c") },
			positive: ok("ada", "GET", "/alias-domains", nil, 200),
		},
		"POST /alias-domains": {
			foreign: func(*world) []probe {
				return []probe{post("/alias-domains", formOf("alias_domain", "new-alias.test", "target_domain", "a.test")),
					post("/alias-domains", formOf("alias_domain", "b.test", "target_domain", "a.test"))}
			},
			positive: ok("root", "POST", "/alias-domains", formOf("alias_domain", "ui-alias2.test", "target_domain", "a.test"), 303),
		},
		"POST /alias-domains/{name}": {
			foreign: func(*world) []probe {
				ps := each([]string{"alias-b.test", "ALIAS-B.TEST.", "alias-c.test"}, func(d string) probe {
					return post("/alias-domains/"+esc(d), formOf("active", "off"))
				})
				return append(ps, each(foreignDomains(), func(d string) probe {
					return post("/alias-domains/ui-alias.test", formOf("target_domain", d))
				})...)
			},
			positive: ok("ada", "POST", "/alias-domains/ui-alias.test", formOf("active", "off"), 303),
		},
		"POST /alias-domains/{name}/delete": {
			foreign: func(*world) []probe {
				return each([]string{"alias-b.test", "ALIAS-B.TEST.", "alias-c.test", "Alias-C.Test."}, func(d string) probe {
					return post("/alias-domains/"+esc(d)+"/delete", nil)
				})
			},
			positive: ok("ada", "POST", "/alias-domains/ui-alias2.test/delete", nil, 303),
		},

		"GET /mailboxes": {
			foreign:  func(*world) []probe { return uiListProbes("/mailboxes") },
			positive: ok("ada", "GET", "/mailboxes", nil, 200),
		},
		"GET /mailboxes/new": {
			foreign: func(*world) []probe {
				return []probe{{method: "GET", path: "/mailboxes/new?domain=b.test", wantStatus: []int{200}, check: noForeign}}
			},
			positive: ok("ada", "GET", "/mailboxes/new", nil, 200),
		},
		"POST /mailboxes": {
			foreign: func(*world) []probe {
				ps := each(foreignLocal("n"), func(a [2]string) probe {
					return post("/mailboxes", pw2("local_part", a[0], "domain", a[1]))
				})
				// A transport is a superadmin's; so is a quota the domain's
				// limits refuse (422 is the database's answer, not a 4xx of
				// scope, and is not accepted here).
				return append(ps, post("/mailboxes", pw2("local_part", "t", "domain", "a.test", "transport", "smtp:[evil.example]")))
			},
			positive: ok("ada", "POST", "/mailboxes", pw2("local_part", "ui-new", "domain", "a.test", "name", "New", "active", "on"), 303),
		},
		"GET /mailboxes/{address}": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe { return get("/mailboxes/" + esc(a)) })
			},
			positive: ok("ada", "GET", "/mailboxes/U@A.Test.", nil, 200),
		},
		"POST /mailboxes/{address}": {
			foreign: func(*world) []probe {
				ps := each(foreignAddresses("u"), func(a string) probe {
					return post("/mailboxes/"+esc(a), pw2("name", "pwned", "quota_mb", "1"))
				})
				return append(ps, post("/mailboxes/u@a.test", formOf("transport", "smtp:[evil.example]")),
					post("/mailboxes/u@a.test", formOf("transport", "")))
			},
			positive: ok("ada", "POST", "/mailboxes/u@a.test", formOf("name", "U", "active", "off", "active", "on"), 303),
		},
		"POST /mailboxes/{address}/delete": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe { return post("/mailboxes/"+esc(a)+"/delete", nil) })
			},
			positive: ok("ada", "POST", "/mailboxes/uidel@a.test/delete", nil, 303),
		},
		"GET /mailboxes/{address}/vacation": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe { return get("/mailboxes/" + esc(a) + "/vacation") })
			},
			positive: ok("ada", "GET", "/mailboxes/u@a.test/vacation", nil, 200),
		},
		"POST /mailboxes/{address}/vacation": {
			foreign: func(*world) []probe {
				return each(append(foreignAddresses("u"), foreignAddresses("v")...), func(a string) probe {
					return post("/mailboxes/"+esc(a)+"/vacation", formOf("subject", "pwned"))
				})
			},
			positive: ok("ada", "POST", "/mailboxes/uivac@a.test/vacation", formOf("subject", "hi", "body", "back soon", "active", "on"), 303),
		},
		"POST /mailboxes/{address}/vacation/delete": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe { return post("/mailboxes/"+esc(a)+"/vacation/delete", nil) })
			},
			positive: ok("ada", "POST", "/mailboxes/uivac@a.test/vacation/delete", nil, 303),
		},
		"POST /mailboxes/{address}/app-passwords": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe {
					return post("/mailboxes/"+esc(a)+"/app-passwords", formOf("ap_name", "x"))
				})
			},
			positive: ok("ada", "POST", "/mailboxes/u@a.test/app-passwords", formOf("ap_name", "ui-tablet"), 200),
		},
		"POST /app-passwords/{id}/delete": {
			foreign: func(w *world) []probe { return byID(w, "/app-passwords", "/delete", foreignIDs(w, "app")...) },
			positive: func(w *world) (string, probe, int) {
				return "ada", post(fmt.Sprintf("/app-passwords/%d/delete", w.ids["uiapp"]), nil), 303
			},
		},
		"GET /vacations": {
			foreign:  func(*world) []probe { return uiListProbes("/vacations") },
			positive: ok("ada", "GET", "/vacations", nil, 200),
		},

		"GET /aliases": {
			foreign:  func(*world) []probe { return uiListProbes("/aliases") },
			positive: ok("ada", "GET", "/aliases", nil, 200),
		},
		"GET /aliases/new": {positive: ok("ada", "GET", "/aliases/new", nil, 200)},
		"POST /aliases": {
			foreign: func(*world) []probe {
				var ps []probe
				for _, local := range []string{"new", "*"} {
					ps = append(ps, each(foreignLocal(local), func(a [2]string) probe {
						return post("/aliases", formOf("local_part", a[0], "domain", a[1], "destinations", "x@example.net"))
					})...)
				}
				for _, d := range []string{"|/bin/sh -c id", "/tmp/mbox", ":include:/etc/aliases.d/x"} {
					ps = append(ps, post("/aliases", formOf("local_part", "cmd", "domain", "a.test", "destinations", d)))
				}
				return ps
			},
			positive: ok("ada", "POST", "/aliases", formOf("local_part", "ui-al-new", "domain", "a.test", "destinations", "x@example.net\ny@example.net"), 303),
		},
		"GET /aliases/{address}": {
			foreign: func(*world) []probe {
				return each(allAliasAddr("al"), func(a string) probe { return get("/aliases/" + esc(a)) })
			},
			positive: ok("ada", "GET", "/aliases/AL@A.TEST", nil, 200),
		},
		"POST /aliases/{address}": {
			foreign: func(*world) []probe {
				ps := each(allAliasAddr("al"), func(a string) probe {
					return post("/aliases/"+esc(a), formOf("destinations", "x@example.net", "description", "pwned"))
				})
				return append(ps, post("/aliases/al@a.test", formOf("destinations", "|/bin/true")),
					post("/aliases/postmaster@a.test", formOf("active", "off")),
					post("/aliases/Abuse@A.Test.", formOf("active", "off")))
			},
			positive: ok("ada", "POST", "/aliases/uialias@a.test", formOf("destinations", "y@example.net", "keep_copy", "off", "active", "on"), 303),
		},
		"POST /aliases/{address}/delete": {
			foreign: func(*world) []probe {
				ps := each(allAliasAddr("al"), func(a string) probe { return post("/aliases/"+esc(a)+"/delete", nil) })
				return append(ps, post("/aliases/postmaster@a.test/delete", nil), post("/aliases/POSTMASTER@A.TEST./delete", nil))
			},
			positive: ok("ada", "POST", "/aliases/uialdel@a.test/delete", nil, 303),
		},

		"GET /sender-grants": {
			foreign:  func(*world) []probe { return uiListProbes("/sender-grants") },
			positive: ok("ada", "GET", "/sender-grants", nil, 200),
		},
		"POST /sender-grants": {
			foreign: func(*world) []probe {
				ps := each(foreignAddresses("u"), func(a string) probe {
					return post("/sender-grants", formOf("mailbox", a, "sender", "s9@a.test"))
				})
				return append(ps, each(foreignAddresses("ceo"), func(s string) probe {
					return post("/sender-grants", formOf("mailbox", "u@a.test", "sender", s))
				})...)
			},
			positive: ok("ada", "POST", "/sender-grants", formOf("mailbox", "u@a.test", "sender", "s4@a.test"), 303),
		},
		"POST /sender-grants/{id}/delete": {
			foreign: func(w *world) []probe { return byID(w, "/sender-grants", "/delete", foreignIDs(w, "grant")...) },
			positive: func(w *world) (string, probe, int) {
				return "ada", post(fmt.Sprintf("/sender-grants/%d/delete", w.ids["uigrant"]), nil), 303
			},
		},

		"GET /audit": {
			foreign: func(*world) []probe {
				return uiListProbes("/audit", "table=domain&search=b.test", "table=admin", "table=api_token", "actor=admin%3Abob",
					"since=2020-01-01&until=2040-01-01")
			},
			positive: ok("ada", "GET", "/audit", nil, 200),
		},
		"GET /queue": {
			foreign: func(*world) []probe {
				return uiListProbes("/queue", "search="+queueF, "status=queued", "status=deferred", "search=w%40b")
			},
			positive: ok("ada", "GET", "/queue", nil, 200),
		},
		"POST /queue": {
			foreign: func(*world) []probe {
				var ps []probe
				for _, a := range queueActions {
					// Another domain's message, alone or with one of its own:
					// nothing is done.
					ps = append(ps, post("/queue", formOf("action", a, "id", queueF)),
						post("/queue", formOf("action", a, "id", queueA, "id", queueF)),
						post("/queue", formOf("action", a, "id", "NoSuchMessage1")))
					if a != "flush" {
						// A message shared with another domain is whole: a
						// domain admin may only flush its own recipients.
						ps = append(ps, post("/queue", formOf("action", a, "id", queueMixed)))
					}
				}
				return append(ps, probe{method: "POST", path: "/queue", body: formOf("action", "bogus", "id", queueA), wantStatus: []int{422}},
					post("/queue", formOf("action", "hold", "id", "../x")))
			},
			positive: ok("ada", "POST", "/queue", formOf("action", "flush", "id", queueA, "back", "/queue?status=deferred"), 303),
		},
		"GET /queue/{id}": {
			foreign: func(*world) []probe {
				return []probe{get("/queue/" + queueF), get("/queue/NoSuchMessage1"), get("/queue/x")}
			},
			positive: ok("ada", "GET", "/queue/"+queueMixed, nil, 200),
		},
		"GET /log": {
			foreign:  func(*world) []probe { return uiListProbes("/log", "status=bounced", "search=QueueOld0002") },
			positive: ok("ada", "GET", "/log", nil, 200),
		},

		"GET /csv": {
			foreign: func(*world) []probe {
				return []probe{{method: "GET", path: "/csv", wantStatus: []int{200}, check: noForeign}}
			},
			positive: ok("ada", "GET", "/csv", nil, 200),
		},
		"POST /csv/mailboxes": {
			foreign: func(*world) []probe {
				csv := "address,password\n"
				for _, a := range foreignAddresses("imp") {
					csv += a + "," + strongPW + "\n"
				}
				n := len(foreignAddresses("imp"))
				return []probe{
					{method: "POST", path: "/csv/mailboxes", body: formOf("csv", csv, "dry_run", "off"), wantStatus: []int{422}, check: uiRowsNotFound(n)},
					{method: "POST", path: "/csv/mailboxes", body: formOf("csv", csv, "dry_run", "off", "dry_run", "on"), wantStatus: []int{422}, check: uiRowsNotFound(n)},
					post("/csv/mailboxes", formOf("csv", "address,password_hash\nimp@a.test,{PLAIN}x\n", "dry_run", "off")),
				}
			},
			positive: ok("ada", "POST", "/csv/mailboxes", formOf("csv", "address,password\nui-imp@a.test,"+strongPW+"\n", "dry_run", "off"), 200),
		},
		"POST /csv/aliases": {
			foreign: func(*world) []probe {
				csv := "address,destinations\n"
				for _, a := range allAliasAddr("imp") {
					csv += a + ",x@example.net\n"
				}
				return []probe{{method: "POST", path: "/csv/aliases", body: formOf("csv", csv, "dry_run", "off"), wantStatus: []int{422},
					check: uiRowsNotFound(len(allAliasAddr("imp")))}}
			},
			positive: ok("ada", "POST", "/csv/aliases", formOf("csv", "address,destinations\nui-imp2@a.test,x@example.net\n", "dry_run", "off"), 200),
		},

		"GET /admins": {
			foreign:  func(*world) []probe { return []probe{get("/admins"), get("/admins?search=bob")} },
			positive: ok("root", "GET", "/admins", nil, 200),
		},
		"GET /admins/new": {positive: ok("root", "GET", "/admins/new", nil, 200)},
		"POST /admins": {
			foreign: func(*world) []probe {
				return []probe{post("/admins", pw2("username", "eve", "superadmin", "on")),
					post("/admins", pw2("username", "eve", "domains", "b.test")),
					post("/admins", pw2("username", "eve", "domains", "a.test"))}
			},
			positive: ok("root", "POST", "/admins", pw2("username", "ui-carol", "domains", "a.test", "active", "on"), 303),
		},
		"GET /admins/{username}": {
			foreign:  func(*world) []probe { return []probe{get("/admins/bob"), get("/admins/ada")} },
			positive: ok("root", "GET", "/admins/uiadm", nil, 200),
		},
		"POST /admins/{username}": {
			foreign: func(*world) []probe {
				return []probe{post("/admins/ada", formOf("superadmin", "on")), post("/admins/bob", pw2())}
			},
			positive: ok("root", "POST", "/admins/uiadm", formOf("superadmin", "off", "active", "off", "active", "on"), 303),
		},
		"POST /admins/{username}/delete": {
			foreign:  func(*world) []probe { return []probe{post("/admins/bob/delete", nil)} },
			positive: ok("root", "POST", "/admins/uidel/delete", nil, 303),
		},
		"POST /admins/{username}/domains": {
			foreign: func(*world) []probe {
				return each(foreignDomains(), func(d string) probe { return post("/admins/ada/domains", formOf("domain", d)) })
			},
			positive: ok("root", "POST", "/admins/uiadm/domains", formOf("domain", "a.test"), 303),
		},
		"POST /admins/{username}/domains/{domain}/delete": {
			foreign:  func(*world) []probe { return []probe{post("/admins/bob/domains/b.test/delete", nil)} },
			positive: ok("root", "POST", "/admins/uiadm/domains/A.TEST./delete", nil, 303),
		},

		// Self-service: the attacker is u@a.test; the positives are v@a.test's,
		// so that u@a.test's vacation and forwarding stay as the API's
		// probes expect them.
		"GET /user": {positive: ok("userV", "GET", "/user", nil, 200)},
		"POST /user/password": {positive: ok("userV", "POST", "/user/password",
			formOf("current_password", mailboxPW, "new_password", mailboxPW, "new_password2", mailboxPW), 303)},
		"GET /user/vacation":         {positive: ok("userV", "GET", "/user/vacation", nil, 200)},
		"POST /user/vacation":        {positive: ok("userV", "POST", "/user/vacation", formOf("subject", "away", "active", "on"), 303)},
		"POST /user/vacation/delete": {positive: ok("userV", "POST", "/user/vacation/delete", nil, 303)},
		"GET /user/forwarding":       {positive: ok("userV", "GET", "/user/forwarding", nil, 200)},
		"POST /user/forwarding": {
			foreign: func(*world) []probe {
				return each([]string{"|/bin/sh -c id", "/tmp/mbox", ":include:/x"}, func(d string) probe {
					return post("/user/forwarding", formOf("destinations", d))
				})
			},
			positive: ok("userV", "POST", "/user/forwarding", formOf("destinations", "me@example.org", "active", "on"), 303),
		},
		"POST /user/forwarding/delete": {positive: ok("userV", "POST", "/user/forwarding/delete", nil, 303)},
		"GET /user/app-passwords":      {positive: ok("userV", "GET", "/user/app-passwords", nil, 200)},
		"POST /user/app-passwords":     {positive: ok("userV", "POST", "/user/app-passwords", formOf("ap_name", "ui-watch"), 200)},
		"POST /user/app-passwords/{id}/delete": {
			foreign: func(w *world) []probe {
				// Another domain's, and another mailbox's of the same domain.
				return byID(w, "/user/app-passwords", "/delete", append(foreignIDs(w, "app"), w.ids["uiself"], w.ids["appv:a.test"])...)
			},
			positive: func(w *world) (string, probe, int) {
				return "userV", post(fmt.Sprintf("/user/app-passwords/%d/delete", w.ids["uiself"]), nil), 303
			},
		},
	}
}
