package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// RelayCredential is a row of relay_credential (Postfix
// smtp_sasl_password_maps): the user name and password that the SMTP client
// sends to a relay host when it delivers to that next hop.
//
// Password is a secret kept in clear text, because the MTA must send it; it
// is never serialised to JSON and never written to audit_log.
type RelayCredential struct {
	// Nexthop is the transport's next hop after "smtp:" or "relay:", such as
	// "[smtp.provider.example]:587", in lower case.
	Nexthop   string    `json:"nexthop"`
	Username  string    `json:"username"`
	Password  string    `json:"-"`
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

const relayCredentialColumns = `nexthop, username, password, active, created_at, updated_at`

func scanRelayCredential(r pgx.Row) (RelayCredential, error) {
	var c RelayCredential
	err := r.Scan(&c.Nexthop, &c.Username, &c.Password, &c.Active, &c.CreatedAt, &c.UpdatedAt)
	return c, err
}

// CreateRelayCredential inserts c (Nexthop, Username, Password, Active as
// given). The database folds the next hop to lower case.
func (s *Store) CreateRelayCredential(ctx context.Context, c RelayCredential) (RelayCredential, error) {
	var out RelayCredential
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanRelayCredential(tx.QueryRow(ctx, `
			INSERT INTO relay_credential (nexthop, username, password, active) VALUES ($1, $2, $3, $4)
			RETURNING `+relayCredentialColumns, c.Nexthop, c.Username, c.Password, c.Active))
		return err
	})
	if err != nil {
		return RelayCredential{}, fmt.Errorf("create relay credential %s: %w", c.Nexthop, err)
	}
	return out, nil
}

// GetRelayCredential returns the credential of nexthop, active or not.
func (s *Store) GetRelayCredential(ctx context.Context, nexthop string) (RelayCredential, error) {
	c, err := scanRelayCredential(s.pool.QueryRow(ctx,
		`SELECT `+relayCredentialColumns+` FROM relay_credential WHERE nexthop = $1`, strings.ToLower(nexthop)))
	if err != nil {
		return RelayCredential{}, fmt.Errorf("get relay credential %s: %w", nexthop, MapError(err))
	}
	return c, nil
}

// ListRelayCredentials returns credentials ordered by next hop. Search
// matches the next hop or the user name. Relay credentials are superadmin
// matters: Domain and Scope are ignored.
func (s *Store) ListRelayCredentials(ctx context.Context, o ListOptions) ([]RelayCredential, error) {
	out, err := collect(ctx, s.pool, scanRelayCredential, `
		SELECT `+relayCredentialColumns+`
		FROM relay_credential
		WHERE (nexthop ILIKE $1 OR username ILIKE $1)
		ORDER BY nexthop
		LIMIT $2 OFFSET $3`,
		o.searchPattern(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list relay credentials: %w", err)
	}
	return out, nil
}

// RelayCredentialPatch lists the columns an update changes.
type RelayCredentialPatch struct {
	Username *string
	Password *string
	Active   *bool
}

// UpdateRelayCredential applies p to the credential of nexthop.
func (s *Store) UpdateRelayCredential(ctx context.Context, nexthop string, p RelayCredentialPatch) (RelayCredential, error) {
	var sl setList
	setIf(&sl, "username", p.Username)
	setIf(&sl, "password", p.Password)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetRelayCredential(ctx, nexthop)
	}
	var out RelayCredential
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "relay_credential", "nexthop = %s", []any{strings.ToLower(nexthop)},
			relayCredentialColumns, func(r pgx.Row) error {
				var err error
				out, err = scanRelayCredential(r)
				return err
			})
	})
	if err != nil {
		return RelayCredential{}, fmt.Errorf("update relay credential %s: %w", nexthop, err)
	}
	return out, nil
}

// DeleteRelayCredential deletes the credential of nexthop.
func (s *Store) DeleteRelayCredential(ctx context.Context, nexthop string) error {
	return s.deleteRow(ctx, "relay credential "+nexthop,
		`DELETE FROM relay_credential WHERE nexthop = $1`, strings.ToLower(nexthop))
}

// RelayCredentials returns the user name and password to send to the relay
// host of nexthop ("[host]:port", "[host]", "host:port" or "host", matched
// case-insensitively), for the SMTP delivery agent (it satisfies
// mta/deliver/smtp.Credentials). ok is false when no active credential
// exists; err is set only when the database could not answer, which the
// agent treats as a temporary failure, never as "no credential".
func (s *Store) RelayCredentials(ctx context.Context, nexthop string) (user, pass string, ok bool, err error) {
	err = s.pool.QueryRow(ctx,
		`SELECT username, password FROM relay_credential WHERE nexthop = $1 AND active`,
		strings.ToLower(nexthop)).Scan(&user, &pass)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return "", "", false, nil
		}
		return "", "", false, fmt.Errorf("look up relay credential %s: %w", nexthop, MapError(err))
	}
	return user, pass, true, nil
}
