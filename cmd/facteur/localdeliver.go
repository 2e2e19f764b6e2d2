package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/facteur/facteur/mta/deliver/local"
)

// newLocalDeliverCommand is the hidden helper of the local delivery agent:
// the queue role re-executes this binary as `facteur local-deliver MODE ...`
// with the recipient's credentials, to write mailboxes and read .forward
// files as that user (setuid in Go applies to every thread, so never in the
// daemon). It reads no configuration and opens no database: its arguments
// and the message on stdin are all it gets.
func newLocalDeliverCommand() *cobra.Command {
	return &cobra.Command{
		Use:                local.HelperCommand + " MODE [ARGS]",
		Short:              "local delivery helper (run by the queue role as the recipient's user)",
		Hidden:             true,
		DisableFlagParsing: true,
		SilenceUsage:       true,
		RunE: func(cmd *cobra.Command, args []string) error {
			code := local.HelperMain(args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
			if code != 0 {
				return &exitError{code: code, err: fmt.Errorf("%s: exit status %d", local.HelperCommand, code)}
			}
			return nil
		},
	}
}
