package store_test

import (
	"strings"
	"testing"

	"github.com/facteur/facteur/store"
)

func TestTransportCRUDRoundTrip(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO transport (key, nexthop) VALUES ('Example.COM.', 'smtp:[mx.example.net]:25')`)
	tr := crudMust[store.Transport](t)(st.GetTransport(ctx, "example.com"))
	if tr.Nexthop != "smtp:[mx.example.net]:25" || !tr.Active {
		t.Fatalf("raw transport stored as %+v", tr)
	}
	crudExecFails(t, db, "23514", `INSERT INTO transport (key, nexthop) VALUES ('a.test', 'carrier-pigeon:')`)
	crudExecFails(t, db, "23514", `INSERT INTO transport (key, nexthop) VALUES ('bücher.example', 'smtp')`)
	crudExecFails(t, db, "23514", `INSERT INTO transport (key, nexthop) VALUES ('user@', 'smtp')`)

	a := crudMust[store.Transport](t)(st.CreateTransport(ctx, store.Transport{
		Key: "John@Example.com", Nexthop: "lmtp:unix:/run/dovecot/lmtp", Description: "john's", Active: true}))
	if a.Key != "john@example.com" {
		t.Fatalf("created %+v", a)
	}
	crudMust[store.Transport](t)(st.CreateTransport(ctx, store.Transport{Key: "_sub.example.org", Nexthop: "discard", Active: true}))
	crudMust[store.Transport](t)(st.CreateTransport(ctx, store.Transport{Key: "x@myexample.com", Nexthop: "discard", Active: true}))
	_, err := st.CreateTransport(ctx, store.Transport{Key: "example.com", Nexthop: "maildir", Active: true})
	crudWantErr(t, err, store.ErrConflict)
	_, err = st.CreateTransport(ctx, store.Transport{Key: "b.test", Nexthop: "nonsense", Active: true})
	crudWantErr(t, err, store.ErrInvalid)

	keys := func(l []store.Transport) string {
		var s []string
		for _, x := range l {
			s = append(s, x.Key)
		}
		return strings.Join(s, " ")
	}
	if got := keys(crudMust[[]store.Transport](t)(st.ListTransports(ctx, store.ListOptions{Domain: "example.com"}))); got != "example.com john@example.com" {
		t.Fatalf("transports of example.com: %q", got)
	}
	if got := keys(crudMust[[]store.Transport](t)(st.ListTransports(ctx, store.ListOptions{Search: "lmtp"}))); got != "john@example.com" {
		t.Fatalf("search by next hop: %q", got)
	}
	if got := keys(crudMust[[]store.Transport](t)(st.ListTransports(ctx, store.ListOptions{Search: "_"}))); got != "_sub.example.org" {
		t.Fatalf("search _: %q", got)
	}
	u := crudMust[store.Transport](t)(st.UpdateTransport(ctx, "example.com", store.TransportPatch{
		Nexthop: crudPtr("error:5.7.1 gone"), Active: crudPtr(false)}))
	if u.Nexthop != "error:5.7.1 gone" || u.Active {
		t.Fatalf("updated %+v", u)
	}
	_, err = st.UpdateTransport(ctx, "example.com", store.TransportPatch{Nexthop: crudPtr("bogus")})
	crudWantErr(t, err, store.ErrInvalid)
	if err := st.DeleteTransport(ctx, "example.com"); err != nil {
		t.Fatal(err)
	}
	crudWantErr(t, st.DeleteTransport(ctx, "example.com"), store.ErrNotFound)
}
