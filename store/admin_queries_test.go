package store_test

import (
	"testing"

	"github.com/facteur/facteur/store"
)

func TestAdminQueryCountsMatchTheirLists(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('a.test'), ('b.test'), ('c.test')`)
	for _, a := range []string{"x@a.test", "y@a.test", "z@b.test", "under_score@c.test"} {
		crudMust[store.Mailbox](t)(st.CreateMailbox(ctx, store.Mailbox{Address: a, Active: true}))
	}
	for _, o := range []store.ListOptions{
		{}, {Search: "a.test"}, {Domain: "b.test"}, {Scope: []string{"a.test", "c.test"}}, {Scope: []string{}},
		{Search: "_"}, {Limit: 1, Offset: 1},
	} {
		l := crudMust[[]store.Mailbox](t)(st.ListMailboxes(ctx, store.ListOptions{Search: o.Search, Domain: o.Domain, Scope: o.Scope}))
		n := crudMust[int64](t)(st.CountMailboxes(ctx, o))
		if int64(len(l)) != n {
			t.Errorf("%+v: list %d, count %d", o, len(l), n)
		}
		d := crudMust[[]store.DomainSummary](t)(st.ListDomains(ctx, store.ListOptions{Search: o.Search, Domain: o.Domain, Scope: o.Scope}))
		if n := crudMust[int64](t)(st.CountDomains(ctx, o)); int64(len(d)) != n {
			t.Errorf("domains %+v: list %d, count %d", o, len(d), n)
		}
	}
	// Scoped lookups by id find nothing outside the scope.
	g := crudMust[store.SenderGrant](t)(st.CreateSenderGrant(ctx, store.SenderGrant{Mailbox: "z@b.test", Sender: "q@b.test", Active: true}))
	_, err := st.GetSenderGrantIn(ctx, g.ID, []string{"a.test"})
	crudWantErr(t, err, store.ErrNotFound)
	crudMust[store.SenderGrant](t)(st.GetSenderGrantIn(ctx, g.ID, nil))
	// The audit log filters by scope in SQL.
	f := store.AuditFilter{ListOptions: store.ListOptions{Scope: []string{"a.test"}}, Table: "mailbox"}
	rows := crudMust[[]store.AuditEntry](t)(st.ListAuditLog(ctx, f))
	if n := crudMust[int64](t)(st.CountAuditLog(ctx, f)); len(rows) != 2 || n != 2 {
		t.Fatalf("audit in scope: %d rows, count %d", len(rows), n)
	}
	for _, r := range rows {
		if *r.Domain != "a.test" || r.Actor != "test:crud" {
			t.Errorf("audit row %+v", r)
		}
	}
}

func TestImportMailboxesIsOneTransaction(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name, max_mailboxes) VALUES ('a.test', 2)`)
	rows := []store.Mailbox{{Address: "x@a.test", Active: true}, {Address: "x@a.test", Active: true},
		{Address: "y@a.test", Active: true}, {Address: "z@a.test", Active: true}, {Address: "w@nowhere.test", Active: true}}
	errs := crudMust[[]store.RowError](t)(st.ImportMailboxes(ctx, rows, false))
	kinds := map[int]error{1: store.ErrConflict, 3: store.ErrLimitExceeded, 4: store.ErrNotFound}
	if len(errs) != len(kinds) {
		t.Fatalf("errors %+v", errs)
	}
	for _, e := range errs {
		crudWantErr(t, e.Err, kinds[e.Row])
	}
	if n := crudMust[int64](t)(st.CountMailboxes(ctx, store.ListOptions{})); n != 0 {
		t.Fatalf("a failed import wrote %d mailboxes", n)
	}
	ok := rows[2:4]
	if errs := crudMust[[]store.RowError](t)(st.ImportMailboxes(ctx, ok, true)); len(errs) != 0 {
		t.Fatalf("dry run errors %+v", errs)
	}
	if n := crudMust[int64](t)(st.CountMailboxes(ctx, store.ListOptions{})); n != 0 {
		t.Fatalf("a dry run wrote %d mailboxes", n)
	}
	if errs := crudMust[[]store.RowError](t)(st.ImportMailboxes(ctx, ok, false)); len(errs) != 0 {
		t.Fatalf("import errors %+v", errs)
	}
	if n := crudMust[int64](t)(st.CountMailboxes(ctx, store.ListOptions{})); n != 2 {
		t.Fatalf("imported %d mailboxes", n)
	}
}
