package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store/pgcluster"
)

// devRun is one `facteur dev` running in-process.
type devRun struct {
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	lines  []string
	ready  chan struct{}
	logs   syncBuffer // what serve logs to stderr
}

func (d *devRun) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n") + "\n--- log:\n" + d.logs.String()
}

// startDev runs `facteur dev --dir dir --free-ports` and waits until it
// reports ready.
func startDev(t *testing.T, dir string) *devRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devRun{cancel: cancel, done: make(chan error, 1), ready: make(chan struct{})}
	a := &app{log: slog.New(slog.DiscardHandler)}
	root := newRoot(a)
	pr, pw := io.Pipe()
	root.SetArgs([]string{"dev", "--dir", dir, "--free-ports"})
	root.SetOut(pw)
	root.SetErr(&d.logs)
	go func() {
		err := root.ExecuteContext(ctx)
		a.close()
		pw.Close()
		d.done <- err
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		readyOnce := sync.OnceFunc(func() { close(d.ready) })
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			d.mu.Unlock()
			if strings.HasPrefix(sc.Text(), "facteur dev: ready") {
				readyOnce()
			}
		}
	}()
	select {
	case <-d.ready:
	case err := <-d.done:
		t.Fatalf("facteur dev stopped before it was ready: %v\n%s", err, d.output())
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("facteur dev not ready after 60 s:\n%s", d.output())
	}
	return d
}

// stop cancels the run (as Ctrl-C does) and waits for it.
func (d *devRun) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("facteur dev after cancel: %v\n%s", err, d.output())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("facteur dev did not stop:\n%s", d.output())
	}
	if !strings.Contains(d.output(), "facteur dev: PostgreSQL stopped") {
		t.Errorf("no report that PostgreSQL stopped:\n%s", d.output())
	}
}

// printedPassword returns the password printed on the line naming who.
func printedPassword(out, who string) string {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[3] == who && f[4] == "password" {
			return f[5]
		}
	}
	return ""
}

func TestDevStartsSeedsStopsAndRestarts(t *testing.T) {
	if _, err := pgcluster.FindServerBinaries(); err != nil {
		t.Skipf("facteur dev needs PostgreSQL server binaries: %v", err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, ".facteur", "facteur.toml")
	t.Cleanup(func() {
		// Whatever happened, leave no server and no data behind.
		cfg, err := loadConfig(cfgPath)
		if err != nil || cfg.DevPostgres == nil {
			return
		}
		if c, err := pgcluster.New(cfg.DevPostgres.Dir, cfg.DevPostgres.Port); err == nil {
			_ = c.Stop(context.Background())
		}
		if !strings.HasPrefix(cfg.DevPostgres.Dir, dir) {
			os.RemoveAll(cfg.DevPostgres.Dir)
		}
	})
	ctx := context.Background()
	start := time.Now()

	d := startDev(t, dir)
	out := d.output()
	t.Logf("first run ready after %s", time.Since(start).Round(time.Millisecond))

	// The configuration every other command reads.
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(cfgPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("config mode: %v %v, want 0600 (it holds the database password)", st.Mode(), err)
	}
	if cfg.DevPostgres == nil || cfg.DevPostgres.Port == 0 {
		t.Fatalf("config has no [dev_postgres]: %+v", cfg)
	}
	if !strings.Contains(cfg.DatabaseURL, "127.0.0.1:"+strconv.Itoa(cfg.DevPostgres.Port)) {
		t.Errorf("database_url %q does not use the cluster's TCP port %d", cfg.DatabaseURL, cfg.DevPostgres.Port)
	}
	for name, addr := range map[string]string{"smtp": cfg.Listen.SMTP, "submission": cfg.Listen.Submission,
		"submissions": cfg.Listen.Submissions, "admin": cfg.Listen.Admin} {
		if h, _, err := net.SplitHostPort(addr); err != nil || h != "127.0.0.1" {
			t.Errorf("listen.%s = %q, want a loopback address", name, addr)
		}
	}
	wantPaths := map[string]string{
		"spool_dir": filepath.Join(dir, ".facteur", "spool"), "mail_root": filepath.Join(dir, ".facteur", "mail"),
		"listen.pickup": filepath.Join(dir, ".facteur", "pickup.sock"),
	}
	for k, got := range map[string]string{"spool_dir": cfg.SpoolDir, "mail_root": cfg.MailRoot, "listen.pickup": cfg.Listen.Pickup} {
		if len(wantPaths[k]) <= pgcluster.MaxSocketDir && got != wantPaths[k] {
			t.Errorf("%s = %q, want %q", k, got, wantPaths[k])
		}
	}
	if cfg.Hostname != "localhost" {
		t.Errorf("hostname = %q", cfg.Hostname)
	}
	pair, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		t.Fatalf("dev certificate: %v", err)
	}
	if err := pair.Leaf.VerifyHostname("localhost"); err != nil {
		t.Errorf("dev certificate: %v", err)
	}

	// `facteur migrate status` run from the directory finds .facteur/facteur.toml.
	t.Setenv("FACTEUR_CONFIG", "")
	t.Chdir(dir)
	var status syncBuffer
	ma := &app{}
	mroot := newRoot(ma)
	mroot.SetArgs([]string{"migrate", "status"})
	mroot.SetOut(&status)
	err = mroot.ExecuteContext(ctx)
	ma.close()
	if err != nil {
		t.Fatalf("migrate status: %v", err)
	}
	if !strings.Contains(status.String(), "00001_control_plane.sql") || strings.Contains(status.String(), "pending") {
		t.Errorf("migrate status:\n%s", status.String())
	}

	// The seeded data, by raw SQL through the written configuration.
	conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatalf("connect with database_url: %v", err)
	}
	defer conn.Close(ctx)
	var mailboxHash, adminHash, target string
	var superadmin bool
	var abuse []string
	var postmasterAliases int
	err = conn.QueryRow(ctx, `SELECT
		(SELECT password FROM mailbox WHERE address = 'postmaster@example.test' AND active),
		(SELECT password FROM admin WHERE username = 'admin@example.test'),
		(SELECT superadmin FROM admin WHERE username = 'admin@example.test'),
		(SELECT destinations FROM alias WHERE address = 'abuse@example.test'),
		(SELECT value FROM setting WHERE key = 'default_alias_target'),
		(SELECT count(*) FROM alias WHERE address = 'postmaster@example.test')`).
		Scan(&mailboxHash, &adminHash, &superadmin, &abuse, &target, &postmasterAliases)
	if err != nil {
		t.Fatalf("seeded data: %v", err)
	}
	if !superadmin || target != "postmaster@example.test" || len(abuse) != 1 || abuse[0] != "postmaster@example.test" || postmasterAliases != 0 {
		t.Errorf("seed: superadmin=%v default_alias_target=%q abuse=%v postmaster aliases=%d", superadmin, target, abuse, postmasterAliases)
	}
	h, err := passwd.New(passwd.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	for who, hash := range map[string]string{"postmaster@example.test": mailboxHash, "admin@example.test": adminHash} {
		pw := printedPassword(out, who)
		if pw == "" {
			t.Fatalf("no password printed for %s:\n%s", who, out)
		}
		if ok, _, err := h.Verify(hash, pw); err != nil || !ok {
			t.Errorf("printed password of %s does not match its stored hash %q: %v", who, hash, err)
		}
	}
	conn.Close(ctx)

	// One dev per directory.
	a2 := &app{}
	r2 := newRoot(a2)
	r2.SetArgs([]string{"dev", "--dir", dir})
	r2.SetOut(io.Discard)
	if err := r2.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "another facteur dev is running") {
		t.Errorf("second concurrent dev: %v", err)
	}

	d.stop(t)
	c, err := pgcluster.New(cfg.DevPostgres.Dir, cfg.DevPostgres.Port)
	if err != nil {
		t.Fatal(err)
	}
	if c.Running(ctx) {
		t.Fatal("PostgreSQL still runs after facteur dev stopped")
	}
	if nc, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.DevPostgres.Port)), time.Second); err == nil {
		nc.Close()
		t.Fatal("something still listens on the dev PostgreSQL port")
	}

	// A second run reuses the data: no new passwords.
	d = startDev(t, dir)
	out2 := d.output()
	if strings.Contains(out2, " password ") || !strings.Contains(out2, "reusing the data") || !strings.Contains(out2, "admin@example.test") {
		t.Errorf("second run output:\n%s", out2)
	}
	conn, err = pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	var again string
	if err := conn.QueryRow(ctx, "SELECT password FROM mailbox WHERE address = 'postmaster@example.test'").Scan(&again); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if again != mailboxHash {
		t.Error("the second run changed the postmaster password")
	}
	d.stop(t)
	if c.Running(ctx) {
		t.Fatal("PostgreSQL still runs after the second run stopped")
	}

	// A configuration written again (new password, new port) beside the
	// existing cluster still reaches the data, and seeds nothing.
	if err := os.Remove(cfgPath); err != nil {
		t.Fatal(err)
	}
	d = startDev(t, dir)
	if out3 := d.output(); strings.Contains(out3, " password ") || !strings.Contains(out3, "already holds data") {
		t.Errorf("run with a new configuration:\n%s", out3)
	}
	cfg3, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, cfg3.DatabaseURL)
	if err != nil {
		t.Fatalf("new configuration's database_url: %v", err)
	}
	if err := conn.QueryRow(ctx, "SELECT password FROM mailbox WHERE address = 'postmaster@example.test'").Scan(&again); err != nil || again != mailboxHash {
		t.Errorf("data after a new configuration: %v", err)
	}
	conn.Close(ctx)
	d.stop(t)
	t.Logf("three runs in %s", time.Since(start).Round(time.Millisecond))
}

func TestGitignoreKeepsTheDevInstanceOut(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if l := strings.TrimSpace(line); l == "/.facteur/" || l == ".facteur/" || l == ".facteur" || l == "/.facteur" {
			return
		}
	}
	t.Fatal(".gitignore does not ignore .facteur/")
}
