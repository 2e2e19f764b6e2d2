package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/facteur/facteur/pfaimport"
)

// addImportCommands adds `facteur import postfixadmin`.
func addImportCommands(root *cobra.Command, a *app) {
	c := &cobra.Command{Use: "import", Short: "bring in domains, mailboxes and aliases from another system"}

	var from, bareScheme string
	var apply, update bool
	pfa := &cobra.Command{
		Use:   "postfixadmin --from postgres://USER@HOST/DB [--apply]",
		Short: "import a PostfixAdmin database (dry run unless --apply)",
		Long: `Reads a PostfixAdmin PostgreSQL database (schema version 1836 or later) and writes
facteur's domains, alias domains, mailboxes (password hashes with an explicit
{SCHEME}, maildir paths kept), aliases, admins, domain admins, vacations and
quota usage, in one transaction audited as "import:postfixadmin".

Without --apply nothing is written: the report says what the import would do,
every row that cannot be imported and why, and every row that facteur already
has with other values (a conflict, left alone unless --update). Running it
again changes nothing. The exit status is 1 when a row was not imported or is
in conflict.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" {
				return dataBadInput("give the PostfixAdmin database with --from postgres://…")
			}
			if strings.HasPrefix(from, "mysql:") || strings.HasPrefix(from, "mariadb:") {
				return dataBadInput("only PostgreSQL PostfixAdmin databases can be imported (convert a MySQL one with pgloader first)")
			}
			st, err := a.store(cmd.Context())
			if err != nil {
				return err
			}
			cfg, err := pgx.ParseConfig(from)
			if err != nil {
				return dataBadInput("--from: %v", err)
			}
			cfg.RuntimeParams["application_name"] = "facteur import"
			cfg.RuntimeParams["default_transaction_read_only"] = "on"
			src, err := pgx.ConnectConfig(cmd.Context(), cfg)
			if err != nil {
				return fmt.Errorf("connect to the PostfixAdmin database: %w", err)
			}
			defer src.Close(cmd.Context())
			r, err := pfaimport.Import(cmd.Context(), src, st,
				pfaimport.Options{Apply: apply, Update: update, BareScheme: bareScheme})
			if err != nil {
				return err
			}
			if err := a.dataEmit(cmd, r, func(w io.Writer) { printImportReport(w, r, cfg.Host, cfg.Database) }); err != nil {
				return err
			}
			if n := len(r.NotImported) + len(r.Conflicts); n > 0 {
				return &exitError{code: exitFailure, err: fmt.Errorf("%d rows not imported or in conflict: see the report", n)}
			}
			return nil
		},
	}
	pfa.Flags().StringVar(&from, "from", "", "the PostfixAdmin database: a PostgreSQL URL or key=value string")
	pfa.Flags().BoolVar(&apply, "apply", false, "write (without it: a dry run that writes nothing)")
	pfa.Flags().BoolVar(&update, "update", false, "overwrite facteur's rows that differ from PostfixAdmin's")
	pfa.Flags().StringVar(&bareScheme, "bare-scheme", "", "Dovecot scheme of bare passwords that are not crypt strings: PLAIN for PostfixAdmin's encrypt = cleartext, PLAIN-MD5 for md5 (default: guess)")
	c.AddCommand(pfa)
	root.AddCommand(c)
}

func printImportReport(w io.Writer, r *pfaimport.Report, host, db string) {
	mode := "dry run: nothing written (--apply writes it)"
	if r.Applied {
		mode = "applied"
	}
	fmt.Fprintf(w, "PostfixAdmin schema %d (%s/%s): %s\n\n", r.Version, host, db, mode)
	rows := make([][]string, 0, len(r.Tables))
	for _, t := range r.Tables {
		rows = append(rows, []string{t.Table, strconv.Itoa(t.Source), strconv.Itoa(t.Created), strconv.Itoa(t.Same),
			strconv.Itoa(t.Updated), strconv.Itoa(t.Conflicts), strconv.Itoa(t.Kept), strconv.Itoa(t.NotImported)})
	}
	dataTable(w, []string{"TABLE", "POSTFIXADMIN", "NEW", "SAME", "UPDATED", "CONFLICT", "KEPT", "NOT IMPORTED"}, rows)
	fmt.Fprintf(w, "\n%d mailbox self-aliases left out (facteur needs none); %d vacation destinations removed from aliases.\n",
		r.SelfAliases, r.VacationGotos)
	if r.Applied {
		fmt.Fprintf(w, "%d rows written.\n", r.Changed())
	} else {
		fmt.Fprintf(w, "%d rows to write.\n", r.Changed())
	}
	section := func(title string, ps []pfaimport.Problem) {
		if len(ps) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s (%d):\n", title, len(ps))
		for _, p := range ps {
			fmt.Fprintf(w, "  %s %s: %s\n", p.Table, p.Key, p.Reason)
		}
	}
	section("Not imported", r.NotImported)
	section("Conflicts: facteur's row differs and is kept (--update overwrites)", r.Conflicts)
	section("Warnings", r.Warnings)
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
}
