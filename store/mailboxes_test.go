package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store"
)

func TestRawMailboxInsertIsNormalised(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('example.com')`)
	crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('John@Example.COM')`)
	m := crudMust[store.Mailbox](t)(st.GetMailbox(ctx, "john@example.com"))
	if m.Address != "john@example.com" || m.LocalPart != "john" || m.Domain != "example.com" ||
		m.Maildir != "example.com/john/" || !m.Active {
		t.Fatalf("stored %+v", m)
	}
	// Another spelling is the same mailbox.
	crudExecFails(t, db, "23505", `INSERT INTO mailbox (address) VALUES ('JOHN@example.com.')`)
	// An address without a domain, a local part too long or with spaces is refused.
	crudExecFails(t, db, "FV001", `INSERT INTO mailbox (address) VALUES ('john')`)
	crudExecFails(t, db, "23514", `INSERT INTO mailbox (address) VALUES ('jo hn@example.com')`)
	crudExecFails(t, db, "23514", `INSERT INTO mailbox (address) VALUES (repeat('x', 65) || '@example.com')`)
	crudExecFails(t, db, "23514", `INSERT INTO mailbox (address) VALUES ('@example.com')`)
	// The maildir stays under the mail root.
	for _, md := range []string{"/etc/", "example.com/../../etc/", ".."} {
		crudExecFails(t, db, "23514", `INSERT INTO mailbox (address, maildir) VALUES ('x@example.com', $1)`, md)
	}
	// A quota of 0 is refused: NULL is unlimited.
	crudExecFails(t, db, "23514", `INSERT INTO mailbox (address, quota_bytes) VALUES ('x@example.com', 0)`)
	_, err := st.CreateMailbox(ctx, store.Mailbox{Address: "x@example.com", QuotaBytes: crudPtr[int64](0)})
	crudWantErr(t, err, store.ErrInvalid)
}

func TestMailboxCRUDRoundTrip(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "example.com", Active: true}))
	m := crudMust[store.Mailbox](t)(st.CreateMailbox(ctx, store.Mailbox{
		Address: "Jane.Doe@Example.com", Name: "Jane", Password: "{PLAIN}pw", QuotaBytes: crudPtr[int64](1 << 20),
		Transport: crudPtr("lmtp:unix:/run/dovecot/lmtp"), Active: true,
	}))
	if m.Address != "jane.doe@example.com" || m.Name != "Jane" || m.Password != "{PLAIN}pw" || *m.QuotaBytes != 1<<20 ||
		m.Maildir != "example.com/jane.doe/" || *m.Transport != "lmtp:unix:/run/dovecot/lmtp" || m.UsedBytes != 0 {
		t.Fatalf("created %+v", m)
	}
	_, err := st.CreateMailbox(ctx, store.Mailbox{Address: "jane.doe@example.com", Active: true})
	crudWantErr(t, err, store.ErrConflict)

	crudExec(t, db, `INSERT INTO quota_usage (username, bytes, messages) VALUES ('jane.doe@example.com', 1234, 5)`)
	got := crudMust[store.Mailbox](t)(st.GetMailbox(ctx, "jane.doe@example.com"))
	if got.UsedBytes != 1234 || got.UsedMessages != 5 {
		t.Fatalf("usage %d/%d", got.UsedBytes, got.UsedMessages)
	}
	q := crudMust[store.QuotaUsage](t)(st.GetQuotaUsage(ctx, "jane.doe@example.com"))
	if q.Bytes != 1234 || q.Messages != 5 {
		t.Fatalf("quota usage %+v", q)
	}
	crudMust[store.Mailbox](t)(st.CreateMailbox(ctx, store.Mailbox{Address: "bob@example.com", Active: true}))
	_, err = st.GetQuotaUsage(ctx, "bob@example.com")
	crudWantErr(t, err, store.ErrNotFound)

	u := crudMust[store.Mailbox](t)(st.UpdateMailbox(ctx, "jane.doe@example.com", store.MailboxPatch{
		Name: crudPtr("Jane Doe"), QuotaBytes: store.SetNull[int64](), Transport: store.SetNull[string](),
		Maildir: crudPtr("example.com/jane/"), Active: crudPtr(false),
	}))
	if u.Name != "Jane Doe" || u.QuotaBytes != nil || u.Transport != nil || u.Maildir != "example.com/jane/" ||
		u.Active || u.Password != "{PLAIN}pw" || u.UsedBytes != 1234 {
		t.Fatalf("updated %+v", u)
	}
	if err := st.SetMailboxPassword(ctx, "jane.doe@example.com", "{PLAIN}new"); err != nil {
		t.Fatal(err)
	}
	if got := crudMust[store.Mailbox](t)(st.GetMailbox(ctx, "jane.doe@example.com")); got.Password != "{PLAIN}new" {
		t.Fatalf("password %q", got.Password)
	}
	crudWantErr(t, st.SetMailboxPassword(ctx, "nobody@example.com", "x"), store.ErrNotFound)
	_, err = st.UpdateMailbox(ctx, "jane.doe@example.com", store.MailboxPatch{Maildir: crudPtr("../x")})
	crudWantErr(t, err, store.ErrInvalid)

	list := crudMust[[]store.Mailbox](t)(st.ListMailboxes(ctx, store.ListOptions{Search: "doe"}))
	if len(list) != 1 || list[0].Address != "jane.doe@example.com" {
		t.Fatalf("search by name: %+v", list)
	}
	if err := st.DeleteMailbox(ctx, "jane.doe@example.com"); err != nil {
		t.Fatal(err)
	}
	crudWantErr(t, st.DeleteMailbox(ctx, "jane.doe@example.com"), store.ErrNotFound)
	_, err = st.GetQuotaUsage(ctx, "jane.doe@example.com")
	crudWantErr(t, err, store.ErrNotFound) // cascaded
}

func TestAppPasswordCRUDRoundTrip(t *testing.T) {
	st, _, ctx := crudSetup(t)
	crudMust[store.Domain](t)(st.CreateDomain(ctx, store.Domain{Name: "example.com", Active: true}))
	crudMust[store.Mailbox](t)(st.CreateMailbox(ctx, store.Mailbox{Address: "john@example.com", Active: true}))
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	p := crudMust[store.AppPassword](t)(st.CreateAppPassword(ctx, store.AppPassword{
		Mailbox: "John@example.com", Name: "phone", Password: "{PLAIN}a", ExpiresAt: &exp, Active: true}))
	if p.ID == 0 || p.Mailbox != "john@example.com" || p.Domain != "example.com" || !p.ExpiresAt.Equal(exp) {
		t.Fatalf("created %+v", p)
	}
	_, err := st.CreateAppPassword(ctx, store.AppPassword{Mailbox: "john@example.com", Name: "phone", Password: "x", Active: true})
	crudWantErr(t, err, store.ErrConflict)
	_, err = st.CreateAppPassword(ctx, store.AppPassword{Mailbox: "nobody@example.com", Name: "phone", Password: "x", Active: true})
	crudWantErr(t, err, store.ErrNotFound)
	_, err = st.CreateAppPassword(ctx, store.AppPassword{Mailbox: "john@example.com", Name: "", Password: "x", Active: true})
	crudWantErr(t, err, store.ErrInvalid)
	crudMust[store.AppPassword](t)(st.CreateAppPassword(ctx, store.AppPassword{Mailbox: "john@example.com", Name: "laptop", Password: "x", Active: true}))

	list := crudMust[[]store.AppPassword](t)(st.ListAppPasswords(ctx, "john@example.com", store.ListOptions{}))
	if len(list) != 2 || list[0].Name != "laptop" || list[1].Name != "phone" {
		t.Fatalf("list %+v", list)
	}
	if l := crudMust[[]store.AppPassword](t)(st.ListAppPasswords(ctx, "", store.ListOptions{Scope: []string{"other.test"}})); len(l) != 0 {
		t.Fatalf("scoped list %+v", l)
	}
	u := crudMust[store.AppPassword](t)(st.UpdateAppPassword(ctx, p.ID, store.AppPasswordPatch{
		ExpiresAt: store.SetNull[time.Time](), Active: crudPtr(false), Password: crudPtr("{PLAIN}b")}))
	if u.ExpiresAt != nil || u.Active || u.Password != "{PLAIN}b" || u.Name != "phone" {
		t.Fatalf("updated %+v", u)
	}
	if err := st.DeleteAppPassword(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = st.GetAppPassword(ctx, p.ID)
	crudWantErr(t, err, store.ErrNotFound)
}

func TestDomainLimits(t *testing.T) {
	const mb = 1 << 20
	t.Run("max mailboxes", func(t *testing.T) {
		st, db, ctx := crudSetup(t)
		crudExec(t, db, `INSERT INTO domain (name, max_mailboxes) VALUES ('example.com', 2)`)
		crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('a@example.com'), ('b@example.com')`)
		crudExecFails(t, db, "FL001", `INSERT INTO mailbox (address) VALUES ('c@example.com')`)
		_, err := st.CreateMailbox(ctx, store.Mailbox{Address: "c@example.com", Active: true})
		crudWantErr(t, err, store.ErrLimitExceeded)
		// Moving a mailbox into a full domain counts too.
		crudExec(t, db, `INSERT INTO domain (name) VALUES ('other.test')`)
		crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('c@other.test')`)
		crudExecFails(t, db, "FL001", `UPDATE mailbox SET address = 'c@example.com' WHERE address = 'c@other.test'`)
	})
	t.Run("max aliases", func(t *testing.T) {
		st, db, ctx := crudSetup(t)
		crudExec(t, db, `INSERT INTO domain (name, max_aliases) VALUES ('example.com', 1)`)
		crudExec(t, db, `INSERT INTO alias (address, destinations) VALUES ('a@example.com', '{x@elsewhere.test}')`)
		crudExecFails(t, db, "FL001", `INSERT INTO alias (address, destinations) VALUES ('b@example.com', '{x@elsewhere.test}')`)
		_, err := st.CreateAlias(ctx, store.Alias{Address: "@example.com", Destinations: []string{"x@elsewhere.test"}, Active: true})
		crudWantErr(t, err, store.ErrLimitExceeded)
		// Editing an alias in place is not a new one.
		crudMust[store.Alias](t)(st.UpdateAlias(ctx, "a@example.com", store.AliasPatch{AddDestinations: []string{"y@elsewhere.test"}}))
	})
	t.Run("max quota per mailbox", func(t *testing.T) {
		st, db, ctx := crudSetup(t)
		crudExec(t, db, `INSERT INTO domain (name, max_quota_bytes) VALUES ('example.com', $1)`, 10*mb)
		crudExec(t, db, `INSERT INTO mailbox (address, quota_bytes) VALUES ('a@example.com', $1)`, 10*mb)
		crudExecFails(t, db, "FL001", `INSERT INTO mailbox (address, quota_bytes) VALUES ('b@example.com', $1)`, 10*mb+1)
		// Unlimited is above any maximum.
		crudExecFails(t, db, "FL001", `INSERT INTO mailbox (address) VALUES ('b@example.com')`)
		_, err := st.CreateMailbox(ctx, store.Mailbox{Address: "b@example.com", Active: true})
		crudWantErr(t, err, store.ErrLimitExceeded)
		_, err = st.UpdateMailbox(ctx, "a@example.com", store.MailboxPatch{QuotaBytes: store.SetValue[int64](11 * mb)})
		crudWantErr(t, err, store.ErrLimitExceeded)
		_, err = st.UpdateMailbox(ctx, "a@example.com", store.MailboxPatch{QuotaBytes: store.SetNull[int64]()})
		crudWantErr(t, err, store.ErrLimitExceeded)
	})
	t.Run("total quota", func(t *testing.T) {
		st, db, ctx := crudSetup(t)
		crudExec(t, db, `INSERT INTO domain (name, total_quota_bytes) VALUES ('example.com', $1)`, 10*mb)
		crudExec(t, db, `INSERT INTO mailbox (address, quota_bytes) VALUES ('a@example.com', $1)`, 6*mb)
		crudExecFails(t, db, "FL001", `INSERT INTO mailbox (address, quota_bytes) VALUES ('b@example.com', $1)`, 5*mb)
		crudExecFails(t, db, "FL001", `INSERT INTO mailbox (address) VALUES ('b@example.com')`)
		crudExec(t, db, `INSERT INTO mailbox (address, quota_bytes) VALUES ('b@example.com', $1)`, 4*mb)
		_, err := st.UpdateMailbox(ctx, "b@example.com", store.MailboxPatch{QuotaBytes: store.SetValue[int64](4*mb + 1)})
		crudWantErr(t, err, store.ErrLimitExceeded)
		// A mailbox's own old quota does not count against its new one.
		crudMust[store.Mailbox](t)(st.UpdateMailbox(ctx, "a@example.com", store.MailboxPatch{QuotaBytes: store.SetValue[int64](5 * mb)}))
		sum := crudMust[store.DomainSummary](t)(st.GetDomainSummary(ctx, "example.com"))
		if sum.QuotaAllocatedBytes != 9*mb {
			t.Fatalf("allocated %d, want %d", sum.QuotaAllocatedBytes, 9*mb)
		}
	})
	t.Run("default quota applied", func(t *testing.T) {
		st, db, ctx := crudSetup(t)
		crudExec(t, db, `INSERT INTO domain (name, default_quota_bytes, max_quota_bytes, total_quota_bytes) VALUES ('example.com', $1, $2, $3)`,
			2*mb, 5*mb, 5*mb)
		crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('a@example.com')`)
		m := crudMust[store.Mailbox](t)(st.CreateMailbox(ctx, store.Mailbox{Address: "b@example.com", Active: true}))
		if m.QuotaBytes == nil || *m.QuotaBytes != 2*mb {
			t.Fatalf("store-created mailbox quota %v, want default %d", m.QuotaBytes, 2*mb)
		}
		a := crudMust[store.Mailbox](t)(st.GetMailbox(ctx, "a@example.com"))
		if a.QuotaBytes == nil || *a.QuotaBytes != 2*mb {
			t.Fatalf("raw-inserted mailbox quota %v, want default %d", a.QuotaBytes, 2*mb)
		}
		// The third default quota would exceed the total.
		_, err := st.CreateMailbox(ctx, store.Mailbox{Address: "c@example.com", Active: true})
		crudWantErr(t, err, store.ErrLimitExceeded)
		// The default quota cannot exceed the per-mailbox maximum.
		crudExecFails(t, db, "23514", `UPDATE domain SET default_quota_bytes = $1 WHERE name = 'example.com'`, 6*mb)
	})
	t.Run("lowering limits below usage", func(t *testing.T) {
		st, db, ctx := crudSetup(t)
		crudExec(t, db, `INSERT INTO domain (name) VALUES ('example.com')`)
		crudExec(t, db, `INSERT INTO mailbox (address, quota_bytes) VALUES ('a@example.com', $1), ('b@example.com', $2)`, 3*mb, 4*mb)
		crudExec(t, db, `INSERT INTO alias (address, destinations) VALUES ('x@example.com', '{a@example.com}'), ('y@example.com', '{b@example.com}')`)
		for _, set := range []string{"max_mailboxes = 1", "max_aliases = 1", "max_quota_bytes = 3145728", "total_quota_bytes = 7340031"} {
			crudExecFails(t, db, "FL001", `UPDATE domain SET `+set+` WHERE name = 'example.com'`)
		}
		for _, p := range []store.DomainPatch{
			{MaxMailboxes: store.SetValue[int32](1)},
			{MaxAliases: store.SetValue[int32](0)},
			{MaxQuotaBytes: store.SetValue[int64](4*mb - 1)},
			{TotalQuotaBytes: store.SetValue[int64](7*mb - 1)},
		} {
			_, err := st.UpdateDomain(ctx, "example.com", p)
			crudWantErr(t, err, store.ErrLimitExceeded)
		}
		// Exactly at the usage is fine.
		crudMust[store.Domain](t)(st.UpdateDomain(ctx, "example.com", store.DomainPatch{
			MaxMailboxes: store.SetValue[int32](2), MaxAliases: store.SetValue[int32](2),
			MaxQuotaBytes: store.SetValue[int64](4 * mb), TotalQuotaBytes: store.SetValue[int64](7 * mb)}))
		// An unlimited mailbox forbids any total quota.
		crudExec(t, db, `UPDATE domain SET max_mailboxes = NULL, max_quota_bytes = NULL, total_quota_bytes = NULL WHERE name = 'example.com'`)
		crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('c@example.com')`)
		crudExecFails(t, db, "FL001", `UPDATE domain SET total_quota_bytes = $1 WHERE name = 'example.com'`, 100*mb)
	})
}

// Two transactions on two connections each add a mailbox to a domain that
// allows one: the second blocks on the domain row lock until the first
// commits, then counts its mailbox and fails. Exactly one succeeds.
func TestConcurrentMailboxInsertsCannotBothPassTheLimit(t *testing.T) {
	_, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name, max_mailboxes) VALUES ('example.com', 1)`)
	connect := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	c1, c2 := connect(), connect()
	tx1, err := c1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx2, err := c2.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid2 uint32 = c2.PgConn().PID()
	if _, err := tx1.Exec(ctx, `INSERT INTO mailbox (address) VALUES ('one@example.com')`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := tx2.Exec(ctx, `INSERT INTO mailbox (address) VALUES ('two@example.com')`)
		done <- err
	}()
	// Wait until the second insert is blocked on a lock held by the first.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		err := db.Pool.QueryRow(ctx, `SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1`,
			pid2).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("second insert finished without waiting for the first: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("second insert never waited on the domain lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("second insert still blocked after the first committed")
	}
	if code := crudSQLState(err); code != "FL001" {
		t.Fatalf("second insert: %v (SQLSTATE %q), want FL001", err, code)
	}
	if !errors.Is(store.MapError(err), store.ErrLimitExceeded) {
		t.Fatalf("MapError(%v) is not ErrLimitExceeded", err)
	}
	_ = tx2.Rollback(ctx)
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM mailbox WHERE domain = 'example.com'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d mailboxes in a domain that allows 1", n)
	}
}
