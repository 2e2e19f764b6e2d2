package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
)

// lookupReport is what `facteur lookup` prints (--json: this object).
type lookupReport struct {
	Query string `json:"query"`
	Found bool   `json:"found"`
	Error string `json:"error,omitempty"`
	lookups.Result
	Sender *lookupSenderReport `json:"sender,omitempty"`
	Cache  lookupCacheReport   `json:"cache"`
	SQL    []lookupSQLReport   `json:"sql"`
}

// lookupCacheReport is the cache that a running facteur keeps for this
// answer. Whether the answer is in some process's cache now cannot be known
// from here: the command itself always reads the database.
type lookupCacheReport struct {
	TTLSeconds   float64 `json:"ttl_seconds"`
	MaxEntries   int     `json:"max_entries"`
	Invalidation string  `json:"invalidation"`
	ThisAnswer   string  `json:"this_answer"`
}

// lookupSQLReport is one statement the resolution ran, with the parameters
// of each execution, in order.
type lookupSQLReport struct {
	Name       string   `json:"name"`
	Params     []string `json:"params,omitempty"`
	Statement  string   `json:"statement"`
	Executions [][]any  `json:"executions"`
}

// lookupStatements names the statements of the resolver, and their
// parameters.
var lookupStatements = map[string]struct {
	name   string
	params []string
}{
	store.RouteSQL:    {"route", []string{"local part", "user (local part without extension)", "domain as asked"}},
	store.SenderSQL:   {"sender", []string{"mailbox", "sender local part", "sender user (without extension)", "sender domain"}},
	store.SettingsSQL: {"settings", nil}, // the recipient delimiter
}

// sqlRecorder records the statements run on a pool (a pgx QueryTracer).
type sqlRecorder struct {
	mu    sync.Mutex
	stmts []lookupSQLReport
}

func (r *sqlRecorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	args := append([]any{}, d.Args...)
	for i := range r.stmts {
		if r.stmts[i].Statement == d.SQL {
			r.stmts[i].Executions = append(r.stmts[i].Executions, args)
			return ctx
		}
	}
	st := lookupStatements[d.SQL]
	name := st.name
	if name == "" {
		name = "query"
	}
	r.stmts = append(r.stmts, lookupSQLReport{Name: name, Params: st.params, Statement: d.SQL, Executions: [][]any{args}})
	return ctx
}

func (r *sqlRecorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *sqlRecorder) report() []lookupSQLReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]lookupSQLReport{}, r.stmts...)
}

type lookupSenderReport struct {
	User    string `json:"user"`
	Sender  string `json:"sender"`
	Allowed bool   `json:"allowed"`
	Reason  string `json:"reason"`
}

func addLookupCommands(root *cobra.Command, a *app) {
	var sender, user string
	cmd := &cobra.Command{
		Use:   "lookup ADDRESS",
		Short: "explain how an address resolves: the rule that matched, the final recipients and their transports",
		Long: `lookup resolves ADDRESS as smtpd and cleanup do (alias domains, user+tag,
aliases, mailboxes, catch-alls, relay domains, transports) and prints the
chain, like postmap -q for the whole set of tables. With --user and --sender it
also says whether the mailbox USER may use SENDER as its envelope sender.

It also shows the cache a running facteur keeps for such answers (its TTL
and how it is invalidated; this command itself always reads the database)
and the SQL statements the resolution ran, with the parameters of each
execution, to run by hand in psql.

The exit status is 0 when the address is deliverable here (and the sender
allowed, when asked), 1 otherwise.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			withSender, withUser := cmd.Flags().Changed("sender"), cmd.Flags().Changed("user")
			switch {
			case withUser && !withSender:
				return errors.New("--user needs --sender (--sender '' is the null sender)")
			case withSender && user == "":
				return errors.New("--sender needs --user, the authenticated mailbox")
			}
			return a.lookup(cmd, args[0], user, sender, withSender)
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "authenticated mailbox whose sender permission to check")
	cmd.Flags().StringVar(&sender, "sender", "", "envelope sender to check for --user ('' is the null sender)")
	root.AddCommand(cmd)
}

func (a *app) lookup(cmd *cobra.Command, query, user, sender string, checkSender bool) error {
	ctx := cmd.Context()
	cfg, err := a.config()
	if err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		_, err := a.store(ctx) // says how to set one
		return err
	}
	// A pool of its own, traced, so that the report shows the SQL.
	rec := &sqlRecorder{}
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("parse database url: %w", err)
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "facteur"
	pcfg.ConnConfig.Tracer = rec
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer pool.Close()
	st := store.New(pool)
	lo := lookups.Options{
		Hostname:   cfg.Hostname,
		Postmaster: cfg.Postmaster,
		CacheSize:  -1,
	}
	if err := cfg.lookupsSRS(&lo); err != nil {
		return err
	}
	r := lookups.New(st, lo)

	rep := lookupReport{Query: query}
	// The command line takes the external form ("john doe"@example.test);
	// Resolve takes go-smtp's internal form.
	in := query
	if p, err := address.Parse(query); err == nil {
		in = p.Local + "@" + p.Domain
	}
	res, found, rerr := r.Resolve(ctx, in)
	switch {
	case errors.Is(rerr, lookups.ErrBadAddress):
		return rerr
	case rerr != nil && !lookups.Permanent(rerr):
		return &exitError{code: exitTempFail, err: fmt.Errorf("lookup %s: %w", query, rerr)}
	case rerr != nil:
		// A loop or a limit: show the trace up to where it was met.
		rep.Error = rerr.Error()
	}
	rep.Result, rep.Found = res, found
	if checkSender {
		p, err := r.SenderPermission(ctx, user, sender)
		if err != nil {
			return fmt.Errorf("sender permission: %w", err)
		}
		rep.Sender = &lookupSenderReport{User: user, Sender: sender, Allowed: p.Allowed, Reason: p.Reason}
	}
	// `facteur serve` builds its resolver with the cache's defaults.
	rep.Cache = lookupCacheReport{
		TTLSeconds: lookups.DefaultCacheTTL.Seconds(), MaxEntries: lookups.DefaultCacheSize,
		Invalidation: "the whole cache is dropped on every NOTIFY facteur_config (any control-plane change) " +
			"and while the LISTEN connection is down; the TTL is the last resort",
		ThisAnswer: "read from the database now (this command keeps no cache); a running facteur answers " +
			"the same within a second of a change",
	}
	rep.SQL = rec.report()

	out := cmd.OutOrStdout()
	if a.jsonOut {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		lookupPrint(out, rep)
	}

	switch {
	case rerr != nil:
		return &exitError{code: exitFailure, err: rerr}
	case !found:
		return &exitError{code: exitFailure, err: fmt.Errorf("%s: %s", query, lookupNotFound(res))}
	case rep.Sender != nil && !rep.Sender.Allowed:
		return &exitError{code: exitFailure, err: fmt.Errorf("%s may not send as <%s>", user, sender)}
	}
	return nil
}

// lookupNotFound says why an address is not deliverable, in smtpd's terms.
func lookupNotFound(res lookups.Result) string {
	if res.Domain == lookups.DomainRemote {
		return "not a local domain (relayed only for permitted clients)"
	}
	return "unknown user (550 5.1.1)"
}

func lookupPrint(w io.Writer, rep lookupReport) {
	res := rep.Result
	fmt.Fprintf(w, "address:     %s\n", lookupOr(res.Address, rep.Query))
	if res.DomainName != "" {
		fmt.Fprintf(w, "domain:      %s (%s)\n", res.DomainName, res.Domain)
	}
	if res.MaxMessageBytes > 0 {
		fmt.Fprintf(w, "max size:    %d bytes\n", res.MaxMessageBytes)
	}
	switch {
	case rep.Error != "":
		fmt.Fprintf(w, "result:      error: %s\n", rep.Error)
	case rep.Found:
		fmt.Fprintf(w, "result:      found (%s)\n", res.Rule)
	default:
		fmt.Fprintf(w, "result:      not found: %s\n", lookupNotFound(res))
	}
	if len(res.Recipients) > 0 {
		fmt.Fprintf(w, "recipients:\n")
		for _, rc := range res.Recipients {
			var extra []string
			if rc.Mailbox != "" {
				extra = append(extra, "mailbox "+rc.Mailbox)
			}
			if rc.Extension != "" {
				extra = append(extra, "extension "+rc.Extension)
			}
			if rc.Maildir != "" {
				extra = append(extra, "maildir "+rc.Maildir)
			}
			if rc.QuotaBytes > 0 {
				extra = append(extra, fmt.Sprintf("quota %d bytes", rc.QuotaBytes))
			}
			if len(rc.Via) > 0 {
				extra = append(extra, "via "+strings.Join(rc.Via, " → "))
			}
			line := fmt.Sprintf("  %-8s %s  →  %s", rc.Class, rc.Address, rc.Transport)
			if len(extra) > 0 {
				line += "  (" + strings.Join(extra, ", ") + ")"
			}
			fmt.Fprintln(w, line)
		}
	}
	if len(res.Explain) > 0 {
		fmt.Fprintf(w, "trace:\n")
		for _, l := range res.Explain {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	if s := rep.Sender; s != nil {
		verdict := "not allowed"
		if s.Allowed {
			verdict = "allowed"
		}
		fmt.Fprintf(w, "sender:      <%s> for %s: %s (%s)\n", s.Sender, s.User, verdict, s.Reason)
	}
	c := rep.Cache
	fmt.Fprintf(w, "cache:       ttl %s, at most %d results per process\n", time.Duration(c.TTLSeconds*float64(time.Second)), c.MaxEntries)
	fmt.Fprintf(w, "             %s\n", c.Invalidation)
	fmt.Fprintf(w, "             this answer: %s\n", c.ThisAnswer)
	for _, q := range rep.SQL {
		n, plural := len(q.Executions), "s"
		if n == 1 {
			plural = ""
		}
		fmt.Fprintf(w, "sql %s:%s%d execution%s\n", q.Name, strings.Repeat(" ", max(1, 8-len(q.Name))), n, plural)
		if len(q.Params) > 0 {
			var ps []string
			for i, p := range q.Params {
				ps = append(ps, fmt.Sprintf("$%d %s", i+1, p))
			}
			fmt.Fprintf(w, "  parameters: %s\n", strings.Join(ps, ", "))
		}
		for _, args := range q.Executions {
			var vs []string
			for i, v := range args {
				vs = append(vs, fmt.Sprintf("$%d=%s", i+1, sqlLiteral(v)))
			}
			if len(vs) == 0 {
				vs = []string{"(no parameters)"}
			}
			fmt.Fprintf(w, "  %s\n", strings.Join(vs, " "))
		}
		fmt.Fprintf(w, "  statement:\n")
		for _, l := range strings.Split(strings.Trim(q.Statement, "\n"), "\n") {
			fmt.Fprintf(w, "    %s\n", strings.TrimRight(l, " \t"))
		}
	}
}

// sqlLiteral writes a parameter as a SQL literal, to paste into psql.
func sqlLiteral(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return "'" + strings.ReplaceAll(x, "'", "''") + "'"
	}
	return fmt.Sprint(v)
}

func lookupOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
