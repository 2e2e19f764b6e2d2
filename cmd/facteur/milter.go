package main

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/milter"
	"github.com/facteur/facteur/mta/smtpd"
)

// smtpListener is an SMTP listener that a [[milter]] may name.
type smtpListener struct {
	name string
	kind smtpd.Kind
}

var smtpListeners = []smtpListener{{"smtp", smtpd.MX}, {"submission", smtpd.Submission}, {"submissions", smtpd.Submissions}}

// buildMilters builds one milter.Client per SMTP listener kind from the
// [[milter]] tables, each with the milters that name it in their
// configured order; a kind that no milter names has none. It checks the
// configuration and connects to nothing (each SMTP connection does).
func buildMilters(cfg *Config, log *slog.Logger) (map[smtpd.Kind]*milter.Client, error) {
	if len(cfg.Milters) == 0 {
		return nil, nil
	}
	perKind := map[smtpd.Kind][]milter.Config{}
	for i, m := range cfg.Milters {
		name := m.Name
		if name == "" {
			name = m.Addr
		}
		if m.Addr == "" {
			return nil, fmt.Errorf("milter %d (%s): addr is required", i+1, name)
		}
		for _, l := range m.Listeners {
			if !slices.ContainsFunc(smtpListeners, func(x smtpListener) bool { return x.name == l }) {
				return nil, fmt.Errorf("milter %s: listener %q: want smtp, submission or submissions", name, l)
			}
		}
		mc := milter.Config{Name: name, Addr: m.Addr, DefaultAction: milter.DefaultAction(m.DefaultAction),
			ConnectTimeout: m.ConnectTimeout.Duration, CommandTimeout: m.CommandTimeout.Duration,
			ContentTimeout: m.ContentTimeout.Duration}
		for _, l := range smtpListeners {
			if len(m.Listeners) == 0 || slices.Contains(m.Listeners, l.name) {
				perKind[l.kind] = append(perKind[l.kind], mc)
			}
		}
	}
	out := map[smtpd.Kind]*milter.Client{}
	for _, l := range smtpListeners {
		ms := perKind[l.kind]
		if len(ms) == 0 {
			continue
		}
		c, err := milter.New(milter.Options{Milters: ms, Hostname: cfg.Hostname, DaemonName: l.name,
			MaxReplacementSize: cleanup.DefaultMaxMessageBytes, Logger: log})
		if err != nil {
			return nil, err
		}
		out[l.kind] = c
	}
	return out, nil
}
