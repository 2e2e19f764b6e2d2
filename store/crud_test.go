package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// crudSetup returns a store on a fresh database, the database, and a context
// whose writes are audited as "test:crud".
func crudSetup(t *testing.T) (*store.Store, *storetest.DB, context.Context) {
	t.Helper()
	db := storetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return store.New(db.Pool), db, store.WithActor(ctx, "test:crud")
}

// crudSQLState returns the SQLSTATE of err, or "" when it carries none.
func crudSQLState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// crudExec runs raw SQL as an operator would and fails the test on error.
func crudExec(t *testing.T, db *storetest.DB, sql string, args ...any) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// crudExecFails runs raw SQL that must fail with SQLSTATE code.
func crudExecFails(t *testing.T, db *storetest.DB, code, sql string, args ...any) {
	t.Helper()
	_, err := db.Pool.Exec(context.Background(), sql, args...)
	if got := crudSQLState(err); got != code {
		t.Fatalf("%s: got error %v (SQLSTATE %q), want SQLSTATE %s", sql, err, got, code)
	}
}

// crudWantErr checks that err is the sentinel want.
func crudWantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q spans several lines", err)
	}
}

func crudMust[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func crudPtr[T any](v T) *T { return &v }

type crudAuditRow struct {
	Actor, Operation, Table, Key string
	Domain                       *string
	Old, New                     map[string]any
}

// crudAudit returns the audit rows of table in order.
func crudAudit(t *testing.T, db *storetest.DB, table string) []crudAuditRow {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `
		SELECT actor, operation, table_name, row_key, domain, old, new
		FROM audit_log WHERE table_name = $1 ORDER BY id`, table)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (crudAuditRow, error) {
		var a crudAuditRow
		var o, n []byte
		if err := r.Scan(&a.Actor, &a.Operation, &a.Table, &a.Key, &a.Domain, &o, &n); err != nil {
			return a, err
		}
		if o != nil {
			if err := json.Unmarshal(o, &a.Old); err != nil {
				return a, err
			}
		}
		if n != nil {
			if err := json.Unmarshal(n, &a.New); err != nil {
				return a, err
			}
		}
		return a, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAuditRecordsActorFromStoreAndSessionUserFromRawSQL(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "example.com", Active: true}))
	crudMust[store.Mailbox](t)(st.CreateMailbox(ctx, store.Mailbox{
		Address: "john@example.com", Password: "{PLAIN}secret-one", Active: true}))
	crudMust[store.Mailbox](t)(st.UpdateMailbox(ctx, "john@example.com", store.MailboxPatch{
		Password: crudPtr("{PLAIN}secret-two"), Name: crudPtr("John")}))
	crudExec(t, db, `UPDATE mailbox SET password = '{PLAIN}secret-three' WHERE address = 'john@example.com'`)
	if err := st.DeleteMailbox(ctx, "john@example.com"); err != nil {
		t.Fatal(err)
	}

	var sessionUser string
	if err := db.Pool.QueryRow(context.Background(), "SELECT session_user").Scan(&sessionUser); err != nil {
		t.Fatal(err)
	}
	got := crudAudit(t, db, "mailbox")
	want := []struct{ actor, op string }{
		{"test:crud", "INSERT"}, {"test:crud", "UPDATE"}, {sessionUser, "UPDATE"}, {"test:crud", "DELETE"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d audit rows, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		a := got[i]
		if a.Actor != w.actor || a.Operation != w.op || a.Key != "john@example.com" ||
			a.Domain == nil || *a.Domain != "example.com" {
			t.Errorf("audit row %d = %+v, want actor %s op %s key john@example.com domain example.com", i, a, w.actor, w.op)
		}
		for _, m := range []map[string]any{a.Old, a.New} {
			if _, ok := m["password"]; ok {
				t.Errorf("audit row %d keeps the password: %v", i, m)
			}
		}
	}
	if got[1].Old["name"] != "" || got[1].New["name"] != "John" {
		t.Errorf("update audit old/new name = %v/%v", got[1].Old["name"], got[1].New["name"])
	}
	if got[0].Old != nil || got[3].New != nil {
		t.Errorf("insert has old %v or delete has new %v", got[0].Old, got[3].New)
	}

	// Admin secrets are redacted too.
	crudMust[store.Admin](t)(st.CreateAdmin(ctx, store.Admin{Username: "boss", Password: "{PLAIN}x", Active: true}, nil))
	crudMust[store.Admin](t)(st.UpdateAdmin(ctx, "boss", store.AdminPatch{TOTPSecret: store.SetValue("JBSWY3DPEHPK3PXP")}))
	for _, a := range crudAudit(t, db, "admin") {
		for _, m := range []map[string]any{a.Old, a.New} {
			for _, k := range []string{"password", "totp_secret"} {
				if _, ok := m[k]; ok {
					t.Errorf("admin audit keeps %s: %v", k, m)
				}
			}
		}
	}
	// The actor is local to the transaction: a later raw write is the session user's.
	crudExec(t, db, `UPDATE admin SET active = false WHERE username = 'boss'`)
	adm := crudAudit(t, db, "admin")
	if last := adm[len(adm)-1]; last.Actor != sessionUser {
		t.Errorf("raw update after a store write audited as %q, want %q", last.Actor, sessionUser)
	}
}

func TestNotifyReachesAnotherConnectionWithTableAndKey(t *testing.T) {
	st, db, ctx := crudSetup(t)
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN facteur_config"); err != nil {
		t.Fatal(err)
	}
	next := func() string {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		n, err := conn.WaitForNotification(wctx)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		if n.Channel != "facteur_config" {
			t.Fatalf("notification on channel %q", n.Channel)
		}
		return n.Payload
	}

	crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "Example.COM", Active: true}))
	if p := next(); p != "domain:example.com" {
		t.Fatalf("payload %q, want domain:example.com", p)
	}
	crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('John@Example.COM')`)
	if p := next(); p != "mailbox:john@example.com" {
		t.Fatalf("payload %q, want mailbox:john@example.com", p)
	}
	crudMust[store.Transport](t)(st.CreateTransport(ctx, store.Transport{Key: "example.com", Nexthop: "smtp:[relay.test]:25", Active: true}))
	if p := next(); p != "transport:example.com" {
		t.Fatalf("payload %q, want transport:example.com", p)
	}
	if err := st.DeleteDomain(ctx, "example.com"); err != nil {
		t.Fatal(err)
	}
	// The cascade announces the mailbox and the domain (in trigger order).
	seen := map[string]bool{next(): true, next(): true}
	if !seen["domain:example.com"] || !seen["mailbox:john@example.com"] {
		t.Fatalf("delete announced %v", seen)
	}
	// A rolled-back write announces nothing.
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO setting (key, value) VALUES ('rolled_back', 'x')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	crudMust[store.Setting](t)(st.PutSetting(ctx, "after", "y"))
	if p := next(); p != "setting:after" {
		t.Fatalf("payload %q, want setting:after (the rolled-back write must not notify)", p)
	}
}

func TestListSearchEscapesLikeMetacharacters(t *testing.T) {
	st, _, ctx := crudSetup(t)
	crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "example.com", Active: true}))
	for _, a := range []string{"a_b@example.com", "axb@example.com", "per%cent@example.com", "perxcent@example.com", `back\slash@example.com`} {
		crudMust[store.Mailbox](t)(st.CreateMailbox(ctx, store.Mailbox{Address: a, Active: true}))
	}
	for search, want := range map[string][]string{
		"_":        {"a_b@example.com"},
		"a_b":      {"a_b@example.com"},
		"%":        {"per%cent@example.com"},
		"PER%":     {"per%cent@example.com"},
		`\`:        {`back\slash@example.com`},
		"nothing%": nil,
	} {
		got := crudMust[[]store.Mailbox](t)(st.ListMailboxes(ctx, store.ListOptions{Search: search}))
		var addrs []string
		for _, m := range got {
			addrs = append(addrs, m.Address)
		}
		if strings.Join(addrs, " ") != strings.Join(want, " ") {
			t.Errorf("search %q: got %v, want %v", search, addrs, want)
		}
	}
}

func TestListPagingAndScope(t *testing.T) {
	st, _, ctx := crudSetup(t)
	for _, d := range []string{"a.test", "b.test", "c.test"} {
		crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: d, Active: true}))
		for _, l := range []string{"u1", "u2"} {
			crudMust[store.Mailbox](t)(st.CreateMailbox(ctx, store.Mailbox{Address: l + "@" + d, Active: true}))
		}
	}
	addrs := func(ms []store.Mailbox) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.Address)
		}
		return strings.Join(s, " ")
	}
	cases := []struct {
		o    store.ListOptions
		want string
	}{
		{store.ListOptions{}, "u1@a.test u2@a.test u1@b.test u2@b.test u1@c.test u2@c.test"},
		{store.ListOptions{Limit: 2}, "u1@a.test u2@a.test"},
		{store.ListOptions{Limit: 2, Offset: 2}, "u1@b.test u2@b.test"},
		{store.ListOptions{Limit: 4, Offset: 4}, "u1@c.test u2@c.test"},
		{store.ListOptions{Offset: 10}, ""},
		{store.ListOptions{Domain: "b.test"}, "u1@b.test u2@b.test"},
		{store.ListOptions{Scope: []string{"a.test", "c.test"}}, "u1@a.test u2@a.test u1@c.test u2@c.test"},
		{store.ListOptions{Scope: []string{}}, ""},
		{store.ListOptions{Scope: []string{"a.test"}, Domain: "b.test"}, ""},
		{store.ListOptions{Scope: []string{"a.test", "b.test"}, Search: "u2"}, "u2@a.test u2@b.test"},
	}
	for _, c := range cases {
		got := crudMust[[]store.Mailbox](t)(st.ListMailboxes(ctx, c.o))
		if addrs(got) != c.want {
			t.Errorf("ListMailboxes(%+v) = %q, want %q", c.o, addrs(got), c.want)
		}
	}
	ds := crudMust[[]store.DomainSummary](t)(st.ListDomains(ctx, store.ListOptions{Scope: []string{"b.test"}}))
	if len(ds) != 1 || ds[0].Name != "b.test" || ds[0].Mailboxes != 2 {
		t.Errorf("scoped domain list = %+v", ds)
	}
}
