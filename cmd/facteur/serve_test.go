package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/facteur/facteur/store/storetest"
)

// syncBuffer is a bytes.Buffer that a logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveTestApp returns an app whose configuration points at a fresh database
// and sets the given listen addresses.
func serveTestApp(t *testing.T, listen string) (*app, *storetest.DB) {
	t.Helper()
	db := storetest.New(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "facteur.toml")
	conf := fmt.Sprintf("database_url = %s\nspool_dir = %s\nhostname = \"mx.test\"\n[log]\nformat = \"json\"\n[listen]\n%s\n",
		tomlQuote(db.URL), tomlQuote(filepath.Join(dir, "spool")), listen)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &app{configPath: path}
	t.Cleanup(a.close)
	return a, db
}

// logRecords decodes JSON log lines.
func logRecords(t *testing.T, s string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		recs = append(recs, m)
	}
	return recs
}

func TestServeDefaultRolesFollowTheListenAddresses(t *testing.T) {
	cfg := &Config{}
	cfg.Listen.SMTP = "127.0.0.1:25"
	cfg.Listen.Admin = "127.0.0.1:8080"
	cfg.applyDefaults() // sets the pickup socket
	sel, err := selectRoles(cfg, roleTable(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range sel {
		names = append(names, r.name)
	}
	want := []string{"queue", "smtp", "pickup", "admin"}
	if !slices.Equal(names, want) {
		t.Fatalf("default roles = %v, want %v (qmqp, submission, metrics have no address)", names, want)
	}

	sel, err = selectRoles(cfg, roleTable(), []string{"admin", "queue", "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if len(sel) != 2 || sel[0].name != "queue" || sel[1].name != "admin" {
		t.Fatalf("--roles admin,queue,admin gave %v", sel)
	}
	if _, err := selectRoles(cfg, roleTable(), []string{"qmqp"}); err == nil || !strings.Contains(err.Error(), "listen.qmqp") {
		t.Fatalf("qmqp without listen.qmqp: err = %v", err)
	}
	var ee *exitError
	if _, err := selectRoles(cfg, roleTable(), []string{"smtpd"}); !errors.As(err, &ee) || ee.code != exitUsage {
		t.Fatalf("unknown role: err = %v, want a usage error", err)
	}
}

func TestServeRunsUntilCancelledAndReportsMissingRoles(t *testing.T) {
	a, db := serveTestApp(t, `smtp = "127.0.0.1:2525"`)
	ctx := context.Background()
	// serve makes the coming days' log partitions: remove one to see it come back.
	part := "delivery_log_" + time.Now().AddDate(0, 0, 3).Format("20060102")
	if _, err := db.Pool.Exec(ctx, "DROP TABLE IF EXISTS "+part); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	ready := make(chan []string, 1)
	started := make(chan struct{})
	// A table of its own: the real one gains run functions as roles are built.
	listen := func(f func(l *ListenConfig) string) func(*Config) bool {
		return func(c *Config) bool { return f(&c.Listen) != "" }
	}
	table := []role{
		{name: "queue", configured: func(*Config) bool { return true }, run: func(ctx context.Context, s *services) error {
			if s.store == nil || s.cfg == nil || s.log == nil {
				return errors.New("services incomplete")
			}
			close(started)
			<-ctx.Done()
			return nil
		}},
		{name: "smtp", setting: "listen.smtp", configured: listen(func(l *ListenConfig) string { return l.SMTP })},
		{name: "qmqp", setting: "listen.qmqp", configured: listen(func(l *ListenConfig) string { return l.QMQP })},
		{name: "pickup", setting: "listen.pickup", configured: listen(func(l *ListenConfig) string { return l.Pickup })},
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- a.serve(ctx, serveOptions{logTo: &logs, table: table, ready: func(r []string) { ready <- r }})
	}()
	select {
	case r := <-ready:
		if !slices.Equal(r, []string{"queue"}) {
			t.Fatalf("running roles = %v, want [queue]", r)
		}
	case err := <-done:
		t.Fatalf("serve returned before ready: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve not ready after 30 s")
	}
	<-started
	var exists bool
	if err := db.Pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", part).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		t.Errorf("partition %s was not created at start", part)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	var missing []string
	for _, rec := range logRecords(t, logs.String()) {
		if m, _ := rec["msg"].(string); strings.HasSuffix(m, "not available in this build") {
			missing = append(missing, m)
		}
	}
	want := []string{"role smtp not available in this build", "role pickup not available in this build"}
	if !slices.Equal(missing, want) {
		t.Fatalf("missing-role log lines = %q, want %q", missing, want)
	}
}

func TestServeStopsWhenARoleFails(t *testing.T) {
	a, _ := serveTestApp(t, `admin = "127.0.0.1:8080"`)
	var logs syncBuffer
	otherStopped := make(chan struct{})
	table := []role{
		{name: "queue", configured: func(*Config) bool { return true }, run: func(ctx context.Context, _ *services) error {
			<-ctx.Done()
			close(otherStopped)
			return nil
		}},
		{name: "admin", configured: func(c *Config) bool { return c.Listen.Admin != "" }, run: func(context.Context, *services) error {
			return errors.New("listen tcp 127.0.0.1:8080: address already in use")
		}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := a.serve(ctx, serveOptions{logTo: &logs, table: table})
	if err == nil || !strings.Contains(err.Error(), "role admin: listen tcp") {
		t.Fatalf("serve = %v, want the admin role's error", err)
	}
	select {
	case <-otherStopped:
	default:
		t.Fatal("the queue role was not cancelled when admin failed")
	}
}

func TestServeNoMigrateRefusesAnOutdatedSchema(t *testing.T) {
	a, db := serveTestApp(t, "")
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, "DELETE FROM goose_db_version WHERE version_id = (SELECT max(version_id) FROM goose_db_version)"); err != nil {
		t.Fatal(err)
	}
	err := a.serve(ctx, serveOptions{noMigrate: true, roles: []string{"queue"}})
	if err == nil || !strings.Contains(err.Error(), "facteur migrate up") {
		t.Fatalf("serve --no-migrate on an outdated schema = %v", err)
	}
}

func TestServeRejectsAnUnknownLogFormat(t *testing.T) {
	a, _ := serveTestApp(t, "")
	err := a.serve(context.Background(), serveOptions{logFormat: "xml"})
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUsage {
		t.Fatalf("--log-format xml = %v, want a usage error", err)
	}
}

func TestQueueLockAllowsOneQueueManagerPerSpool(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockQueue(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockQueue(dir); err == nil || !strings.Contains(err.Error(), "another running process manages the queue") {
		t.Fatalf("second lock: %v, want refused", err)
	}
	unlock()
	unlock2, err := lockQueue(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}
