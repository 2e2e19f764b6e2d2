package store_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/store"
)

const testPEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKsecretsecretsecretsecretsecretsecretsecre\n-----END PRIVATE KEY-----\n"

func TestDKIMKeyNewestActiveWinsAndSecretStaysOut(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('a.example'), ('b.example')`)

	k1 := crudMust[store.DKIMKey](t)(st.CreateDKIMKey(ctx, store.DKIMKey{Domain: "A.Example.", Selector: "S1",
		Algorithm: store.DKIMRSASHA256, PrivateKey: testPEM, PublicKey: "AAAA", Active: true}))
	if k1.Domain != "a.example" || k1.Selector != "s1" || k1.DNSName != "s1._domainkey.a.example" ||
		k1.DNSRecord != "v=DKIM1; k=rsa; p=AAAA" {
		t.Fatalf("created %+v", k1)
	}
	got, found, err := st.ActiveDKIMKey(ctx, "a.example")
	if err != nil || !found || got.Selector != "s1" || got.PrivateKey != testPEM {
		t.Fatalf("active key: %+v %v %v", got, found, err)
	}

	// Rotation: a newer key under a new selector wins once active.
	k2 := crudMust[store.DKIMKey](t)(st.CreateDKIMKey(ctx, store.DKIMKey{Domain: "a.example", Selector: "s2",
		Algorithm: store.DKIMEd25519SHA256, PrivateKey: testPEM, PublicKey: "BBBB", Active: false}))
	if k2.DNSRecord != "v=DKIM1; k=ed25519; p=BBBB" {
		t.Fatalf("ed25519 record %q", k2.DNSRecord)
	}
	if got, _, _ := st.ActiveDKIMKey(ctx, "a.example"); got.Selector != "s1" {
		t.Fatalf("an inactive key won: %s", got.Selector)
	}
	crudMust[store.DKIMKey](t)(st.SetDKIMKeyActive(ctx, "a.example", "s2", true))
	if got, _, _ := st.ActiveDKIMKey(ctx, "A.EXAMPLE"); got.Selector != "s2" {
		t.Fatalf("the newest key did not win: %s", got.Selector)
	}
	// Another domain's key is never returned.
	if _, found, err := st.ActiveDKIMKey(ctx, "b.example"); err != nil || found {
		t.Fatalf("b.example has a key: %v %v", found, err)
	}
	// An inactive domain does not sign.
	crudExec(t, db, `UPDATE domain SET active = false WHERE name = 'a.example'`)
	if _, found, _ := st.ActiveDKIMKey(ctx, "a.example"); found {
		t.Fatal("an inactive domain has a signing key")
	}
	crudExec(t, db, `UPDATE domain SET active = true WHERE name = 'a.example'`)

	_, err = st.CreateDKIMKey(ctx, store.DKIMKey{Domain: "a.example", Selector: "s1", Algorithm: store.DKIMRSASHA256,
		PrivateKey: testPEM, PublicKey: "AAAA"})
	crudWantErr(t, err, store.ErrConflict)
	_, err = st.CreateDKIMKey(ctx, store.DKIMKey{Domain: "nowhere.example", Selector: "s1", Algorithm: store.DKIMRSASHA256,
		PrivateKey: testPEM, PublicKey: "AAAA"})
	crudWantErr(t, err, store.ErrNotFound)
	for _, bad := range []store.DKIMKey{
		{Domain: "a.example", Selector: "bad selector", Algorithm: store.DKIMRSASHA256, PrivateKey: testPEM, PublicKey: "AAAA"},
		{Domain: "a.example", Selector: "s9", Algorithm: "rsa-sha1", PrivateKey: testPEM, PublicKey: "AAAA"},
		{Domain: "a.example", Selector: "s9", Algorithm: store.DKIMRSASHA256, PrivateKey: "nope", PublicKey: "AAAA"},
		{Domain: "a.example", Selector: "s9", Algorithm: store.DKIMRSASHA256, PrivateKey: testPEM, PublicKey: "A A; x=1"},
	} {
		_, err := st.CreateDKIMKey(ctx, bad)
		crudWantErr(t, err, store.ErrInvalid)
	}

	l := crudMust[[]store.DKIMKey](t)(st.ListDKIMKeys(ctx, store.ListOptions{Domain: "a.example"}))
	if len(l) != 2 || l[0].Selector != "s2" {
		t.Fatalf("list: %+v", l)
	}
	b, _ := json.Marshal(l)
	if strings.Contains(string(b), "secret") {
		t.Fatalf("JSON carries the private key: %s", b)
	}
	audit := crudAudit(t, db, "dkim_key")
	if len(audit) != 3 || audit[0].Key != "s1._domainkey.a.example" || audit[0].Domain == nil || *audit[0].Domain != "a.example" {
		t.Fatalf("audit: %+v", audit)
	}
	var leaked int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE coalesce(old::text, '') || coalesce(new::text, '') LIKE '%secret%'`).Scan(&leaked); err != nil || leaked != 0 {
		t.Fatalf("private key in audit_log: %d %v", leaked, err)
	}

	if err := st.DeleteDKIMKey(ctx, "a.example", "s1"); err != nil {
		t.Fatal(err)
	}
	crudWantErr(t, st.DeleteDKIMKey(ctx, "a.example", "s1"), store.ErrNotFound)
	// Removing the domain removes its keys.
	crudExec(t, db, `DELETE FROM domain WHERE name = 'a.example'`)
	if l := crudMust[[]store.DKIMKey](t)(st.ListDKIMKeys(ctx, store.ListOptions{})); len(l) != 0 {
		t.Fatalf("keys outlived their domain: %+v", l)
	}
}

func TestDNSBLSiteFiltersAreChecked(t *testing.T) {
	st, db, ctx := crudSetup(t)
	d := crudMust[store.DNSBLSite](t)(st.CreateDNSBLSite(ctx, store.DNSBLSite{Zone: "Zen.Spamhaus.ORG.",
		ReplyFilter: "127.0.0.[2..11]", Weight: 3, Active: true}))
	if d.Zone != "zen.spamhaus.org" || d.ID == 0 {
		t.Fatalf("created %+v", d)
	}
	crudMust[store.DNSBLSite](t)(st.CreateDNSBLSite(ctx, store.DNSBLSite{Zone: "list.dnswl.org",
		ReplyFilter: "127.0.[0..255].[1;2;3]", Weight: -2, Active: true}))
	crudMust[store.DNSBLSite](t)(st.CreateDNSBLSite(ctx, store.DNSBLSite{Zone: "off.example", Weight: 1, Active: false}))
	_, err := st.CreateDNSBLSite(ctx, store.DNSBLSite{Zone: "zen.spamhaus.org", ReplyFilter: "127.0.0.[2..11]", Weight: 1})
	crudWantErr(t, err, store.ErrConflict)
	for _, bad := range []store.DNSBLSite{
		{Zone: "x.example", ReplyFilter: "127.0.0", Weight: 1},
		{Zone: "x.example", ReplyFilter: "127.0.0.[2..]", Weight: 1},
		{Zone: "x.example", ReplyFilter: "127.0.0.2; DROP", Weight: 1},
		{Zone: "x.example", Weight: 0},
		{Zone: "not a zone", Weight: 1},
		{Zone: "x.example", Weight: 1, ReplyName: "a\r\nb"},
	} {
		_, err := st.CreateDNSBLSite(ctx, bad)
		crudWantErr(t, err, store.ErrInvalid)
	}
	act := crudMust[[]store.DNSBLSite](t)(st.ActiveDNSBLSites(ctx))
	if len(act) != 2 {
		t.Fatalf("active: %+v", act)
	}
	w := -5
	u := crudMust[store.DNSBLSite](t)(st.UpdateDNSBLSite(ctx, act[0].ID, store.DNSBLSitePatch{Weight: &w}))
	if u.Weight != -5 {
		t.Fatalf("updated %+v", u)
	}
	if a := crudAudit(t, db, "dnsbl"); len(a) != 4 || a[0].Key != "zen.spamhaus.org" {
		t.Fatalf("audit: %+v", a)
	}
	if err := st.DeleteDNSBLSite(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
}

func TestDomainPolicyDefaultsAliasesAndCascade(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('a.example')`)
	crudExec(t, db, `INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('alias.example', 'a.example')`)

	p := crudMust[store.DomainPolicy](t)(st.EffectiveDomainPolicy(ctx, "a.example"))
	if p.Greylisting || p.DMARCFailure != store.DMARCHonour || p.MessagesPerHour != nil {
		t.Fatalf("defaults: %+v", p)
	}
	hour := 10
	crudMust[store.DomainPolicy](t)(st.PutDomainPolicy(ctx, store.DomainPolicy{Domain: "A.example", Greylisting: true,
		DMARCFailure: store.DMARCQuarantine, SendLimits: store.SendLimits{MessagesPerHour: &hour}, Active: true}))
	p = crudMust[store.DomainPolicy](t)(st.EffectiveDomainPolicy(ctx, "Alias.Example"))
	if p.Domain != "a.example" || !p.Greylisting || p.DMARCFailure != store.DMARCQuarantine || *p.MessagesPerHour != 10 {
		t.Fatalf("through the alias domain: %+v", p)
	}
	// Put replaces.
	crudMust[store.DomainPolicy](t)(st.PutDomainPolicy(ctx, store.DomainPolicy{Domain: "a.example", Active: true}))
	if g := crudMust[store.DomainPolicy](t)(st.GetDomainPolicy(ctx, "a.example")); g.Greylisting || g.MessagesPerHour != nil || g.DMARCFailure != "honour" {
		t.Fatalf("after replace: %+v", g)
	}
	_, err := st.PutDomainPolicy(ctx, store.DomainPolicy{Domain: "a.example", DMARCFailure: "ignore"})
	crudWantErr(t, err, store.ErrInvalid)
	_, err = st.PutDomainPolicy(ctx, store.DomainPolicy{Domain: "nowhere.example"})
	crudWantErr(t, err, store.ErrNotFound)
	zero := 0
	_, err = st.PutMailboxPolicy(ctx, store.MailboxPolicy{Mailbox: "x@a.example"})
	crudWantErr(t, err, store.ErrNotFound)
	crudExec(t, db, `INSERT INTO mailbox (address, maildir) VALUES ('u@a.example', '')`)
	_, err = st.PutMailboxPolicy(ctx, store.MailboxPolicy{Mailbox: "u@a.example", SendLimits: store.SendLimits{MessagesPerDay: &zero}})
	crudWantErr(t, err, store.ErrInvalid)
	mp := crudMust[store.MailboxPolicy](t)(st.PutMailboxPolicy(ctx, store.MailboxPolicy{Mailbox: "U@a.example",
		SendLimits: store.SendLimits{MessagesPerDay: &hour}, Active: true}))
	if mp.Mailbox != "u@a.example" || mp.Domain != "a.example" {
		t.Fatalf("mailbox policy %+v", mp)
	}
	if a := crudAudit(t, db, "mailbox_policy"); len(a) != 1 || a[0].Domain == nil || *a[0].Domain != "a.example" {
		t.Fatalf("audit: %+v", a)
	}
	crudExec(t, db, `DELETE FROM domain WHERE name = 'a.example'`)
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM domain_policy) + (SELECT count(*) FROM mailbox_policy)`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("policies outlived their domain: %d %v", n, err)
	}
}

func TestGreylistUpdateSerialisesAndExpires(t *testing.T) {
	st, _, ctx := crudSetup(t)
	key := store.GreylistKey{Client: netip.MustParsePrefix("192.0.2.0/24"), Sender: "a@x.example", Recipient: "b@y.example"}
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	d, err := st.GreylistUpdate(ctx, key, t0, func(cur store.GreylistEntry, isNew bool) store.GreylistDecision {
		if !isNew || !cur.FirstSeen.Equal(t0) || cur.Count != 1 {
			t.Errorf("first attempt: %+v new=%v", cur, isNew)
		}
		return store.GreylistDecision{Entry: cur}
	})
	if err != nil || d.Entry.PassedAt != nil {
		t.Fatalf("%+v %v", d, err)
	}
	t1 := t0.Add(10 * time.Minute)
	_, err = st.GreylistUpdate(ctx, key, t1, func(cur store.GreylistEntry, isNew bool) store.GreylistDecision {
		if isNew || !cur.FirstSeen.Equal(t0) {
			t.Errorf("second attempt: %+v new=%v", cur, isNew)
		}
		cur.LastSeen, cur.PassedAt, cur.Count = t1, &t1, cur.Count+1
		return store.GreylistDecision{Entry: cur, ClientPassed: true}
	})
	if err != nil {
		t.Fatal(err)
	}
	c, found, err := st.GreylistClientState(ctx, key.Client)
	if err != nil || !found || c.Passes != 1 || !c.FirstPass.Equal(t1) {
		t.Fatalf("client: %+v %v %v", c, found, err)
	}
	if err := st.TouchGreylistClient(ctx, key.Client, t1.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := st.ExpireGreylist(ctx, t1.Add(time.Minute)); err != nil || n != 1 {
		t.Fatalf("expire: %d %v (only the triplet is that old)", n, err)
	}
	if n, err := st.ExpireGreylist(ctx, t1.Add(2*time.Hour)); err != nil || n != 1 {
		t.Fatalf("expire: %d %v", n, err)
	}
}

func TestSendCountersAcrossWindows(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('a.example')`)
	crudExec(t, db, `INSERT INTO mailbox (address, maildir) VALUES ('u@a.example', ''), ('v@a.example', '')`)
	one, five := 1, 5
	crudMust[store.MailboxPolicy](t)(st.PutMailboxPolicy(ctx, store.MailboxPolicy{Mailbox: "u@a.example",
		SendLimits: store.SendLimits{MessagesPerHour: &one}, Active: true}))
	crudMust[store.DomainPolicy](t)(st.PutDomainPolicy(ctx, store.DomainPolicy{Domain: "a.example",
		SendLimits: store.SendLimits{RecipientsPerMessage: &five}, Active: true}))

	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		who string
		at  time.Time
	}{
		{"u@a.example", now.Add(-23 * time.Hour)},
		{"u@a.example", now.Add(-30 * time.Minute)},
		{"U@A.example", now.Add(-time.Minute)},
		{"v@a.example", now.Add(-2 * time.Hour)},
		{"u@a.example", now.Add(-25 * time.Hour)}, // out of every window
	} {
		if err := st.CountSend(ctx, c.who, 3, c.at); err != nil {
			t.Fatal(err)
		}
	}
	s, err := st.SendStatus(ctx, "u@a.example", now)
	if err != nil {
		t.Fatal(err)
	}
	if s.MailboxSent != (store.SendCounts{LastHour: 2, LastDay: 3}) || s.DomainSent != (store.SendCounts{LastHour: 2, LastDay: 4}) {
		t.Fatalf("counts: %+v", s)
	}
	if *s.MailboxLimits.MessagesPerHour != 1 || s.MailboxLimits.MessagesPerDay != nil || *s.DomainLimits.RecipientsPerMessage != 5 {
		t.Fatalf("limits: %+v", s)
	}
	if n, err := st.PruneSendCounters(ctx, now.Add(-24*time.Hour)); err != nil || n != 2 {
		t.Fatalf("prune: %d %v", n, err)
	}
	// The enqueue transaction may count too.
	if err := store.CountSend(context.Background(), db.Pool, "v@a.example", 1, now); err != nil {
		t.Fatal(err)
	}
}
