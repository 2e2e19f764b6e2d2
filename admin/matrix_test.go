package admin

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The authorisation matrix. Every route of the route table must have an
// entry here, and no entry may name a route that does not exist. For each
// route:
//
//   - every foreign probe (an object of b.test or bücher.test, named by id
//     or by address/name in every variant of case, trailing dot and IDN
//     form; or an action the attacker may not take on its own objects) is
//     sent by the attacker (ada's session and ada's API token for admin
//     routes, the mailbox user u@a.test for self-service routes) and must
//     get 403 or 404 — or, for lists, an empty page — and change nothing;
//   - the route's positive probe, sent by every principal the route's
//     access rule does not admit (anonymous: 401; others: 403), must
//     change nothing;
//   - the positive probe, sent by the principal it names, must succeed:
//     proof that the probes aim at a real route with a valid body, so that
//     a 404 above is the scope speaking, not a typo.

// probe is one request of the matrix.
type probe struct {
	method, path string
	body         any
	// wantStatus overrides the expected statuses of a foreign probe
	// (default 403 or 404).
	wantStatus []int
	// check, when set, also checks the body of a foreign probe.
	check func(t *testing.T, r *resp)
}

type matrixEntry struct {
	// foreign probes, sent by the attacker; nil for routes without an
	// object to aim at (whoami, logout, the account's own settings).
	foreign func(w *world) []probe
	// positive is the probe that succeeds for who ("root", "ada",
	// "userA", "anon", or "fresh": a new login of ada) with status.
	positive func(w *world) (who string, p probe, status int)
}

const strongPW = "Long-enough-pw-1"

// foreignMarks are strings that must never appear in what ada (or u@a.test)
// reads: names of the foreign domains and of the other admin.
var foreignMarks = []string{"b.test", "xn--bcher-kva", "bücher", "bob"}

// emptyPage checks that a list found nothing.
func emptyPage(t *testing.T, r *resp) {
	t.Helper()
	var p struct {
		Items []any `json:"items"`
		Total int64 `json:"total"`
	}
	r.json(t, &p)
	if len(p.Items) != 0 || p.Total != 0 {
		t.Errorf("scoped list is not empty: %s", r)
	}
}

// noForeign checks that a body names no foreign object.
func noForeign(t *testing.T, r *resp) {
	t.Helper()
	for _, m := range foreignMarks {
		if strings.Contains(strings.ToLower(string(r.body)), m) {
			t.Errorf("body mentions %q: %s", m, r)
		}
	}
}

// csvOnlyHeader checks that an export holds no foreign row.
func csvOnlyHeader(t *testing.T, r *resp) {
	t.Helper()
	if lines := strings.Count(strings.TrimSpace(string(r.body)), "\n"); lines != 0 {
		t.Errorf("scoped export has %d rows: %s", lines, r)
	}
}

// listProbes filters a list by every variant of the foreign domains and
// searches for them; each must find nothing.
func listProbes(path string, extra ...string) []probe {
	var ps []probe
	add := func(q string) {
		ps = append(ps, probe{method: "GET", path: path + "?" + q, wantStatus: []int{200}, check: emptyPage})
	}
	for _, d := range foreignDomains() {
		add("domain=" + esc(d))
	}
	for _, s := range []string{"b.test", "xn--bcher", "bob"} {
		add("search=" + esc(s))
	}
	for _, q := range extra {
		add(q)
	}
	// And the unfiltered list names no foreign object.
	ps = append(ps, probe{method: "GET", path: path + "?limit=1000", wantStatus: []int{200}, check: noForeign})
	return ps
}

// csvExportProbes are listProbes for a CSV export.
func csvExportProbes(path string) []probe {
	var ps []probe
	for _, d := range foreignDomains() {
		ps = append(ps, probe{method: "GET", path: path + "?domain=" + esc(d), wantStatus: []int{200}, check: csvOnlyHeader})
	}
	ps = append(ps, probe{method: "GET", path: path, wantStatus: []int{200}, check: noForeign})
	return ps
}

// importRowsNotFound checks that every row of a failed import is "not
// found" (a foreign domain is no more than a missing one).
func importRowsNotFound(t *testing.T, r *resp) {
	t.Helper()
	var b struct {
		Rows []csvRowError `json:"rows"`
	}
	r.json(t, &b)
	if len(b.Rows) == 0 {
		t.Errorf("no row errors: %s", r)
	}
	for _, e := range b.Rows {
		if e.Code != codeNotFound {
			t.Errorf("row %d: code %s, want not_found: %s", e.Line, e.Code, r)
		}
	}
	noForeign(t, r)
}

func each[T any](vs []T, f func(T) probe) []probe {
	out := make([]probe, 0, len(vs))
	for _, v := range vs {
		out = append(out, f(v))
	}
	return out
}

func foreignIDs(w *world, kind string) []int64 {
	return []int64{w.ids[kind+":b.test"], w.ids[kind+":"+idnForeign]}
}

func idPath(prefix string, id int64) string { return fmt.Sprintf("%s/%d", prefix, id) }

// allAddr are the foreign variants of an address and, for aliases, of the
// catch-all.
func allAliasAddr(local string) []string {
	out := foreignAddresses(local)
	for _, d := range foreignDomains() {
		out = append(out, "@"+d)
	}
	return out
}

func matrix() map[string]matrixEntry {
	ok := func(who, method, path string, body any, status int) func(*world) (string, probe, int) {
		return func(*world) (string, probe, int) { return who, probe{method: method, path: path, body: body}, status }
	}
	return map[string]matrixEntry{
		"GET /healthz":             {positive: ok("anon", "GET", "/healthz", nil, 200)},
		"GET /readyz":              {positive: ok("anon", "GET", "/readyz", nil, 200)},
		"GET /api/v1/openapi.json": {positive: ok("anon", "GET", "/api/v1/openapi.json", nil, 200)},
		"POST /api/v1/login": {positive: ok("anon", "POST", "/api/v1/login",
			map[string]string{"username": "ada", "password": adaPW}, 200)},
		"POST /api/v1/self/login": {positive: ok("anon", "POST", "/api/v1/self/login",
			map[string]string{"address": "v@a.test", "password": mailboxPW}, 200)},
		"POST /api/v1/logout": {positive: ok("fresh", "POST", "/api/v1/logout", nil, 204)},
		"GET /api/v1/whoami":  {positive: ok("ada", "GET", "/api/v1/whoami", nil, 200)},

		// The account routes act on the caller's own account only (dave's,
		// so that ada's password and TOTP stay as the other probes expect).
		"PUT /api/v1/account/password": {positive: ok("dave", "PUT", "/api/v1/account/password",
			map[string]string{"current_password": davePW, "new_password": davePW}, 204)},
		"POST /api/v1/account/totp/secret": {positive: ok("dave", "POST", "/api/v1/account/totp/secret", nil, 200)},
		"PUT /api/v1/account/totp": {positive: func(w *world) (string, probe, int) {
			code, err := TOTPCode(testTOTPSecret, w.clock.Now())
			if err != nil {
				w.t.Fatal(err)
			}
			return "dave", probe{method: "PUT", path: "/api/v1/account/totp",
				body: map[string]string{"secret": testTOTPSecret, "code": code, "password": davePW}}, 204
		}},
		"DELETE /api/v1/account/totp": {positive: ok("dave", "DELETE", "/api/v1/account/totp",
			map[string]string{"password": davePW}, 204)},

		"GET /api/v1/tokens": {
			foreign: func(*world) []probe {
				return []probe{{method: "GET", path: "/api/v1/tokens?admin=bob", wantStatus: []int{200}, check: noForeign},
					{method: "GET", path: "/api/v1/tokens?search=panel", wantStatus: []int{200}, check: noForeign}}
			},
			positive: ok("ada", "GET", "/api/v1/tokens", nil, 200),
		},
		"POST /api/v1/tokens": {positive: ok("ada", "POST", "/api/v1/tokens", map[string]any{"name": "new"}, 201)},
		"GET /api/v1/tokens/{id}": {
			foreign: func(w *world) []probe {
				return []probe{{method: "GET", path: idPath("/api/v1/tokens", w.ids["token:bob"])}}
			},
			positive: func(w *world) (string, probe, int) {
				return "ada", probe{method: "GET", path: idPath("/api/v1/tokens", w.ids["token:ada"])}, 200
			},
		},
		"PATCH /api/v1/tokens/{id}": {
			foreign: func(w *world) []probe {
				return []probe{{method: "PATCH", path: idPath("/api/v1/tokens", w.ids["token:bob"]), body: map[string]any{"active": false}}}
			},
			positive: func(w *world) (string, probe, int) {
				return "ada", probe{method: "PATCH", path: idPath("/api/v1/tokens", w.ids["token:ada"]), body: map[string]any{"name": "panel2"}}, 200
			},
		},
		"DELETE /api/v1/tokens/{id}": {
			foreign: func(w *world) []probe {
				return []probe{{method: "DELETE", path: idPath("/api/v1/tokens", w.ids["token:bob"])}}
			},
			positive: func(w *world) (string, probe, int) {
				return "ada", probe{method: "DELETE", path: idPath("/api/v1/tokens", w.ids["token:ada"])}, 204
			},
		},

		"GET /api/v1/domains": {
			foreign:  func(*world) []probe { return listProbes("/api/v1/domains") },
			positive: ok("ada", "GET", "/api/v1/domains", nil, 200),
		},
		"POST /api/v1/domains": {
			foreign: func(*world) []probe {
				return []probe{{method: "POST", path: "/api/v1/domains", body: map[string]any{"name": "new.test"}},
					{method: "POST", path: "/api/v1/domains", body: map[string]any{"name": "b.test"}}}
			},
			positive: ok("root", "POST", "/api/v1/domains", map[string]any{"name": "new.test"}, 201),
		},
		"GET /api/v1/domains/{domain}": {
			foreign: func(*world) []probe {
				return each(foreignDomains(), func(d string) probe { return probe{method: "GET", path: "/api/v1/domains/" + esc(d)} })
			},
			positive: ok("ada", "GET", "/api/v1/domains/a.test", nil, 200),
		},
		"PATCH /api/v1/domains/{domain}": {
			foreign: func(*world) []probe {
				ps := each(foreignDomains(), func(d string) probe {
					return probe{method: "PATCH", path: "/api/v1/domains/" + esc(d), body: map[string]any{"max_mailboxes": 5}}
				})
				// Not even its own domain's limits.
				return append(ps, probe{method: "PATCH", path: "/api/v1/domains/a.test", body: map[string]any{"max_mailboxes": 1000}},
					probe{method: "PATCH", path: "/api/v1/domains/a.test", body: map[string]any{"transport": "smtp:[evil.example]"}})
			},
			positive: ok("root", "PATCH", "/api/v1/domains/b.test", map[string]any{"description": "B"}, 200),
		},
		"DELETE /api/v1/domains/{domain}": {
			foreign: func(*world) []probe {
				ps := each(foreignDomains(), func(d string) probe { return probe{method: "DELETE", path: "/api/v1/domains/" + esc(d)} })
				return append(ps, probe{method: "DELETE", path: "/api/v1/domains/a.test"})
			},
			positive: ok("root", "DELETE", "/api/v1/domains/new.test", nil, 204),
		},

		"GET /api/v1/alias-domains": {
			foreign:  func(*world) []probe { return listProbes("/api/v1/alias-domains", "search=alias-b", "search=alias-c") },
			positive: ok("ada", "GET", "/api/v1/alias-domains", nil, 200),
		},
		"POST /api/v1/alias-domains": {
			foreign: func(*world) []probe {
				return []probe{
					{method: "POST", path: "/api/v1/alias-domains", body: map[string]any{"alias_domain": "new-alias.test", "target_domain": "a.test"}},
					{method: "POST", path: "/api/v1/alias-domains", body: map[string]any{"alias_domain": "new-alias.test", "target_domain": "b.test"}},
					{method: "POST", path: "/api/v1/alias-domains", body: map[string]any{"alias_domain": "b.test", "target_domain": "a.test"}},
				}
			},
			positive: ok("root", "POST", "/api/v1/alias-domains", map[string]any{"alias_domain": "alias-new.test", "target_domain": "a.test"}, 201),
		},
		"GET /api/v1/alias-domains/{name}": {
			foreign: func(*world) []probe {
				return each([]string{"alias-b.test", "ALIAS-B.TEST.", "alias-c.test", "Alias-C.Test"}, func(d string) probe {
					return probe{method: "GET", path: "/api/v1/alias-domains/" + esc(d)}
				})
			},
			positive: ok("ada", "GET", "/api/v1/alias-domains/alias-a.test", nil, 200),
		},
		"PATCH /api/v1/alias-domains/{name}": {
			foreign: func(*world) []probe {
				ps := each([]string{"alias-b.test", "ALIAS-B.TEST.", "alias-c.test"}, func(d string) probe {
					return probe{method: "PATCH", path: "/api/v1/alias-domains/" + esc(d), body: map[string]any{"active": false}}
				})
				// Pointing its own alias domain at a foreign domain.
				return append(ps, each(foreignDomains(), func(d string) probe {
					return probe{method: "PATCH", path: "/api/v1/alias-domains/alias-a.test", body: map[string]any{"target_domain": d}}
				})...)
			},
			positive: ok("ada", "PATCH", "/api/v1/alias-domains/alias-a.test", map[string]any{"active": false}, 200),
		},
		"DELETE /api/v1/alias-domains/{name}": {
			foreign: func(*world) []probe {
				return each([]string{"alias-b.test", "ALIAS-B.TEST.", "alias-c.test"}, func(d string) probe {
					return probe{method: "DELETE", path: "/api/v1/alias-domains/" + esc(d)}
				})
			},
			positive: ok("ada", "DELETE", "/api/v1/alias-domains/alias-new.test", nil, 204),
		},

		"GET /api/v1/mailboxes": {
			foreign:  func(*world) []probe { return listProbes("/api/v1/mailboxes") },
			positive: ok("ada", "GET", "/api/v1/mailboxes", nil, 200),
		},
		"POST /api/v1/mailboxes": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("n"), func(a string) probe {
					return probe{method: "POST", path: "/api/v1/mailboxes", body: map[string]any{"address": a, "password": strongPW}}
				})
			},
			positive: ok("ada", "POST", "/api/v1/mailboxes", map[string]any{"address": "n@a.test", "password": strongPW}, 201),
		},
		"GET /api/v1/mailboxes/{address}": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe { return probe{method: "GET", path: "/api/v1/mailboxes/" + esc(a)} })
			},
			positive: ok("ada", "GET", "/api/v1/mailboxes/U@A.Test.", nil, 200),
		},
		"PATCH /api/v1/mailboxes/{address}": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe {
					return probe{method: "PATCH", path: "/api/v1/mailboxes/" + esc(a), body: map[string]any{"quota_bytes": 1 << 20, "password": strongPW}}
				})
			},
			positive: ok("ada", "PATCH", "/api/v1/mailboxes/u@a.test", map[string]any{"name": "U"}, 200),
		},
		"DELETE /api/v1/mailboxes/{address}": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe { return probe{method: "DELETE", path: "/api/v1/mailboxes/" + esc(a)} })
			},
			positive: ok("ada", "DELETE", "/api/v1/mailboxes/n@a.test", nil, 204),
		},
		"GET /api/v1/mailboxes/{address}/vacation": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe {
					return probe{method: "GET", path: "/api/v1/mailboxes/" + esc(a) + "/vacation"}
				})
			},
			positive: ok("ada", "GET", "/api/v1/mailboxes/u@a.test/vacation", nil, 200),
		},
		"PUT /api/v1/mailboxes/{address}/vacation": {
			foreign: func(*world) []probe {
				return each(append(foreignAddresses("u"), foreignAddresses("v")...), func(a string) probe {
					return probe{method: "PUT", path: "/api/v1/mailboxes/" + esc(a) + "/vacation", body: map[string]any{"subject": "pwned"}}
				})
			},
			positive: ok("ada", "PUT", "/api/v1/mailboxes/v@a.test/vacation", map[string]any{"subject": "hi"}, 201),
		},
		"DELETE /api/v1/mailboxes/{address}/vacation": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe {
					return probe{method: "DELETE", path: "/api/v1/mailboxes/" + esc(a) + "/vacation"}
				})
			},
			positive: ok("ada", "DELETE", "/api/v1/mailboxes/w@a.test/vacation", nil, 204),
		},
		"GET /api/v1/vacations": {
			foreign:  func(*world) []probe { return listProbes("/api/v1/vacations") },
			positive: ok("ada", "GET", "/api/v1/vacations", nil, 200),
		},

		"GET /api/v1/aliases": {
			foreign:  func(*world) []probe { return listProbes("/api/v1/aliases") },
			positive: ok("ada", "GET", "/api/v1/aliases", nil, 200),
		},
		"POST /api/v1/aliases": {
			foreign: func(*world) []probe {
				return each(allAliasAddr("n"), func(a string) probe {
					return probe{method: "POST", path: "/api/v1/aliases", body: map[string]any{"address": a, "destinations": []string{"x@example.net"}}}
				})
			},
			positive: ok("ada", "POST", "/api/v1/aliases", map[string]any{"address": "n2@a.test", "destinations": []string{"x@example.net"}}, 201),
		},
		"GET /api/v1/aliases/{address}": {
			foreign: func(*world) []probe {
				return each(allAliasAddr("al"), func(a string) probe { return probe{method: "GET", path: "/api/v1/aliases/" + esc(a)} })
			},
			positive: ok("ada", "GET", "/api/v1/aliases/AL@a.test", nil, 200),
		},
		"PATCH /api/v1/aliases/{address}": {
			foreign: func(*world) []probe {
				return each(allAliasAddr("al"), func(a string) probe {
					return probe{method: "PATCH", path: "/api/v1/aliases/" + esc(a), body: map[string]any{"destinations": []string{"ada@example.net"}}}
				})
			},
			positive: ok("ada", "PATCH", "/api/v1/aliases/al@a.test", map[string]any{"add_destinations": []string{"y@example.net"}}, 200),
		},
		"DELETE /api/v1/aliases/{address}": {
			foreign: func(*world) []probe {
				ps := each(allAliasAddr("al"), func(a string) probe { return probe{method: "DELETE", path: "/api/v1/aliases/" + esc(a)} })
				return append(ps, each(foreignAddresses("postmaster"), func(a string) probe {
					return probe{method: "DELETE", path: "/api/v1/aliases/" + esc(a)}
				})...)
			},
			positive: ok("ada", "DELETE", "/api/v1/aliases/al2@a.test", nil, 204),
		},

		"GET /api/v1/sender-grants": {
			foreign: func(*world) []probe {
				var extra []string
				for _, a := range foreignAddresses("u") {
					extra = append(extra, "mailbox="+esc(a))
				}
				return listProbes("/api/v1/sender-grants", extra...)
			},
			positive: ok("ada", "GET", "/api/v1/sender-grants", nil, 200),
		},
		"POST /api/v1/sender-grants": {
			foreign: func(*world) []probe {
				ps := each(foreignAddresses("u"), func(a string) probe {
					return probe{method: "POST", path: "/api/v1/sender-grants", body: map[string]any{"mailbox": a, "sender": "s3@a.test"}}
				})
				// Letting its own mailbox send as another tenant's address.
				senders := append(foreignAddresses("ceo"), "@b.test", "@BÜCHER.test", "x@alias-b.test", "@alias-c.test")
				return append(ps, each(senders, func(s string) probe {
					return probe{method: "POST", path: "/api/v1/sender-grants", body: map[string]any{"mailbox": "u@a.test", "sender": s}}
				})...)
			},
			positive: ok("ada", "POST", "/api/v1/sender-grants", map[string]any{"mailbox": "u@a.test", "sender": "s3@alias-a.test"}, 201),
		},
		"GET /api/v1/sender-grants/{id}": {
			foreign: func(w *world) []probe {
				return each(foreignIDs(w, "grant"), func(id int64) probe { return probe{method: "GET", path: idPath("/api/v1/sender-grants", id)} })
			},
			positive: func(w *world) (string, probe, int) {
				return "ada", probe{method: "GET", path: idPath("/api/v1/sender-grants", w.ids["grant:a.test"])}, 200
			},
		},
		"PATCH /api/v1/sender-grants/{id}": {
			foreign: func(w *world) []probe {
				ps := each(foreignIDs(w, "grant"), func(id int64) probe {
					return probe{method: "PATCH", path: idPath("/api/v1/sender-grants", id), body: map[string]any{"active": false}}
				})
				return append(ps, each(foreignAddresses("ceo"), func(s string) probe {
					return probe{method: "PATCH", path: idPath("/api/v1/sender-grants", w.ids["grant:a.test"]), body: map[string]any{"sender": s}}
				})...)
			},
			positive: func(w *world) (string, probe, int) {
				return "ada", probe{method: "PATCH", path: idPath("/api/v1/sender-grants", w.ids["grant:a.test"]), body: map[string]any{"active": false}}, 200
			},
		},
		"DELETE /api/v1/sender-grants/{id}": {
			foreign: func(w *world) []probe {
				return each(foreignIDs(w, "grant"), func(id int64) probe { return probe{method: "DELETE", path: idPath("/api/v1/sender-grants", id)} })
			},
			positive: func(w *world) (string, probe, int) {
				return "ada", probe{method: "DELETE", path: idPath("/api/v1/sender-grants", w.ids["grant2:a.test"])}, 204
			},
		},

		"GET /api/v1/app-passwords": {
			foreign: func(*world) []probe {
				var extra []string
				for _, a := range foreignAddresses("u") {
					extra = append(extra, "mailbox="+esc(a))
				}
				return listProbes("/api/v1/app-passwords", extra...)
			},
			positive: ok("ada", "GET", "/api/v1/app-passwords", nil, 200),
		},
		"POST /api/v1/app-passwords": {
			foreign: func(*world) []probe {
				return each(foreignAddresses("u"), func(a string) probe {
					return probe{method: "POST", path: "/api/v1/app-passwords", body: map[string]any{"mailbox": a, "name": "x"}}
				})
			},
			positive: ok("ada", "POST", "/api/v1/app-passwords", map[string]any{"mailbox": "u@a.test", "name": "tablet"}, 201),
		},
		"GET /api/v1/app-passwords/{id}": {
			foreign: func(w *world) []probe {
				return each(foreignIDs(w, "app"), func(id int64) probe { return probe{method: "GET", path: idPath("/api/v1/app-passwords", id)} })
			},
			positive: func(w *world) (string, probe, int) {
				return "ada", probe{method: "GET", path: idPath("/api/v1/app-passwords", w.ids["app:a.test"])}, 200
			},
		},
		"PATCH /api/v1/app-passwords/{id}": {
			foreign: func(w *world) []probe {
				return each(foreignIDs(w, "app"), func(id int64) probe {
					return probe{method: "PATCH", path: idPath("/api/v1/app-passwords", id), body: map[string]any{"active": false}}
				})
			},
			positive: func(w *world) (string, probe, int) {
				return "ada", probe{method: "PATCH", path: idPath("/api/v1/app-passwords", w.ids["app:a.test"]), body: map[string]any{"name": "phone2"}}, 200
			},
		},
		"DELETE /api/v1/app-passwords/{id}": {
			foreign: func(w *world) []probe {
				return each(foreignIDs(w, "app"), func(id int64) probe { return probe{method: "DELETE", path: idPath("/api/v1/app-passwords", id)} })
			},
			positive: func(w *world) (string, probe, int) {
				return "ada", probe{method: "DELETE", path: idPath("/api/v1/app-passwords", w.ids["app2:a.test"])}, 204
			},
		},

		"GET /api/v1/admins": {
			foreign:  func(*world) []probe { return []probe{{method: "GET", path: "/api/v1/admins"}} },
			positive: ok("root", "GET", "/api/v1/admins", nil, 200),
		},
		"POST /api/v1/admins": {
			foreign: func(*world) []probe {
				return []probe{
					{method: "POST", path: "/api/v1/admins", body: map[string]any{"username": "eve", "password": strongPW, "superadmin": true}},
					{method: "POST", path: "/api/v1/admins", body: map[string]any{"username": "eve", "password": strongPW, "domains": []string{"b.test"}}},
					{method: "POST", path: "/api/v1/admins", body: map[string]any{"username": "eve", "password": strongPW, "domains": []string{"a.test"}}},
				}
			},
			positive: ok("root", "POST", "/api/v1/admins", map[string]any{"username": "carol", "password": strongPW, "domains": []string{"a.test"}}, 201),
		},
		"GET /api/v1/admins/{username}": {
			foreign: func(*world) []probe {
				return []probe{{method: "GET", path: "/api/v1/admins/bob"}, {method: "GET", path: "/api/v1/admins/ada"}}
			},
			positive: ok("root", "GET", "/api/v1/admins/bob", nil, 200),
		},
		"PATCH /api/v1/admins/{username}": {
			foreign: func(*world) []probe {
				return []probe{{method: "PATCH", path: "/api/v1/admins/ada", body: map[string]any{"superadmin": true}},
					{method: "PATCH", path: "/api/v1/admins/bob", body: map[string]any{"password": strongPW}}}
			},
			positive: ok("root", "PATCH", "/api/v1/admins/carol", map[string]any{"active": false}, 200),
		},
		"DELETE /api/v1/admins/{username}": {
			foreign:  func(*world) []probe { return []probe{{method: "DELETE", path: "/api/v1/admins/bob"}} },
			positive: ok("root", "DELETE", "/api/v1/admins/carol", nil, 204),
		},
		"GET /api/v1/domain-admins": {
			foreign:  func(*world) []probe { return []probe{{method: "GET", path: "/api/v1/domain-admins"}} },
			positive: ok("root", "GET", "/api/v1/domain-admins", nil, 200),
		},
		"POST /api/v1/domain-admins": {
			foreign: func(*world) []probe {
				return each(foreignDomains(), func(d string) probe {
					return probe{method: "POST", path: "/api/v1/domain-admins", body: map[string]any{"username": "ada", "domain": d}}
				})
			},
			positive: ok("root", "POST", "/api/v1/domain-admins", map[string]any{"username": "bob", "domain": "a.test"}, 201),
		},
		"PATCH /api/v1/domain-admins/{username}/{domain}": {
			foreign: func(*world) []probe {
				return []probe{{method: "PATCH", path: "/api/v1/domain-admins/bob/b.test", body: map[string]any{"active": false}},
					{method: "PATCH", path: "/api/v1/domain-admins/ada/a.test", body: map[string]any{"active": true}}}
			},
			positive: ok("root", "PATCH", "/api/v1/domain-admins/bob/a.test", map[string]any{"active": false}, 200),
		},
		"DELETE /api/v1/domain-admins/{username}/{domain}": {
			foreign:  func(*world) []probe { return []probe{{method: "DELETE", path: "/api/v1/domain-admins/bob/b.test"}} },
			positive: ok("root", "DELETE", "/api/v1/domain-admins/bob/a.test", nil, 204),
		},

		"GET /api/v1/transports": {
			foreign:  func(*world) []probe { return []probe{{method: "GET", path: "/api/v1/transports"}} },
			positive: ok("root", "GET", "/api/v1/transports", nil, 200),
		},
		"POST /api/v1/transports": {
			foreign: func(*world) []probe {
				return []probe{{method: "POST", path: "/api/v1/transports", body: map[string]any{"key": "a.test", "nexthop": "smtp:[evil.example]"}}}
			},
			positive: ok("root", "POST", "/api/v1/transports", map[string]any{"key": "a.test", "nexthop": "lmtp:unix:/run/dovecot/lmtp"}, 201),
		},
		"GET /api/v1/transports/{key}": {
			foreign:  func(*world) []probe { return []probe{{method: "GET", path: "/api/v1/transports/b.test"}} },
			positive: ok("root", "GET", "/api/v1/transports/B.TEST.", nil, 200),
		},
		"PATCH /api/v1/transports/{key}": {
			foreign: func(*world) []probe {
				return []probe{{method: "PATCH", path: "/api/v1/transports/b.test", body: map[string]any{"nexthop": "discard"}}}
			},
			positive: ok("root", "PATCH", "/api/v1/transports/b.test", map[string]any{"description": "relay"}, 200),
		},
		"DELETE /api/v1/transports/{key}": {
			foreign:  func(*world) []probe { return []probe{{method: "DELETE", path: "/api/v1/transports/u@b.test"}} },
			positive: ok("root", "DELETE", "/api/v1/transports/u@b.test", nil, 204),
		},

		"GET /api/v1/audit": {
			foreign: func(*world) []probe {
				return listProbes("/api/v1/audit", "table=domain&search=b.test", "table=admin", "table=api_token", "actor=admin%3Abob")
			},
			positive: ok("ada", "GET", "/api/v1/audit", nil, 200),
		},

		"GET /api/v1/csv/mailboxes": {
			foreign:  func(*world) []probe { return csvExportProbes("/api/v1/csv/mailboxes") },
			positive: ok("ada", "GET", "/api/v1/csv/mailboxes", nil, 200),
		},
		"POST /api/v1/csv/mailboxes": {
			foreign: func(*world) []probe {
				csv := "address,password\n"
				for _, a := range foreignAddresses("imp") {
					csv += a + "," + strongPW + "\n"
				}
				return []probe{{method: "POST", path: "/api/v1/csv/mailboxes", body: csv, wantStatus: []int{422}, check: importRowsNotFound},
					{method: "POST", path: "/api/v1/csv/mailboxes?dry_run=true", body: csv, wantStatus: []int{422}, check: importRowsNotFound}}
			},
			positive: ok("ada", "POST", "/api/v1/csv/mailboxes", "address,password\nimp@a.test,"+strongPW+"\n", 201),
		},
		"GET /api/v1/csv/aliases": {
			foreign:  func(*world) []probe { return csvExportProbes("/api/v1/csv/aliases") },
			positive: ok("ada", "GET", "/api/v1/csv/aliases", nil, 200),
		},
		"POST /api/v1/csv/aliases": {
			foreign: func(*world) []probe {
				csv := "address,destinations\n"
				for _, a := range allAliasAddr("imp") {
					csv += a + ",x@example.net\n"
				}
				return []probe{{method: "POST", path: "/api/v1/csv/aliases", body: csv, wantStatus: []int{422}, check: importRowsNotFound}}
			},
			positive: ok("ada", "POST", "/api/v1/csv/aliases", "address,destinations\nimp2@a.test,x@example.net\n", 201),
		},

		"GET /api/v1/self": {positive: ok("userA", "GET", "/api/v1/self", nil, 200)},
		"PUT /api/v1/self/password": {positive: ok("userA", "PUT", "/api/v1/self/password",
			map[string]string{"current_password": mailboxPW, "new_password": strongPW}, 204)},
		"GET /api/v1/self/vacation": {positive: ok("userA", "GET", "/api/v1/self/vacation", nil, 200)},
		"PUT /api/v1/self/vacation": {positive: ok("userA", "PUT", "/api/v1/self/vacation",
			map[string]any{"subject": "back soon", "body": "hi"}, 200)},
		"DELETE /api/v1/self/vacation":   {positive: ok("userA", "DELETE", "/api/v1/self/vacation", nil, 204)},
		"GET /api/v1/self/forwarding":    {positive: ok("userA", "GET", "/api/v1/self/forwarding", nil, 200)},
		"PUT /api/v1/self/forwarding":    {positive: ok("userA", "PUT", "/api/v1/self/forwarding", map[string]any{"destinations": []string{"me@example.org"}}, 200)},
		"DELETE /api/v1/self/forwarding": {positive: ok("userA", "DELETE", "/api/v1/self/forwarding", nil, 204)},
		"GET /api/v1/self/app-passwords": {positive: ok("userA", "GET", "/api/v1/self/app-passwords", nil, 200)},
		"POST /api/v1/self/app-passwords": {positive: ok("userA", "POST", "/api/v1/self/app-passwords",
			map[string]any{"name": "watch"}, 201)},
		"DELETE /api/v1/self/app-passwords/{id}": {
			foreign: func(w *world) []probe {
				// Another domain's, and another mailbox's of the same domain.
				ids := append(foreignIDs(w, "app"), w.ids["appv:a.test"])
				return each(ids, func(id int64) probe { return probe{method: "DELETE", path: idPath("/api/v1/self/app-passwords", id)} })
			},
			positive: func(w *world) (string, probe, int) {
				return "userA", probe{method: "DELETE", path: idPath("/api/v1/self/app-passwords", w.ids["app3:a.test"])}, 204
			},
		},
	}
}

// admits lists, per access rule, the matrix principals it lets in.
func admits(a access) []string {
	switch a {
	case public:
		return []string{"anon", "root", "ada", "adaTok", "userA"}
	case anyAdmin:
		return []string{"root", "ada", "adaTok"}
	case superOnly:
		return []string{"root"}
	case adminSession:
		return []string{"root", "ada"}
	case mailboxSession:
		return []string{"userA"}
	case anySession:
		return []string{"root", "ada", "userA"}
	case anyPrincipal:
		return []string{"root", "ada", "adaTok", "userA"}
	}
	return nil
}

func (w *world) clientFor(who string) *client {
	switch who {
	case "root":
		return w.root
	case "ada":
		return w.ada
	case "adaTok":
		return w.adaTok
	case "userA":
		return w.userA
	case "anon":
		return w.client()
	case "dave":
		return w.dave
	case "fresh":
		return w.login("ada", adaPW)
	case "userV":
		return w.userV
	}
	w.t.Fatalf("unknown principal %q", who)
	return nil
}

func send(c *client, p probe) *resp { return c.do(p.method, p.path, p.body) }

func TestAuthorisationMatrix(t *testing.T) {
	w := seed(t, nil)
	uiFixtures(w)
	m := matrix()
	for k, e := range uiMatrix() {
		if _, dup := m[k]; dup {
			t.Fatalf("matrix entry %s twice", k)
		}
		m[k] = e
	}
	routes := w.h.routes

	// Every route has an entry, and every entry a route.
	for _, rt := range routes {
		if _, ok := m[rt.key()]; !ok {
			t.Errorf("route %s has no authorisation matrix entry", rt.key())
		}
	}
	for k := range m {
		if !slices.ContainsFunc(routes, func(rt route) bool { return rt.key() == k }) {
			t.Errorf("matrix entry %s names no route", k)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The attacks: nothing may change, route by route.
	probes := 0
	for _, rt := range routes {
		e := m[rt.key()]
		t.Run("refused/"+rt.key(), func(t *testing.T) {
			w.t = t
			w.unchanged(rt.key(), func() {
				if e.foreign != nil {
					attackers := []string{"ada", "adaTok"}
					if rt.access == mailboxSession {
						attackers = []string{"userA"}
					}
					for _, who := range attackers {
						for _, p := range e.foreign(w) {
							probes++
							r := send(w.clientFor(who), p)
							wantSt := p.wantStatus
							if wantSt == nil || (who == "adaTok" && rt.access == adminSession) {
								wantSt = []int{403, 404}
							}
							if !slices.Contains(wantSt, r.status) {
								t.Errorf("%s %s %s as %s: got %s, want %v", p.method, p.path, bodyText(p.body), who, r, wantSt)
								continue
							}
							if p.check != nil && (r.status < 300 || r.status == 422) {
								p.check(t, withoutEcho(r, p))
							}
							if r.status == 404 || r.status == 403 {
								noForeign(t, withoutEcho(r, p))
							}
						}
					}
				}
				_, pos, _ := e.positive(w)
				for _, who := range []string{"anon", "root", "ada", "adaTok", "userA"} {
					if slices.Contains(admits(rt.access), who) {
						continue
					}
					probes++
					r := send(w.clientFor(who), pos)
					wantSt := 403
					if who == "anon" {
						wantSt = 401
						if rt.isUI() {
							// A page sends the anonymous visitor to log in.
							wantSt = 303
						}
					}
					if r.status != wantSt {
						t.Errorf("%s %s as %s (not admitted by %s): got %s, want %d", pos.method, pos.path, who, rt.access, r, wantSt)
					}
					if loc := r.header.Get("Location"); wantSt == 303 && !strings.HasPrefix(loc, "/login") && !strings.HasPrefix(loc, "/user/login") {
						t.Errorf("%s %s as anon: redirected to %q, want the login page", pos.method, pos.path, loc)
					}
				}
			})
		})
	}
	w.t = t
	t.Logf("%d refused probes over %d routes", probes, len(routes))

	// The positive controls, reads first and deletions last. Each status
	// is one that openapi.json documents for the route.
	doc := loadOpenAPI(t)
	order := map[string]int{"GET": 0, "POST": 1, "PUT": 2, "PATCH": 3, "DELETE": 4}
	sorted := slices.Clone(routes)
	slices.SortStableFunc(sorted, func(a, b route) int { return order[a.method] - order[b.method] })
	for _, rt := range sorted {
		who, p, st := m[rt.key()].positive(w)
		t.Run("allowed/"+rt.key(), func(t *testing.T) {
			w.t = t
			if !rt.isUI() && !doc.documentedStatus(rt.method, rt.pattern, strconv.Itoa(st)) {
				t.Errorf("openapi.json does not document status %d of %s", st, rt.key())
			}
			run := func() {
				r := send(w.clientFor(who), p)
				if r.status != st {
					t.Errorf("%s %s %s as %s: got %s, want %d", p.method, p.path, bodyText(p.body), who, r, st)
				}
			}
			if rt.method == "GET" {
				w.unchanged("GET "+p.path, run) // reading changes nothing
			} else {
				run()
			}
		})
	}
}

func bodyText(b any) string {
	if b == nil {
		return ""
	}
	return fmt.Sprintf("%v", b)
}
