package pfaimport

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// MinVersion is the oldest PostfixAdmin schema (config.version) this
// importer reads: PostfixAdmin 3.2's, with vacation's activefrom,
// activeuntil and interval_time, and admin.superadmin.
const MinVersion = 1836

// The PostfixAdmin rows that are read, as PostfixAdmin stores them.
type (
	pfaDomain struct {
		Domain, Description string
		Aliases, Mailboxes  int64
		MaxQuota, Quota     int64 // MB
		Transport           *string
		BackupMX, Active    bool
		Created             *time.Time
	}
	pfaAliasDomain struct {
		AliasDomain, TargetDomain string
		Active                    bool
		Created                   *time.Time
	}
	pfaMailbox struct {
		Username, Password, Name, Maildir string
		Quota                             int64 // bytes
		LocalPart, Domain                 string
		Active                            bool
		Created                           *time.Time
	}
	pfaAlias struct {
		Address, Goto, Domain string
		Active                bool
		Created               *time.Time
	}
	pfaAdmin struct {
		Username, Password string
		Superadmin, Active bool
		Created            *time.Time
	}
	pfaDomainAdmin struct {
		Username, Domain string
		Active           bool
	}
	pfaVacation struct {
		Email, Subject, Body    string
		Active                  bool
		ActiveFrom, ActiveUntil *time.Time
		IntervalTime            int64
		Created                 *time.Time
	}
	pfaNotification struct {
		OnVacation, Notified string
		NotifiedAt           time.Time
	}
	pfaQuota struct {
		Username        string
		Bytes, Messages int64
	}
)

// source is everything read from PostfixAdmin, in one snapshot.
type source struct {
	Version       int
	Domains       []pfaDomain
	AliasDomains  []pfaAliasDomain
	Mailboxes     []pfaMailbox
	Aliases       []pfaAlias
	Admins        []pfaAdmin
	DomainAdmins  []pfaDomainAdmin
	Vacations     []pfaVacation
	Notifications []pfaNotification
	Quotas        []pfaQuota
	// Ignored counts the rows of tables that are not imported, by table.
	Ignored map[string]int64
}

// readSource reads a PostfixAdmin database in one REPEATABLE READ, READ ONLY
// transaction, so that the rows are one consistent snapshot and nothing is
// written there.
func readSource(ctx context.Context, conn *pgx.Conn) (*source, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("postfixadmin database: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read only

	src := &source{Ignored: map[string]int64{}}
	has := func(table string) (bool, error) {
		var ok bool
		err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&ok)
		return ok, err
	}
	for _, t := range []string{"config", "domain", "mailbox", "alias", "alias_domain", "admin", "domain_admins"} {
		ok, err := has(t)
		if err != nil {
			return nil, fmt.Errorf("postfixadmin database: %w", err)
		}
		if !ok {
			return nil, fmt.Errorf("postfixadmin database: no table %q: is this a PostfixAdmin database?", t)
		}
	}
	var v string
	if err := tx.QueryRow(ctx, `SELECT value FROM config WHERE name = 'version'`).Scan(&v); err != nil {
		return nil, fmt.Errorf("postfixadmin database: schema version (config.version): %w", err)
	}
	if src.Version, err = strconv.Atoi(v); err != nil {
		return nil, fmt.Errorf("postfixadmin database: schema version %q is not a number", v)
	}
	if src.Version < MinVersion {
		return nil, fmt.Errorf("postfixadmin database: schema version %d is older than %d: upgrade PostfixAdmin (its setup.php) first", src.Version, MinVersion)
	}

	read := func(what, sql string, scan func(pgx.Rows) error) error {
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			return fmt.Errorf("read postfixadmin %s: %w", what, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				return fmt.Errorf("read postfixadmin %s: %w", what, err)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read postfixadmin %s: %w", what, err)
		}
		return nil
	}
	err = read("domains", `SELECT domain, description, aliases, mailboxes, maxquota, quota, transport, backupmx, active, created
		FROM domain ORDER BY domain`, func(r pgx.Rows) error {
		var d pfaDomain
		err := r.Scan(&d.Domain, &d.Description, &d.Aliases, &d.Mailboxes, &d.MaxQuota, &d.Quota, &d.Transport,
			&d.BackupMX, &d.Active, &d.Created)
		src.Domains = append(src.Domains, d)
		return err
	})
	if err != nil {
		return nil, err
	}
	err = read("alias domains", `SELECT alias_domain, target_domain, active, created FROM alias_domain ORDER BY alias_domain`,
		func(r pgx.Rows) error {
			var a pfaAliasDomain
			err := r.Scan(&a.AliasDomain, &a.TargetDomain, &a.Active, &a.Created)
			src.AliasDomains = append(src.AliasDomains, a)
			return err
		})
	if err != nil {
		return nil, err
	}
	err = read("mailboxes", `SELECT username, password, name, maildir, quota, local_part, coalesce(domain, ''), active, created
		FROM mailbox ORDER BY username`, func(r pgx.Rows) error {
		var m pfaMailbox
		err := r.Scan(&m.Username, &m.Password, &m.Name, &m.Maildir, &m.Quota, &m.LocalPart, &m.Domain, &m.Active, &m.Created)
		src.Mailboxes = append(src.Mailboxes, m)
		return err
	})
	if err != nil {
		return nil, err
	}
	err = read("aliases", `SELECT address, goto, domain, active, created FROM alias ORDER BY address`, func(r pgx.Rows) error {
		var a pfaAlias
		err := r.Scan(&a.Address, &a.Goto, &a.Domain, &a.Active, &a.Created)
		src.Aliases = append(src.Aliases, a)
		return err
	})
	if err != nil {
		return nil, err
	}
	err = read("admins", `SELECT username, password, superadmin, active, created FROM admin ORDER BY username`, func(r pgx.Rows) error {
		var a pfaAdmin
		err := r.Scan(&a.Username, &a.Password, &a.Superadmin, &a.Active, &a.Created)
		src.Admins = append(src.Admins, a)
		return err
	})
	if err != nil {
		return nil, err
	}
	err = read("domain admins", `SELECT username, domain, active FROM domain_admins ORDER BY username, domain`, func(r pgx.Rows) error {
		var d pfaDomainAdmin
		err := r.Scan(&d.Username, &d.Domain, &d.Active)
		src.DomainAdmins = append(src.DomainAdmins, d)
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, opt := range []struct {
		table, sql string
		scan       func(pgx.Rows) error
	}{
		{"vacation", `SELECT email, subject, body, active, activefrom, activeuntil, interval_time, created
			FROM vacation ORDER BY email`, func(r pgx.Rows) error {
			var v pfaVacation
			err := r.Scan(&v.Email, &v.Subject, &v.Body, &v.Active, &v.ActiveFrom, &v.ActiveUntil, &v.IntervalTime, &v.Created)
			src.Vacations = append(src.Vacations, v)
			return err
		}},
		{"vacation_notification", `SELECT on_vacation, notified, notified_at FROM vacation_notification
			ORDER BY on_vacation, notified`, func(r pgx.Rows) error {
			var n pfaNotification
			err := r.Scan(&n.OnVacation, &n.Notified, &n.NotifiedAt)
			src.Notifications = append(src.Notifications, n)
			return err
		}},
		{"quota2", `SELECT username, bytes, messages FROM quota2 ORDER BY username`, func(r pgx.Rows) error {
			var q pfaQuota
			err := r.Scan(&q.Username, &q.Bytes, &q.Messages)
			src.Quotas = append(src.Quotas, q)
			return err
		}},
	} {
		ok, err := has(opt.table)
		if err != nil {
			return nil, fmt.Errorf("postfixadmin database: %w", err)
		}
		if ok {
			if err := read(opt.table, opt.sql, opt.scan); err != nil {
				return nil, err
			}
		}
	}
	// Tables facteur has no use for, or that this importer leaves out:
	// counted so that the report says what stays behind.
	for _, t := range []string{"fetchmail", "dkim", "dkim_signing", "mailbox_app_password", "totp_exception_address"} {
		ok, err := has(t)
		if err != nil {
			return nil, fmt.Errorf("postfixadmin database: %w", err)
		}
		if !ok {
			continue
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{t}.Sanitize()).Scan(&n); err != nil {
			return nil, fmt.Errorf("read postfixadmin %s: %w", t, err)
		}
		if n > 0 {
			src.Ignored[t] = n
		}
	}
	return src, nil
}
