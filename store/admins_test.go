package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/store"
)

func TestAdminCRUDRoundTrip(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('a.test'), ('b.test')`)
	crudExecFails(t, db, "23514", `INSERT INTO admin (username, password) VALUES ('Boss', 'x')`)

	a := crudMust[store.Admin](t)(st.CreateAdmin(ctx, store.Admin{Username: "Root", Password: "{PLAIN}x", Superadmin: true, Active: true}, nil))
	if a.Username != "root" || !a.Superadmin || a.TOTPEnabled || len(a.Domains) != 0 {
		t.Fatalf("created %+v", a)
	}
	d := crudMust[store.Admin](t)(st.CreateAdmin(ctx, store.Admin{Username: "helper", Password: "x", Active: true}, []string{"a.test", "b.test"}))
	if strings.Join(d.Domains, ",") != "a.test,b.test" {
		t.Fatalf("domains %v", d.Domains)
	}
	// An unknown domain writes nothing.
	_, err := st.CreateAdmin(ctx, store.Admin{Username: "ghost", Password: "x", Active: true}, []string{"a.test", "nowhere.test"})
	crudWantErr(t, err, store.ErrNotFound)
	_, err = st.GetAdmin(ctx, "ghost")
	crudWantErr(t, err, store.ErrNotFound)
	_, err = st.CreateAdmin(ctx, store.Admin{Username: "root", Password: "x", Active: true}, nil)
	crudWantErr(t, err, store.ErrConflict)

	u := crudMust[store.Admin](t)(st.UpdateAdmin(ctx, "helper", store.AdminPatch{
		Superadmin: crudPtr(true), TOTPSecret: store.SetValue("JBSWY3DPEHPK3PXP"), TOTPLastStep: store.SetValue[int64](42)}))
	if !u.Superadmin || !u.TOTPEnabled || *u.TOTPLastStep != 42 {
		t.Fatalf("updated %+v", u)
	}
	if err := st.SetAdminPassword(ctx, "helper", "{PLAIN}new"); err != nil {
		t.Fatal(err)
	}
	if g := crudMust[store.Admin](t)(st.GetAdmin(ctx, "helper")); g.Password != "{PLAIN}new" {
		t.Fatalf("password %q", g.Password)
	}

	// domain_admin
	// All or none.
	_, err = st.AddDomainAdmins(ctx, "root", "a.test", "nowhere.test")
	crudWantErr(t, err, store.ErrNotFound)
	if g := crudMust[store.Admin](t)(st.GetAdmin(ctx, "root")); len(g.Domains) != 0 {
		t.Fatalf("half-written grants %v", g.Domains)
	}
	_, err = st.AddDomainAdmins(ctx, "helper", "a.test")
	crudWantErr(t, err, store.ErrConflict)
	_, err = st.AddDomainAdmins(ctx, "nobody", "a.test")
	crudWantErr(t, err, store.ErrNotFound)
	crudMust[[]store.DomainAdmin](t)(st.AddDomainAdmins(ctx, "root", "b.test"))
	if l := crudMust[[]store.Admin](t)(st.ListAdmins(ctx, store.ListOptions{Domain: "b.test"})); len(l) != 2 {
		t.Fatalf("admins of b.test %+v", l)
	}
	if l := crudMust[[]store.Admin](t)(st.ListAdmins(ctx, store.ListOptions{Scope: []string{"a.test"}})); len(l) != 1 || l[0].Username != "helper" {
		t.Fatalf("admins in scope a.test %+v", l)
	}
	if l := crudMust[[]store.DomainAdmin](t)(st.ListDomainAdmins(ctx, "helper", store.ListOptions{})); len(l) != 2 {
		t.Fatalf("domains of helper %+v", l)
	}
	da := crudMust[store.DomainAdmin](t)(st.SetDomainAdminActive(ctx, "helper", "a.test", false))
	if da.Active {
		t.Fatalf("grant still active: %+v", da)
	}
	crudWantErr(t, st.RemoveDomainAdmins(ctx, "helper", "a.test", "nowhere.test"), store.ErrNotFound)
	if g := crudMust[store.Admin](t)(st.GetAdmin(ctx, "helper")); len(g.Domains) != 2 {
		t.Fatalf("half-removed grants: %v", g.Domains)
	}
	if err := st.RemoveDomainAdmins(ctx, "helper", "a.test"); err != nil {
		t.Fatal(err)
	}
	crudWantErr(t, st.RemoveDomainAdmins(ctx, "helper", "a.test"), store.ErrNotFound)
	if l := crudMust[[]store.DomainAdmin](t)(st.ListDomainAdmins(ctx, "", store.ListOptions{Domain: "a.test"})); len(l) != 0 {
		t.Fatalf("grants of a.test %+v", l)
	}

	// api_token
	hash := strings.Repeat("ab", 32)
	exp := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Microsecond)
	tok := crudMust[store.APIToken](t)(st.CreateAPIToken(ctx, store.APIToken{Admin: "helper", Name: "ci", TokenHash: hash, ExpiresAt: &exp, Active: true}))
	if tok.ID == 0 || tok.Admin != "helper" || !tok.ExpiresAt.Equal(exp) {
		t.Fatalf("token %+v", tok)
	}
	_, err = st.CreateAPIToken(ctx, store.APIToken{Admin: "helper", Name: "other", TokenHash: "not-hex", Active: true})
	crudWantErr(t, err, store.ErrInvalid)
	_, err = st.CreateAPIToken(ctx, store.APIToken{Admin: "helper", Name: "ci", TokenHash: strings.Repeat("cd", 32), Active: true})
	crudWantErr(t, err, store.ErrConflict)
	if g := crudMust[store.APIToken](t)(st.GetAPITokenByHash(ctx, hash)); g.ID != tok.ID {
		t.Fatalf("by hash %+v", g)
	}
	ut := crudMust[store.APIToken](t)(st.UpdateAPIToken(ctx, tok.ID, store.APITokenPatch{ExpiresAt: store.SetNull[time.Time](), Active: crudPtr(false)}))
	if ut.ExpiresAt != nil || ut.Active {
		t.Fatalf("updated token %+v", ut)
	}
	if l := crudMust[[]store.APIToken](t)(st.ListAPITokens(ctx, "helper", store.ListOptions{})); len(l) != 1 {
		t.Fatalf("tokens %+v", l)
	}
	for _, a := range crudAudit(t, db, "api_token") {
		if _, ok := a.New["token_hash"]; ok {
			t.Errorf("token hash in the audit log: %v", a.New)
		}
	}
	// Deleting the admin takes its grants and tokens.
	if err := st.DeleteAdmin(ctx, "helper"); err != nil {
		t.Fatal(err)
	}
	_, err = st.GetAPIToken(ctx, tok.ID)
	crudWantErr(t, err, store.ErrNotFound)
	if l := crudMust[[]store.DomainAdmin](t)(st.ListDomainAdmins(ctx, "helper", store.ListOptions{})); len(l) != 0 {
		t.Fatalf("grants of a deleted admin %+v", l)
	}
	crudWantErr(t, st.DeleteAdmin(ctx, "helper"), store.ErrNotFound)
}
