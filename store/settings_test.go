package store_test

import (
	"testing"

	"github.com/facteur/facteur/store"
)

func TestSettingCRUDRoundTrip(t *testing.T) {
	st, db, ctx := crudSetup(t)
	s := crudMust[store.Setting](t)(st.CreateSetting(ctx, "recipient_delimiter", "+"))
	if s.Key != "recipient_delimiter" || s.Value != "+" {
		t.Fatalf("created %+v", s)
	}
	_, err := st.CreateSetting(ctx, "recipient_delimiter", "-")
	crudWantErr(t, err, store.ErrConflict)
	_, err = st.CreateSetting(ctx, "Bad Key", "x")
	crudWantErr(t, err, store.ErrInvalid)
	crudExecFails(t, db, "23514", `INSERT INTO setting (key, value) VALUES ('9lives', 'x')`)

	u := crudMust[store.Setting](t)(st.UpdateSetting(ctx, "recipient_delimiter", "-"))
	if u.Value != "-" {
		t.Fatalf("updated %+v", u)
	}
	_, err = st.UpdateSetting(ctx, "missing", "x")
	crudWantErr(t, err, store.ErrNotFound)
	crudMust[store.Setting](t)(st.PutSetting(ctx, "recipient_delimiter", "+"))
	crudMust[store.Setting](t)(st.PutSetting(ctx, store.SettingDefaultAliasTarget, "hostmaster@example.com"))
	if g := crudMust[store.Setting](t)(st.GetSetting(ctx, "recipient_delimiter")); g.Value != "+" {
		t.Fatalf("after put: %+v", g)
	}
	l := crudMust[[]store.Setting](t)(st.ListSettings(ctx, store.ListOptions{}))
	if len(l) != 2 || l[0].Key != "default_alias_target" || l[1].Key != "recipient_delimiter" {
		t.Fatalf("list %+v", l)
	}
	l = crudMust[[]store.Setting](t)(st.ListSettings(ctx, store.ListOptions{Search: "alias_t"}))
	if len(l) != 1 || l[0].Key != "default_alias_target" {
		t.Fatalf("search %+v", l)
	}
	if err := st.DeleteSetting(ctx, "recipient_delimiter"); err != nil {
		t.Fatal(err)
	}
	_, err = st.GetSetting(ctx, "recipient_delimiter")
	crudWantErr(t, err, store.ErrNotFound)
	crudWantErr(t, st.DeleteSetting(ctx, "recipient_delimiter"), store.ErrNotFound)
	if a := crudAudit(t, db, "setting"); len(a) != 5 || a[0].Actor != "test:crud" || a[4].Operation != "DELETE" {
		t.Fatalf("setting audit %+v", a)
	}
}
