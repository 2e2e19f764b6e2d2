package store

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"
)

// SenderGrant is a row of sender_grant: the mailbox may send as Sender, an
// address ("x@d") or any address of a domain ("@d").
type SenderGrant struct {
	ID        int64     `json:"id"`
	Mailbox   string    `json:"mailbox"`
	Sender    string    `json:"sender"`
	Domain    string    `json:"domain"` // the mailbox's domain
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

const senderGrantColumns = `id, mailbox, sender, domain, active, created_at, updated_at`

func scanSenderGrant(r pgx.Row) (SenderGrant, error) {
	var g SenderGrant
	err := r.Scan(&g.ID, &g.Mailbox, &g.Sender, &g.Domain, &g.Active, &g.CreatedAt, &g.UpdatedAt)
	return g, err
}

// CreateSenderGrant inserts g (Mailbox, Sender, Active as given) and returns
// the stored row with its ID. An unknown mailbox is ErrNotFound; the same
// grant twice is ErrConflict.
func (s *Store) CreateSenderGrant(ctx context.Context, g SenderGrant) (SenderGrant, error) {
	var out SenderGrant
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanSenderGrant(tx.QueryRow(ctx, `
			INSERT INTO sender_grant (mailbox, sender, active) VALUES ($1, $2, $3)
			RETURNING `+senderGrantColumns, g.Mailbox, g.Sender, g.Active))
		return err
	})
	if err != nil {
		return SenderGrant{}, fmt.Errorf("create sender grant %s as %s: %w", g.Mailbox, g.Sender, err)
	}
	return out, nil
}

// GetSenderGrant returns the grant id.
func (s *Store) GetSenderGrant(ctx context.Context, id int64) (SenderGrant, error) {
	g, err := scanSenderGrant(s.pool.QueryRow(ctx, `SELECT `+senderGrantColumns+` FROM sender_grant WHERE id = $1`, id))
	if err != nil {
		return SenderGrant{}, fmt.Errorf("get sender grant %d: %w", id, MapError(err))
	}
	return g, nil
}

// ListSenderGrants returns the grants of mailbox ("" = every mailbox),
// ordered by mailbox and sender. Search matches the mailbox or the sender;
// Domain and Scope restrict the mailbox's domain.
func (s *Store) ListSenderGrants(ctx context.Context, mailbox string, o ListOptions) ([]SenderGrant, error) {
	out, err := collect(ctx, s.pool, scanSenderGrant, `
		SELECT `+senderGrantColumns+`
		FROM sender_grant
		WHERE (mailbox ILIKE $1 OR sender ILIKE $1)
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))
		  AND ($6 = '' OR mailbox = $6)
		ORDER BY mailbox, sender
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), o.Domain, o.scope(), o.limit(), o.offset(), mailbox)
	if err != nil {
		return nil, fmt.Errorf("list sender grants: %w", err)
	}
	return out, nil
}

// SenderGrantPatch lists the columns an update changes.
type SenderGrantPatch struct {
	Sender *string
	Active *bool
}

// UpdateSenderGrant applies p to the grant id.
func (s *Store) UpdateSenderGrant(ctx context.Context, id int64, p SenderGrantPatch) (SenderGrant, error) {
	var sl setList
	setIf(&sl, "sender", p.Sender)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetSenderGrant(ctx, id)
	}
	var out SenderGrant
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "sender_grant", "id = %s", []any{id}, senderGrantColumns, func(r pgx.Row) error {
			var err error
			out, err = scanSenderGrant(r)
			return err
		})
	})
	if err != nil {
		return SenderGrant{}, fmt.Errorf("update sender grant %d: %w", id, err)
	}
	return out, nil
}

// DeleteSenderGrant deletes the grant id.
func (s *Store) DeleteSenderGrant(ctx context.Context, id int64) error {
	return s.deleteRow(ctx, fmt.Sprintf("sender grant %d", id), `DELETE FROM sender_grant WHERE id = $1`, id)
}

// Client access actions.
const (
	ActionPermitRelay = "permit_relay" // the network may relay through this host
	ActionPermitQMQP  = "permit_qmqp"  // the network may submit over QMQP
	ActionReject      = "reject"       // connections from the network are refused
)

// ClientAccess is a row of client_access: what clients in Network may do.
type ClientAccess struct {
	ID          int64        `json:"id"`
	Network     netip.Prefix `json:"network"`
	Action      string       `json:"action"`
	Description string       `json:"description"`
	Active      bool         `json:"active"`
	CreatedAt   time.Time    `json:"created_at"`
	UpdatedAt   time.Time    `json:"updated_at"`
}

const clientAccessColumns = `id, network, action, description, active, created_at, updated_at`

func scanClientAccess(r pgx.Row) (ClientAccess, error) {
	var c ClientAccess
	err := r.Scan(&c.ID, &c.Network, &c.Action, &c.Description, &c.Active, &c.CreatedAt, &c.UpdatedAt)
	return c, err
}

// CreateClientAccess inserts c (Network, Action, Description, Active as
// given). A network with host bits set or an unknown action is ErrInvalid.
func (s *Store) CreateClientAccess(ctx context.Context, c ClientAccess) (ClientAccess, error) {
	var out ClientAccess
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanClientAccess(tx.QueryRow(ctx, `
			INSERT INTO client_access (network, action, description, active) VALUES ($1::text::cidr, $2, $3, $4)
			RETURNING `+clientAccessColumns, c.Network.String(), c.Action, c.Description, c.Active))
		return err
	})
	if err != nil {
		return ClientAccess{}, fmt.Errorf("create client access %s %s: %w", c.Network, c.Action, err)
	}
	return out, nil
}

// GetClientAccess returns the client access rule id.
func (s *Store) GetClientAccess(ctx context.Context, id int64) (ClientAccess, error) {
	c, err := scanClientAccess(s.pool.QueryRow(ctx, `SELECT `+clientAccessColumns+` FROM client_access WHERE id = $1`, id))
	if err != nil {
		return ClientAccess{}, fmt.Errorf("get client access %d: %w", id, MapError(err))
	}
	return c, nil
}

// ListClientAccess returns client access rules ordered by network and
// action. Search matches the network's text or the description; Domain and
// Scope do not apply.
func (s *Store) ListClientAccess(ctx context.Context, o ListOptions) ([]ClientAccess, error) {
	out, err := collect(ctx, s.pool, scanClientAccess, `
		SELECT `+clientAccessColumns+`
		FROM client_access
		WHERE (network::text ILIKE $1 OR description ILIKE $1)
		ORDER BY network, action
		LIMIT $2 OFFSET $3`,
		o.searchPattern(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list client access: %w", err)
	}
	return out, nil
}

// ClientAccessPatch lists the columns an update changes.
type ClientAccessPatch struct {
	Action      *string
	Description *string
	Active      *bool
}

// UpdateClientAccess applies p to the rule id.
func (s *Store) UpdateClientAccess(ctx context.Context, id int64, p ClientAccessPatch) (ClientAccess, error) {
	var sl setList
	setIf(&sl, "action", p.Action)
	setIf(&sl, "description", p.Description)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetClientAccess(ctx, id)
	}
	var out ClientAccess
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "client_access", "id = %s", []any{id}, clientAccessColumns, func(r pgx.Row) error {
			var err error
			out, err = scanClientAccess(r)
			return err
		})
	})
	if err != nil {
		return ClientAccess{}, fmt.Errorf("update client access %d: %w", id, err)
	}
	return out, nil
}

// DeleteClientAccess deletes the rule id.
func (s *Store) DeleteClientAccess(ctx context.Context, id int64) error {
	return s.deleteRow(ctx, fmt.Sprintf("client access %d", id), `DELETE FROM client_access WHERE id = $1`, id)
}
