// Command facteur is the mail platform: MTA roles, the admin service and the
// operator tools, as subcommands of one binary.
//
// Invoked as sendmail, mailq or newaliases (through a symlink) it behaves as
// those commands do.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/facteur/facteur/store"
)

// Exit statuses (sysexits.h where sendmail conventions apply).
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 64 // EX_USAGE
	exitDataErr  = 65 // EX_DATAERR
	exitTempFail = 75 // EX_TEMPFAIL
)

// exitError carries an exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// app is what every subcommand shares: the configuration, loaded once, and
// the store, opened on first use.
type app struct {
	configPath string
	jsonOut    bool
	cfg        *Config
	st         *store.Store
	log        *slog.Logger
}

func (a *app) config() (*Config, error) {
	if a.cfg != nil {
		return a.cfg, nil
	}
	cfg, err := loadConfig(a.configPath)
	if err != nil {
		return nil, err
	}
	a.cfg = cfg
	return cfg, nil
}

// store opens the database named by the configuration.
func (a *app) store(ctx context.Context) (*store.Store, error) {
	if a.st != nil {
		return a.st, nil
	}
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	if cfg.DatabaseURL == "" {
		return nil, errors.New("no database: set database_url in facteur.toml (or run `facteur dev` first in this directory)")
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{ApplicationName: "facteur"})
	if err != nil {
		return nil, err
	}
	a.st = st
	return st, nil
}

func (a *app) close() {
	if a.st != nil {
		a.st.Close()
	}
}

func main() {
	os.Exit(run(os.Args))
}

func run(args []string) int {
	if na, ok := newaliasesArgs(args); ok {
		args = na // newaliases(1) through a symlink: `facteur newaliases`
	}
	if code, ok := sendmailDispatch(args); ok {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	defer a.close()
	root := newRoot(a)
	root.SetArgs(args[1:])
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(os.Stderr, "facteur: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "facteur",
		Short:         "facteur: a mail platform for hosts that serve many domains",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&a.configPath, "config", "c", "", "configuration file (default: $FACTEUR_CONFIG, ./facteur.toml, ./.facteur/facteur.toml, /etc/facteur/facteur.toml)")
	root.PersistentFlags().BoolVar(&a.jsonOut, "json", false, "print JSON instead of text")
	for _, add := range commandSets {
		add(root, a)
	}
	return root
}

// commandSets adds groups of subcommands to the root; each file of this
// package that defines commands lists its adder here.
var commandSets = []func(root *cobra.Command, a *app){
	addMigrateCommands,
	addServeCommands,
	addDevCommands,
	addDomainCommands,
	addMailboxCommands,
	addAliasCommands,
	addMiscDataCommands,
	addLookupCommands,
	addNewaliasesCommands,
	addDKIMCommands,
	addQueueCommands,
	addLogCommands,
	addCheckCommands,
	addImportCommands,
}
