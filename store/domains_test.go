package store_test

import (
	"context"
	"testing"

	"github.com/facteur/facteur/store"
)

func TestRawDomainInsertIsNormalised(t *testing.T) {
	_, db, _ := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('Example.COM.')`)
	var name string
	if err := db.Pool.QueryRow(context.Background(), `SELECT name FROM domain`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name != "example.com" {
		t.Fatalf("stored %q, want example.com", name)
	}
	// The same name in another spelling is the same key.
	crudExecFails(t, db, "23505", `INSERT INTO domain (name) VALUES ('EXAMPLE.com')`)
}

func TestDomainNamesMustBeALabels(t *testing.T) {
	st, db, ctx := crudSetup(t)
	for _, bad := range []string{
		"bücher.example",   // a U-label: Go converts to xn-- first
		"пример.испытание", // likewise
		"foo bar.test",
		"-lead.test",
		"trail-.test",
		"a..b",
		".",
		"",
		"under@score.test",
		"x.test/..",
	} {
		crudExecFails(t, db, "23514", `INSERT INTO domain (name) VALUES ($1)`, bad)
		_, err := st.CreateDomain(ctx, store.Domain{Name: bad, Active: true})
		crudWantErr(t, err, store.ErrInvalid)
	}
	for _, good := range []string{"xn--bcher-kva.example", "a.b-c.test", "localhost", "_dmarc-ok.test"} {
		crudExec(t, db, `INSERT INTO domain (name) VALUES ($1)`, good)
	}
}

func TestDomainCRUDRoundTrip(t *testing.T) {
	st, _, ctx := crudSetup(t)
	d := crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{
		Name: "Example.ORG", Description: "test", Active: true, MaxMailboxes: crudPtr[int32](10),
		DefaultQuotaBytes: crudPtr[int64](1000), Transport: crudPtr("lmtp:unix:/run/dovecot/lmtp"),
	}))
	if d.Name != "example.org" || d.Description != "test" || !d.Active || *d.MaxMailboxes != 10 ||
		d.MaxAliases != nil || *d.DefaultQuotaBytes != 1000 || d.CreatedAt.IsZero() {
		t.Fatalf("created %+v", d)
	}
	if _, err := st.CreateDomain(ctx, store.Domain{Name: "example.org"}); err == nil {
		t.Fatal("duplicate domain created")
	} else {
		crudWantErr(t, err, store.ErrConflict)
	}
	got := crudMust[store.Domain](t)(st.GetDomain(ctx, "example.org"))
	if got.Name != d.Name || *got.Transport != "lmtp:unix:/run/dovecot/lmtp" {
		t.Fatalf("got %+v", got)
	}
	u := crudMust[store.Domain](t)(st.UpdateDomain(ctx, "example.org", store.DomainPatch{
		Description:  crudPtr("changed"),
		MaxMailboxes: store.SetNull[int32](),
		MaxAliases:   store.SetValue[int32](5),
		Transport:    store.SetNull[string](),
		Active:       crudPtr(false),
	}))
	if u.Description != "changed" || u.MaxMailboxes != nil || *u.MaxAliases != 5 || u.Transport != nil ||
		u.Active || *u.DefaultQuotaBytes != 1000 || !u.UpdatedAt.After(d.UpdatedAt) {
		t.Fatalf("updated %+v", u)
	}
	// An empty patch changes nothing and returns the row.
	same := crudMust[store.Domain](t)(st.UpdateDomain(ctx, "example.org", store.DomainPatch{}))
	if same.UpdatedAt != u.UpdatedAt {
		t.Fatal("an empty patch touched the row")
	}
	_, err := st.UpdateDomain(ctx, "nope.test", store.DomainPatch{Description: crudPtr("x")})
	crudWantErr(t, err, store.ErrNotFound)
	_, err = st.UpdateDomain(ctx, "example.org", store.DomainPatch{MaxQuotaBytes: store.SetValue[int64](10)})
	crudWantErr(t, err, store.ErrInvalid) // default quota above max quota

	must := crudMust[store.Mailbox](t)
	must(st.CreateMailbox(ctx, store.Mailbox{Address: "a@example.org", Active: true}))
	must(st.CreateMailbox(ctx, store.Mailbox{Address: "b@example.org", QuotaBytes: crudPtr[int64](500), Active: true}))
	crudMust[store.Alias](t)(st.CreateAlias(ctx, store.Alias{Address: "c@example.org", Destinations: []string{"a@example.org"}, Active: true}))
	crudMust[store.AliasDomain](t)(st.CreateAliasDomain(ctx, store.AliasDomain{AliasDomain: "example.net", TargetDomain: "example.org", Active: true}))
	sum := crudMust[store.DomainSummary](t)(st.GetDomainSummary(ctx, "example.org"))
	want := store.DomainCounts{Mailboxes: 2, Aliases: 1, AliasDomains: 1, QuotaAllocatedBytes: 1500}
	if sum.DomainCounts != want {
		t.Fatalf("counts %+v, want %+v", sum.DomainCounts, want)
	}
	crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "empty.test", Active: true}))
	list := crudMust[[]store.DomainSummary](t)(st.ListDomains(ctx, store.ListOptions{}))
	if len(list) != 2 || list[0].Name != "empty.test" || list[0].Mailboxes != 0 || list[1].DomainCounts != want {
		t.Fatalf("list %+v", list)
	}
	list = crudMust[[]store.DomainSummary](t)(st.ListDomains(ctx, store.ListOptions{Search: "EXAMPLE"}))
	if len(list) != 1 || list[0].Name != "example.org" {
		t.Fatalf("search list %+v", list)
	}

	if err := st.DeleteDomain(ctx, "example.org"); err != nil {
		t.Fatal(err)
	}
	crudWantErr(t, st.DeleteDomain(ctx, "example.org"), store.ErrNotFound)
	_, err = st.GetDomain(ctx, "example.org")
	crudWantErr(t, err, store.ErrNotFound)
}

func TestDeletingADomainCascades(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO setting (key, value) VALUES ('default_alias_target', 'hostmaster@other.test')`)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('example.com'), ('other.test')`)
	crudExec(t, db, `INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('example.net', 'example.com')`)
	crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('john@example.com'), ('keep@other.test')`)
	crudExec(t, db, `INSERT INTO alias (address, destinations) VALUES ('info@example.com', '{john@example.com}')`)
	crudExec(t, db, `INSERT INTO sender_grant (mailbox, sender) VALUES ('john@example.com', '@example.net')`)
	crudExec(t, db, `INSERT INTO app_password (mailbox, name, password) VALUES ('john@example.com', 'phone', '{PLAIN}x')`)
	crudExec(t, db, `INSERT INTO quota_usage (username, bytes) VALUES ('john@example.com', 10)`)
	crudExec(t, db, `INSERT INTO vacation (mailbox) VALUES ('john@example.com')`)
	crudExec(t, db, `INSERT INTO vacation_notified (mailbox, sender) VALUES ('john@example.com', 'x@y.test')`)
	crudExec(t, db, `INSERT INTO admin (username, password) VALUES ('boss', 'x')`)
	crudExec(t, db, `INSERT INTO domain_admin (username, domain) VALUES ('boss', 'example.com'), ('boss', 'other.test')`)

	if err := st.DeleteDomain(ctx, "example.com"); err != nil {
		t.Fatal(err)
	}
	for table, where := range map[string]string{
		"alias_domain":      "target_domain = 'example.com'",
		"mailbox":           "domain = 'example.com'",
		"alias":             "domain = 'example.com'",
		"sender_grant":      "mailbox = 'john@example.com'",
		"app_password":      "mailbox = 'john@example.com'",
		"quota_usage":       "username = 'john@example.com'",
		"vacation":          "mailbox = 'john@example.com'",
		"vacation_notified": "mailbox = 'john@example.com'",
		"domain_admin":      "domain = 'example.com'",
	} {
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE `+where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: %d rows left after the domain was deleted", table, n)
		}
	}
	// Other domains keep theirs.
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM mailbox) + (SELECT count(*) FROM domain_admin) + (SELECT count(*) FROM alias)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 { // keep@other.test, boss of other.test, postmaster@ and abuse@other.test
		t.Errorf("%d rows of other.test left, want 4", n)
	}
	// A mailbox in an unknown domain is refused by the foreign key.
	crudExecFails(t, db, "23503", `INSERT INTO mailbox (address) VALUES ('x@example.com')`)
	_, err := st.CreateMailbox(ctx, store.Mailbox{Address: "x@example.com", Active: true})
	crudWantErr(t, err, store.ErrNotFound)
}

func TestDefaultAliasesFollowTheSetting(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "before.test", Active: true}))
	if as := crudMust[[]store.Alias](t)(st.ListAliases(ctx, store.ListOptions{})); len(as) != 0 {
		t.Fatalf("aliases created without the setting: %+v", as)
	}
	crudMust[store.Setting](t)(st.PutSetting(ctx, store.SettingDefaultAliasTarget, "hostmaster@admin.test"))
	crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "example.com", Active: true}))
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('Raw.Example')`)
	for _, d := range []string{"example.com", "raw.example"} {
		as := crudMust[[]store.Alias](t)(st.ListAliases(ctx, store.ListOptions{Domain: d}))
		if len(as) != 2 || as[0].Address != "abuse@"+d || as[1].Address != "postmaster@"+d {
			t.Fatalf("%s: aliases %+v, want abuse@ and postmaster@", d, as)
		}
		for _, a := range as {
			if len(a.Destinations) != 1 || a.Destinations[0] != "hostmaster@admin.test" || !a.Active {
				t.Errorf("%s: destinations %v", a.Address, a.Destinations)
			}
		}
	}
	// The default aliases are audited with the actor of the domain's creation.
	for _, a := range crudAudit(t, db, "alias") {
		if a.Key == "postmaster@example.com" && a.Actor != "test:crud" {
			t.Errorf("default alias audited as %q", a.Actor)
		}
	}
}

func TestAliasDomainRules(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('example.com'), ('example.org')`)

	crudExec(t, db, `INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('Example.NET', 'EXAMPLE.com')`)
	ad := crudMust[store.AliasDomain](t)(st.GetAliasDomain(ctx, "example.net"))
	if ad.TargetDomain != "example.com" || !ad.Active {
		t.Fatalf("raw alias domain stored as %+v", ad)
	}
	// Not at itself.
	crudExecFails(t, db, "FV001", `INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('example.com', 'Example.com')`)
	_, err := st.CreateAliasDomain(ctx, store.AliasDomain{AliasDomain: "example.org", TargetDomain: "example.org", Active: true})
	crudWantErr(t, err, store.ErrInvalid)
	// Not at another alias domain (the target must be a domain, and an alias
	// domain can never be one).
	crudExecFails(t, db, "23503", `INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('example.info', 'example.net')`)
	_, err = st.CreateAliasDomain(ctx, store.AliasDomain{AliasDomain: "example.info", TargetDomain: "example.net", Active: true})
	crudWantErr(t, err, store.ErrNotFound)
	// An alias domain cannot take a domain's name, nor a domain an alias domain's.
	crudExecFails(t, db, "FV001", `INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('example.org', 'example.com')`)
	crudExecFails(t, db, "FV001", `INSERT INTO domain (name) VALUES ('EXAMPLE.NET')`)
	_, err = st.CreateDomain(ctx, store.Domain{Name: "example.net", Active: true})
	crudWantErr(t, err, store.ErrInvalid)
	// U-labels are refused here too.
	crudExecFails(t, db, "23514", `INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('bücher.example', 'example.com')`)
	// Pointing an existing alias domain at itself by update is refused.
	_, err = st.UpdateAliasDomain(ctx, "example.net", store.AliasDomainPatch{TargetDomain: crudPtr("example.net")})
	crudWantErr(t, err, store.ErrInvalid)

	// Round trip through the store.
	a := crudMust[store.AliasDomain](t)(st.CreateAliasDomain(ctx, store.AliasDomain{AliasDomain: "Example.Biz", TargetDomain: "example.org", Active: true}))
	if a.AliasDomain != "example.biz" || a.TargetDomain != "example.org" {
		t.Fatalf("created %+v", a)
	}
	u := crudMust[store.AliasDomain](t)(st.UpdateAliasDomain(ctx, "example.biz", store.AliasDomainPatch{
		TargetDomain: crudPtr("example.com"), Active: crudPtr(false)}))
	if u.TargetDomain != "example.com" || u.Active {
		t.Fatalf("updated %+v", u)
	}
	list := crudMust[[]store.AliasDomain](t)(st.ListAliasDomains(ctx, store.ListOptions{Domain: "example.com"}))
	if len(list) != 2 || list[0].AliasDomain != "example.biz" || list[1].AliasDomain != "example.net" {
		t.Fatalf("list %+v", list)
	}
	list = crudMust[[]store.AliasDomain](t)(st.ListAliasDomains(ctx, store.ListOptions{Scope: []string{"example.org"}}))
	if len(list) != 0 {
		t.Fatalf("scoped list %+v", list)
	}
	if err := st.DeleteAliasDomain(ctx, "example.biz"); err != nil {
		t.Fatal(err)
	}
	crudWantErr(t, st.DeleteAliasDomain(ctx, "example.biz"), store.ErrNotFound)
}
