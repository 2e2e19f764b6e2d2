package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Admin is a row of the admin table: a person who manages facteur through
// the admin service. A superadmin manages everything; another admin manages
// the domains listed for it in domain_admin.
type Admin struct {
	Username     string    `json:"username"` // lower case
	Password     string    `json:"-"`        // hash, Dovecot {SCHEME} form
	Superadmin   bool      `json:"superadmin"`
	TOTPSecret   *string   `json:"-"`
	TOTPLastStep *int64    `json:"-"`
	TOTPEnabled  bool      `json:"totp_enabled"` // read only: TOTPSecret is set
	Active       bool      `json:"active"`
	Domains      []string  `json:"domains"` // read only: the domains it manages
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

const adminColumns = `a.username, a.password, a.superadmin, a.totp_secret, a.totp_last_step,
	a.active, a.created_at, a.updated_at,
	array(SELECT da.domain FROM domain_admin da WHERE da.username = a.username ORDER BY da.domain)`

func scanAdmin(r pgx.Row) (Admin, error) {
	var a Admin
	err := r.Scan(&a.Username, &a.Password, &a.Superadmin, &a.TOTPSecret, &a.TOTPLastStep,
		&a.Active, &a.CreatedAt, &a.UpdatedAt, &a.Domains)
	a.TOTPEnabled = a.TOTPSecret != nil && *a.TOTPSecret != ""
	return a, err
}

func getAdmin(ctx context.Context, q Querier, username string) (Admin, error) {
	return scanAdmin(q.QueryRow(ctx, `SELECT `+adminColumns+` FROM admin a WHERE a.username = $1`, username))
}

// CreateAdmin inserts a (Username, Password, Superadmin, Active as given)
// and, in the same transaction, makes it an admin of domains: an unknown
// domain is ErrNotFound and nothing is written.
func (s *Store) CreateAdmin(ctx context.Context, a Admin, domains []string) (Admin, error) {
	var out Admin
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var username string
		err := tx.QueryRow(ctx, `
			INSERT INTO admin (username, password, superadmin, active) VALUES (lower($1), $2, $3, $4)
			RETURNING username`, a.Username, a.Password, a.Superadmin, a.Active).Scan(&username)
		if err != nil {
			return err
		}
		for _, d := range domains {
			if _, err := tx.Exec(ctx, `INSERT INTO domain_admin (username, domain) VALUES ($1, $2)`, username, d); err != nil {
				return err
			}
		}
		out, err = getAdmin(ctx, tx, username)
		return err
	})
	if err != nil {
		return Admin{}, fmt.Errorf("create admin %s: %w", a.Username, err)
	}
	return out, nil
}

// GetAdmin returns the admin username with the domains it manages.
func (s *Store) GetAdmin(ctx context.Context, username string) (Admin, error) {
	a, err := getAdmin(ctx, s.pool, username)
	if err != nil {
		return Admin{}, fmt.Errorf("get admin %s: %w", username, MapError(err))
	}
	return a, nil
}

// ListAdmins returns admins ordered by username. Search matches the
// username; Domain keeps the admins of that domain, and Scope the admins of
// any of those domains.
func (s *Store) ListAdmins(ctx context.Context, o ListOptions) ([]Admin, error) {
	out, err := collect(ctx, s.pool, scanAdmin, `
		SELECT `+adminColumns+`
		FROM admin a
		WHERE a.username ILIKE $1
		  AND ($2 = '' OR EXISTS (SELECT 1 FROM domain_admin da WHERE da.username = a.username AND da.domain = $2))
		  AND ($3::text[] IS NULL OR EXISTS (SELECT 1 FROM domain_admin da
		                                     WHERE da.username = a.username AND da.domain = ANY ($3)))
		ORDER BY a.username
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), o.Domain, o.scope(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list admins: %w", err)
	}
	return out, nil
}

// AdminPatch lists the columns an update changes.
type AdminPatch struct {
	Password     *string // a hash
	Superadmin   *bool
	TOTPSecret   Nullable[string]
	TOTPLastStep Nullable[int64]
	Active       *bool
}

// UpdateAdmin applies p to the admin username and returns the stored row.
func (s *Store) UpdateAdmin(ctx context.Context, username string, p AdminPatch) (Admin, error) {
	var sl setList
	setIf(&sl, "password", p.Password)
	setIf(&sl, "superadmin", p.Superadmin)
	setNullable(&sl, "totp_secret", p.TOTPSecret)
	setNullable(&sl, "totp_last_step", p.TOTPLastStep)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetAdmin(ctx, username)
	}
	var out Admin
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var got string
		err := sl.update(ctx, tx, "admin", "username = %s", []any{username}, "username", func(r pgx.Row) error {
			return r.Scan(&got)
		})
		if err != nil {
			return err
		}
		out, err = getAdmin(ctx, tx, got)
		return err
	})
	if err != nil {
		return Admin{}, fmt.Errorf("update admin %s: %w", username, err)
	}
	return out, nil
}

// SetAdminPassword stores a new password hash for the admin username.
func (s *Store) SetAdminPassword(ctx context.Context, username, hash string) error {
	_, err := s.UpdateAdmin(ctx, username, AdminPatch{Password: &hash})
	return err
}

// DeleteAdmin deletes the admin username with its domain grants and API
// tokens.
func (s *Store) DeleteAdmin(ctx context.Context, username string) error {
	return s.deleteRow(ctx, "admin "+username, `DELETE FROM admin WHERE username = $1`, username)
}

// DomainAdmin is a row of domain_admin: Username manages Domain.
type DomainAdmin struct {
	Username  string    `json:"username"`
	Domain    string    `json:"domain"`
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

const domainAdminColumns = `username, domain, active, created_at, updated_at`

func scanDomainAdmin(r pgx.Row) (DomainAdmin, error) {
	var d DomainAdmin
	err := r.Scan(&d.Username, &d.Domain, &d.Active, &d.CreatedAt, &d.UpdatedAt)
	return d, err
}

// AddDomainAdmins lets username manage domains, all or none: an unknown
// admin or domain is ErrNotFound, a grant that exists is ErrConflict, and
// then nothing is written.
func (s *Store) AddDomainAdmins(ctx context.Context, username string, domains ...string) ([]DomainAdmin, error) {
	out := make([]DomainAdmin, 0, len(domains))
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		for _, d := range domains {
			da, err := scanDomainAdmin(tx.QueryRow(ctx, `
				INSERT INTO domain_admin (username, domain) VALUES ($1, $2)
				RETURNING `+domainAdminColumns, username, d))
			if err != nil {
				return fmt.Errorf("domain %s: %w", d, MapError(err))
			}
			out = append(out, da)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("add domains to admin %s: %w", username, err)
	}
	return out, nil
}

// ListDomainAdmins returns the grants of username ("" = every admin),
// ordered by username and domain. Search matches the domain; Domain and
// Scope restrict it.
func (s *Store) ListDomainAdmins(ctx context.Context, username string, o ListOptions) ([]DomainAdmin, error) {
	out, err := collect(ctx, s.pool, scanDomainAdmin, `
		SELECT `+domainAdminColumns+`
		FROM domain_admin
		WHERE domain ILIKE $1
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))
		  AND ($6 = '' OR username = $6)
		ORDER BY username, domain
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), o.Domain, o.scope(), o.limit(), o.offset(), username)
	if err != nil {
		return nil, fmt.Errorf("list domain admins: %w", err)
	}
	return out, nil
}

// SetDomainAdminActive enables or suspends the grant of domain to username.
func (s *Store) SetDomainAdminActive(ctx context.Context, username, domain string, active bool) (DomainAdmin, error) {
	var out DomainAdmin
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanDomainAdmin(tx.QueryRow(ctx, `
			UPDATE domain_admin SET active = $3 WHERE username = $1 AND domain = $2
			RETURNING `+domainAdminColumns, username, domain, active))
		return err
	})
	if err != nil {
		return DomainAdmin{}, fmt.Errorf("update admin %s of domain %s: %w", username, domain, err)
	}
	return out, nil
}

// RemoveDomainAdmins withdraws domains from username, all or none: a
// domain it does not manage is ErrNotFound, and then nothing is removed.
func (s *Store) RemoveDomainAdmins(ctx context.Context, username string, domains ...string) error {
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		for _, d := range domains {
			tag, err := tx.Exec(ctx, `DELETE FROM domain_admin WHERE username = $1 AND domain = $2`, username, d)
			if err != nil {
				return MapDeleteError(err)
			}
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("domain %s: %w", d, ErrNotFound)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove domains from admin %s: %w", username, err)
	}
	return nil
}

// APIToken is a row of api_token. The token itself is shown once when it is
// made; only its SHA-256 is stored.
type APIToken struct {
	ID         int64      `json:"id"`
	Admin      string     `json:"admin"` // the token acts as this admin
	Name       string     `json:"name"`
	TokenHash  string     `json:"-"` // lower-case hex SHA-256 of the token
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	Active     bool       `json:"active"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

const apiTokenColumns = `id, admin, name, token_hash, expires_at, last_used_at, active, created_at, updated_at`

func scanAPIToken(r pgx.Row) (APIToken, error) {
	var t APIToken
	err := r.Scan(&t.ID, &t.Admin, &t.Name, &t.TokenHash, &t.ExpiresAt, &t.LastUsedAt, &t.Active,
		&t.CreatedAt, &t.UpdatedAt)
	return t, err
}

// CreateAPIToken inserts t (Admin, Name, TokenHash, ExpiresAt, Active as
// given) and returns the stored row with its ID.
func (s *Store) CreateAPIToken(ctx context.Context, t APIToken) (APIToken, error) {
	var out APIToken
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanAPIToken(tx.QueryRow(ctx, `
			INSERT INTO api_token (admin, name, token_hash, expires_at, active) VALUES ($1, $2, $3, $4, $5)
			RETURNING `+apiTokenColumns, t.Admin, t.Name, t.TokenHash, t.ExpiresAt, t.Active))
		return err
	})
	if err != nil {
		return APIToken{}, fmt.Errorf("create API token %q of %s: %w", t.Name, t.Admin, err)
	}
	return out, nil
}

// GetAPIToken returns the token id.
func (s *Store) GetAPIToken(ctx context.Context, id int64) (APIToken, error) {
	t, err := scanAPIToken(s.pool.QueryRow(ctx, `SELECT `+apiTokenColumns+` FROM api_token WHERE id = $1`, id))
	if err != nil {
		return APIToken{}, fmt.Errorf("get API token %d: %w", id, MapError(err))
	}
	return t, nil
}

// GetAPITokenByHash returns the token whose SHA-256 (lower-case hex) is
// hash, whether or not it is active or expired: the caller decides.
func (s *Store) GetAPITokenByHash(ctx context.Context, hash string) (APIToken, error) {
	t, err := scanAPIToken(s.pool.QueryRow(ctx, `SELECT `+apiTokenColumns+` FROM api_token WHERE token_hash = $1`, hash))
	if err != nil {
		return APIToken{}, fmt.Errorf("get API token: %w", MapError(err))
	}
	return t, nil
}

// ListAPITokens returns the tokens of admin ("" = every admin), ordered by
// admin and name. Search matches the name.
func (s *Store) ListAPITokens(ctx context.Context, admin string, o ListOptions) ([]APIToken, error) {
	out, err := collect(ctx, s.pool, scanAPIToken, `
		SELECT `+apiTokenColumns+`
		FROM api_token
		WHERE name ILIKE $1
		  AND ($4 = '' OR admin = $4)
		ORDER BY admin, name
		LIMIT $2 OFFSET $3`,
		o.searchPattern(), o.limit(), o.offset(), admin)
	if err != nil {
		return nil, fmt.Errorf("list API tokens: %w", err)
	}
	return out, nil
}

// APITokenPatch lists the columns an update changes.
type APITokenPatch struct {
	Name      *string
	ExpiresAt Nullable[time.Time]
	Active    *bool
}

// UpdateAPIToken applies p to the token id.
func (s *Store) UpdateAPIToken(ctx context.Context, id int64, p APITokenPatch) (APIToken, error) {
	var sl setList
	setIf(&sl, "name", p.Name)
	setNullable(&sl, "expires_at", p.ExpiresAt)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetAPIToken(ctx, id)
	}
	var out APIToken
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "api_token", "id = %s", []any{id}, apiTokenColumns, func(r pgx.Row) error {
			var err error
			out, err = scanAPIToken(r)
			return err
		})
	})
	if err != nil {
		return APIToken{}, fmt.Errorf("update API token %d: %w", id, err)
	}
	return out, nil
}

// DeleteAPIToken deletes the token id.
func (s *Store) DeleteAPIToken(ctx context.Context, id int64) error {
	return s.deleteRow(ctx, fmt.Sprintf("API token %d", id), `DELETE FROM api_token WHERE id = $1`, id)
}
