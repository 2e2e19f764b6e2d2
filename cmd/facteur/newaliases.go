package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/facteur/facteur/internal/aliasesfile"
	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
)

// DefaultAliasesFile is what `facteur newaliases` reads without an argument.
const DefaultAliasesFile = "/etc/aliases"

// addNewaliasesCommands adds `newaliases` and the hidden helper of the local
// delivery agent, `local-deliver`.
func addNewaliasesCommands(root *cobra.Command, a *app) {
	root.AddCommand(newNewaliasesCommand(a), newLocalDeliverCommand())
}

// newaliasesArgs turns the command line of a process started as
// "newaliases" (a symbolic link to facteur, sendmail's newaliases(1)) into
// facteur's: `facteur [--config C] newaliases --if-local [FILE]`. It
// understands what package scripts and people pass to newaliases: nothing,
// -oA FILE (sendmail's alias file option; a "type:" prefix as in Postfix's
// "hash:/etc/aliases" is dropped), -C CONFIG and -v. ok is false for any
// other command line, which the sendmail front end then handles (as for
// "newaliases -bp", which is mailq).
func newaliasesArgs(args []string) (out []string, ok bool) {
	if len(args) == 0 || filepath.Base(args[0]) != "newaliases" {
		return nil, false
	}
	var file, config string
	rest := args[1:]
	for i := 0; i < len(rest); i++ {
		switch a := rest[i]; {
		case a == "-oA" && i+1 < len(rest):
			i++
			file = rest[i]
		case strings.HasPrefix(a, "-oA") && len(a) > 3:
			file = a[3:]
		case a == "-C" && i+1 < len(rest):
			i++
			config = rest[i]
		case strings.HasPrefix(a, "-C") && len(a) > 2:
			config = a[2:]
		case a == "-v":
		default:
			return nil, false
		}
	}
	if t, p, found := strings.Cut(file, ":"); found && !strings.Contains(t, "/") {
		file = p
	}
	out = []string{"facteur"}
	if config != "" {
		out = append(out, "--config", config)
	}
	out = append(out, "newaliases", "--if-local")
	if file != "" {
		out = append(out, file)
	}
	return out, true
}

type newaliasesOptions struct {
	domain       string
	createDomain bool
	takeOver     bool
	dryRun       bool
	// ifLocal: when the domain is missing or not local, say so and
	// succeed (newaliases through argv[0]: package scripts run it on hosts
	// that keep no aliases in facteur).
	ifLocal bool
}

func newNewaliasesCommand(a *app) *cobra.Command {
	var o newaliasesOptions
	cmd := &cobra.Command{
		Use:   "newaliases [FILE]",
		Short: "import an aliases(5) file (default /etc/aliases) into the local domain's aliases",
		Long: `newaliases reads an aliases(5) file (default /etc/aliases) and writes its entries
as aliases of the host's local domain (the configured hostname, or --domain):
"name: dest, dest" becomes the alias name@DOMAIN. Destinations may be local
user names, addresses, "|command", "/file", ":include:/file" and "\user".

The domain must exist and be marked local (facteur domain add HOST --local),
unless --create-domain creates it. Commands, files and :include: files are
imported only when FILE is owned by root and neither it nor its directory is
writable by group or others (Postfix's rule); otherwise the entries that name
them are skipped with a warning. They run as the configured default user
(nobody), never root.

Importing the same file again replaces, in one transaction, the aliases that
came from it (for that domain) and leaves every other alias alone. An alias
of the same address that did not come from FILE is kept and the entry is
skipped, unless --take-over replaces it. Problems with single entries are
warnings; the others are still imported.

Invoked as "newaliases" (a symbolic link to facteur, as package scripts run
it) it imports /etc/aliases (or -oA FILE) the same way when the domain exists
and is marked local, and otherwise only explains how to, and succeeds.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := DefaultAliasesFile
			if len(args) == 1 {
				file = args[0]
			}
			return a.newaliases(cmd, file, o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.domain, "domain", "", "the local domain to import into (default: the configured hostname)")
	fl.BoolVar(&o.createDomain, "create-domain", false, "create the domain, marked local, when it does not exist")
	fl.BoolVar(&o.takeOver, "take-over", false, "replace aliases of the same address that did not come from FILE")
	fl.BoolVar(&o.dryRun, "dry-run", false, "check and report, change nothing")
	fl.BoolVar(&o.ifLocal, "if-local", false, "do nothing (and succeed) unless the domain exists and is marked local")
	_ = fl.MarkHidden("if-local")
	return cmd
}

// aliasImport is the report of one import.
type aliasImport struct {
	File    string `json:"file"`
	Domain  string `json:"domain"`
	Trusted bool   `json:"trusted"` // commands, files and :include: imported
	// DomainCreated is set when --create-domain created the domain.
	DomainCreated bool         `json:"domain_created,omitempty"`
	Imported      []string     `json:"imported"`
	Removed       []string     `json:"removed"` // from the previous import, no longer in FILE
	Skipped       []aliasSkip  `json:"skipped"`
	DryRun        bool         `json:"dry_run,omitempty"`
	entries       []aliasEntry // what will be written
}

// aliasSkip is an entry (or a line) left out, and why.
type aliasSkip struct {
	Line   int    `json:"line"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason"`
}

type aliasEntry struct {
	line         int
	name         string
	destinations []string
}

// errDryRun rolls the import's transaction back.
var errDryRun = errors.New("dry run")

func (a *app) newaliases(cmd *cobra.Command, file string, o newaliasesOptions) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	dom := o.domain
	if dom == "" {
		dom = cfg.Hostname
	}
	dom, err = dataNormDomain(dom)
	if err != nil {
		return err
	}
	st, ctx, err := a.dataStore(cmd)
	if err != nil {
		return err
	}
	if o.ifLocal {
		d, err := st.GetDomain(ctx, dom)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err != nil || !d.Local {
			fmt.Fprintf(cmd.ErrOrStderr(), "newaliases: %s is not a local domain of facteur: %s not imported.\n"+
				"newaliases: to import it: facteur domain add %s --local (or update it), then run newaliases or facteur newaliases %s\n",
				dom, file, dom, file)
			return nil
		}
	}
	rep, err := readAliasesFile(file)
	if err != nil {
		return &exitError{code: exitFailure, err: err}
	}
	rep.Domain, rep.DryRun = dom, o.dryRun
	if err := importAliases(store.WithActor(ctx, "newaliases:"+strings.TrimPrefix(dataActor(), "cli:")), st, rep, o); err != nil {
		return dataError(err)
	}
	for _, s := range rep.Skipped {
		name := ""
		if s.Name != "" {
			name = " (" + s.Name + ")"
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "newaliases: warning: %s line %d%s: %s\n", rep.File, s.Line, name, s.Reason)
	}
	return a.dataEmit(cmd, rep, func(w io.Writer) {
		verb := "imported"
		if rep.DryRun {
			verb = "would import"
		}
		fmt.Fprintf(w, "newaliases: %s %d aliases from %s into %s", verb, len(rep.Imported), rep.File, rep.Domain)
		if len(rep.Removed) > 0 {
			fmt.Fprintf(w, ", removed %d", len(rep.Removed))
		}
		if len(rep.Skipped) > 0 {
			fmt.Fprintf(w, ", skipped %d", len(rep.Skipped))
		}
		if !rep.Trusted {
			fmt.Fprint(w, " (file not owned by root or writable by others: commands and files not imported)")
		}
		fmt.Fprintln(w)
	})
}

// readAliasesFile parses file and decides what may be imported from it.
func readAliasesFile(file string) (*aliasImport, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, fmt.Errorf("aliases file %s: %w", file, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("aliases file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("aliases file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("aliases file %s is not a regular file", abs)
	}
	rep := &aliasImport{File: abs, Trusted: rootOwnedSafe(fi)}
	if rep.Trusted {
		// The directory too: whoever can write it can replace the file.
		di, err := os.Stat(filepath.Dir(abs))
		rep.Trusted = err == nil && rootOwnedSafe(di)
	}
	entries, problems, err := aliasesfile.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("read aliases file %s: %w", abs, err)
	}
	for _, p := range problems {
		rep.Skipped = append(rep.Skipped, aliasSkip{Line: p.Line, Reason: p.Err.Error()})
	}
	for _, e := range entries {
		ae, why := aliasEntryOf(e, rep.Trusted)
		if why != "" {
			rep.Skipped = append(rep.Skipped, aliasSkip{Line: e.Line, Name: e.Name, Reason: why})
			continue
		}
		rep.entries = append(rep.entries, ae)
	}
	return rep, nil
}

// rootOwnedSafe reports whether fi belongs to root and is not writable by
// group or others (Postfix's test for running commands from an aliases
// database with default_privs).
func rootOwnedSafe(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == 0 && fi.Mode().Perm()&0o022 == 0
}

// aliasEntryOf turns a parsed entry into the destinations to store, or says
// why it is skipped.
func aliasEntryOf(e aliasesfile.Entry, trusted bool) (aliasEntry, string) {
	if strings.ContainsAny(e.Name, "@ \t") {
		return aliasEntry{}, "an alias name is a local part (no \"@\" or white space)"
	}
	out := aliasEntry{line: e.Line, name: e.Name}
	for _, d := range e.Destinations {
		switch d.Kind {
		case aliasesfile.Command, aliasesfile.File, aliasesfile.Include:
			if !trusted {
				return aliasEntry{}, fmt.Sprintf("%s %q is imported only from a file owned by root and not writable by others", d.Kind, d.Value)
			}
			out.destinations = append(out.destinations, d.Value)
		case aliasesfile.Address:
			a, err := address.Normalize(d.Value)
			if err != nil {
				return aliasEntry{}, fmt.Sprintf("destination %q: %v", d.Value, err)
			}
			out.destinations = append(out.destinations, a)
		case aliasesfile.LocalUser, aliasesfile.NoForward:
			// "\user" stores as "user": the resolver delivers a bare name
			// to the alias or system user of that name.
			out.destinations = append(out.destinations, d.Value)
		}
	}
	return out, ""
}

// importAliases writes rep's entries into rep.Domain in one transaction,
// replacing the aliases of an earlier import of rep.File there.
func importAliases(ctx context.Context, st *store.Store, rep *aliasImport, o newaliasesOptions) error {
	rep.Imported, rep.Removed = []string{}, []string{}
	if rep.Skipped == nil {
		rep.Skipped = []aliasSkip{}
	}
	err := st.WithTx(ctx, func(tx pgx.Tx) error {
		var local, active bool
		err := tx.QueryRow(ctx, `SELECT local, active FROM domain WHERE name = $1 FOR UPDATE`, rep.Domain).Scan(&local, &active)
		switch {
		case errors.Is(err, pgx.ErrNoRows) && o.createDomain:
			if _, err := tx.Exec(ctx, `INSERT INTO domain (name, local, description) VALUES ($1, true, $2)`,
				rep.Domain, "the host's own domain (created by facteur newaliases)"); err != nil {
				return fmt.Errorf("create domain %s: %w", rep.Domain, err)
			}
			rep.DomainCreated, local = true, true
		case errors.Is(err, pgx.ErrNoRows):
			return &store.Error{Kind: store.ErrNotFound, Message: fmt.Sprintf(
				"domain %s does not exist: create it with `facteur domain add %s --local`, or pass --create-domain", rep.Domain, rep.Domain)}
		case err != nil:
			return fmt.Errorf("domain %s: %w", rep.Domain, err)
		}
		if !local {
			return &store.Error{Kind: store.ErrInvalid, Message: fmt.Sprintf(
				"domain %s is not marked local: `facteur domain update %s --local` first (aliases files name commands and local users)", rep.Domain, rep.Domain)}
		}
		rows, err := tx.Query(ctx, `DELETE FROM alias WHERE source = $1 AND domain = $2 RETURNING address`, rep.File, rep.Domain)
		if err != nil {
			return fmt.Errorf("remove the previous import: %w", err)
		}
		previous, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("remove the previous import: %w", err)
		}
		for _, e := range rep.entries {
			addr := e.name + "@" + rep.Domain
			skip, err := importAlias(ctx, tx, rep, e, addr, o.takeOver)
			if err != nil {
				return err
			}
			if skip != "" {
				rep.Skipped = append(rep.Skipped, aliasSkip{Line: e.line, Name: e.name, Reason: skip})
				continue
			}
			rep.Imported = append(rep.Imported, addr)
		}
		for _, p := range previous {
			if !slices.Contains(rep.Imported, p) {
				rep.Removed = append(rep.Removed, p)
			}
		}
		if o.dryRun {
			return errDryRun
		}
		return nil
	})
	if errors.Is(err, errDryRun) {
		return nil
	}
	return err
}

// importAlias writes one alias inside a savepoint, so that an entry the
// database refuses (a name it cannot hold, a mailbox it would shadow, a
// limit) is a warning, not the end of the import.
func importAlias(ctx context.Context, tx pgx.Tx, rep *aliasImport, e aliasEntry, addr string, takeOver bool) (skip string, err error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("savepoint: %w", err)
	}
	defer sp.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit this is a no-op
	var source *string
	err = sp.QueryRow(ctx, `SELECT source FROM alias WHERE address = $1`, addr).Scan(&source)
	switch {
	case err == nil && !takeOver:
		from := "the CLI or the admin service"
		if source != nil {
			from = *source
		}
		return fmt.Sprintf("alias %s already exists (from %s): kept; --take-over replaces it", addr, from), nil
	case err == nil:
		if _, err := sp.Exec(ctx, `DELETE FROM alias WHERE address = $1`, addr); err != nil {
			return dbSkip(err)
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return dbSkip(err)
	}
	desc := fmt.Sprintf("newaliases: %s line %d", rep.File, e.line)
	if _, err := sp.Exec(ctx, `INSERT INTO alias (address, destinations, description, source) VALUES ($1, $2, $3, $4)`,
		addr, e.destinations, desc, rep.File); err != nil {
		return dbSkip(err)
	}
	if err := sp.Commit(ctx); err != nil {
		return "", fmt.Errorf("release savepoint: %w", err)
	}
	return "", nil
}

// dbSkip turns a refusal by the database's rules into a skip reason; other
// errors end the import.
func dbSkip(err error) (string, error) {
	m := store.MapError(err)
	var se *store.Error
	if errors.As(m, &se) && (errors.Is(m, store.ErrInvalid) || errors.Is(m, store.ErrLimitExceeded) || errors.Is(m, store.ErrConflict)) {
		return se.Message, nil
	}
	return "", err
}
