package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Session kinds (admin_session.kind).
const (
	// SessionAdmin is an admin's session: Principal is admin.username.
	SessionAdmin = "admin"
	// SessionMailbox is a mailbox user's self-service session: Principal is
	// mailbox.address.
	SessionMailbox = "mailbox"
)

// AdminSession is a row of admin_session: one logged-in browser of the
// admin service. Only the SHA-256 of the session id is stored (IDHash,
// lower-case hex); the id itself lives in the client's cookie.
type AdminSession struct {
	IDHash        string
	Kind          string // SessionAdmin or SessionMailbox
	Principal     string
	CreatedAt     time.Time
	LastSeenAt    time.Time
	IdleExpiresAt time.Time // the session ends here unless a request extends it
	ExpiresAt     time.Time // the absolute end, never extended
	RemoteAddr    string
	UserAgent     string
}

const adminSessionColumns = `id_hash, kind, principal, created_at, last_seen_at, idle_expires_at, expires_at,
	remote_addr, user_agent`

func scanAdminSession(r pgx.Row) (AdminSession, error) {
	var a AdminSession
	err := r.Scan(&a.IDHash, &a.Kind, &a.Principal, &a.CreatedAt, &a.LastSeenAt, &a.IdleExpiresAt, &a.ExpiresAt,
		&a.RemoteAddr, &a.UserAgent)
	return a, err
}

// CreateAdminSession inserts a (every field; CreatedAt as given). An id
// hash that exists is ErrConflict.
func (s *Store) CreateAdminSession(ctx context.Context, a AdminSession) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO admin_session (id_hash, kind, principal, created_at, last_seen_at, idle_expires_at, expires_at,
			remote_addr, user_agent)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		a.IDHash, a.Kind, a.Principal, a.CreatedAt, a.LastSeenAt, a.IdleExpiresAt, a.ExpiresAt, a.RemoteAddr, a.UserAgent)
	if err != nil {
		return fmt.Errorf("create admin session: %w", MapError(err))
	}
	return nil
}

// TouchAdminSession returns the session idHash if it is live at now, and
// moves its idle expiry to now+idle (never past its absolute expiry), in one
// statement. A missing or expired session is ErrNotFound; an expired one is
// deleted.
func (s *Store) TouchAdminSession(ctx context.Context, idHash string, now time.Time, idle time.Duration) (AdminSession, error) {
	a, err := scanAdminSession(s.pool.QueryRow(ctx, `
		UPDATE admin_session
		SET last_seen_at = $2,
		    idle_expires_at = least($2::timestamptz + make_interval(secs => $3), expires_at)
		WHERE id_hash = $1 AND idle_expires_at > $2 AND expires_at > $2
		RETURNING `+adminSessionColumns, idHash, now, idle.Seconds()))
	if err == nil {
		return a, nil
	}
	err = MapError(err)
	if err == ErrNotFound {
		// Expired (or never existed): make sure nothing is left behind.
		if _, derr := s.pool.Exec(ctx, `DELETE FROM admin_session WHERE id_hash = $1`, idHash); derr != nil {
			return AdminSession{}, fmt.Errorf("delete expired admin session: %w", derr)
		}
	}
	return AdminSession{}, fmt.Errorf("admin session: %w", err)
}

// DeleteAdminSession deletes the session idHash (logout). A missing
// session is not an error.
func (s *Store) DeleteAdminSession(ctx context.Context, idHash string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM admin_session WHERE id_hash = $1`, idHash); err != nil {
		return fmt.Errorf("delete admin session: %w", MapError(err))
	}
	return nil
}

// DeleteAdminSessionsOf deletes every session of principal of kind except
// keepIDHash ("" keeps none), after a password change or when an account is
// disabled, and returns how many it deleted.
func (s *Store) DeleteAdminSessionsOf(ctx context.Context, kind, principal, keepIDHash string) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM admin_session WHERE kind = $1 AND principal = $2 AND id_hash <> $3`,
		kind, principal, keepIDHash)
	if err != nil {
		return 0, fmt.Errorf("delete admin sessions of %s: %w", principal, MapError(err))
	}
	return tag.RowsAffected(), nil
}

// SweepAdminSessions deletes the sessions that have expired at now and the
// throttle rows whose window and block are both over (a window is
// throttleWindow long), and returns how many rows it deleted.
func (s *Store) SweepAdminSessions(ctx context.Context, now time.Time, throttleWindow time.Duration) (int64, error) {
	t1, err := s.pool.Exec(ctx, `DELETE FROM admin_session WHERE idle_expires_at <= $1 OR expires_at <= $1`, now)
	if err != nil {
		return 0, fmt.Errorf("sweep admin sessions: %w", MapError(err))
	}
	t2, err := s.pool.Exec(ctx, `
		DELETE FROM login_throttle
		WHERE window_start <= $1::timestamptz - make_interval(secs => $2)
		  AND (blocked_until IS NULL OR blocked_until <= $1)`, now, throttleWindow.Seconds())
	if err != nil {
		return 0, fmt.Errorf("sweep login throttle: %w", MapError(err))
	}
	return t1.RowsAffected() + t2.RowsAffected(), nil
}

// LoginBlockedUntil reports the latest time until which any of keys is
// blocked at now, and whether one is.
func (s *Store) LoginBlockedUntil(ctx context.Context, keys []string, now time.Time) (time.Time, bool, error) {
	var until *time.Time
	err := s.pool.QueryRow(ctx, `
		SELECT max(blocked_until) FROM login_throttle WHERE key = ANY ($1) AND blocked_until > $2`,
		keys, now).Scan(&until)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("login throttle: %w", MapError(err))
	}
	if until == nil {
		return time.Time{}, false, nil
	}
	return *until, true, nil
}

// RecordLoginFailure counts a failed login against key at now. Failures
// count within a window of window from the first one; the max-th failure
// in a window blocks key until now+block and starts a new window. It returns
// the block's end when this failure set one.
func (s *Store) RecordLoginFailure(ctx context.Context, key string, now time.Time, window time.Duration, max int, block time.Duration) (time.Time, bool, error) {
	var until time.Time
	blocked := false
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var failures int
		err := tx.QueryRow(ctx, `
			INSERT INTO login_throttle (key, failures, window_start) VALUES ($1, 1, $2)
			ON CONFLICT (key) DO UPDATE SET
				failures = CASE WHEN login_throttle.window_start <= $2::timestamptz - make_interval(secs => $3)
				                THEN 1 ELSE login_throttle.failures + 1 END,
				window_start = CASE WHEN login_throttle.window_start <= $2::timestamptz - make_interval(secs => $3)
				                    THEN $2 ELSE login_throttle.window_start END
			RETURNING failures`, key, now, window.Seconds()).Scan(&failures)
		if err != nil {
			return err
		}
		if failures < max {
			return nil
		}
		blocked = true
		until = now.Add(block)
		_, err = tx.Exec(ctx, `UPDATE login_throttle SET failures = 0, window_start = $2, blocked_until = $3 WHERE key = $1`,
			key, now, until)
		return err
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("record login failure: %w", err)
	}
	return until, blocked, nil
}

// ClearLoginFailures forgets the failures of key (after a successful
// login); a block in force at now stays.
func (s *Store) ClearLoginFailures(ctx context.Context, key string, now time.Time) error {
	if _, err := s.pool.Exec(ctx, `
		DELETE FROM login_throttle WHERE key = $1 AND (blocked_until IS NULL OR blocked_until <= $2)`, key, now); err != nil {
		return fmt.Errorf("clear login failures: %w", MapError(err))
	}
	return nil
}
