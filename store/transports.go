package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Transport is a row of the transport table (Postfix transport(5)): a domain
// or an address to a next hop such as "smtp:[host]:port", "lmtp:unix:/path",
// "maildir", "discard" or "error:5.x.x text".
type Transport struct {
	Key         string    `json:"key"` // a domain or local@domain, lower case
	Nexthop     string    `json:"nexthop"`
	Description string    `json:"description"`
	Active      bool      `json:"active"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

const transportColumns = `key, nexthop, description, active, created_at, updated_at`

func scanTransport(r pgx.Row) (Transport, error) {
	var t Transport
	err := r.Scan(&t.Key, &t.Nexthop, &t.Description, &t.Active, &t.CreatedAt, &t.UpdatedAt)
	return t, err
}

// CreateTransport inserts t (Key, Nexthop, Description, Active as given).
func (s *Store) CreateTransport(ctx context.Context, t Transport) (Transport, error) {
	var out Transport
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanTransport(tx.QueryRow(ctx, `
			INSERT INTO transport (key, nexthop, description, active) VALUES ($1, $2, $3, $4)
			RETURNING `+transportColumns, t.Key, t.Nexthop, t.Description, t.Active))
		return err
	})
	if err != nil {
		return Transport{}, fmt.Errorf("create transport %s: %w", t.Key, err)
	}
	return out, nil
}

// GetTransport returns the transport of key.
func (s *Store) GetTransport(ctx context.Context, key string) (Transport, error) {
	t, err := scanTransport(s.pool.QueryRow(ctx, `SELECT `+transportColumns+` FROM transport WHERE key = $1`, key))
	if err != nil {
		return Transport{}, fmt.Errorf("get transport %s: %w", key, MapError(err))
	}
	return t, nil
}

// ListTransports returns transports ordered by key. Search matches the key or
// the next hop; Domain keeps the keys of that domain (the domain itself and
// its addresses). Transports are superadmin matters: Scope is ignored.
func (s *Store) ListTransports(ctx context.Context, o ListOptions) ([]Transport, error) {
	out, err := collect(ctx, s.pool, scanTransport, `
		SELECT `+transportColumns+`
		FROM transport
		WHERE (key ILIKE $1 OR nexthop ILIKE $1)
		  AND ($2 = '' OR key = $2 OR right(key, length($2) + 1) = '@' || $2)
		ORDER BY key
		LIMIT $3 OFFSET $4`,
		o.searchPattern(), o.Domain, o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list transports: %w", err)
	}
	return out, nil
}

// TransportPatch lists the columns an update changes.
type TransportPatch struct {
	Nexthop     *string
	Description *string
	Active      *bool
}

// UpdateTransport applies p to the transport of key.
func (s *Store) UpdateTransport(ctx context.Context, key string, p TransportPatch) (Transport, error) {
	var sl setList
	setIf(&sl, "nexthop", p.Nexthop)
	setIf(&sl, "description", p.Description)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetTransport(ctx, key)
	}
	var out Transport
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "transport", "key = %s", []any{key}, transportColumns, func(r pgx.Row) error {
			var err error
			out, err = scanTransport(r)
			return err
		})
	})
	if err != nil {
		return Transport{}, fmt.Errorf("update transport %s: %w", key, err)
	}
	return out, nil
}

// DeleteTransport deletes the transport of key.
func (s *Store) DeleteTransport(ctx context.Context, key string) error {
	return s.deleteRow(ctx, "transport "+key, `DELETE FROM transport WHERE key = $1`, key)
}
