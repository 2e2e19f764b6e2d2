package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Mailbox is a row of the mailbox table joined with its quota usage.
type Mailbox struct {
	Address   string `json:"address"` // local@domain, lower case
	LocalPart string `json:"local_part"`
	Domain    string `json:"domain"`
	Name      string `json:"name"`
	// Password is the hash in Dovecot's {SCHEME} form. It is never printed.
	Password   string `json:"-"`
	QuotaBytes *int64 `json:"quota_bytes"` // nil: unlimited
	// Maildir is relative to the mail root; empty on create means
	// "<domain>/<local>/".
	Maildir   string    `json:"maildir"`
	Transport *string   `json:"transport"` // overrides the domain's
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Usage as its owner (Dovecot or the Maildir agent) last wrote it;
	// zero when it has not written any. Read only.
	UsedBytes    int64 `json:"used_bytes"`
	UsedMessages int64 `json:"used_messages"`
}

const mailboxColumns = `m.address, m.local_part, m.domain, m.name, m.password, m.quota_bytes,
	m.maildir, m.transport, m.active, m.created_at, m.updated_at,
	coalesce(q.bytes, 0), coalesce(q.messages, 0)`

const mailboxFrom = `mailbox m LEFT JOIN quota_usage q ON q.username = m.address`

func scanMailbox(r pgx.Row) (Mailbox, error) {
	var m Mailbox
	err := r.Scan(&m.Address, &m.LocalPart, &m.Domain, &m.Name, &m.Password, &m.QuotaBytes,
		&m.Maildir, &m.Transport, &m.Active, &m.CreatedAt, &m.UpdatedAt, &m.UsedBytes, &m.UsedMessages)
	return m, err
}

// CreateMailbox inserts m (Address, Name, Password, QuotaBytes, Maildir,
// Transport, Active as given; the zero Active creates a disabled mailbox)
// and returns the stored row. The database splits and lower-cases the
// address, applies the domain's default quota when QuotaBytes is nil, and
// enforces the domain's limits (ErrLimitExceeded). An unknown domain is
// ErrNotFound; an alias of the same address that does not keep a copy is
// ErrInvalid.
func (s *Store) CreateMailbox(ctx context.Context, m Mailbox) (Mailbox, error) {
	var out Mailbox
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var address string
		// local_part and domain are derived from the address by the
		// normalising trigger, as is the maildir when empty.
		err := tx.QueryRow(ctx, `
			INSERT INTO mailbox (address, name, password, quota_bytes, maildir, transport, active)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			RETURNING address`,
			m.Address, m.Name, m.Password, m.QuotaBytes, m.Maildir, m.Transport, m.Active).Scan(&address)
		if err != nil {
			return err
		}
		out, err = getMailbox(ctx, tx, address)
		return err
	})
	if err != nil {
		return Mailbox{}, fmt.Errorf("create mailbox %s: %w", m.Address, err)
	}
	return out, nil
}

func getMailbox(ctx context.Context, q Querier, address string) (Mailbox, error) {
	return scanMailbox(q.QueryRow(ctx, `SELECT `+mailboxColumns+` FROM `+mailboxFrom+` WHERE m.address = $1`, address))
}

// GetMailbox returns the mailbox address (already normalised by the caller).
func (s *Store) GetMailbox(ctx context.Context, address string) (Mailbox, error) {
	m, err := getMailbox(ctx, s.pool, address)
	if err != nil {
		return Mailbox{}, fmt.Errorf("get mailbox %s: %w", address, MapError(err))
	}
	return m, nil
}

// ListMailboxes returns mailboxes ordered by domain and local part. Search
// matches the address or the name; Domain and Scope restrict the domain.
func (s *Store) ListMailboxes(ctx context.Context, o ListOptions) ([]Mailbox, error) {
	out, err := collect(ctx, s.pool, scanMailbox, `
		SELECT `+mailboxColumns+`
		FROM `+mailboxFrom+`
		WHERE (m.address ILIKE $1 OR m.name ILIKE $1)
		  AND ($2 = '' OR m.domain = $2)
		  AND ($3::text[] IS NULL OR m.domain = ANY ($3))
		ORDER BY m.domain, m.local_part
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), o.Domain, o.scope(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list mailboxes: %w", err)
	}
	return out, nil
}

// MailboxPatch lists the columns an update changes. A quota above the
// domain's limits is ErrLimitExceeded.
type MailboxPatch struct {
	Name       *string
	Password   *string // a hash, as Mailbox.Password
	QuotaBytes Nullable[int64]
	Maildir    *string
	Transport  Nullable[string]
	Active     *bool
}

// UpdateMailbox applies p to the mailbox address and returns the stored row.
func (s *Store) UpdateMailbox(ctx context.Context, address string, p MailboxPatch) (Mailbox, error) {
	var sl setList
	setIf(&sl, "name", p.Name)
	setIf(&sl, "password", p.Password)
	setNullable(&sl, "quota_bytes", p.QuotaBytes)
	setIf(&sl, "maildir", p.Maildir)
	setNullable(&sl, "transport", p.Transport)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetMailbox(ctx, address)
	}
	var out Mailbox
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var got string
		err := sl.update(ctx, tx, "mailbox", "address = %s", []any{address}, "address", func(r pgx.Row) error {
			return r.Scan(&got)
		})
		if err != nil {
			return err
		}
		out, err = getMailbox(ctx, tx, got)
		return err
	})
	if err != nil {
		return Mailbox{}, fmt.Errorf("update mailbox %s: %w", address, err)
	}
	return out, nil
}

// SetMailboxPassword stores a new password hash for the mailbox address.
func (s *Store) SetMailboxPassword(ctx context.Context, address, hash string) error {
	_, err := s.UpdateMailbox(ctx, address, MailboxPatch{Password: &hash})
	return err
}

// DeleteMailbox deletes the mailbox and, by cascade, its sender grants, app
// passwords, quota usage and vacation. Aliases pointing at it stay.
func (s *Store) DeleteMailbox(ctx context.Context, address string) error {
	return s.deleteRow(ctx, "mailbox "+address, `DELETE FROM mailbox WHERE address = $1`, address)
}

// QuotaUsage is a row of quota_usage (PostfixAdmin's quota2 shape).
type QuotaUsage struct {
	Username  string    `json:"username"`
	Bytes     int64     `json:"bytes"`
	Messages  int64     `json:"messages"`
	UpdatedAt time.Time `json:"updated_at"`
}

// GetQuotaUsage returns the usage of the mailbox address; ErrNotFound when
// its owner has not written any.
func (s *Store) GetQuotaUsage(ctx context.Context, address string) (QuotaUsage, error) {
	var q QuotaUsage
	err := s.pool.QueryRow(ctx, `SELECT username, bytes, messages, updated_at FROM quota_usage WHERE username = $1`,
		address).Scan(&q.Username, &q.Bytes, &q.Messages, &q.UpdatedAt)
	if err != nil {
		return QuotaUsage{}, fmt.Errorf("get quota usage of %s: %w", address, MapError(err))
	}
	return q, nil
}

// AppPassword is a row of app_password: one of several extra passwords of a
// mailbox (for a phone, a mail client), each revocable on its own.
type AppPassword struct {
	ID         int64      `json:"id"`
	Mailbox    string     `json:"mailbox"`
	Name       string     `json:"name"`
	Password   string     `json:"-"` // hash, Dovecot {SCHEME} form
	Domain     string     `json:"domain"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	Active     bool       `json:"active"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

const appPasswordColumns = `id, mailbox, name, password, domain, expires_at, last_used_at, active, created_at, updated_at`

func scanAppPassword(r pgx.Row) (AppPassword, error) {
	var p AppPassword
	err := r.Scan(&p.ID, &p.Mailbox, &p.Name, &p.Password, &p.Domain, &p.ExpiresAt, &p.LastUsedAt,
		&p.Active, &p.CreatedAt, &p.UpdatedAt)
	return p, err
}

// CreateAppPassword inserts p (Mailbox, Name, Password, ExpiresAt, Active)
// and returns the stored row with its ID.
func (s *Store) CreateAppPassword(ctx context.Context, p AppPassword) (AppPassword, error) {
	var out AppPassword
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanAppPassword(tx.QueryRow(ctx, `
			INSERT INTO app_password (mailbox, name, password, expires_at, active)
			VALUES (lower($1), $2, $3, $4, $5)
			RETURNING `+appPasswordColumns, p.Mailbox, p.Name, p.Password, p.ExpiresAt, p.Active))
		return err
	})
	if err != nil {
		return AppPassword{}, fmt.Errorf("create app password %q of %s: %w", p.Name, p.Mailbox, err)
	}
	return out, nil
}

// GetAppPassword returns the app password id.
func (s *Store) GetAppPassword(ctx context.Context, id int64) (AppPassword, error) {
	p, err := scanAppPassword(s.pool.QueryRow(ctx, `SELECT `+appPasswordColumns+` FROM app_password WHERE id = $1`, id))
	if err != nil {
		return AppPassword{}, fmt.Errorf("get app password %d: %w", id, MapError(err))
	}
	return p, nil
}

// ListAppPasswords returns the app passwords of mailbox ("" = every
// mailbox), ordered by mailbox and name. Search matches the name; Domain and
// Scope restrict the mailbox's domain.
func (s *Store) ListAppPasswords(ctx context.Context, mailbox string, o ListOptions) ([]AppPassword, error) {
	out, err := collect(ctx, s.pool, scanAppPassword, `
		SELECT `+appPasswordColumns+`
		FROM app_password
		WHERE name ILIKE $1
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))
		  AND ($6 = '' OR mailbox = $6)
		ORDER BY mailbox, name
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), o.Domain, o.scope(), o.limit(), o.offset(), mailbox)
	if err != nil {
		return nil, fmt.Errorf("list app passwords: %w", err)
	}
	return out, nil
}

// AppPasswordPatch lists the columns an update changes.
type AppPasswordPatch struct {
	Name      *string
	Password  *string
	ExpiresAt Nullable[time.Time]
	Active    *bool
}

// UpdateAppPassword applies p to the app password id.
func (s *Store) UpdateAppPassword(ctx context.Context, id int64, p AppPasswordPatch) (AppPassword, error) {
	var sl setList
	setIf(&sl, "name", p.Name)
	setIf(&sl, "password", p.Password)
	setNullable(&sl, "expires_at", p.ExpiresAt)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetAppPassword(ctx, id)
	}
	var out AppPassword
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "app_password", "id = %s", []any{id}, appPasswordColumns, func(r pgx.Row) error {
			var err error
			out, err = scanAppPassword(r)
			return err
		})
	})
	if err != nil {
		return AppPassword{}, fmt.Errorf("update app password %d: %w", id, err)
	}
	return out, nil
}

// DeleteAppPassword deletes the app password id.
func (s *Store) DeleteAppPassword(ctx context.Context, id int64) error {
	return s.deleteRow(ctx, fmt.Sprintf("app password %d", id), `DELETE FROM app_password WHERE id = $1`, id)
}
