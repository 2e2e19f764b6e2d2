package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// MailboxPassword returns the password hash of the mailbox address (already
// normalised by the caller) for a login check, and whether the mailbox may
// log in: the mailbox and its domain are both active. An unknown mailbox is
// ErrNotFound; any other error is a lookup failure, never "no such user".
func (s *Store) MailboxPassword(ctx context.Context, address string) (hash string, active bool, err error) {
	err = s.pool.QueryRow(ctx, `
		SELECT m.password, m.active AND d.active
		FROM mailbox m JOIN domain d ON d.name = m.domain
		WHERE m.address = $1`, address).Scan(&hash, &active)
	if err != nil {
		return "", false, fmt.Errorf("mailbox password %s: %w", address, MapError(err))
	}
	return hash, active, nil
}

// UpgradeMailboxPassword replaces the mailbox's password hash oldHash by
// newHash (a stronger hash of the same password, written after a successful
// login), only if the stored hash is still oldHash: a password changed in
// the meantime is never overwritten. It reports whether the row changed.
// The audit trail names the context's actor (WithActor).
func (s *Store) UpgradeMailboxPassword(ctx context.Context, address, oldHash, newHash string) (bool, error) {
	changed := false
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE mailbox SET password = $3 WHERE address = $1 AND password = $2`,
			address, oldHash, newHash)
		changed = tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("upgrade mailbox password %s: %w", address, err)
	}
	return changed, nil
}

// AppPasswordLogin is what a login with an app password needs of its row.
type AppPasswordLogin struct {
	ID         int64
	Hash       string
	LastUsedAt *time.Time
}

// AppPasswordForLogin returns the app password named name (compared
// case-insensitively) of the mailbox address (already normalised by the
// caller), as Dovecot's app-password passdb (docs/dovecot/dovecot-sql-app.conf.ext)
// finds it: only an active, unexpired app password with a password, of an
// active mailbox in an active domain, the first by id if names differ only
// in case. Anything else is ErrNotFound; any other error is a lookup
// failure.
func (s *Store) AppPasswordForLogin(ctx context.Context, address, name string) (AppPasswordLogin, error) {
	var l AppPasswordLogin
	err := s.pool.QueryRow(ctx, `
		SELECT a.id, a.password, a.last_used_at
		FROM app_password a
		  JOIN mailbox m ON m.address = a.mailbox
		  JOIN domain d ON d.name = m.domain
		WHERE a.mailbox = $1 AND lower(a.name) = lower($2)
		  AND a.active AND (a.expires_at IS NULL OR a.expires_at > now())
		  AND m.active AND d.active AND a.password <> ''
		ORDER BY a.id LIMIT 1`, address, name).Scan(&l.ID, &l.Hash, &l.LastUsedAt)
	if err != nil {
		return AppPasswordLogin{}, fmt.Errorf("app password %q of %s: %w", name, address, MapError(err))
	}
	return l, nil
}

// TouchAppPassword sets last_used_at of the app password id to now, unless
// it was set less than every ago (so that a busy client does not write a
// row, and an audit entry, per login).
func (s *Store) TouchAppPassword(ctx context.Context, id int64, now time.Time, every time.Duration) error {
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			UPDATE app_password SET last_used_at = $2
			WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $2::timestamptz - make_interval(secs => $3))`,
			id, now, every.Seconds())
		return err
	})
	if err != nil {
		return fmt.Errorf("touch app password %d: %w", id, err)
	}
	return nil
}
