package store_test

import (
	"net/netip"
	"testing"

	"github.com/facteur/facteur/store"
)

func TestSenderGrantCRUDRoundTrip(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('example.com'), ('other.test')`)
	crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('john@example.com'), ('jane@other.test')`)
	crudExec(t, db, `INSERT INTO sender_grant (mailbox, sender) VALUES ('JOHN@example.com', '@Example.NET.')`)
	raw := crudMust[[]store.SenderGrant](t)(st.ListSenderGrants(ctx, "john@example.com", store.ListOptions{}))
	if len(raw) != 1 || raw[0].Sender != "@example.net" || raw[0].Domain != "example.com" {
		t.Fatalf("raw grant stored as %+v", raw)
	}
	crudExecFails(t, db, "23514", `INSERT INTO sender_grant (mailbox, sender) VALUES ('john@example.com', 'nodomain')`)

	g := crudMust[store.SenderGrant](t)(st.CreateSenderGrant(ctx, store.SenderGrant{Mailbox: "john@example.com", Sender: "Sales@Example.com", Active: true}))
	if g.ID == 0 || g.Sender != "sales@example.com" {
		t.Fatalf("created %+v", g)
	}
	_, err := st.CreateSenderGrant(ctx, store.SenderGrant{Mailbox: "john@example.com", Sender: "sales@example.com", Active: true})
	crudWantErr(t, err, store.ErrConflict)
	_, err = st.CreateSenderGrant(ctx, store.SenderGrant{Mailbox: "nobody@example.com", Sender: "x@example.com", Active: true})
	crudWantErr(t, err, store.ErrNotFound)
	crudMust[store.SenderGrant](t)(st.CreateSenderGrant(ctx, store.SenderGrant{Mailbox: "jane@other.test", Sender: "@other.test", Active: true}))

	if l := crudMust[[]store.SenderGrant](t)(st.ListSenderGrants(ctx, "", store.ListOptions{Scope: []string{"other.test"}})); len(l) != 1 || l[0].Mailbox != "jane@other.test" {
		t.Fatalf("scoped list %+v", l)
	}
	if l := crudMust[[]store.SenderGrant](t)(st.ListSenderGrants(ctx, "", store.ListOptions{Search: "sales"})); len(l) != 1 || l[0].ID != g.ID {
		t.Fatalf("search %+v", l)
	}
	u := crudMust[store.SenderGrant](t)(st.UpdateSenderGrant(ctx, g.ID, store.SenderGrantPatch{Sender: crudPtr("@Example.com"), Active: crudPtr(false)}))
	if u.Sender != "@example.com" || u.Active {
		t.Fatalf("updated %+v", u)
	}
	if got := crudMust[store.SenderGrant](t)(st.GetSenderGrant(ctx, g.ID)); got != u {
		t.Fatalf("get %+v, want %+v", got, u)
	}
	if err := st.DeleteSenderGrant(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	crudWantErr(t, st.DeleteSenderGrant(ctx, g.ID), store.ErrNotFound)
	// Renaming the mailbox carries its grants along.
	crudExec(t, db, `UPDATE mailbox SET address = 'johnny@example.com' WHERE address = 'john@example.com'`)
	if l := crudMust[[]store.SenderGrant](t)(st.ListSenderGrants(ctx, "johnny@example.com", store.ListOptions{})); len(l) != 1 {
		t.Fatalf("grants after rename %+v", l)
	}
}

func TestClientAccessCRUDRoundTrip(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExecFails(t, db, "22P02", `INSERT INTO client_access (network, action) VALUES ('10.0.0.1/8', 'permit_relay')`)
	crudExecFails(t, db, "23514", `INSERT INTO client_access (network, action) VALUES ('10.0.0.0/8', 'permit_everything')`)
	_, err := st.CreateClientAccess(ctx, store.ClientAccess{Network: netip.MustParsePrefix("10.0.0.1/8"), Action: store.ActionPermitRelay, Active: true})
	crudWantErr(t, err, store.ErrInvalid)
	_, err = st.CreateClientAccess(ctx, store.ClientAccess{Network: netip.MustParsePrefix("10.0.0.0/8"), Action: "maybe", Active: true})
	crudWantErr(t, err, store.ErrInvalid)

	c := crudMust[store.ClientAccess](t)(st.CreateClientAccess(ctx, store.ClientAccess{
		Network: netip.MustParsePrefix("192.0.2.0/24"), Action: store.ActionPermitRelay, Description: "office", Active: true}))
	if c.ID == 0 || c.Network != netip.MustParsePrefix("192.0.2.0/24") || c.Action != "permit_relay" {
		t.Fatalf("created %+v", c)
	}
	_, err = st.CreateClientAccess(ctx, store.ClientAccess{Network: netip.MustParsePrefix("192.0.2.0/24"), Action: store.ActionPermitRelay, Active: true})
	crudWantErr(t, err, store.ErrConflict)
	crudMust[store.ClientAccess](t)(st.CreateClientAccess(ctx, store.ClientAccess{Network: netip.MustParsePrefix("2001:db8::/32"), Action: store.ActionReject, Active: true}))
	crudMust[store.ClientAccess](t)(st.CreateClientAccess(ctx, store.ClientAccess{Network: netip.MustParsePrefix("198.51.100.7/32"), Action: store.ActionPermitQMQP, Active: true}))

	l := crudMust[[]store.ClientAccess](t)(st.ListClientAccess(ctx, store.ListOptions{}))
	if len(l) != 3 || l[0].Network.String() != "192.0.2.0/24" || l[1].Network.String() != "198.51.100.7/32" || l[2].Network.String() != "2001:db8::/32" {
		t.Fatalf("list %+v", l)
	}
	if l := crudMust[[]store.ClientAccess](t)(st.ListClientAccess(ctx, store.ListOptions{Search: "OFFICE"})); len(l) != 1 {
		t.Fatalf("search %+v", l)
	}
	u := crudMust[store.ClientAccess](t)(st.UpdateClientAccess(ctx, c.ID, store.ClientAccessPatch{Action: crudPtr(store.ActionReject), Description: crudPtr("")}))
	if u.Action != "reject" || u.Description != "" || u.Network != c.Network {
		t.Fatalf("updated %+v", u)
	}
	if err := st.DeleteClientAccess(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	_, err = st.GetClientAccess(ctx, c.ID)
	crudWantErr(t, err, store.ErrNotFound)
	if a := crudAudit(t, db, "client_access"); len(a) == 0 || a[0].Key != "192.0.2.0/24" {
		t.Fatalf("client access audit %+v", a)
	}
}
