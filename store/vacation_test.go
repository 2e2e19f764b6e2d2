package store_test

import (
	"testing"
	"time"

	"github.com/facteur/facteur/store"
)

func TestVacationCRUDRoundTrip(t *testing.T) {
	st, db, ctx := crudSetup(t)
	crudExec(t, db, `INSERT INTO domain (name) VALUES ('example.com')`)
	crudExec(t, db, `INSERT INTO mailbox (address) VALUES ('john@example.com')`)
	from := time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC)
	until := from.Add(14 * 24 * time.Hour)
	v := crudMust[store.Vacation](t)(st.CreateVacation(ctx, store.Vacation{
		Mailbox: "john@example.com", Subject: "Away", Body: "Back in January.", ActiveFrom: &from, ActiveUntil: &until, Active: true}))
	if v.IntervalSeconds != store.DefaultVacationIntervalSeconds || v.Domain != "example.com" || !v.ActiveFrom.Equal(from) {
		t.Fatalf("created %+v", v)
	}
	_, err := st.CreateVacation(ctx, store.Vacation{Mailbox: "john@example.com", Active: true})
	crudWantErr(t, err, store.ErrConflict)
	_, err = st.CreateVacation(ctx, store.Vacation{Mailbox: "nobody@example.com", Active: true})
	crudWantErr(t, err, store.ErrNotFound)
	// The end must come after the start.
	_, err = st.UpdateVacation(ctx, "john@example.com", store.VacationPatch{ActiveUntil: store.SetValue(from.Add(-time.Hour))})
	crudWantErr(t, err, store.ErrInvalid)

	u := crudMust[store.Vacation](t)(st.UpdateVacation(ctx, "john@example.com", store.VacationPatch{
		Subject: crudPtr("Gone"), ActiveUntil: store.SetNull[time.Time](), IntervalSeconds: crudPtr[int32](0)}))
	if u.Subject != "Gone" || u.ActiveUntil != nil || u.IntervalSeconds != 0 || u.Body != "Back in January." {
		t.Fatalf("updated %+v", u)
	}
	if l := crudMust[[]store.Vacation](t)(st.ListVacations(ctx, store.ListOptions{Scope: []string{"example.com"}})); len(l) != 1 {
		t.Fatalf("list %+v", l)
	}
	if l := crudMust[[]store.Vacation](t)(st.ListVacations(ctx, store.ListOptions{Scope: []string{"other.test"}})); len(l) != 0 {
		t.Fatalf("scoped list %+v", l)
	}

	// vacation_notified: one reply per sender per interval.
	now := time.Now().UTC().Truncate(time.Microsecond)
	day := 24 * time.Hour
	for i, c := range []struct {
		at   time.Time
		want bool
	}{
		{now, true},
		{now.Add(time.Hour), false},
		{now.Add(day), true},
		{now.Add(day + time.Minute), false},
	} {
		ok, err := st.NoteVacationReply(ctx, "john@example.com", "Friend@Example.org", c.at, day)
		if err != nil {
			t.Fatal(err)
		}
		if ok != c.want {
			t.Errorf("reply %d at %v: recorded %v, want %v", i, c.at, ok, c.want)
		}
	}
	n := crudMust[store.VacationNotified](t)(st.GetVacationNotified(ctx, "john@example.com", "friend@example.org"))
	if !n.NotifiedAt.Equal(now.Add(day)) {
		t.Fatalf("last reply at %v, want %v", n.NotifiedAt, now.Add(day))
	}
	if l := crudMust[[]store.VacationNotified](t)(st.ListVacationNotified(ctx, "john@example.com", store.ListOptions{})); len(l) != 1 {
		t.Fatalf("notified list %+v", l)
	}
	if k := crudMust[int64](t)(st.ClearVacationNotified(ctx, "john@example.com")); k != 1 {
		t.Fatalf("cleared %d", k)
	}
	crudMust[bool](t)(st.NoteVacationReply(ctx, "john@example.com", "friend@example.org", now, day))
	if err := st.DeleteVacation(ctx, "john@example.com"); err != nil {
		t.Fatal(err)
	}
	_, err = st.GetVacationNotified(ctx, "john@example.com", "friend@example.org")
	crudWantErr(t, err, store.ErrNotFound)
	crudWantErr(t, st.DeleteVacation(ctx, "john@example.com"), store.ErrNotFound)
}
