package admin

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/facteur/facteur/migrations"
	"github.com/facteur/facteur/store"
)

// SchemaCurrent returns a readiness check for Options.MigrationsCurrent:
// the database's schema is at least the version this build needs (newer
// is fine during a rolling upgrade).
func SchemaCurrent(st *store.Store) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		db := stdlib.OpenDBFromPool(st.Pool())
		defer db.Close()
		cur, target, err := migrations.Current(ctx, db)
		if err != nil {
			return err
		}
		if cur < target {
			return fmt.Errorf("the database schema is at version %d, this build needs %d", cur, target)
		}
		return nil
	}
}

// readyCache keeps a readiness answer for a second, so that an
// unauthenticated probe cannot load the database.
type readyCache struct {
	mu     sync.Mutex
	at     time.Time
	ok     bool
	checks map[string]string
}

const readyTTL = time.Second

// healthz is GET /healthz: the process serves.
func (h *Handler) healthz(w http.ResponseWriter, _ *http.Request, _ *principal) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz is GET /readyz: the database answers, its schema is current and
// the spool is writable (the last two when the serve wiring passes those
// checks). Failures are logged; the body names only the failed checks.
func (h *Handler) readyz(w http.ResponseWriter, r *http.Request, _ *principal) error {
	c := &h.ready
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) >= readyTTL {
		c.ok, c.checks = h.readiness(r.Context())
		c.at = time.Now()
	}
	status := http.StatusOK
	if !c.ok {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"ready": c.ok, "checks": c.checks})
	return nil
}

func (h *Handler) readiness(ctx context.Context) (bool, map[string]string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	checks := map[string]string{}
	ok := true
	run := func(name string, f func(context.Context) error) {
		if f == nil {
			return
		}
		if err := f(ctx); err != nil {
			h.log.WarnContext(ctx, "readiness check failed", "check", name, "err", err)
			checks[name] = "failed"
			ok = false
			return
		}
		checks[name] = "ok"
	}
	run("database", h.st.Ping)
	run("migrations", h.opts.MigrationsCurrent)
	run("spool", h.opts.SpoolWritable)
	return ok, checks
}
