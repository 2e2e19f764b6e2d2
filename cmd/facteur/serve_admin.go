package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"os"

	"github.com/facteur/facteur/admin"
	"github.com/facteur/facteur/internal/health"
	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/store"
)

// serveAdmin is the admin role: the JSON API and web UI over HTTPS with
// tls.cert_file (without it, plain HTTP on loopback only, or behind a
// trusted proxy).
func serveAdmin(ctx context.Context, s *services) error {
	cfg := s.cfg
	hasher, err := cfg.hasher()
	if err != nil {
		return err
	}
	var proxies []netip.Prefix
	for _, p := range cfg.Admin.TrustedProxies {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			return fmt.Errorf("admin.trusted_proxies: %w", err)
		}
		proxies = append(proxies, pfx)
	}
	var tlsConf *tls.Config
	if cfg.TLS.CertFile != "" {
		cr, err := smtpd.NewCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, 0, s.log)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		tlsConf = cr.TLSConfig()
	}
	// The admin service's listings filter on optional parameters: a pool of
	// its own plans each query for its parameters, and keeps the mail
	// path's plan cache intact.
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{ApplicationName: "facteur-admin", CustomPlans: true})
	if err != nil {
		return err
	}
	defer st.Close()
	h, err := admin.New(st, admin.Options{Hasher: hasher, TrustedProxies: proxies,
		MigrationsCurrent: admin.SchemaCurrent(st), Metrics: s.metricsRegistry().Handler(),
		SpoolWritable: func(context.Context) error {
			if _, err := os.Stat(cfg.SpoolDir); os.IsNotExist(err) {
				return nil // an admin-only node has no spool
			}
			return health.WritableDir(cfg.SpoolDir)
		}}, s.log)
	if err != nil {
		return err
	}
	return admin.Serve(ctx, cfg.Listen.Admin, tlsConf, h)
}
