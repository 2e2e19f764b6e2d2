package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Settings every node shares, kept in the setting table.
const (
	// SettingDefaultAliasTarget is the address that postmaster@ and abuse@
	// of every new domain point at (the database creates them).
	SettingDefaultAliasTarget = "default_alias_target"
)

// Setting is a row of the setting table.
type Setting struct {
	Key       string    `json:"key"`
	Value     string    `json:"value"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

const settingColumns = `key, value, created_at, updated_at`

func scanSetting(r pgx.Row) (Setting, error) {
	var st Setting
	err := r.Scan(&st.Key, &st.Value, &st.CreatedAt, &st.UpdatedAt)
	return st, err
}

// CreateSetting inserts key = value; a key that exists is ErrConflict, a key
// that is not lower-case [a-z][a-z0-9_]* is ErrInvalid.
func (s *Store) CreateSetting(ctx context.Context, key, value string) (Setting, error) {
	var out Setting
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanSetting(tx.QueryRow(ctx,
			`INSERT INTO setting (key, value) VALUES ($1, $2) RETURNING `+settingColumns, key, value))
		return err
	})
	if err != nil {
		return Setting{}, fmt.Errorf("create setting %s: %w", key, err)
	}
	return out, nil
}

// PutSetting sets key to value, creating it if needed.
func (s *Store) PutSetting(ctx context.Context, key, value string) (Setting, error) {
	var out Setting
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanSetting(tx.QueryRow(ctx, `
			INSERT INTO setting (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
			RETURNING `+settingColumns, key, value))
		return err
	})
	if err != nil {
		return Setting{}, fmt.Errorf("set setting %s: %w", key, err)
	}
	return out, nil
}

// GetSetting returns the setting key; ErrNotFound when it is not set.
func (s *Store) GetSetting(ctx context.Context, key string) (Setting, error) {
	st, err := scanSetting(s.pool.QueryRow(ctx, `SELECT `+settingColumns+` FROM setting WHERE key = $1`, key))
	if err != nil {
		return Setting{}, fmt.Errorf("get setting %s: %w", key, MapError(err))
	}
	return st, nil
}

// ListSettings returns settings ordered by key. Search matches the key.
func (s *Store) ListSettings(ctx context.Context, o ListOptions) ([]Setting, error) {
	out, err := collect(ctx, s.pool, scanSetting, `
		SELECT `+settingColumns+` FROM setting WHERE key ILIKE $1 ORDER BY key LIMIT $2 OFFSET $3`,
		o.searchPattern(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list settings: %w", err)
	}
	return out, nil
}

// UpdateSetting changes the value of an existing key (ErrNotFound otherwise).
func (s *Store) UpdateSetting(ctx context.Context, key, value string) (Setting, error) {
	var out Setting
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanSetting(tx.QueryRow(ctx,
			`UPDATE setting SET value = $2 WHERE key = $1 RETURNING `+settingColumns, key, value))
		return err
	})
	if err != nil {
		return Setting{}, fmt.Errorf("update setting %s: %w", key, err)
	}
	return out, nil
}

// DeleteSetting deletes the setting key.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	return s.deleteRow(ctx, "setting "+key, `DELETE FROM setting WHERE key = $1`, key)
}
