package store_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store"
)

func TestRelayCredentialRoundTripAndLookup(t *testing.T) {
	st, db, ctx := crudSetup(t)

	c := crudMust[store.RelayCredential](t)(st.CreateRelayCredential(ctx, store.RelayCredential{
		Nexthop: "[SMTP.Provider.Example.]:587", Username: "acct@provider.example", Password: "s3cret pass", Active: true}))
	if c.Nexthop != "[smtp.provider.example]:587" || c.Password != "s3cret pass" {
		t.Fatalf("created %+v", c)
	}
	user, pass, ok, err := st.RelayCredentials(ctx, "[smtp.provider.example]:587")
	if err != nil || !ok || user != "acct@provider.example" || pass != "s3cret pass" {
		t.Fatalf("lookup: %q %q %v %v", user, pass, ok, err)
	}
	if _, _, ok, err := st.RelayCredentials(ctx, "[SMTP.provider.example]:587"); err != nil || !ok {
		t.Fatalf("case-insensitive lookup: %v %v", ok, err)
	}
	if _, _, ok, err := st.RelayCredentials(ctx, "smtp.provider.example:587"); err != nil || ok {
		t.Fatalf("a different next hop form matched: %v %v", ok, err)
	}

	_, err = st.CreateRelayCredential(ctx, store.RelayCredential{Nexthop: "[smtp.provider.example]:587", Username: "x", Password: "y", Active: true})
	crudWantErr(t, err, store.ErrConflict)
	for _, bad := range []store.RelayCredential{
		{Nexthop: "smtp:[a.example]:25", Username: "u", Password: "p"},
		{Nexthop: "a.example", Username: "", Password: "p"},
		{Nexthop: "a.example", Username: "u", Password: ""},
		{Nexthop: "a.example", Username: "u", Password: "p\r\nRSET"},
	} {
		_, err := st.CreateRelayCredential(ctx, bad)
		crudWantErr(t, err, store.ErrInvalid)
	}

	off := false
	u := crudMust[store.RelayCredential](t)(st.UpdateRelayCredential(ctx, "[smtp.provider.example]:587",
		store.RelayCredentialPatch{Password: crudPtr("rotated"), Active: &off}))
	if u.Password != "rotated" || u.Active || !u.UpdatedAt.After(c.UpdatedAt) {
		t.Fatalf("updated %+v", u)
	}
	if _, _, ok, err := st.RelayCredentials(ctx, "[smtp.provider.example]:587"); err != nil || ok {
		t.Fatalf("an inactive credential was returned: %v %v", ok, err)
	}
	l := crudMust[[]store.RelayCredential](t)(st.ListRelayCredentials(ctx, store.ListOptions{Search: "provider"}))
	if len(l) != 1 || l[0].Nexthop != "[smtp.provider.example]:587" {
		t.Fatalf("list: %+v", l)
	}
	b, err := json.Marshal(l[0])
	if err != nil || strings.Contains(string(b), "rotated") {
		t.Fatalf("JSON carries the password: %s %v", b, err)
	}

	// The password never reaches the audit log, whoever writes.
	crudExec(t, db, `INSERT INTO relay_credential (nexthop, username, password) VALUES ('relay.example', 'u', 'rawsecret')`)
	var leaked int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE table_name = 'relay_credential'
		AND (coalesce(old::text, '') LIKE '%secret%' OR coalesce(new::text, '') LIKE '%secret%'
		     OR coalesce(old::text, '') LIKE '%rotated%' OR coalesce(new::text, '') LIKE '%rotated%')`).Scan(&leaked); err != nil {
		t.Fatal(err)
	}
	var audited int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE table_name = 'relay_credential'`).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	if leaked != 0 || audited != 3 {
		t.Fatalf("audit rows: %d, with the password: %d", audited, leaked)
	}

	if err := st.DeleteRelayCredential(ctx, "[SMTP.provider.example]:587"); err != nil {
		t.Fatal(err)
	}
	crudWantErr(t, st.DeleteRelayCredential(ctx, "[smtp.provider.example]:587"), store.ErrNotFound)
}

func TestRelayCredentialChangeIsAnnounced(t *testing.T) {
	st, db, ctx := crudSetup(t)
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN facteur_config"); err != nil {
		t.Fatal(err)
	}
	crudMust[store.RelayCredential](t)(st.CreateRelayCredential(ctx, store.RelayCredential{
		Nexthop: "[relay.example]:25", Username: "u", Password: "p", Active: true}))
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(wctx)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	if n.Payload != "relay_credential:[relay.example]:25" {
		t.Fatalf("payload %q", n.Payload)
	}
}

func TestRelayCredentialLookupErrorIsNotNotFound(t *testing.T) {
	st, _, ctx := crudSetup(t)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, ok, err := st.RelayCredentials(cctx, "[relay.example]:25"); err == nil || ok {
		t.Fatalf("lookup on a cancelled context: ok=%v err=%v", ok, err)
	}
}
