package store

// Queries the admin service needs beyond the per-table CRUD: totals for
// paging (each Count* uses the WHERE clause of the List* it pairs with, and
// skips the search predicate when there is no search, so that counting a
// large domain's rows can use its index),
// the audit log, lookups by id restricted to a scope in SQL, domain usage,
// API token use, and CSV imports in one transaction.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// count runs a SELECT count(*) query.
func (s *Store) count(ctx context.Context, what, sql string, args ...any) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", what, MapError(err))
	}
	return n, nil
}

// CountDomains counts what ListDomains lists, ignoring Limit and Offset.
func (s *Store) CountDomains(ctx context.Context, o ListOptions) (int64, error) {
	return s.count(ctx, "domains", `
		SELECT count(*) FROM domain d
		WHERE ($4 = '' OR d.name ILIKE $1)
		  AND ($2 = '' OR d.name = $2)
		  AND ($3::text[] IS NULL OR d.name = ANY ($3))`,
		o.searchPattern(), o.Domain, o.scope(), o.Search)
}

// CountAliasDomains counts what ListAliasDomains lists.
func (s *Store) CountAliasDomains(ctx context.Context, o ListOptions) (int64, error) {
	return s.count(ctx, "alias domains", `
		SELECT count(*) FROM alias_domain
		WHERE ($4 = '' OR alias_domain ILIKE $1)
		  AND ($2 = '' OR target_domain = $2)
		  AND ($3::text[] IS NULL OR target_domain = ANY ($3))`,
		o.searchPattern(), o.Domain, o.scope(), o.Search)
}

// CountMailboxes counts what ListMailboxes lists.
func (s *Store) CountMailboxes(ctx context.Context, o ListOptions) (int64, error) {
	return s.count(ctx, "mailboxes", `
		SELECT count(*) FROM mailbox m
		WHERE ($4 = '' OR m.address ILIKE $1 OR m.name ILIKE $1)
		  AND ($2 = '' OR m.domain = $2)
		  AND ($3::text[] IS NULL OR m.domain = ANY ($3))`,
		o.searchPattern(), o.Domain, o.scope(), o.Search)
}

// CountAliases counts what ListAliases lists.
func (s *Store) CountAliases(ctx context.Context, o ListOptions) (int64, error) {
	return s.count(ctx, "aliases", `
		SELECT count(*) FROM alias
		WHERE ($4 = '' OR address ILIKE $1 OR EXISTS (SELECT 1 FROM unnest(destinations) AS x WHERE x ILIKE $1))
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))`,
		o.searchPattern(), o.Domain, o.scope(), o.Search)
}

// CountAdmins counts what ListAdmins lists.
func (s *Store) CountAdmins(ctx context.Context, o ListOptions) (int64, error) {
	return s.count(ctx, "admins", `
		SELECT count(*) FROM admin a
		WHERE a.username ILIKE $1
		  AND ($2 = '' OR EXISTS (SELECT 1 FROM domain_admin da WHERE da.username = a.username AND da.domain = $2))
		  AND ($3::text[] IS NULL OR EXISTS (SELECT 1 FROM domain_admin da
		                                     WHERE da.username = a.username AND da.domain = ANY ($3)))`,
		o.searchPattern(), o.Domain, o.scope())
}

// CountDomainAdmins counts what ListDomainAdmins lists.
func (s *Store) CountDomainAdmins(ctx context.Context, username string, o ListOptions) (int64, error) {
	return s.count(ctx, "domain admins", `
		SELECT count(*) FROM domain_admin
		WHERE domain ILIKE $1
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))
		  AND ($4 = '' OR username = $4)`,
		o.searchPattern(), o.Domain, o.scope(), username)
}

// CountAPITokens counts what ListAPITokens lists.
func (s *Store) CountAPITokens(ctx context.Context, admin string, o ListOptions) (int64, error) {
	return s.count(ctx, "API tokens", `
		SELECT count(*) FROM api_token WHERE name ILIKE $1 AND ($2 = '' OR admin = $2)`,
		o.searchPattern(), admin)
}

// CountAppPasswords counts what ListAppPasswords lists.
func (s *Store) CountAppPasswords(ctx context.Context, mailbox string, o ListOptions) (int64, error) {
	return s.count(ctx, "app passwords", `
		SELECT count(*) FROM app_password
		WHERE name ILIKE $1
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))
		  AND ($4 = '' OR mailbox = $4)`,
		o.searchPattern(), o.Domain, o.scope(), mailbox)
}

// CountSenderGrants counts what ListSenderGrants lists.
func (s *Store) CountSenderGrants(ctx context.Context, mailbox string, o ListOptions) (int64, error) {
	return s.count(ctx, "sender grants", `
		SELECT count(*) FROM sender_grant
		WHERE (mailbox ILIKE $1 OR sender ILIKE $1)
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))
		  AND ($4 = '' OR mailbox = $4)`,
		o.searchPattern(), o.Domain, o.scope(), mailbox)
}

// CountVacations counts what ListVacations lists.
func (s *Store) CountVacations(ctx context.Context, o ListOptions) (int64, error) {
	return s.count(ctx, "vacations", `
		SELECT count(*) FROM vacation
		WHERE ($4 = '' OR mailbox ILIKE $1 OR subject ILIKE $1)
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))`,
		o.searchPattern(), o.Domain, o.scope(), o.Search)
}

// CountTransports counts what ListTransports lists.
func (s *Store) CountTransports(ctx context.Context, o ListOptions) (int64, error) {
	return s.count(ctx, "transports", `
		SELECT count(*) FROM transport
		WHERE (key ILIKE $1 OR nexthop ILIKE $1)
		  AND ($2 = '' OR key = $2 OR right(key, length($2) + 1) = '@' || $2)`,
		o.searchPattern(), o.Domain)
}

// DomainUsage is what the mailboxes of a domain use, as their quota owner
// last wrote it into quota_usage.
type DomainUsage struct {
	UsedBytes    int64 `json:"used_bytes"`
	UsedMessages int64 `json:"used_messages"`
}

// GetDomainUsage sums the quota usage of the mailboxes of domain (zero when
// there are none; an unknown domain is not an error).
func (s *Store) GetDomainUsage(ctx context.Context, domain string) (DomainUsage, error) {
	var u DomainUsage
	err := s.pool.QueryRow(ctx, `
		SELECT coalesce(sum(q.bytes), 0), coalesce(sum(q.messages), 0)
		FROM mailbox m JOIN quota_usage q ON q.username = m.address
		WHERE m.domain = $1`, domain).Scan(&u.UsedBytes, &u.UsedMessages)
	if err != nil {
		return DomainUsage{}, fmt.Errorf("usage of domain %s: %w", domain, MapError(err))
	}
	return u, nil
}

// GetSenderGrantIn returns the grant id when its mailbox's domain is in
// scope (nil: any domain), else ErrNotFound: the scope is part of the query.
func (s *Store) GetSenderGrantIn(ctx context.Context, id int64, scope []string) (SenderGrant, error) {
	g, err := scanSenderGrant(s.pool.QueryRow(ctx, `SELECT `+senderGrantColumns+` FROM sender_grant
		WHERE id = $1 AND ($2::text[] IS NULL OR domain = ANY ($2))`, id, scope))
	if err != nil {
		return SenderGrant{}, fmt.Errorf("get sender grant %d: %w", id, MapError(err))
	}
	return g, nil
}

// GetAppPasswordIn returns the app password id when its mailbox's domain is
// in scope (nil: any domain) and, when mailbox is not "", it belongs to
// mailbox; else ErrNotFound.
func (s *Store) GetAppPasswordIn(ctx context.Context, id int64, scope []string, mailbox string) (AppPassword, error) {
	p, err := scanAppPassword(s.pool.QueryRow(ctx, `SELECT `+appPasswordColumns+` FROM app_password
		WHERE id = $1 AND ($2::text[] IS NULL OR domain = ANY ($2)) AND ($3 = '' OR mailbox = $3)`, id, scope, mailbox))
	if err != nil {
		return AppPassword{}, fmt.Errorf("get app password %d: %w", id, MapError(err))
	}
	return p, nil
}

// GetAPITokenOf returns the token id when it belongs to admin ("" = any
// admin), else ErrNotFound.
func (s *Store) GetAPITokenOf(ctx context.Context, id int64, admin string) (APIToken, error) {
	t, err := scanAPIToken(s.pool.QueryRow(ctx, `SELECT `+apiTokenColumns+` FROM api_token
		WHERE id = $1 AND ($2 = '' OR admin = $2)`, id, admin))
	if err != nil {
		return APIToken{}, fmt.Errorf("get API token %d: %w", id, MapError(err))
	}
	return t, nil
}

// TouchAPIToken sets last_used_at of the token id to now, unless it was set
// less than every ago (so that a busy token does not write a row, and an
// audit entry, per request).
func (s *Store) TouchAPIToken(ctx context.Context, id int64, now time.Time, every time.Duration) error {
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			UPDATE api_token SET last_used_at = $2
			WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $2::timestamptz - make_interval(secs => $3))`,
			id, now, every.Seconds())
		return err
	})
	if err != nil {
		return fmt.Errorf("touch API token %d: %w", id, err)
	}
	return nil
}

// AdminDomains returns the domains that the admin username manages through
// active grants, and whether the admin is an active superadmin; an unknown
// or disabled admin is ErrNotFound.
func (s *Store) AdminDomains(ctx context.Context, username string) (domains []string, superadmin bool, err error) {
	err = s.pool.QueryRow(ctx, `
		SELECT a.superadmin,
		       array(SELECT da.domain FROM domain_admin da
		             WHERE da.username = a.username AND da.active ORDER BY da.domain)
		FROM admin a WHERE a.username = $1 AND a.active`, username).Scan(&superadmin, &domains)
	if err != nil {
		return nil, false, fmt.Errorf("domains of admin %s: %w", username, MapError(err))
	}
	if domains == nil {
		domains = []string{}
	}
	return domains, superadmin, nil
}

// SetAdminTOTPStep records step as the last accepted TOTP time step of the
// admin username, only if it is later than the one recorded: a code is
// accepted at most once. It reports whether it recorded step.
func (s *Store) SetAdminTOTPStep(ctx context.Context, username string, step int64) (bool, error) {
	ok := false
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			UPDATE admin SET totp_last_step = $2
			WHERE username = $1 AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < $2)`,
			username, step)
		ok = tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("record TOTP step of %s: %w", username, err)
	}
	return ok, nil
}

// AuditEntry is a row of audit_log.
type AuditEntry struct {
	ID        int64           `json:"id"`
	At        time.Time       `json:"at"`
	Actor     string          `json:"actor"`
	Operation string          `json:"operation"` // INSERT, UPDATE or DELETE
	Table     string          `json:"table"`
	RowKey    string          `json:"row_key"`
	Domain    *string         `json:"domain"`
	Old       json.RawMessage `json:"old"` // secrets redacted by the trigger
	New       json.RawMessage `json:"new"`
}

// AuditFilter selects audit rows. ListOptions.Search matches the row key,
// Domain and Scope the row's domain (rows without a domain are outside any
// non-nil scope).
type AuditFilter struct {
	ListOptions
	Table string // "" = any
	Actor string // "" = any
	Since *time.Time
	Until *time.Time // exclusive
}

const auditWhere = `
	WHERE ($1 = '%%' OR row_key ILIKE $1)
	  AND ($2 = '' OR domain = $2)
	  AND ($3::text[] IS NULL OR domain = ANY ($3))
	  AND ($4 = '' OR table_name = $4)
	  AND ($5 = '' OR actor = $5)
	  AND ($6::timestamptz IS NULL OR at >= $6)
	  AND ($7::timestamptz IS NULL OR at < $7)`

// ListAuditLog returns audit rows, newest first.
func (s *Store) ListAuditLog(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	out, err := collect(ctx, s.pool, func(r pgx.Row) (AuditEntry, error) {
		var e AuditEntry
		var o, n []byte
		err := r.Scan(&e.ID, &e.At, &e.Actor, &e.Operation, &e.Table, &e.RowKey, &e.Domain, &o, &n)
		e.Old, e.New = o, n
		return e, err
	}, `
		SELECT id, at, actor, operation, table_name, row_key, domain, old, new
		FROM audit_log`+auditWhere+`
		ORDER BY at DESC, id DESC
		LIMIT $8 OFFSET $9`,
		f.searchPattern(), f.Domain, f.scope(), f.Table, f.Actor, f.Since, f.Until, f.limit(), f.offset())
	if err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	return out, nil
}

// CountAuditLog counts what ListAuditLog lists.
func (s *Store) CountAuditLog(ctx context.Context, f AuditFilter) (int64, error) {
	return s.count(ctx, "audit log", `SELECT count(*) FROM audit_log`+auditWhere,
		f.searchPattern(), f.Domain, f.scope(), f.Table, f.Actor, f.Since, f.Until)
}

// RowError is the failure of one row of an import.
type RowError struct {
	Row int // index into the rows given
	Err error
}

// errImportRollback ends an import transaction without committing.
var errImportRollback = errors.New("import rolled back")

// importRows runs insert for each of n rows in one transaction, each in its
// own savepoint so that every failing row is reported. The transaction is
// committed only when no row failed and dryRun is false.
func (s *Store) importRows(ctx context.Context, n int, dryRun bool, insert func(tx pgx.Tx, i int) error) ([]RowError, error) {
	var rowErrs []RowError
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		for i := range n {
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if err := insert(sp, i); err != nil {
				if rerr := sp.Rollback(ctx); rerr != nil {
					return rerr
				}
				if !isRowError(err) {
					return err
				}
				rowErrs = append(rowErrs, RowError{Row: i, Err: MapError(err)})
				continue
			}
			if err := sp.Commit(ctx); err != nil {
				return err
			}
		}
		if dryRun || len(rowErrs) > 0 {
			return errImportRollback
		}
		return nil
	})
	if err != nil && !errors.Is(err, errImportRollback) {
		return nil, err
	}
	return rowErrs, nil
}

// isRowError reports whether err is about the row (a rule the database
// checks) rather than the database itself, which ends the import.
func isRowError(err error) bool {
	m := MapError(err)
	return errors.Is(m, ErrInvalid) || errors.Is(m, ErrConflict) || errors.Is(m, ErrNotFound) ||
		errors.Is(m, ErrLimitExceeded) || errors.Is(m, ErrInUse)
}

// ImportMailboxes inserts rows (as CreateMailbox) in one transaction,
// committed only when every row succeeds and dryRun is false. Each failing
// row is reported; limits are checked as the rows accumulate, so a dry run
// reports exactly what the real import would.
func (s *Store) ImportMailboxes(ctx context.Context, rows []Mailbox, dryRun bool) ([]RowError, error) {
	rerrs, err := s.importRows(ctx, len(rows), dryRun, func(tx pgx.Tx, i int) error {
		m := rows[i]
		_, err := tx.Exec(ctx, `
			INSERT INTO mailbox (address, name, password, quota_bytes, maildir, transport, active)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			m.Address, m.Name, m.Password, m.QuotaBytes, m.Maildir, m.Transport, m.Active)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("import mailboxes: %w", err)
	}
	return rerrs, nil
}

// ImportAliases inserts rows (as CreateAlias) in one transaction, as
// ImportMailboxes does.
func (s *Store) ImportAliases(ctx context.Context, rows []Alias, dryRun bool) ([]RowError, error) {
	rerrs, err := s.importRows(ctx, len(rows), dryRun, func(tx pgx.Tx, i int) error {
		a := rows[i]
		_, err := tx.Exec(ctx, `
			INSERT INTO alias (address, destinations, description, active) VALUES ($1, $2, $3, $4)`,
			a.Address, nonNil(a.Destinations), a.Description, a.Active)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("import aliases: %w", err)
	}
	return rerrs, nil
}

// GetAliasDomainIn returns the alias domain name when its target domain is
// in scope (nil: any domain), else ErrNotFound.
func (s *Store) GetAliasDomainIn(ctx context.Context, name string, scope []string) (AliasDomain, error) {
	a, err := scanAliasDomain(s.pool.QueryRow(ctx, `SELECT `+aliasDomainColumns+` FROM alias_domain
		WHERE alias_domain = $1 AND ($2::text[] IS NULL OR target_domain = ANY ($2))`, name, scope))
	if err != nil {
		return AliasDomain{}, fmt.Errorf("get alias domain %s: %w", name, MapError(err))
	}
	return a, nil
}
