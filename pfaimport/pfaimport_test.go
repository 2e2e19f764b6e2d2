package pfaimport

import (
	"context"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/pfaimport/pfaimporttest"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

type fixture struct {
	t   *testing.T
	ctx context.Context
	src *pgx.Conn
	db  *storetest.DB
	st  *store.Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	u := pfaimporttest.Load(t, "../testdata/postfixadmin")
	src, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close(context.Background()) })
	db := storetest.New(t)
	return &fixture{t: t, ctx: ctx, src: src, db: db, st: store.New(db.Pool)}
}

func (f *fixture) run(opts Options) *Report {
	f.t.Helper()
	r, err := Import(f.ctx, f.src, f.st, opts)
	if err != nil {
		f.t.Fatalf("import: %v", err)
	}
	return r
}

func (f *fixture) count(sql string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.db.Pool.QueryRow(f.ctx, sql, args...).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func counts(r *Report) map[string]TableCounts {
	m := map[string]TableCounts{}
	for _, t := range r.Tables {
		m[t.Table] = *t
	}
	return m
}

func keys(ps []Problem) []string {
	var k []string
	for _, p := range ps {
		k = append(k, p.Table+" "+p.Key)
	}
	slices.Sort(k)
	return k
}

func reason(ps []Problem, table, key string) string {
	for _, p := range ps {
		if p.Table == table && p.Key == key {
			return p.Reason
		}
	}
	return ""
}

func TestImportPostfixAdmin(t *testing.T) {
	f := newFixture(t)

	dry := f.run(Options{})
	if dry.Applied || dry.Version != 1844 {
		t.Fatalf("dry run: applied %v, version %d", dry.Applied, dry.Version)
	}
	if n := f.count(`SELECT count(*) FROM domain`) + f.count(`SELECT count(*) FROM mailbox`) +
		f.count(`SELECT count(*) FROM audit_log`); n != 0 {
		t.Fatalf("the dry run wrote %d rows", n)
	}

	r := f.run(Options{Apply: true})
	if !r.Applied {
		t.Fatal("not applied")
	}
	// The dry run reported what the import then did.
	if !reflect.DeepEqual(counts(dry), counts(r)) || !reflect.DeepEqual(keys(dry.NotImported), keys(r.NotImported)) {
		t.Errorf("dry run and import differ:\n%+v\n%+v", counts(dry), counts(r))
	}
	want := map[string]TableCounts{
		"domain":            {Table: "domain", Source: 7, Created: 5},
		"alias_domain":      {Table: "alias_domain", Source: 1, Created: 1},
		"mailbox":           {Table: "mailbox", Source: 20, Created: 18, NotImported: 2},
		"alias":             {Table: "alias", Source: 28, Created: 8, NotImported: 5},
		"admin":             {Table: "admin", Source: 4, Created: 4},
		"domain_admin":      {Table: "domain_admin", Source: 5, Created: 3},
		"vacation":          {Table: "vacation", Source: 3, Created: 3},
		"vacation_notified": {Table: "vacation_notified", Source: 1, Created: 1},
		"quota_usage":       {Table: "quota_usage", Source: 1, Created: 1},
	}
	if got := counts(r); !reflect.DeepEqual(got, want) {
		t.Errorf("counts:\n got %+v\nwant %+v", got, want)
	}
	if r.SelfAliases != 15 || r.VacationGotos != 2 {
		t.Errorf("self-aliases %d (want 15), vacation destinations %d (want 2)", r.SelfAliases, r.VacationGotos)
	}
	wantNot := []string{"alias broken@example.org", "alias dave@example.org", "alias escape@free.example",
		"alias postmaster@alias.example", "alias x@alias.example", "mailbox escape@free.example", "mailbox x@alias.example"}
	if got := keys(r.NotImported); !reflect.DeepEqual(got, wantNot) {
		t.Errorf("not imported: %v\nwant %v\n%+v", got, wantNot, r.NotImported)
	}
	for key, in := range map[string]string{
		"dave@example.org": "forwards without keeping a copy", "x@alias.example": "alias domain",
		"broken@example.org": "not an address", "escape@free.example": "its mailbox is not imported",
	} {
		if why := reason(r.NotImported, "alias", key); !strings.Contains(why, in) {
			t.Errorf("alias %s not imported because %q; want %q", key, why, in)
		}
	}
	if why := reason(r.NotImported, "mailbox", "escape@free.example"); !strings.Contains(why, "leaves the mail root") {
		t.Errorf("mailbox escape@free.example: %q", why)
	}
	for _, w := range []struct{ table, key, in string }{
		{"mailbox", "grace@example.org", "DES crypt"},
		{"mailbox", "niaj@example.org", "scheme CRAM-MD5"},
		{"mailbox", "frank@example.org", "cleartext"},
		{"domain", "limited.example", "relative to Postfix's queue directory"},
	} {
		if why := reason(r.Warnings, w.table, w.key); !strings.Contains(why, w.in) {
			t.Errorf("warning for %s %s: %q; want %q\n%+v", w.table, w.key, why, w.in, r.Warnings)
		}
	}
	if !slices.Contains(r.Notes, "table fetchmail (1 rows) is not imported") {
		t.Errorf("notes: %q", r.Notes)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE actor = $1`, Actor); n < 40 {
		t.Errorf("%d audit rows by %s", n, Actor)
	}

	// Domains and their limits.
	d, err := f.st.GetDomain(f.ctx, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if *d.MaxMailboxes != 30 || *d.MaxAliases != 50 || *d.MaxQuotaBytes != 2048<<20 || *d.TotalQuotaBytes != 10240<<20 ||
		d.Transport != nil || d.Description != "Example" || !d.Active || !d.CreatedAt.Equal(time.Date(2016, 3, 4, 5, 6, 7, 0, time.UTC)) {
		t.Errorf("example.org: %+v", d)
	}
	d, _ = f.st.GetDomain(f.ctx, "other.example")
	if d.MaxMailboxes == nil || *d.MaxMailboxes != 0 || d.MaxAliases != nil || d.MaxQuotaBytes != nil || d.TotalQuotaBytes != nil {
		t.Errorf("other.example (-1 mailboxes, 0 the rest): %+v", d)
	}
	d, _ = f.st.GetDomain(f.ctx, "limited.example")
	if d.MaxAliases == nil || *d.MaxAliases != 0 || *d.MaxMailboxes != 5 || d.Active || d.Transport != nil {
		t.Errorf("limited.example: %+v", d)
	}
	d, _ = f.st.GetDomain(f.ctx, "relay.example")
	if !d.BackupMX || d.Transport == nil || *d.Transport != "smtp:[mx.relay.example]:25" {
		t.Errorf("relay.example: %+v", d)
	}
	if _, err := f.st.GetDomain(f.ctx, "alias.example"); err == nil {
		t.Error("the alias domain is a domain too")
	}
	if ad, err := f.st.GetAliasDomain(f.ctx, "alias.example"); err != nil || ad.TargetDomain != "example.org" {
		t.Errorf("alias domain: %+v %v", ad, err)
	}

	// Mailboxes: maildirs, quotas, and every password verifies (but the
	// schemes lookups/passwd does not do) and asks for an upgrade to the
	// production scheme (but judy's, which is it).
	h, err := passwd.New(passwd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mbs, err := f.st.ListMailboxes(f.ctx, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mbs {
		local := strings.Split(m.Address, "@")[0]
		if _, ok := passwd.Scheme(m.Password); !ok {
			t.Errorf("%s: hash %q has no {SCHEME}", m.Address, m.Password)
		}
		ok, upgrade, err := h.Verify(m.Password, "pw-"+local)
		switch local {
		case "grace", "niaj":
			if err == nil {
				t.Errorf("%s: lookups/passwd verifies %q", m.Address, m.Password)
			}
		case "walter":
			ok, upgrade, err = h.Verify(m.Password, "pw-alice")
			fallthrough
		default:
			if !ok || upgrade == (local == "judy") || err != nil {
				t.Errorf("%s: verify %q: ok %v, upgrade %v, %v", m.Address, m.Password, ok, upgrade, err)
			}
		}
	}
	alice, _ := f.st.GetMailbox(f.ctx, "alice@example.org")
	if alice.Maildir != "example.org/alice/" || *alice.QuotaBytes != 104857600 || alice.Name != "Alice" ||
		alice.Password != "{MD5-CRYPT}$1$Xy7qPz9a$HkFz2/OYEO2OS9FQRyyjw0" || alice.UsedBytes != 1234567 || alice.UsedMessages != 42 {
		t.Errorf("alice: %+v", alice)
	}
	bob, _ := f.st.GetMailbox(f.ctx, "bob@free.example")
	if bob.QuotaBytes != nil || !strings.HasPrefix(bob.Password, "{SHA512-CRYPT}$6$rounds=5000$") {
		t.Errorf("bob (quota 0, bare $6$): %+v", bob)
	}
	if m, _ := f.st.GetMailbox(f.ctx, "carol@example.org"); m.Maildir != "example.org/carol.archive/" {
		t.Errorf("carol's maildir: %q", m.Maildir)
	}
	if m, _ := f.st.GetMailbox(f.ctx, "peggy@example.org"); m.Password != "{PLAIN-MD5}b342d66f1fb1e0b2712aa9c1a84b9768" {
		t.Errorf("peggy's authlib MD5RAW: %q", m.Password)
	}
	if m, _ := f.st.GetMailbox(f.ctx, "trent@example.org"); m.Active {
		t.Error("trent is active")
	}

	// Aliases.
	for addr, dests := range map[string][]string{
		"@other.example":      {"alice@example.org"},                                          // catch-all
		"alice@example.org":   {"alice@example.org", "alice.backup@mail.example.net"},         // forward and keep
		"erin@example.org":    {"erin@example.org", "erin@home.example"},                      // without the vacation destination
		"team@example.org":    {"alice@example.org", "bob@free.example", "carol@example.org"}, // comma-separated
		"sales@other.example": {"dave@example.org"},
	} {
		a, err := f.st.GetAlias(f.ctx, addr)
		if err != nil || !reflect.DeepEqual(a.Destinations, dests) {
			t.Errorf("alias %s: %v %v; want %v", addr, a.Destinations, err, dests)
		}
	}
	if n := f.count(`SELECT count(*) FROM alias WHERE address = ANY (destinations) AND cardinality(destinations) = 1`); n != 0 {
		t.Errorf("%d self-aliases imported", n)
	}
	if a, _ := f.st.GetAlias(f.ctx, "old@example.org"); a.Active {
		t.Error("old@example.org is active")
	}

	// Vacations.
	v, err := f.st.GetVacation(f.ctx, "carol@example.org")
	if err != nil || !v.Active || v.ActiveFrom != nil || v.ActiveUntil != nil || v.IntervalSeconds != math.MaxInt32 || v.Subject != "Away" {
		t.Errorf("carol's vacation: %+v %v", v, err)
	}
	v, _ = f.st.GetVacation(f.ctx, "erin@example.org")
	if !v.Active || v.ActiveFrom == nil || !v.ActiveFrom.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) ||
		v.ActiveUntil == nil || v.IntervalSeconds != 86400 {
		t.Errorf("erin's vacation: %+v", v)
	}
	if v, _ := f.st.GetVacation(f.ctx, "frank@example.org"); v.Active {
		t.Errorf("frank's vacation is active")
	}
	if _, err := f.st.GetVacationNotified(f.ctx, "carol@example.org", "someone@remote.example"); err != nil {
		t.Error(err)
	}

	// Admins.
	for name, wantSuper := range map[string]bool{"admin@example.org": true, "old-super@example.org": true, "dom@example.org": false} {
		a, err := f.st.GetAdmin(f.ctx, name)
		if err != nil || a.Superadmin != wantSuper {
			t.Errorf("admin %s: superadmin %v %v", name, a.Superadmin, err)
		}
	}
	if a, _ := f.st.GetAdmin(f.ctx, "dom@example.org"); !reflect.DeepEqual(a.Domains, []string{"example.org", "other.example"}) {
		t.Errorf("dom's domains: %v", a.Domains)
	}
	if a, _ := f.st.GetAdmin(f.ctx, "admin@example.org"); len(a.Domains) != 0 {
		t.Errorf("the superadmin got domain grants: %v", a.Domains)
	}
	if a, _ := f.st.GetAdmin(f.ctx, "inactive@example.org"); a.Active {
		t.Error("inactive@ is active")
	}

	// Twice: nothing changes.
	auditBefore := f.count(`SELECT count(*) FROM audit_log`)
	again := f.run(Options{Apply: true})
	if again.Changed() != 0 || len(again.Conflicts) != 0 {
		t.Errorf("second import changed %d rows, %d conflicts: %+v", again.Changed(), len(again.Conflicts), again.Conflicts)
	}
	for _, c := range again.Tables {
		if c.Same != want[c.Table].Created {
			t.Errorf("second import, %s: %d the same, want %d", c.Table, c.Same, want[c.Table].Created)
		}
	}
	if n := f.count(`SELECT count(*) FROM audit_log`); n != auditBefore {
		t.Errorf("second import wrote %d audit rows", n-auditBefore)
	}
}

// TestImportConflicts: a row that differs in facteur is reported and kept,
// unless --update; usage facteur already has is kept.
func TestImportConflicts(t *testing.T) {
	f := newFixture(t)
	f.run(Options{Apply: true})
	if _, err := f.db.Pool.Exec(f.ctx, `UPDATE mailbox SET quota_bytes = 1000, name = 'Robert' WHERE address = 'bob@free.example';
		UPDATE quota_usage SET bytes = 99 WHERE username = 'alice@example.org';
		UPDATE domain SET max_mailboxes = 25 WHERE name = 'example.org'`); err != nil {
		t.Fatal(err)
	}
	r := f.run(Options{Apply: true})
	if r.Changed() != 0 || !reflect.DeepEqual(keys(r.Conflicts), []string{"domain example.org", "mailbox bob@free.example"}) {
		t.Fatalf("changed %d, conflicts %+v", r.Changed(), r.Conflicts)
	}
	if why := reason(r.Conflicts, "mailbox", "bob@free.example"); !strings.Contains(why, `name: facteur "Robert", PostfixAdmin "Bob"`) ||
		!strings.Contains(why, "quota_bytes: facteur 1000, PostfixAdmin NULL") {
		t.Errorf("conflict: %q", why)
	}
	if c := counts(r)["quota_usage"]; c.Kept != 1 {
		t.Errorf("quota_usage: %+v", c)
	}
	if m, _ := f.st.GetMailbox(f.ctx, "bob@free.example"); m.Name != "Robert" {
		t.Errorf("conflicting row overwritten: %+v", m)
	}

	r = f.run(Options{Apply: true, Update: true})
	if c := counts(r); c["mailbox"].Updated != 1 || c["domain"].Updated != 1 || len(r.Conflicts) != 0 {
		t.Errorf("--update: %+v %+v", c, r.Conflicts)
	}
	if m, _ := f.st.GetMailbox(f.ctx, "bob@free.example"); m.Name != "Bob" || m.QuotaBytes != nil {
		t.Errorf("--update did not restore bob: %+v", m)
	}
	if d, _ := f.st.GetDomain(f.ctx, "example.org"); *d.MaxMailboxes != 30 {
		t.Errorf("--update did not restore the limit: %d", *d.MaxMailboxes)
	}
	if q, _ := f.st.GetQuotaUsage(f.ctx, "alice@example.org"); q.Bytes != 99 {
		t.Errorf("usage overwritten: %+v", q)
	}
	if r := f.run(Options{Apply: true}); r.Changed() != 0 || len(r.Conflicts) != 0 {
		t.Errorf("after --update: %d changes, %+v", r.Changed(), r.Conflicts)
	}
}

func TestConvertHash(t *testing.T) {
	for _, c := range []struct{ in, bare, want, warn string }{
		{"$1$ab$cd", "", "{MD5-CRYPT}$1$ab$cd", "malformed"},
		{"$6$rounds=5000$Kq3vLm8Pz2Wn4Rt6$CxHMAOFCUaPCmwZuBRZbalVYhj.gV9GhBU4ovXErqEVmOKRGekjwpp4PWSv.NiLDx3Hxq5g7J1R39o9.EMnhv.", "",
			"{SHA512-CRYPT}$6$rounds=5000$Kq3vLm8Pz2Wn4Rt6$CxHMAOFCUaPCmwZuBRZbalVYhj.gV9GhBU4ovXErqEVmOKRGekjwpp4PWSv.NiLDx3Hxq5g7J1R39o9.EMnhv.", ""},
		{"0D9AD05BBCBE0F0F1861845C4505F101", "", "{PLAIN-MD5}0d9ad05bbcbe0f0f1861845c4505f101", ""},
		{"secret", "", "{PLAIN}secret", "cleartext"},
		{"secret", "plain", "{PLAIN}secret", ""},
		{"{md5crypt}$1$Xy7qPz9a$HkFz2/OYEO2OS9FQRyyjw0", "", "{MD5-CRYPT}$1$Xy7qPz9a$HkFz2/OYEO2OS9FQRyyjw0", ""},
		{"{SSHA512}notbase64!", "", "{SSHA512}notbase64!", "malformed"},
		{"", "", "", "no password"},
	} {
		got, warn := convertHash(c.in, c.bare)
		if got != c.want || (c.warn == "") != (warn == "") || !strings.Contains(warn, c.warn) {
			t.Errorf("convertHash(%q, %q) = %q, %q; want %q, %q", c.in, c.bare, got, warn, c.want, c.warn)
		}
	}
}

func TestMapTransport(t *testing.T) {
	for in, want := range map[string]string{
		"virtual": "", "virtual:": "", "": "", "lmtp:unix:private/dovecot-lmtp": "",
		"lmtp:unix:/run/dovecot/lmtp": "lmtp:unix:/run/dovecot/lmtp", "smtp:[mx.example]:25": "smtp:[mx.example]:25",
		"relay:": "", "dovecot": "",
	} {
		got, _ := mapTransport(in)
		if (got == nil) != (want == "") || got != nil && *got != want {
			t.Errorf("mapTransport(%q) = %v; want %q", in, got, want)
		}
	}
}

// TestImportRowsTheDatabaseRefuses: a row facteur's database refuses (a
// limit of a domain facteur already has) is reported and the rest goes in;
// PostfixAdmin limits below what a domain holds are reported, not allowed
// to cost mailboxes.
func TestImportRowsTheDatabaseRefuses(t *testing.T) {
	f := newFixture(t)
	if _, err := f.st.CreateDomain(f.ctx, store.Domain{Name: "free.example", Active: true, MaxMailboxes: ptr(int32(0))}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.src.Exec(f.ctx, `UPDATE domain SET mailboxes = 3 WHERE domain = 'example.org'`); err != nil {
		t.Fatal(err)
	}
	r := f.run(Options{Apply: true})
	if why := reason(r.NotImported, "mailbox", "bob@free.example"); !strings.Contains(why, "at most 0 mailboxes") {
		t.Errorf("bob: %q\n%+v", why, r.NotImported)
	}
	if why := reason(r.NotImported, "domain", "example.org"); !strings.Contains(why, "limits not applied") {
		t.Errorf("example.org: %q", why)
	}
	if why := reason(r.Conflicts, "domain", "free.example"); !strings.Contains(why, "max_mailboxes: facteur 0, PostfixAdmin NULL") {
		t.Errorf("free.example: %q", why)
	}
	if n := f.count(`SELECT count(*) FROM mailbox WHERE domain = 'example.org'`); n != 16 {
		t.Errorf("%d mailboxes in example.org; want 16", n)
	}
	if d, _ := f.st.GetDomain(f.ctx, "example.org"); d.MaxMailboxes != nil {
		t.Errorf("example.org's limit: %d", *d.MaxMailboxes)
	}
	if a, err := f.st.GetAlias(f.ctx, "team@example.org"); err != nil || len(a.Destinations) != 3 {
		t.Errorf("team@: %+v %v", a, err)
	}
}

// TestImportReplacesDefaultAliases: the postmaster@ and abuse@ aliases the
// database gives a new domain (setting default_alias_target) give way to
// PostfixAdmin's.
func TestImportReplacesDefaultAliases(t *testing.T) {
	f := newFixture(t)
	if _, err := f.db.Pool.Exec(f.ctx, `INSERT INTO setting (key, value) VALUES ('default_alias_target', 'hostmaster@host.example')`); err != nil {
		t.Fatal(err)
	}
	r := f.run(Options{Apply: true})
	if len(r.Conflicts) != 0 || counts(r)["alias"].Created != 8 {
		t.Fatalf("conflicts %+v, aliases %+v", r.Conflicts, counts(r)["alias"])
	}
	if a, _ := f.st.GetAlias(f.ctx, "postmaster@example.org"); !reflect.DeepEqual(a.Destinations, []string{"alice@example.org"}) {
		t.Errorf("postmaster@example.org: %v", a.Destinations)
	}
	if a, _ := f.st.GetAlias(f.ctx, "postmaster@free.example"); !reflect.DeepEqual(a.Destinations, []string{"hostmaster@host.example"}) {
		t.Errorf("postmaster@free.example: %v", a.Destinations)
	}
	if r := f.run(Options{Apply: true}); r.Changed() != 0 || len(r.Conflicts) != 0 {
		t.Errorf("second import: %d changes, %+v", r.Changed(), r.Conflicts)
	}
}

func ptr[T any](v T) *T { return &v }
