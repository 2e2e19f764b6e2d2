// Command sendmail is facteur's sendmail(1) front end as a small standalone
// binary: install it (or symlinks to it named mailq and newaliases) where
// programs look for sendmail. It submits mail and lists the queue through
// the pickup socket of `facteur serve`, and needs no database credentials
// and no privilege. See internal/sendmailcli for the options and exit
// statuses.
//
// The socket is found without facteur's full configuration: -C file, else
// $FACTEUR_PICKUP, else listen.pickup (or spool_dir) of the first readable
// configuration among $FACTEUR_CONFIG, ./facteur.toml,
// ./.facteur/facteur.toml and /etc/facteur/facteur.toml, else
// /var/spool/facteur/pickup.sock.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/facteur/facteur/internal/sendmailcli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := sendmailcli.Main(ctx, sendmailcli.Env{
		Args:   os.Args,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Socket: func(config string) (string, error) { return sendmailcli.Locate(config, nil) },
	})
	stop()
	os.Exit(code)
}
