package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/store"
)

func TestAdminSessionIdleAndAbsoluteExpiry(t *testing.T) {
	st, db, ctx := crudSetup(t)
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	hash := strings.Repeat("ab", 32)
	s := store.AdminSession{IDHash: hash, Kind: store.SessionAdmin, Principal: "root", CreatedAt: t0, LastSeenAt: t0,
		IdleExpiresAt: t0.Add(30 * time.Minute), ExpiresAt: t0.Add(time.Hour), RemoteAddr: "192.0.2.1"}
	if err := st.CreateAdminSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	crudWantErr(t, st.CreateAdminSession(ctx, s), store.ErrConflict)
	// A clear-text id is refused by the schema.
	bad := s
	bad.IDHash = "not-a-hash"
	crudWantErr(t, st.CreateAdminSession(ctx, bad), store.ErrInvalid)

	got := crudMust[store.AdminSession](t)(st.TouchAdminSession(ctx, hash, t0.Add(20*time.Minute), 30*time.Minute))
	if got.Principal != "root" || !got.IdleExpiresAt.Equal(t0.Add(50*time.Minute)) || !got.LastSeenAt.Equal(t0.Add(20*time.Minute)) {
		t.Fatalf("touched %+v", got)
	}
	// The idle expiry never passes the absolute one.
	got = crudMust[store.AdminSession](t)(st.TouchAdminSession(ctx, hash, t0.Add(45*time.Minute), 30*time.Minute))
	if !got.IdleExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("idle expiry %v past the absolute %v", got.IdleExpiresAt, got.ExpiresAt)
	}
	_, err := st.TouchAdminSession(ctx, hash, t0.Add(time.Hour), 30*time.Minute)
	crudWantErr(t, err, store.ErrNotFound)
	// An expired session is deleted when found.
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM admin_session`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("sessions left: %d %v", n, err)
	}

	// Idle expiry, sweeping, and deleting a principal's sessions.
	for i, p := range []string{"a", "a", "b"} {
		s := s
		s.IDHash = strings.Repeat(string(rune('0'+i)), 64)
		s.Principal = p
		if err := st.CreateAdminSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	_, err = st.TouchAdminSession(ctx, strings.Repeat("2", 64), t0.Add(31*time.Minute), 30*time.Minute)
	crudWantErr(t, err, store.ErrNotFound)
	if k := crudMust[int64](t)(st.DeleteAdminSessionsOf(ctx, store.SessionAdmin, "a", strings.Repeat("0", 64))); k != 1 {
		t.Fatalf("deleted %d sessions of a", k)
	}
	if _, err := st.TouchAdminSession(ctx, strings.Repeat("0", 64), t0.Add(time.Minute), 30*time.Minute); err != nil {
		t.Fatalf("kept session: %v", err)
	}
	if k := crudMust[int64](t)(st.SweepAdminSessions(ctx, t0.Add(2*time.Hour), time.Hour)); k != 1 {
		t.Fatalf("swept %d", k)
	}
	// Sessions are not audited: a login is not a configuration change.
	if rows := crudAudit(t, db, "admin_session"); len(rows) != 0 {
		t.Fatalf("audited sessions: %+v", rows)
	}
}

func TestLoginThrottleCountsWithinAWindowAndBlocks(t *testing.T) {
	st, _, ctx := crudSetup(t)
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	win, blk := 10*time.Minute, 5*time.Minute
	keys := []string{"admin:ada", "ip:192.0.2.1"}
	for i := range 2 {
		if _, blocked, err := st.RecordLoginFailure(ctx, "admin:ada", t0.Add(time.Duration(i)*time.Minute), win, 3, blk); err != nil || blocked {
			t.Fatalf("failure %d: blocked %v %v", i, blocked, err)
		}
	}
	// A failure after the window starts a new count.
	if _, blocked, err := st.RecordLoginFailure(ctx, "admin:ada", t0.Add(11*time.Minute), win, 3, blk); err != nil || blocked {
		t.Fatalf("new window: blocked %v %v", blocked, err)
	}
	st.RecordLoginFailure(ctx, "admin:ada", t0.Add(12*time.Minute), win, 3, blk) //nolint:errcheck
	until, blocked, err := st.RecordLoginFailure(ctx, "admin:ada", t0.Add(13*time.Minute), win, 3, blk)
	if err != nil || !blocked || !until.Equal(t0.Add(18*time.Minute)) {
		t.Fatalf("third failure in a window: %v %v %v", until, blocked, err)
	}
	got, b, err := st.LoginBlockedUntil(ctx, keys, t0.Add(14*time.Minute))
	if err != nil || !b || !got.Equal(until) {
		t.Fatalf("blocked until %v %v %v", got, b, err)
	}
	// A success does not lift a block in force.
	if err := st.ClearLoginFailures(ctx, "admin:ada", t0.Add(14*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, b, _ := st.LoginBlockedUntil(ctx, keys, t0.Add(14*time.Minute)); !b {
		t.Fatal("block lifted by a clear")
	}
	if _, b, _ := st.LoginBlockedUntil(ctx, keys, t0.Add(18*time.Minute)); b {
		t.Fatal("still blocked after the block")
	}
	if n := crudMust[int64](t)(st.SweepAdminSessions(ctx, t0.Add(30*time.Minute), win)); n != 1 {
		t.Fatalf("swept %d throttle rows", n)
	}
}
