// Package storetest finds or starts PostgreSQL for tests and gives each test
// a fresh database cloned from a migrated template.
//
// With FACTEUR_TEST_DATABASE_URL set, that server is used (the URL must allow
// CREATE DATABASE). Otherwise one private cluster is shared by every test
// process of a run (go test ./... runs packages as separate processes),
// guarded by a lock file: its data lives in <tmp>/facteur-test-pg-<uid>
// (owned by the postgres user when running as root, because initdb refuses
// root and a checkout under /root is not traversable by postgres), it listens
// only on a unix socket in that short directory, with fsync off, and stops
// itself once no test process has used it for a while.
//
// The template is migrated once per schema (named after migrations.Hash());
// each test gets CREATE DATABASE … TEMPLATE, dropped WITH (FORCE) at cleanup.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/facteur/facteur/migrations"
	"github.com/facteur/facteur/store/pgcluster"
)

// Port is the port number of the private cluster's socket (it listens on no
// TCP address).
const Port = 5499

// IdleStop is how long the private cluster waits without any test process
// before it stops itself.
const IdleStop = 30 * time.Second

// DB is one test's fresh database.
type DB struct {
	Name string
	URL  string // connection URL of this database
	Pool *pgxpool.Pool
}

var (
	setupOnce  sync.Once
	setupErr   error
	adminURL   string // URL of the maintenance database on the server
	clusterDir string // set when the private cluster is used
)

// Cluster describes the private cluster, when one is used: Dir is its data
// and socket directory.
type Cluster = pgcluster.Cluster

// New returns a fresh, migrated database for t, dropped when t ends.
func New(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmpl, err := template(ctx)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	name := "t_" + randomHex(8)
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("storetest: connect: %v", err)
	}
	defer admin.Close(ctx)
	// CREATE DATABASE from one template is serialised by PostgreSQL; retry
	// when another process briefly holds the template.
	for i := 0; ; i++ {
		_, err = admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, tmpl))
		if err == nil || i > 50 || !strings.Contains(err.Error(), "being accessed by other users") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("storetest: create database: %v", err)
	}
	u := withDatabase(adminURL, name)
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		t.Fatalf("storetest: pool: %v", err)
	}
	db := &DB{Name: name, URL: u, Pool: pool}
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Logf("storetest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("storetest: drop %s: %v", name, err)
		}
	})
	return db
}

// AdminURL returns the URL of the server's maintenance database (for tests
// that terminate backends or create databases of their own).
func AdminURL(t testing.TB) string {
	t.Helper()
	if err := setup(); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return adminURL
}

// PrivateCluster returns the private cluster, or nil when the tests use
// FACTEUR_TEST_DATABASE_URL.
func PrivateCluster(t testing.TB) *Cluster {
	t.Helper()
	if err := setup(); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	if clusterDir == "" {
		return nil
	}
	c, err := clusterFor(clusterDir)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return c
}

func setup() error {
	setupOnce.Do(func() {
		if u := os.Getenv("FACTEUR_TEST_DATABASE_URL"); u != "" {
			adminURL = u
			return
		}
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("facteur-test-pg-%d", os.Geteuid()))
		c, err := clusterFor(dir)
		if err != nil {
			setupErr = err
			return
		}
		if err := ensureRunning(c); err != nil {
			setupErr = err
			return
		}
		clusterDir = dir
		adminURL = c.URL("postgres")
	})
	return setupErr
}

var tmplMu sync.Mutex
var tmplName string

// template returns the name of the migrated template database, creating it
// once per schema under an advisory lock shared by every test process.
func template(ctx context.Context) (string, error) {
	if err := setup(); err != nil {
		return "", err
	}
	tmplMu.Lock()
	defer tmplMu.Unlock()
	if tmplName != "" {
		return tmplName, nil
	}
	name := "tmpl_" + migrations.Hash()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect %s: %w", redact(adminURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(4242001)"); err != nil {
		return "", fmt.Errorf("template lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(4242001)") //nolint:errcheck
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", fmt.Errorf("find template: %w", err)
	}
	if !exists {
		build := name + "_build"
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+build+" WITH (FORCE)"); err != nil {
			return "", fmt.Errorf("drop stale template: %w", err)
		}
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+build); err != nil {
			return "", fmt.Errorf("create template: %w", err)
		}
		if err := migrate(ctx, withDatabase(adminURL, build)); err != nil {
			return "", err
		}
		if _, err := conn.Exec(ctx, "ALTER DATABASE "+build+" RENAME TO "+name); err != nil {
			return "", fmt.Errorf("rename template: %w", err)
		}
	}
	tmplName = name
	return name, nil
}

func migrate(ctx context.Context, u string) error {
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		return fmt.Errorf("template pool: %w", err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	return nil
}

func clusterFor(dir string) (*Cluster, error) {
	c, err := pgcluster.New(dir, Port)
	if err != nil {
		return nil, fmt.Errorf("%w, or set FACTEUR_TEST_DATABASE_URL", err)
	}
	return c, nil
}

// FindServerBinaries finds the directory holding initdb and pg_ctl: on PATH,
// else the newest /usr/lib/postgresql/*/bin.
func FindServerBinaries() (string, error) { return pgcluster.FindServerBinaries() }

// ensureRunning initialises and starts the cluster if needed, registers this
// process as a user of it (a shared lock held until the process exits) and
// starts the idle reaper.
func ensureRunning(c *Cluster) error {
	ctx := context.Background()
	if err := c.PrepareDirs(0o755); err != nil {
		return err
	}
	// Register as a user first, so the reaper never stops a server we are
	// about to use. The descriptor stays open (and locked) until exit.
	users, err := os.OpenFile(filepath.Join(c.Dir, "users.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return fmt.Errorf("users lock: %w", err)
	}
	if err := syscall.Flock(int(users.Fd()), syscall.LOCK_SH); err != nil {
		return fmt.Errorf("users lock: %w", err)
	}
	keepOpen = append(keepOpen, users)

	lk, err := os.OpenFile(filepath.Join(c.Dir, "start.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return fmt.Errorf("start lock: %w", err)
	}
	defer lk.Close()
	if err := syscall.Flock(int(lk.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("start lock: %w", err)
	}
	defer syscall.Flock(int(lk.Fd()), syscall.LOCK_UN) //nolint:errcheck

	if !c.Initialised() {
		if err := c.Init(ctx); err != nil {
			return err
		}
	}
	if c.Ping(ctx) {
		return startReaper(c)
	}
	err = c.Start(ctx, map[string]string{
		"listen_addresses":   "",
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"max_connections":    "400",
		"shared_buffers":     "128MB",
	})
	if err != nil {
		return fmt.Errorf("private PostgreSQL: %w", err)
	}
	if !c.Ping(ctx) {
		return fmt.Errorf("private PostgreSQL in %s started but does not answer", c.Dir)
	}
	return startReaper(c)
}

var keepOpen []*os.File

// startReaper starts (once per cluster) a detached shell loop that stops the
// server when no process has held the users lock for IdleStop.
func startReaper(c *Cluster) error {
	pidFile := filepath.Join(c.Dir, "reaper.pid")
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && syscall.Kill(pid, 0) == nil {
			return nil
		}
	}
	pgctl := filepath.Join(c.BinDir, "pg_ctl")
	stop := fmt.Sprintf("%q -D %q -m fast -w stop", pgctl, c.DataDir)
	if c.AsUser != "" {
		stop = "runuser -u " + c.AsUser + " -- " + stop
	}
	period := int(IdleStop / time.Second / 3)
	script := fmt.Sprintf(`idle=0
while sleep %d; do
  if flock -n -x %q true; then idle=$((idle+1)); else idle=0; fi
  if [ $idle -ge 3 ]; then
    flock -x %q sh -c 'flock -n -x %q true && %s' >/dev/null 2>&1
    rm -f %q
    exit 0
  fi
done`, period, filepath.Join(c.Dir, "users.lock"), filepath.Join(c.Dir, "start.lock"), filepath.Join(c.Dir, "users.lock"), stop, pidFile)
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start reaper: %w", err)
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return fmt.Errorf("reaper pid: %w", err)
	}
	go cmd.Wait() //nolint:errcheck // reaps the child if this process outlives it
	return nil
}

func withDatabase(u, db string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	p.Path = "/" + db
	return p.String()
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable url)"
	}
	return p.Redacted()
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
