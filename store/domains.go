package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Domain is a row of the domain table: a domain whose mail facteur accepts.
// Limits are nil when unlimited.
type Domain struct {
	Name        string `json:"name"` // lower-case IDNA A-label
	Description string `json:"description"`
	Active      bool   `json:"active"`
	// BackupMX marks a relay domain: mail is accepted and relayed to its
	// transport (or MX), not delivered here.
	BackupMX bool `json:"backup_mx"`
	// Local marks the host's own domain: system users, /etc/aliases,
	// command and file destinations.
	Local             bool      `json:"local"`
	Transport         *string   `json:"transport"`
	MaxMailboxes      *int32    `json:"max_mailboxes"`
	MaxAliases        *int32    `json:"max_aliases"`
	MaxQuotaBytes     *int64    `json:"max_quota_bytes"`     // per mailbox
	TotalQuotaBytes   *int64    `json:"total_quota_bytes"`   // sum over the domain's mailboxes
	DefaultQuotaBytes *int64    `json:"default_quota_bytes"` // for mailboxes created without a quota
	MaxMessageBytes   *int64    `json:"max_message_bytes"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// DomainCounts is what a domain holds, for listings and limit displays.
type DomainCounts struct {
	Mailboxes    int64 `json:"mailboxes"`
	Aliases      int64 `json:"aliases"`
	AliasDomains int64 `json:"alias_domains"`
	// QuotaAllocatedBytes sums the quotas of the domain's mailboxes
	// (mailboxes without a quota add nothing).
	QuotaAllocatedBytes int64 `json:"quota_allocated_bytes"`
	// UnlimitedMailboxes counts the mailboxes without a quota.
	UnlimitedMailboxes int64 `json:"unlimited_mailboxes"`
}

// DomainSummary is a domain with its counts.
type DomainSummary struct {
	Domain
	DomainCounts
}

const domainColumns = `name, description, active, backup_mx, local, transport, max_mailboxes,
	max_aliases, max_quota_bytes, total_quota_bytes, default_quota_bytes, max_message_bytes,
	created_at, updated_at`

func scanDomain(r pgx.Row) (Domain, error) {
	var d Domain
	err := r.Scan(&d.Name, &d.Description, &d.Active, &d.BackupMX, &d.Local, &d.Transport,
		&d.MaxMailboxes, &d.MaxAliases, &d.MaxQuotaBytes, &d.TotalQuotaBytes, &d.DefaultQuotaBytes,
		&d.MaxMessageBytes, &d.CreatedAt, &d.UpdatedAt)
	return d, err
}

// CreateDomain inserts d (Name, Description, Active, BackupMX, Local,
// Transport and the limits; timestamps are ignored) and returns the stored
// row. The database lower-cases the name and checks that it is an A-label;
// with the setting default_alias_target it also creates postmaster@ and
// abuse@ aliases in the same transaction.
func (s *Store) CreateDomain(ctx context.Context, d Domain) (Domain, error) {
	var out Domain
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanDomain(tx.QueryRow(ctx, `
			INSERT INTO domain (name, description, active, backup_mx, local, transport, max_mailboxes,
				max_aliases, max_quota_bytes, total_quota_bytes, default_quota_bytes, max_message_bytes)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			RETURNING `+domainColumns,
			d.Name, d.Description, d.Active, d.BackupMX, d.Local, d.Transport, d.MaxMailboxes,
			d.MaxAliases, d.MaxQuotaBytes, d.TotalQuotaBytes, d.DefaultQuotaBytes, d.MaxMessageBytes))
		return err
	})
	if err != nil {
		return Domain{}, fmt.Errorf("create domain %s: %w", d.Name, err)
	}
	return out, nil
}

// GetDomain returns the domain name (already normalised by the caller).
func (s *Store) GetDomain(ctx context.Context, name string) (Domain, error) {
	d, err := scanDomain(s.pool.QueryRow(ctx, `SELECT `+domainColumns+` FROM domain WHERE name = $1`, name))
	if err != nil {
		return Domain{}, fmt.Errorf("get domain %s: %w", name, MapError(err))
	}
	return d, nil
}

const domainCountsSQL = `
	(SELECT count(*) FROM mailbox m WHERE m.domain = d.name),
	(SELECT count(*) FROM alias a WHERE a.domain = d.name),
	(SELECT count(*) FROM alias_domain ad WHERE ad.target_domain = d.name),
	(SELECT coalesce(sum(m.quota_bytes), 0) FROM mailbox m WHERE m.domain = d.name),
	(SELECT count(*) FROM mailbox m WHERE m.domain = d.name AND m.quota_bytes IS NULL)`

func scanDomainSummary(r pgx.Row) (DomainSummary, error) {
	var x DomainSummary
	d := &x.Domain
	c := &x.DomainCounts
	err := r.Scan(&d.Name, &d.Description, &d.Active, &d.BackupMX, &d.Local, &d.Transport,
		&d.MaxMailboxes, &d.MaxAliases, &d.MaxQuotaBytes, &d.TotalQuotaBytes, &d.DefaultQuotaBytes,
		&d.MaxMessageBytes, &d.CreatedAt, &d.UpdatedAt,
		&c.Mailboxes, &c.Aliases, &c.AliasDomains, &c.QuotaAllocatedBytes, &c.UnlimitedMailboxes)
	return x, err
}

// GetDomainSummary returns the domain with its counts.
func (s *Store) GetDomainSummary(ctx context.Context, name string) (DomainSummary, error) {
	x, err := scanDomainSummary(s.pool.QueryRow(ctx,
		`SELECT `+domainColumns+`, `+domainCountsSQL+` FROM domain d WHERE name = $1`, name))
	if err != nil {
		return DomainSummary{}, fmt.Errorf("get domain %s: %w", name, MapError(err))
	}
	return x, nil
}

// ListDomains returns domains ordered by name with their counts. Search
// matches the name; Domain and Scope restrict the names.
func (s *Store) ListDomains(ctx context.Context, o ListOptions) ([]DomainSummary, error) {
	out, err := collect(ctx, s.pool, scanDomainSummary, `
		SELECT `+domainColumns+`, `+domainCountsSQL+`
		FROM domain d
		WHERE d.name ILIKE $1
		  AND ($2 = '' OR d.name = $2)
		  AND ($3::text[] IS NULL OR d.name = ANY ($3))
		ORDER BY d.name
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), o.Domain, o.scope(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	return out, nil
}

// DomainPatch lists the columns an update changes; nil (or an unset
// Nullable) leaves a column as it is. Lowering a limit below what the
// domain already holds fails with ErrLimitExceeded.
type DomainPatch struct {
	Description       *string
	Active            *bool
	BackupMX          *bool
	Local             *bool
	Transport         Nullable[string]
	MaxMailboxes      Nullable[int32]
	MaxAliases        Nullable[int32]
	MaxQuotaBytes     Nullable[int64]
	TotalQuotaBytes   Nullable[int64]
	DefaultQuotaBytes Nullable[int64]
	MaxMessageBytes   Nullable[int64]
}

// UpdateDomain applies p to the domain name and returns the stored row.
func (s *Store) UpdateDomain(ctx context.Context, name string, p DomainPatch) (Domain, error) {
	var sl setList
	setIf(&sl, "description", p.Description)
	setIf(&sl, "active", p.Active)
	setIf(&sl, "backup_mx", p.BackupMX)
	setIf(&sl, "local", p.Local)
	setNullable(&sl, "transport", p.Transport)
	setNullable(&sl, "max_mailboxes", p.MaxMailboxes)
	setNullable(&sl, "max_aliases", p.MaxAliases)
	setNullable(&sl, "max_quota_bytes", p.MaxQuotaBytes)
	setNullable(&sl, "total_quota_bytes", p.TotalQuotaBytes)
	setNullable(&sl, "default_quota_bytes", p.DefaultQuotaBytes)
	setNullable(&sl, "max_message_bytes", p.MaxMessageBytes)
	if sl.empty() {
		return s.GetDomain(ctx, name)
	}
	var out Domain
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "domain", "name = %s", []any{name}, domainColumns, func(r pgx.Row) error {
			var err error
			out, err = scanDomain(r)
			return err
		})
	})
	if err != nil {
		return Domain{}, fmt.Errorf("update domain %s: %w", name, err)
	}
	return out, nil
}

// DeleteDomain deletes the domain and, by cascade, its alias domains,
// mailboxes, aliases and everything that hangs off them.
func (s *Store) DeleteDomain(ctx context.Context, name string) error {
	return s.deleteRow(ctx, "domain "+name, `DELETE FROM domain WHERE name = $1`, name)
}

// AliasDomain maps every address of AliasDomain to the same local part in
// TargetDomain.
type AliasDomain struct {
	AliasDomain  string    `json:"alias_domain"`
	TargetDomain string    `json:"target_domain"`
	Active       bool      `json:"active"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

const aliasDomainColumns = `alias_domain, target_domain, active, created_at, updated_at`

func scanAliasDomain(r pgx.Row) (AliasDomain, error) {
	var a AliasDomain
	err := r.Scan(&a.AliasDomain, &a.TargetDomain, &a.Active, &a.CreatedAt, &a.UpdatedAt)
	return a, err
}

// CreateAliasDomain inserts a (AliasDomain, TargetDomain, Active). The target
// must be a domain (ErrNotFound otherwise); the alias domain cannot be a
// domain itself nor point at itself (ErrInvalid).
func (s *Store) CreateAliasDomain(ctx context.Context, a AliasDomain) (AliasDomain, error) {
	var out AliasDomain
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanAliasDomain(tx.QueryRow(ctx, `
			INSERT INTO alias_domain (alias_domain, target_domain, active) VALUES ($1, $2, $3)
			RETURNING `+aliasDomainColumns, a.AliasDomain, a.TargetDomain, a.Active))
		return err
	})
	if err != nil {
		return AliasDomain{}, fmt.Errorf("create alias domain %s: %w", a.AliasDomain, err)
	}
	return out, nil
}

// GetAliasDomain returns the alias domain name.
func (s *Store) GetAliasDomain(ctx context.Context, name string) (AliasDomain, error) {
	a, err := scanAliasDomain(s.pool.QueryRow(ctx,
		`SELECT `+aliasDomainColumns+` FROM alias_domain WHERE alias_domain = $1`, name))
	if err != nil {
		return AliasDomain{}, fmt.Errorf("get alias domain %s: %w", name, MapError(err))
	}
	return a, nil
}

// ListAliasDomains returns alias domains ordered by name. Search matches the
// alias domain; Domain and Scope restrict the target domain.
func (s *Store) ListAliasDomains(ctx context.Context, o ListOptions) ([]AliasDomain, error) {
	out, err := collect(ctx, s.pool, scanAliasDomain, `
		SELECT `+aliasDomainColumns+`
		FROM alias_domain
		WHERE alias_domain ILIKE $1
		  AND ($2 = '' OR target_domain = $2)
		  AND ($3::text[] IS NULL OR target_domain = ANY ($3))
		ORDER BY alias_domain
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), o.Domain, o.scope(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list alias domains: %w", err)
	}
	return out, nil
}

// AliasDomainPatch lists the columns an update changes.
type AliasDomainPatch struct {
	TargetDomain *string
	Active       *bool
}

// UpdateAliasDomain applies p to the alias domain name.
func (s *Store) UpdateAliasDomain(ctx context.Context, name string, p AliasDomainPatch) (AliasDomain, error) {
	var sl setList
	setIf(&sl, "target_domain", p.TargetDomain)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetAliasDomain(ctx, name)
	}
	var out AliasDomain
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "alias_domain", "alias_domain = %s", []any{name}, aliasDomainColumns, func(r pgx.Row) error {
			var err error
			out, err = scanAliasDomain(r)
			return err
		})
	})
	if err != nil {
		return AliasDomain{}, fmt.Errorf("update alias domain %s: %w", name, err)
	}
	return out, nil
}

// DeleteAliasDomain deletes the alias domain name.
func (s *Store) DeleteAliasDomain(ctx context.Context, name string) error {
	return s.deleteRow(ctx, "alias domain "+name, `DELETE FROM alias_domain WHERE alias_domain = $1`, name)
}
