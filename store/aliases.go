package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Alias is a row of the alias table: an address, or "@domain" for a
// catch-all, to one or more destinations. A destination is an address, or on
// domains marked local only, a local user name, |command, /file or
// :include:/path. An alias that lists its own address also delivers to the
// mailbox of that address (forward and keep a copy).
type Alias struct {
	Address      string    `json:"address"`
	LocalPart    string    `json:"local_part"` // "" for a catch-all
	Domain       string    `json:"domain"`
	Destinations []string  `json:"destinations"`
	Description  string    `json:"description"`
	Active       bool      `json:"active"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

const aliasColumns = `address, local_part, domain, destinations, description, active, created_at, updated_at`

func scanAlias(r pgx.Row) (Alias, error) {
	var a Alias
	err := r.Scan(&a.Address, &a.LocalPart, &a.Domain, &a.Destinations, &a.Description, &a.Active,
		&a.CreatedAt, &a.UpdatedAt)
	return a, err
}

// CreateAlias inserts a (Address, Destinations, Description, Active as
// given) and returns the stored row, its address and destinations
// normalised and de-duplicated by the database. Over the domain's alias
// limit is ErrLimitExceeded; shadowing a mailbox without keeping a copy, or a
// command or file destination on a domain not marked local, is ErrInvalid;
// an unknown domain is ErrNotFound.
func (s *Store) CreateAlias(ctx context.Context, a Alias) (Alias, error) {
	var out Alias
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanAlias(tx.QueryRow(ctx, `
			INSERT INTO alias (address, destinations, description, active)
			VALUES ($1, $2, $3, $4)
			RETURNING `+aliasColumns, a.Address, nonNil(a.Destinations), a.Description, a.Active))
		return err
	})
	if err != nil {
		return Alias{}, fmt.Errorf("create alias %s: %w", a.Address, err)
	}
	return out, nil
}

// GetAlias returns the alias address (already normalised by the caller).
func (s *Store) GetAlias(ctx context.Context, address string) (Alias, error) {
	a, err := scanAlias(s.pool.QueryRow(ctx, `SELECT `+aliasColumns+` FROM alias WHERE address = $1`, address))
	if err != nil {
		return Alias{}, fmt.Errorf("get alias %s: %w", address, MapError(err))
	}
	return a, nil
}

// ListAliases returns aliases ordered by domain and local part. Search
// matches the address or any destination; Domain and Scope restrict the
// domain.
func (s *Store) ListAliases(ctx context.Context, o ListOptions) ([]Alias, error) {
	out, err := collect(ctx, s.pool, scanAlias, `
		SELECT `+aliasColumns+`
		FROM alias
		WHERE (address ILIKE $1 OR EXISTS (SELECT 1 FROM unnest(destinations) AS x WHERE x ILIKE $1))
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))
		ORDER BY domain, local_part
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), o.Domain, o.scope(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list aliases: %w", err)
	}
	return out, nil
}

// AliasPatch lists the columns an update changes. Destinations replaces the
// list; AddDestinations and RemoveDestinations edit it in place (in the
// database, so concurrent edits do not lose each other's) and cannot be
// combined with Destinations. Removing every destination is ErrInvalid.
type AliasPatch struct {
	Destinations       *[]string
	AddDestinations    []string
	RemoveDestinations []string // compared exactly with the stored, normalised form
	Description        *string
	Active             *bool
}

// UpdateAlias applies p to the alias address and returns the stored row.
func (s *Store) UpdateAlias(ctx context.Context, address string, p AliasPatch) (Alias, error) {
	var sl setList
	if p.Destinations != nil {
		if len(p.AddDestinations) > 0 || len(p.RemoveDestinations) > 0 {
			return Alias{}, fmt.Errorf("update alias %s: %w",
				address, &Error{Kind: ErrInvalid, Message: "replace the destinations or edit them, not both"})
		}
		sl.set("destinations", nonNil(*p.Destinations))
	}
	if len(p.AddDestinations) > 0 || len(p.RemoveDestinations) > 0 {
		add := sl.arg(nonNil(p.AddDestinations))
		rm := sl.arg(nonNil(p.RemoveDestinations))
		sl.cols = append(sl.cols, fmt.Sprintf(`destinations = array(
			SELECT x FROM unnest(destinations || %s::text[]) WITH ORDINALITY AS u(x, i)
			WHERE NOT x = ANY (%s::text[]) ORDER BY i)`, add, rm))
	}
	setIf(&sl, "description", p.Description)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetAlias(ctx, address)
	}
	var out Alias
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "alias", "address = %s", []any{address}, aliasColumns, func(r pgx.Row) error {
			var err error
			out, err = scanAlias(r)
			return err
		})
	})
	if err != nil {
		return Alias{}, fmt.Errorf("update alias %s: %w", address, err)
	}
	return out, nil
}

// DeleteAlias deletes the alias address.
func (s *Store) DeleteAlias(ctx context.Context, address string) error {
	return s.deleteRow(ctx, "alias "+address, `DELETE FROM alias WHERE address = $1`, address)
}

// nonNil returns s, or an empty slice for nil, so that it is sent as '{}'
// rather than NULL.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
