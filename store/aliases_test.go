package store_test

import (
	"strings"
	"testing"

	"github.com/facteur/facteur/store"
)

func TestRawAliasInsertIsNormalised(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('example.com')`)
	crudExec(t, db, `INSERT INTO alias (address, destinations) VALUES ('Sales@Example.COM', '{Bob@Example.ORG, " bob@example.org ", Carol@EXAMPLE.net.}')`)
	a := crudMust[store.Alias](t)(st.GetAlias(ctx, "sales@example.com"))
	if a.LocalPart != "sales" || a.Domain != "example.com" ||
		strings.Join(a.Destinations, ",") != "bob@example.org,carol@example.net" {
		t.Fatalf("stored %+v", a)
	}
	// A catch-all.
	crudExec(t, db, `INSERT INTO alias (address, destinations) VALUES ('@EXAMPLE.com', '{catch@example.org}')`)
	c := crudMust[store.Alias](t)(st.GetAlias(ctx, "@example.com"))
	if c.LocalPart != "" || c.Domain != "example.com" {
		t.Fatalf("catch-all stored %+v", c)
	}
	// No destination, a destination with a bad domain, no domain.
	crudExecFails(t, db, "FV001", `INSERT INTO alias (address, destinations) VALUES ('x@example.com', '{"  "}')`)
	crudExecFails(t, db, "FV001", `INSERT INTO alias (address, destinations) VALUES ('x@example.com', '{x@bücher.example}')`)
	crudExecFails(t, db, "FV001", `INSERT INTO alias (address, destinations) VALUES ('x', '{x@example.org}')`)
	_, err := st.CreateAlias(ctx, store.Alias{Address: "x@example.com", Active: true})
	crudWantErr(t, err, store.ErrInvalid)
}

func TestAliasCannotShadowAMailboxUnlessItKeepsACopy(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('example.com')`)
	crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('john@example.com')`)

	crudExecFails(t, db, "FV001", `INSERT INTO alias (address, destinations) VALUES ('John@example.com', '{jane@example.org}')`)
	_, err := st.CreateAlias(ctx, store.Alias{Address: "john@example.com", Destinations: []string{"jane@example.org"}, Active: true})
	crudWantErr(t, err, store.ErrInvalid)
	// Forward and keep a copy: the alias lists the address itself.
	a := crudMust[store.Alias](t)(st.CreateAlias(ctx, store.Alias{
		Address: "john@example.com", Destinations: []string{"JOHN@example.com", "jane@example.org"}, Active: true}))
	if strings.Join(a.Destinations, ",") != "john@example.com,jane@example.org" {
		t.Fatalf("destinations %v", a.Destinations)
	}
	// Dropping the copy later is refused too, in either form of update.
	_, err = st.UpdateAlias(ctx, "john@example.com", store.AliasPatch{RemoveDestinations: []string{"john@example.com"}})
	crudWantErr(t, err, store.ErrInvalid)
	_, err = st.UpdateAlias(ctx, "john@example.com", store.AliasPatch{Destinations: &[]string{"jane@example.org"}})
	crudWantErr(t, err, store.ErrInvalid)
	crudExecFails(t, db, "FV001", `UPDATE alias SET destinations = '{jane@example.org}' WHERE address = 'john@example.com'`)

	// The other way round: a mailbox cannot appear under an alias that does not keep a copy.
	crudExec(t, db, `INSERT INTO alias (address, destinations) VALUES ('sales@example.com', '{jane@example.org}')`)
	crudExecFails(t, db, "FV001", `INSERT INTO mailbox (address) VALUES ('Sales@example.com')`)
	_, err = st.CreateMailbox(ctx, store.Mailbox{Address: "sales@example.com", Active: true})
	crudWantErr(t, err, store.ErrInvalid)
	crudExec(t, db, `INSERT INTO alias (address, destinations) VALUES ('team@example.com', '{team@example.com, jane@example.org}')`)
	crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('team@example.com')`)
	// A catch-all never shadows.
	crudExec(t, db, `INSERT INTO alias (address, destinations) VALUES ('@example.com', '{jane@example.org}')`)
}

func TestCommandAndFileDestinationsOnlyOnLocalDomains(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('example.com')`)
	crudExec(t, db, `INSERT INTO domain (name, local) VALUES ('host.example', true)`)
	for _, dst := range []string{"|/usr/bin/procmail", "/var/mail/archive", ":include:/etc/mail/staff", ":INCLUDE:/etc/x", "root"} {
		crudExecFails(t, db, "FV001", `INSERT INTO alias (address, destinations) VALUES ('x@example.com', ARRAY[$1])`, dst)
		_, err := st.CreateAlias(ctx, store.Alias{Address: "x@example.com", Destinations: []string{dst}, Active: true})
		crudWantErr(t, err, store.ErrInvalid)
		// Hidden among addresses, too.
		_, err = st.CreateAlias(ctx, store.Alias{Address: "x@example.com", Destinations: []string{"ok@example.org", dst}, Active: true})
		crudWantErr(t, err, store.ErrInvalid)
		// Accepted on a local domain, kept as written (a bare user lower-cased).
		crudExec(t, db, `INSERT INTO alias (address, destinations) VALUES ('x@host.example', ARRAY[$1])`, dst)
		a := crudMust[store.Alias](t)(st.GetAlias(ctx, "x@host.example"))
		if len(a.Destinations) != 1 || a.Destinations[0] != dst {
			t.Errorf("local alias destination %v, want [%s]", a.Destinations, dst)
		}
		if err := st.DeleteAlias(ctx, "x@host.example"); err != nil {
			t.Fatal(err)
		}
	}
	// Adding one by update to an alias of a non-local domain is refused.
	crudMust[store.Alias](t)(st.CreateAlias(ctx, store.Alias{Address: "y@example.com", Destinations: []string{"ok@example.org"}, Active: true}))
	_, err := st.UpdateAlias(ctx, "y@example.com", store.AliasPatch{AddDestinations: []string{"|/bin/sh"}})
	crudWantErr(t, err, store.ErrInvalid)
}

func TestAliasCRUDRoundTrip(t *testing.T) {
	st, _, ctx := crudSetup(t)
	crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "example.com", Active: true}))
	crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "other.test", Active: true}))
	a := crudMust[store.Alias](t)(st.CreateAlias(ctx, store.Alias{
		Address: "Info@Example.com", Destinations: []string{"a@x.test", "b@x.test"}, Description: "front desk", Active: true}))
	if a.Address != "info@example.com" || a.Description != "front desk" || !a.Active {
		t.Fatalf("created %+v", a)
	}
	_, err := st.CreateAlias(ctx, store.Alias{Address: "info@example.com", Destinations: []string{"a@x.test"}, Active: true})
	crudWantErr(t, err, store.ErrConflict)
	_, err = st.CreateAlias(ctx, store.Alias{Address: "info@nowhere.test", Destinations: []string{"a@x.test"}, Active: true})
	crudWantErr(t, err, store.ErrNotFound)

	u := crudMust[store.Alias](t)(st.UpdateAlias(ctx, "info@example.com", store.AliasPatch{
		AddDestinations: []string{"c@x.test", "a@x.test"}, RemoveDestinations: []string{"b@x.test"}}))
	if strings.Join(u.Destinations, ",") != "a@x.test,c@x.test" {
		t.Fatalf("edited destinations %v", u.Destinations)
	}
	u = crudMust[store.Alias](t)(st.UpdateAlias(ctx, "info@example.com", store.AliasPatch{
		Destinations: &[]string{"z@x.test"}, Description: crudPtr(""), Active: crudPtr(false)}))
	if strings.Join(u.Destinations, ",") != "z@x.test" || u.Description != "" || u.Active {
		t.Fatalf("updated %+v", u)
	}
	_, err = st.UpdateAlias(ctx, "info@example.com", store.AliasPatch{RemoveDestinations: []string{"z@x.test"}})
	crudWantErr(t, err, store.ErrInvalid)
	_, err = st.UpdateAlias(ctx, "info@example.com", store.AliasPatch{Destinations: &[]string{"a@x.test"}, AddDestinations: []string{"b@x.test"}})
	crudWantErr(t, err, store.ErrInvalid)
	_, err = st.UpdateAlias(ctx, "nobody@example.com", store.AliasPatch{Active: crudPtr(true)})
	crudWantErr(t, err, store.ErrNotFound)

	crudMust[store.Alias](t)(st.CreateAlias(ctx, store.Alias{Address: "sales@other.test", Destinations: []string{"z@x.test"}, Active: true}))
	// Search matches destinations as well as addresses.
	if l := crudMust[[]store.Alias](t)(st.ListAliases(ctx, store.ListOptions{Search: "z@x"})); len(l) != 2 {
		t.Fatalf("search by destination: %+v", l)
	}
	if l := crudMust[[]store.Alias](t)(st.ListAliases(ctx, store.ListOptions{Scope: []string{"other.test"}})); len(l) != 1 || l[0].Address != "sales@other.test" {
		t.Fatalf("scoped list: %+v", l)
	}
	if err := st.DeleteAlias(ctx, "info@example.com"); err != nil {
		t.Fatal(err)
	}
	crudWantErr(t, st.DeleteAlias(ctx, "info@example.com"), store.ErrNotFound)
}

func TestRoleAliasesDoNotCountAgainstAliasLimit(t *testing.T) {
	_, db, _ := crudSetup(t)
	crudExec(t, db, `INSERT INTO setting (key, value) VALUES ('default_alias_target', 'hostmaster@elsewhere.test')`)
	crudExec(t, db, `INSERT INTO domain (name, max_aliases) VALUES ('limited.test', 1)`)
	crudExec(t, db, `INSERT INTO alias (address, destinations) VALUES ('one@limited.test', '{x@elsewhere.test}')`)
	crudExecFails(t, db, "FL001", `INSERT INTO alias (address, destinations) VALUES ('two@limited.test', '{x@elsewhere.test}')`)
	// Lowering the limit to what exists, role addresses aside, is allowed.
	crudExec(t, db, `UPDATE domain SET max_aliases = 1 WHERE name = 'limited.test'`)
	crudExecFails(t, db, "FL001", `UPDATE domain SET max_aliases = 0 WHERE name = 'limited.test'`)
}
