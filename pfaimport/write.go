package pfaimport

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store"
)

// writer writes a plan in one transaction of facteur's database.
type writer struct {
	ctx  context.Context
	tx   pgx.Tx
	opts Options
	r    *Report
	// newDomains are the domains this run created: default aliases the
	// database made for them give way to PostfixAdmin's.
	newDomains map[string]bool
	// finishDomains are the domains created or to be updated: their limits
	// are set once their mailboxes and aliases are in.
	finishDomains map[string]bool
}

// column is one compared column: its name and the value in facteur and in
// the import, in a canonical text form.
type column struct {
	name         string
	have, want   string
	secret, same bool
}

// canon writes a column value for comparison and reports.
func canon(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return strconv.Quote(x)
	case *string:
		if x == nil {
			return "NULL"
		}
		return strconv.Quote(*x)
	case *int32:
		if x == nil {
			return "NULL"
		}
		return strconv.FormatInt(int64(*x), 10)
	case *int64:
		if x == nil {
			return "NULL"
		}
		return strconv.FormatInt(*x, 10)
	case *time.Time:
		if x == nil {
			return "NULL"
		}
		return x.UTC().Format(time.RFC3339Nano)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []string:
		s := slices.Clone(x)
		slices.Sort(s)
		return strings.Join(s, ", ")
	}
	return fmt.Sprint(v)
}

// compare pairs facteur's values with the import's, column by column.
func compare(names []string, have, want []any) []column {
	out := make([]column, len(names))
	for i, n := range names {
		c := column{name: n, have: canon(have[i]), want: canon(want[i]), secret: n == "password"}
		c.same = c.have == c.want
		out[i] = c
	}
	return out
}

// differences describes the columns that differ, without secrets.
func differences(cols []column) string {
	var d []string
	for _, c := range cols {
		if c.same {
			continue
		}
		if c.secret {
			d = append(d, c.name+" differs")
		} else {
			d = append(d, fmt.Sprintf("%s: facteur %s, PostfixAdmin %s", c.name, c.have, c.want))
		}
	}
	return strings.Join(d, "; ")
}

// rowError reports whether err is about the row (the database refused it)
// rather than a failure of the import itself.
func rowError(err error) bool {
	for _, k := range []error{store.ErrNotFound, store.ErrConflict, store.ErrInvalid, store.ErrLimitExceeded, store.ErrInUse} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// savepoint runs fn in a savepoint. A row error (the database refused the
// row) rolls the savepoint back and is returned as rowErr, mapped, and the
// transaction goes on; any other error is returned as err.
func (w *writer) savepoint(fn func(tx pgx.Tx) error) (rowErr error, err error) {
	sp, err := w.tx.Begin(w.ctx)
	if err != nil {
		return nil, err
	}
	if ferr := fn(sp); ferr != nil {
		if rerr := sp.Rollback(w.ctx); rerr != nil {
			return nil, rerr
		}
		ferr = store.MapError(ferr)
		if rowError(ferr) {
			return ferr, nil
		}
		return nil, ferr
	}
	return nil, sp.Commit(w.ctx)
}

// sync brings one row in: insert when facteur has none, nothing when it
// has the same, an update (Options.Update) or a conflict when it differs.
// load returns facteur's values of names, in order.
func (w *writer) sync(table, key string, names []string, want []any,
	load func() ([]any, bool, error), insert, update func(tx pgx.Tx) error) error {
	t := w.r.table(table)
	have, found, err := load()
	if err != nil {
		return fmt.Errorf("read %s %s: %w", table, key, err)
	}
	if !found {
		rowErr, err := w.savepoint(insert)
		if err != nil {
			return fmt.Errorf("write %s %s: %w", table, key, err)
		}
		if rowErr != nil {
			w.r.notImported(table, key, rowErr.Error())
			return nil
		}
		t.Created++
		return nil
	}
	cols := compare(names, have, want)
	diff := differences(cols)
	switch {
	case diff == "":
		t.Same++
	case w.opts.Update && update != nil:
		rowErr, err := w.savepoint(update)
		if err != nil {
			return fmt.Errorf("update %s %s: %w", table, key, err)
		}
		if rowErr != nil {
			w.r.notImported(table, key, "update refused: "+rowErr.Error())
			return nil
		}
		t.Updated++
	default:
		t.Conflicts++
		w.r.Conflicts = append(w.r.Conflicts, Problem{table, key, diff})
	}
	return nil
}

// queryRow loads one row's values; found is false when there is none.
func (w *writer) queryRow(sql string, args []any, dest ...any) (bool, error) {
	err := w.tx.QueryRow(w.ctx, sql, args...).Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func (w *writer) write(p *plan) error {
	for _, d := range p.Domains {
		if err := w.domain(d); err != nil {
			return err
		}
	}
	for _, a := range p.AliasDomains {
		if err := w.aliasDomain(a); err != nil {
			return err
		}
	}
	for _, m := range p.Mailboxes {
		if err := w.mailbox(m); err != nil {
			return err
		}
	}
	for _, a := range p.Aliases {
		if err := w.alias(a); err != nil {
			return err
		}
	}
	for _, a := range p.Admins {
		if err := w.admin(a); err != nil {
			return err
		}
	}
	for _, d := range p.DomainAdmins {
		if err := w.domainAdmin(d); err != nil {
			return err
		}
	}
	for _, v := range p.Vacations {
		if err := w.vacation(v); err != nil {
			return err
		}
	}
	for _, n := range p.Notified {
		if err := w.history("vacation_notified", n.Mailbox+" "+n.Sender,
			`SELECT notified_at FROM vacation_notified WHERE mailbox = $1 AND sender = $2`, []any{n.Mailbox, n.Sender},
			[]any{n.NotifiedAt},
			`INSERT INTO vacation_notified (mailbox, sender, notified_at) VALUES ($1, $2, $3)`,
			[]any{n.Mailbox, n.Sender, n.NotifiedAt}); err != nil {
			return err
		}
	}
	for _, u := range p.Usage {
		if err := w.history("quota_usage", u.Username,
			`SELECT bytes, messages FROM quota_usage WHERE username = $1`, []any{u.Username},
			[]any{u.Bytes, u.Messages},
			`INSERT INTO quota_usage (username, bytes, messages) VALUES ($1, $2, $3)`,
			[]any{u.Username, u.Bytes, u.Messages}); err != nil {
			return err
		}
	}
	// Domain limits last: facteur's triggers check them against what the
	// domain holds, and an inconsistency PostfixAdmin let through (a limit
	// lowered below what exists) must not cost mailboxes.
	for _, d := range p.Domains {
		if err := w.domainLimits(d); err != nil {
			return err
		}
	}
	return nil
}

var domainCols = []string{"description", "active", "backup_mx", "transport", "max_mailboxes", "max_aliases",
	"max_quota_bytes", "total_quota_bytes"}

func (d domainRow) values() []any {
	return []any{d.Description, d.Active, d.BackupMX, d.Transport, d.MaxMailboxes, d.MaxAliases, d.MaxQuotaBytes, d.TotalQuotaBytes}
}

func (w *writer) domain(d domainRow) error {
	return w.sync("domain", d.Name, domainCols, d.values(),
		func() ([]any, bool, error) {
			var h domainRow
			found, err := w.queryRow(`SELECT description, active, backup_mx, transport, max_mailboxes, max_aliases,
				max_quota_bytes, total_quota_bytes FROM domain WHERE name = $1`, []any{d.Name},
				&h.Description, &h.Active, &h.BackupMX, &h.Transport, &h.MaxMailboxes, &h.MaxAliases,
				&h.MaxQuotaBytes, &h.TotalQuotaBytes)
			return h.values(), found, err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `INSERT INTO domain (name, description, active, backup_mx, transport, created_at)
				VALUES ($1, $2, $3, $4, $5, coalesce($6, now()))`,
				d.Name, d.Description, d.Active, d.BackupMX, d.Transport, d.Created)
			if err == nil {
				w.newDomains[d.Name] = true
				w.finishDomains[d.Name] = true
			}
			return err
		},
		func(pgx.Tx) error {
			// Updated with the limits, at the end; counted now.
			w.finishDomains[d.Name] = true
			return nil
		})
}

// domainLimits sets the limits of the domains this run created, and
// writes the domains it updates.
func (w *writer) domainLimits(d domainRow) error {
	if !w.finishDomains[d.Name] {
		return nil
	}
	rowErr, err := w.savepoint(func(tx pgx.Tx) error {
		_, err := tx.Exec(w.ctx, `UPDATE domain SET description = $2, active = $3, backup_mx = $4, transport = $5,
				max_mailboxes = $6, max_aliases = $7, max_quota_bytes = $8, total_quota_bytes = $9
			WHERE name = $1 AND (description, active, backup_mx, transport, max_mailboxes, max_aliases,
				max_quota_bytes, total_quota_bytes)
			IS DISTINCT FROM ($2, $3, $4, $5, $6, $7, $8, $9)`,
			d.Name, d.Description, d.Active, d.BackupMX, d.Transport, d.MaxMailboxes, d.MaxAliases,
			d.MaxQuotaBytes, d.TotalQuotaBytes)
		return err
	})
	if err != nil {
		return fmt.Errorf("set limits of domain %s: %w", d.Name, err)
	}
	if rowErr != nil {
		w.r.NotImported = append(w.r.NotImported, Problem{"domain", d.Name, "limits not applied: " + rowErr.Error()})
	}
	return nil
}

func (w *writer) aliasDomain(a aliasDomainRow) error {
	names := []string{"target_domain", "active"}
	return w.sync("alias_domain", a.AliasDomain, names, []any{a.TargetDomain, a.Active},
		func() ([]any, bool, error) {
			var h aliasDomainRow
			found, err := w.queryRow(`SELECT target_domain, active FROM alias_domain WHERE alias_domain = $1`,
				[]any{a.AliasDomain}, &h.TargetDomain, &h.Active)
			return []any{h.TargetDomain, h.Active}, found, err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `INSERT INTO alias_domain (alias_domain, target_domain, active, created_at)
				VALUES ($1, $2, $3, coalesce($4, now()))`, a.AliasDomain, a.TargetDomain, a.Active, a.Created)
			return err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `UPDATE alias_domain SET target_domain = $2, active = $3 WHERE alias_domain = $1`,
				a.AliasDomain, a.TargetDomain, a.Active)
			return err
		})
}

var mailboxCols = []string{"name", "password", "quota_bytes", "maildir", "active"}

func (w *writer) mailbox(m mailboxRow) error {
	return w.sync("mailbox", m.Address, mailboxCols, []any{m.Name, m.Password, m.QuotaBytes, m.Maildir, m.Active},
		func() ([]any, bool, error) {
			var h mailboxRow
			found, err := w.queryRow(`SELECT name, password, quota_bytes, maildir, active FROM mailbox WHERE address = $1`,
				[]any{m.Address}, &h.Name, &h.Password, &h.QuotaBytes, &h.Maildir, &h.Active)
			return []any{h.Name, h.Password, h.QuotaBytes, h.Maildir, h.Active}, found, err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `INSERT INTO mailbox (address, name, password, quota_bytes, maildir, active, created_at)
				VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, now()))`,
				m.Address, m.Name, m.Password, m.QuotaBytes, m.Maildir, m.Active, m.Created)
			return err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `UPDATE mailbox SET name = $2, password = $3, quota_bytes = $4, maildir = $5, active = $6
				WHERE address = $1`, m.Address, m.Name, m.Password, m.QuotaBytes, m.Maildir, m.Active)
			return err
		})
}

func (w *writer) alias(a aliasRow) error {
	dom := a.Address[strings.LastIndexByte(a.Address, '@')+1:]
	update := func(tx pgx.Tx) error {
		_, err := tx.Exec(w.ctx, `UPDATE alias SET destinations = $2, active = $3, description = '' WHERE address = $1`,
			a.Address, a.Destinations, a.Active)
		return err
	}
	// The database gives a new domain postmaster@ and abuse@ aliases
	// (setting default_alias_target); PostfixAdmin's own take their place.
	if w.newDomains[dom] {
		var desc string
		found, err := w.queryRow(`SELECT description FROM alias WHERE address = $1`, []any{a.Address}, &desc)
		if err != nil {
			return fmt.Errorf("read alias %s: %w", a.Address, err)
		}
		if found && desc == "default alias" {
			rowErr, err := w.savepoint(update)
			if err != nil {
				return fmt.Errorf("write alias %s: %w", a.Address, err)
			}
			if rowErr != nil {
				w.r.notImported("alias", a.Address, rowErr.Error())
			} else {
				w.r.table("alias").Created++
			}
			return nil
		}
	}
	return w.sync("alias", a.Address, []string{"destinations", "active"}, []any{a.Destinations, a.Active},
		func() ([]any, bool, error) {
			var dests []string
			var active bool
			found, err := w.queryRow(`SELECT destinations, active FROM alias WHERE address = $1`, []any{a.Address}, &dests, &active)
			return []any{dests, active}, found, err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `INSERT INTO alias (address, destinations, active, created_at)
				VALUES ($1, $2, $3, coalesce($4, now()))`, a.Address, a.Destinations, a.Active, a.Created)
			return err
		},
		update)
}

func (w *writer) admin(a adminRow) error {
	return w.sync("admin", a.Username, []string{"password", "superadmin", "active"}, []any{a.Password, a.Superadmin, a.Active},
		func() ([]any, bool, error) {
			var h adminRow
			found, err := w.queryRow(`SELECT password, superadmin, active FROM admin WHERE username = $1`,
				[]any{a.Username}, &h.Password, &h.Superadmin, &h.Active)
			return []any{h.Password, h.Superadmin, h.Active}, found, err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `INSERT INTO admin (username, password, superadmin, active, created_at)
				VALUES ($1, $2, $3, $4, coalesce($5, now()))`, a.Username, a.Password, a.Superadmin, a.Active, a.Created)
			return err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `UPDATE admin SET password = $2, superadmin = $3, active = $4 WHERE username = $1`,
				a.Username, a.Password, a.Superadmin, a.Active)
			return err
		})
}

func (w *writer) domainAdmin(d domainAdminRow) error {
	return w.sync("domain_admin", d.Username+" "+d.Domain, []string{"active"}, []any{d.Active},
		func() ([]any, bool, error) {
			var active bool
			found, err := w.queryRow(`SELECT active FROM domain_admin WHERE username = $1 AND domain = $2`,
				[]any{d.Username, d.Domain}, &active)
			return []any{active}, found, err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `INSERT INTO domain_admin (username, domain, active) VALUES ($1, $2, $3)`,
				d.Username, d.Domain, d.Active)
			return err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `UPDATE domain_admin SET active = $3 WHERE username = $1 AND domain = $2`,
				d.Username, d.Domain, d.Active)
			return err
		})
}

var vacationCols = []string{"subject", "body", "active_from", "active_until", "interval_seconds", "active"}

func (w *writer) vacation(v vacationRow) error {
	want := []any{v.Subject, v.Body, v.ActiveFrom, v.ActiveUntil, v.IntervalSeconds, v.Active}
	return w.sync("vacation", v.Mailbox, vacationCols, want,
		func() ([]any, bool, error) {
			var h vacationRow
			found, err := w.queryRow(`SELECT subject, body, active_from, active_until, interval_seconds, active
				FROM vacation WHERE mailbox = $1`, []any{v.Mailbox},
				&h.Subject, &h.Body, &h.ActiveFrom, &h.ActiveUntil, &h.IntervalSeconds, &h.Active)
			return []any{h.Subject, h.Body, h.ActiveFrom, h.ActiveUntil, h.IntervalSeconds, h.Active}, found, err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `INSERT INTO vacation (mailbox, subject, body, active_from, active_until,
					interval_seconds, active, created_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, now()))`,
				v.Mailbox, v.Subject, v.Body, v.ActiveFrom, v.ActiveUntil, v.IntervalSeconds, v.Active, v.Created)
			return err
		},
		func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, `UPDATE vacation SET subject = $2, body = $3, active_from = $4, active_until = $5,
				interval_seconds = $6, active = $7 WHERE mailbox = $1`,
				v.Mailbox, v.Subject, v.Body, v.ActiveFrom, v.ActiveUntil, v.IntervalSeconds, v.Active)
			return err
		})
}

// history brings in a row of history (quota usage, vacation replies sent):
// inserted when facteur has none, else left as it is, since facteur's own
// is at least as recent (DESIGN.md: usage has one owner, Dovecot).
func (w *writer) history(table, key, load string, loadArgs []any, want []any, insert string, insertArgs []any) error {
	t := w.r.table(table)
	have := make([]any, len(want))
	dest := make([]any, len(want))
	for i, v := range want {
		switch v.(type) {
		case time.Time:
			dest[i] = new(time.Time)
		default:
			dest[i] = new(int64)
		}
	}
	found, err := w.queryRow(load, loadArgs, dest...)
	if err != nil {
		return fmt.Errorf("read %s %s: %w", table, key, err)
	}
	if !found {
		rowErr, err := w.savepoint(func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, insert, insertArgs...)
			return err
		})
		if err != nil {
			return fmt.Errorf("write %s %s: %w", table, key, err)
		}
		if rowErr != nil {
			w.r.notImported(table, key, rowErr.Error())
		} else {
			t.Created++
		}
		return nil
	}
	for i, d := range dest {
		switch x := d.(type) {
		case *time.Time:
			have[i] = *x
		case *int64:
			have[i] = *x
		}
	}
	if differences(compare(make([]string, len(want)), have, want)) == "" {
		t.Same++
	} else {
		t.Kept++
	}
	return nil
}
