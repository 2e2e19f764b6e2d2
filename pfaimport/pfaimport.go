// Package pfaimport moves a PostfixAdmin installation into facteur: it reads
// a PostfixAdmin PostgreSQL database (schema version MinVersion or later)
// and writes facteur's rows for its domains, alias domains, mailboxes,
// aliases, admins and domain admins, vacations and quota usage.
//
// What changes on the way (PostfixAdmin → facteur):
//   - domain limits: -1 ("disabled") is 0, 0 ("unlimited") is NULL; domain
//     quotas are MB, facteur's bytes; the pseudo-domain ALL is dropped;
//     alias domains, which PostfixAdmin also keeps as domains, are only
//     alias domains;
//   - mailbox quotas are bytes in both; 0 (unlimited) is NULL. Password
//     hashes get an explicit {SCHEME} (convertHash): PostfixAdmin stores
//     bare crypt strings by default. maildir paths are kept;
//   - an alias's comma-separated goto becomes its destinations; the
//     self-alias PostfixAdmin writes for every mailbox (u@d → u@d) is left
//     out, since facteur delivers to a mailbox without one; an alias of a
//     mailbox that lists the mailbox among others is facteur's forward and
//     keep a copy; vacation-domain destinations (u#d@autoreply.example) are
//     removed, and the vacation row is active when PostfixAdmin's was;
//   - a superadmin is admin.superadmin or a domain_admins row for ALL.
//
// One run is one transaction on facteur's database, with the audit actor
// "import:postfixadmin". Without Options.Apply it is rolled back: a dry run
// does every insert, so it reports exactly what the database would refuse
// (limits, invalid names) and then writes nothing. Each row is written in a
// savepoint: a row the database refuses is reported and the others still
// go in. A row that exists in facteur and equals the imported one is
// skipped; one that differs is a conflict, reported and left alone unless
// Options.Update. So running the import twice changes nothing.
//
// The PostfixAdmin database is only read, in one REPEATABLE READ READ ONLY
// transaction.
package pfaimport

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store"
)

// Actor names the import in facteur's audit log.
const Actor = "import:postfixadmin"

// Options configure Import.
type Options struct {
	// Apply commits the transaction; without it the import is a dry run.
	Apply bool
	// Update overwrites facteur's rows that differ from PostfixAdmin's;
	// without it they are reported as conflicts.
	Update bool
	// BareScheme is the Dovecot scheme of bare password values that are
	// not crypt strings ("PLAIN" for PostfixAdmin's cleartext, "PLAIN-MD5"
	// for md5); empty guesses (convertHash).
	BareScheme string
}

// Report says what an import did, or would do.
type Report struct {
	Version int  `json:"postfixadmin_version"`
	Applied bool `json:"applied"`
	// Tables counts, per facteur table, the PostfixAdmin rows read and
	// what became of them.
	Tables []*TableCounts `json:"tables"`
	// SelfAliases counts the mailbox self-aliases left out.
	SelfAliases int `json:"self_aliases"`
	// VacationGotos counts the vacation-domain destinations removed from
	// aliases.
	VacationGotos int       `json:"vacation_destinations"`
	NotImported   []Problem `json:"not_imported"`
	Conflicts     []Problem `json:"conflicts"`
	Warnings      []Problem `json:"warnings"`
	Notes         []string  `json:"notes"`
}

// TableCounts is one line of the report.
type TableCounts struct {
	Table       string `json:"table"`
	Source      int    `json:"source"`       // PostfixAdmin rows read
	Created     int    `json:"created"`      // new rows
	Same        int    `json:"same"`         // already in facteur, equal
	Updated     int    `json:"updated"`      // differed, overwritten (Options.Update)
	Conflicts   int    `json:"conflicts"`    // differ, left alone
	Kept        int    `json:"kept"`         // usage and reply history facteur already has
	NotImported int    `json:"not_imported"` // refused, see Report.NotImported
}

// Problem is a row and what is wrong with it.
type Problem struct {
	Table  string `json:"table"`
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// Changed is the number of rows the import writes.
func (r *Report) Changed() int {
	n := 0
	for _, t := range r.Tables {
		n += t.Created + t.Updated
	}
	return n
}

func (r *Report) table(name string) *TableCounts {
	for _, t := range r.Tables {
		if t.Table == name {
			return t
		}
	}
	t := &TableCounts{Table: name}
	r.Tables = append(r.Tables, t)
	return t
}

func (r *Report) notImported(table, key, reason string) {
	r.table(table).NotImported++
	r.NotImported = append(r.NotImported, Problem{table, key, reason})
}

func (r *Report) warn(table, key, reason string) {
	r.Warnings = append(r.Warnings, Problem{table, key, reason})
}

// tableOrder is the order of the report's lines.
var tableOrder = []string{"domain", "alias_domain", "mailbox", "alias", "admin", "domain_admin", "vacation",
	"vacation_notified", "quota_usage"}

var errDryRun = errors.New("dry run")

// Import reads the PostfixAdmin database on src and writes its rows into
// facteur's database through st, in one transaction (see the package
// comment). The error is for failures that stop the whole import (a
// database that cannot be read, a lost connection); rows that cannot be
// imported are in the report.
func Import(ctx context.Context, src *pgx.Conn, st *store.Store, opts Options) (*Report, error) {
	r := &Report{}
	for _, t := range tableOrder {
		r.table(t)
	}
	s, err := readSource(ctx, src)
	if err != nil {
		return nil, err
	}
	r.Version = s.Version
	p := buildPlan(s, opts, r)
	for t, n := range p.Source {
		r.table(t).Source = n
	}
	r.SelfAliases, r.VacationGotos = p.SelfAliases, p.VacationGotos

	err = st.WithTx(store.WithActor(ctx, Actor), func(tx pgx.Tx) error {
		w := &writer{ctx: ctx, tx: tx, opts: opts, r: r, newDomains: map[string]bool{}, finishDomains: map[string]bool{}}
		if err := w.write(p); err != nil {
			return err
		}
		if !opts.Apply {
			return errDryRun
		}
		return nil
	})
	if err != nil && !errors.Is(err, errDryRun) {
		return nil, fmt.Errorf("import into facteur: %w", err)
	}
	r.Applied = opts.Apply
	return r, nil
}
