package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/facteur/facteur/internal/sendmailcli"
	"github.com/facteur/facteur/mta/pickup"
	"github.com/facteur/facteur/mta/qmqpd"
)

// sendmailDispatch runs the sendmail front end (internal/sendmailcli) when
// facteur is invoked as sendmail, mailq or newaliases (a symlink), or as
// `facteur [--config FILE] sendmail|mailq ARGS...`; the arguments after the
// subcommand are sendmail's own (-t, -oi, -fuser...), so they never reach
// cobra. ok is false for every other command line.
func sendmailDispatch(args []string) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	switch filepath.Base(args[0]) {
	case "sendmail", "mailq", "newaliases":
		return runSendmail(args, ""), true
	}
	config, i := rootFlags(args[1:])
	if i+1 < len(args) {
		switch args[i+1] {
		case "sendmail", "mailq":
			return runSendmail(args[i+1:], config), true
		}
	}
	return 0, false
}

// rootFlags skips the root command's flags at the start of args (--json,
// --config FILE, -c FILE and their joined forms) and returns the
// configuration file they name and the index of the first other argument.
func rootFlags(args []string) (config string, i int) {
	for i < len(args) {
		a := args[i]
		switch {
		case a == "--json":
		case a == "-c" || a == "--config":
			if i+1 >= len(args) {
				return config, i
			}
			i++
			config = args[i]
		case strings.HasPrefix(a, "--config="):
			config = strings.TrimPrefix(a, "--config=")
		case strings.HasPrefix(a, "-c") && len(a) > 2 && !strings.HasPrefix(a, "--"):
			config = strings.TrimPrefix(strings.TrimPrefix(a, "-c"), "=")
		default:
			return config, i
		}
		i++
	}
	return config, i
}

// runSendmail runs the front end with args (args[0] names the mode).
// config is facteur's --config; sendmail's own -C wins over it.
func runSendmail(args []string, config string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return sendmailcli.Main(ctx, sendmailcli.Env{
		Args:   args,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Socket: func(c string) (string, error) {
			if c == "" {
				c = config
			}
			return pickupSocket(c)
		},
	})
}

// pickupSocket returns the pickup socket for the front end: with a
// configuration file named, its listen.pickup; else $FACTEUR_PICKUP when
// set; else listen.pickup of the configuration found as every facteur
// command finds it. A configuration this user may not read (it holds the
// database password) is skipped as the standalone sendmail skips it.
func pickupSocket(config string) (string, error) {
	if config == "" {
		if p := os.Getenv("FACTEUR_PICKUP"); p != "" {
			return p, nil
		}
	}
	cfg, err := loadConfig(config)
	if err != nil {
		if config == "" && errors.Is(err, fs.ErrPermission) {
			return sendmailcli.Locate("", nil)
		}
		return "", err
	}
	return cfg.Listen.Pickup, nil
}

// servePickup is the run function of the pickup role: the local submission
// socket that sendmail talks to.
func servePickup(ctx context.Context, s *services) error {
	p, err := s.receiveParts(ctx)
	if err != nil {
		return err
	}
	srv := pickup.New(pickup.Options{Path: s.cfg.Listen.Pickup, Hostname: s.cfg.Hostname, Node: s.cfg.Node,
		Metrics: s.metricsRegistry()},
		pickup.Deps{Store: s.store, Cleanup: p.cl, Lookups: p.res, Signer: p.signer, Log: s.log})
	return srv.ListenAndServe(ctx)
}

// serveQMQP is the run function of the qmqp role (off unless listen.qmqp
// is set).
func serveQMQP(ctx context.Context, s *services) error {
	p, err := s.receiveParts(ctx)
	if err != nil {
		return err
	}
	srv := qmqpd.New(qmqpd.Options{Metrics: s.metricsRegistry()}, qmqpd.Deps{Cleanup: p.cl, Lookups: p.res, Log: s.log})
	return srv.ListenAndServe(ctx, s.cfg.Listen.QMQP)
}
