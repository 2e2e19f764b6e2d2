// Package health serves the liveness and readiness probes of facteur's HTTP
// listeners (the admin service and the metrics listener):
//
//   - GET /healthz answers 200 while the process runs: it checks nothing
//     else, so that a database outage never gets every node restarted;
//   - GET /readyz answers 200 when the node can do its work: the database
//     answers, its schema is at the version this build needs (or newer,
//     during a rolling upgrade), and the spool directory is writable; 503
//     otherwise. The body lists each check, one per line.
//
// Readiness results are kept for a second, so that probes cannot load the
// database; a current schema is remembered for 30 seconds (a schema does
// not go back).
//
// It also holds the small file-system helpers that `facteur check` and the
// metrics share (free space, a writability test).
package health

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/facteur/facteur/migrations"
	"github.com/facteur/facteur/store"
)

// Options configures a Checker.
type Options struct {
	// Store is the database; nil fails the database and migration checks.
	Store *store.Store
	// SpoolDir is checked for writability; "" skips the check (a node
	// without a spool: admin only).
	SpoolDir string
	// Timeout bounds each readiness pass (default 5 s).
	Timeout time.Duration
	// Migrations returns the schema's version and the version this build
	// needs; nil uses migrations.Current on Store (tests replace it).
	Migrations func(ctx context.Context) (current, target int64, err error)
}

// Check is the result of one readiness check.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Report is the result of a readiness pass.
type Report struct {
	Ready  bool    `json:"ready"`
	Checks []Check `json:"checks"`
}

// Checker runs the probes. It is safe for concurrent use.
type Checker struct {
	opts Options

	mu       sync.Mutex
	last     Report
	lastAt   time.Time
	schemaOK time.Time // when the schema was last found current
}

const (
	reportTTL = time.Second
	schemaTTL = 30 * time.Second
)

// New returns a Checker.
func New(opts Options) *Checker {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Migrations == nil && opts.Store != nil {
		st := opts.Store
		opts.Migrations = func(ctx context.Context) (int64, int64, error) {
			db := stdlib.OpenDBFromPool(st.Pool())
			defer db.Close()
			return migrations.Current(ctx, db)
		}
	}
	return &Checker{opts: opts}
}

// Register adds GET /healthz and GET /readyz to mux.
func (c *Checker) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", c.Healthz)
	mux.HandleFunc("GET /readyz", c.Readyz)
}

// Healthz answers 200 "ok": the process is up and serving HTTP.
func (c *Checker) Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// Readyz answers 200 when every readiness check passes, 503 otherwise, with
// one line per check ("ok database: …", "fail spool: …").
func (c *Checker) Readyz(w http.ResponseWriter, r *http.Request) {
	rep := c.Ready(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !rep.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	var sb strings.Builder
	for _, ch := range rep.Checks {
		if ch.OK {
			sb.WriteString("ok ")
		} else {
			sb.WriteString("fail ")
		}
		sb.WriteString(ch.Name + ": " + ch.Detail + "\n")
	}
	_, _ = w.Write([]byte(sb.String()))
}

// Ready runs the readiness checks (or returns the result of a pass less
// than a second old).
func (c *Checker) Ready(ctx context.Context) Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.lastAt.IsZero() && time.Since(c.lastAt) < reportTTL {
		return c.last
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	rep := Report{Ready: true}
	add := func(name string, err error, ok string) {
		ch := Check{Name: name, OK: err == nil, Detail: ok}
		if err != nil {
			ch.Detail = err.Error()
			rep.Ready = false
		}
		rep.Checks = append(rep.Checks, ch)
	}

	dbErr := errors.New("no database configured")
	if c.opts.Store != nil {
		dbErr = c.opts.Store.Ping(ctx)
		if dbErr != nil {
			dbErr = fmt.Errorf("unreachable: %w", dbErr)
		}
	}
	add("database", dbErr, "reachable")

	switch {
	case dbErr != nil:
		add("migrations", errors.New("not checked: no database"), "")
	case time.Since(c.schemaOK) < schemaTTL:
		add("migrations", nil, "current")
	case c.opts.Migrations == nil:
		add("migrations", errors.New("not checked: no migration source"), "")
	default:
		cur, target, err := c.opts.Migrations(ctx)
		switch {
		case err != nil:
			add("migrations", fmt.Errorf("version unknown: %w", err), "")
		case cur < target:
			add("migrations", fmt.Errorf("the database is at version %d, this build needs %d (run facteur migrate up)", cur, target), "")
		case cur > target:
			c.schemaOK = time.Now()
			add("migrations", nil, fmt.Sprintf("version %d, newer than this build's %d (rolling upgrade)", cur, target))
		default:
			c.schemaOK = time.Now()
			add("migrations", nil, "version "+strconv.FormatInt(cur, 10)+" (current)")
		}
	}

	if c.opts.SpoolDir != "" {
		add("spool", WritableDir(c.opts.SpoolDir), c.opts.SpoolDir+" writable")
	}
	c.last, c.lastAt = rep, time.Now()
	return rep
}

// WritableDir checks that dir is a directory in which this process can
// create, write and remove a file (it leaves nothing behind).
func WritableDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".facteur-probe-*")
	if err != nil {
		return fmt.Errorf("%s is not writable: %w", dir, err)
	}
	name := f.Name()
	_, werr := f.Write([]byte("probe\n"))
	cerr := f.Close()
	rerr := os.Remove(name)
	if err := errors.Join(werr, cerr, rerr); err != nil {
		return fmt.Errorf("%s is not writable: %w", filepath.Clean(dir), err)
	}
	return nil
}
