// Package browser holds the end-to-end tests of the admin web UI: a real
// admin service on 127.0.0.1 over a test database, driven by headless
// Chromium (Debian's chromium, through the npm package playwright-core,
// run.mjs), and the proof that a mailbox made in the UI logs in to
// submission and to Dovecot with the same password (peers_test.go).
//
// Requirements, installed by .ci/run: `apt-get install -y chromium` and
// `npm ci` in test/browser. Without them the browser test skips, or fails
// when FACTEUR_REQUIRE_PEERS=1. Screenshots of the main pages land in
// test/browser/artifacts/ (git-ignored).
package browser

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/admin"
	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// The superadmin seeded for the browser, and its password.
const (
	rootUser = "root"
	rootPW   = "root-password-1"
)

// requirePeer skips t with why, or fails it when FACTEUR_REQUIRE_PEERS=1
// (CI installs every peer).
func requirePeer(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
		t.Fatalf("%s (required: FACTEUR_REQUIRE_PEERS=1)", why)
	}
	t.Skip(why)
}

// chromiumPath is the browser the tests drive.
func chromiumPath() string {
	if p := os.Getenv("FACTEUR_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// world is the admin service under test.
type world struct {
	url    string
	db     *storetest.DB
	st     *store.Store
	h      *admin.Handler
	hasher *passwd.Hasher
}

// startAdmin starts the admin handler on 127.0.0.1:0 over a fresh database
// with a superadmin, and returns its base URL.
func startAdmin(t *testing.T) *world {
	t.Helper()
	db := storetest.New(t)
	st := store.New(db.Pool)
	hasher, err := passwd.New(passwd.CheapOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctx := store.WithActor(context.Background(), "test:seed")
	hash, err := hasher.Hash(rootPW)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateAdmin(ctx, store.Admin{Username: rootUser, Password: hash, Superadmin: true, Active: true}, nil); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h, err := admin.New(st, admin.Options{Hasher: hasher, MaxConcurrentHashes: 2}, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("admin server: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return &world{url: "http://" + ln.Addr().String(), db: db, st: st, h: h, hasher: hasher}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// exec runs SQL as the test.
func (w *world) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := w.db.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// count runs a SELECT count(*).
func (w *world) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := w.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestAdminUIInChromium runs run.mjs against a live admin service: the
// superadmin logs in and creates a domain and a domain admin; the domain
// admin logs in, creates a mailbox and an alias, sets a vacation reply,
// reads the audit log and its queue, and fails to reach another domain;
// the new mailbox's user logs in to self-service. The script also fails on
// any console error (a Content-Security-Policy violation among them) and
// saves screenshots of the main pages in artifacts/.
func TestAdminUIInChromium(t *testing.T) {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		requirePeer(t, "node is not installed (apt-get install -y nodejs npm)")
	}
	if _, err := os.Stat(chromiumPath()); err != nil {
		requirePeer(t, chromiumPath()+" is missing (apt-get install -y chromium)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		requirePeer(t, "playwright-core is not installed: run `npm ci` in test/browser")
	}

	w := startAdmin(t)
	// Another tenant, which the domain admin made in the browser must not
	// reach; queue and log rows for both.
	ctx := store.WithActor(context.Background(), "test:seed")
	if _, err := w.st.CreateDomain(ctx, store.Domain{Name: "other.test", Active: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.st.CreateMailbox(ctx, store.Mailbox{Address: "u@other.test", Password: "{PLAIN}x", Active: true}); err != nil {
		t.Fatal(err)
	}
	w.exec(t, `INSERT INTO queue_message (id, node, spool_key, sender, size, arrived_at)
		VALUES ('Q1shopAndOther', 'node1', 'k1', 'someone@example.org', 2048, now() - interval '2 hours'),
		       ('Q2otherOnly', 'node1', 'k2', 'someone@example.org', 1024, now() - interval '1 hour')`)
	w.exec(t, `INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport, status, attempts, last_reply)
		VALUES ('Q1shopAndOther', 'jane@shop.test', 'jane@shop.test', 'shop.test', 'maildir', 'deferred', 2, '452 4.2.2 Mailbox full'),
		       ('Q1shopAndOther', 'x@other.test', 'x@other.test', 'other.test', 'maildir', 'deferred', 2, '451 4.3.0 try later'),
		       ('Q2otherOnly', 'u@other.test', 'u@other.test', 'other.test', 'maildir', 'queued', 0, '')`)
	w.exec(t, `INSERT INTO delivery_log (queue_id, node, sender, recipient, domain, transport, relay, delay_seconds, dsn, status, reply)
		VALUES ('Q0sent', 'node1', 'someone@example.org', 'jane@shop.test', 'shop.test', 'maildir', 'maildir', 0.4, '2.0.0', 'sent', 'delivered to maildir'),
		       ('Q1shopAndOther', 'node1', 'someone@example.org', 'jane@shop.test', 'shop.test', 'maildir', 'maildir', 3.2, '4.2.2', 'deferred', '452 4.2.2 Mailbox full'),
		       ('Q9other', 'node1', 'someone@example.org', 'u@other.test', 'other.test', 'maildir', 'maildir', 1, '2.0.0', 'sent', 'delivered to maildir')`)

	artifacts := filepath.Join(dir, "artifacts")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(runCtx, node, "run.mjs", w.url)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"FACTEUR_CHROMIUM="+chromiumPath(),
		"FACTEUR_ARTIFACTS="+artifacts,
		"FACTEUR_ROOT_USER="+rootUser,
		"FACTEUR_ROOT_PASSWORD="+rootPW,
	)
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, testWriter{t})
	cmd.Stderr = cmd.Stdout
	start := time.Now()
	err = cmd.Run()
	t.Logf("run.mjs took %s", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("run.mjs: %v", err)
	}

	// What the browser did is in the database, written as the domain admin.
	for _, c := range []struct {
		what, sql string
	}{
		{"the domain", `SELECT count(*) FROM domain WHERE name = 'shop.test' AND max_mailboxes = 50`},
		{"the domain admin", `SELECT count(*) FROM domain_admin WHERE username = 'dora' AND domain = 'shop.test'`},
		{"the mailbox", `SELECT count(*) FROM mailbox WHERE address = 'jane@shop.test' AND name = 'Jane Doe'`},
		{"the alias", `SELECT count(*) FROM alias WHERE address = 'sales@shop.test' AND 'jane@shop.test' = ANY (destinations)`},
		{"the vacation", `SELECT count(*) FROM vacation WHERE mailbox = 'jane@shop.test' AND subject = 'On holiday'`},
		{"audit of the mailbox", `SELECT count(*) FROM audit_log WHERE actor = 'admin:dora' AND table_name = 'mailbox' AND row_key = 'jane@shop.test'`},
		{"audit of the domain", `SELECT count(*) FROM audit_log WHERE actor = 'admin:root' AND table_name = 'domain' AND row_key = 'shop.test'`},
		{"the forwarding", `SELECT count(*) FROM alias WHERE address = 'jane@shop.test' AND destinations @> ARRAY['jane@shop.test', 'jane.doe@example.org']`},
	} {
		if n := w.count(t, c.sql); n != 1 {
			t.Errorf("%s: %d rows, want 1", c.what, n)
		}
	}
	// The other tenant is untouched.
	if n := w.count(t, `SELECT count(*) FROM audit_log WHERE actor = 'admin:dora' AND (domain = 'other.test' OR row_key LIKE '%other.test%')`); n != 0 {
		t.Errorf("the domain admin wrote %d rows of another domain", n)
	}
	if n := w.count(t, `SELECT count(*) FROM mailbox WHERE address = 'u@other.test'`); n != 1 {
		t.Errorf("another domain's mailbox is gone")
	}
	// The domain admin held its message: only it, and it has no foreign
	// recipient left unheld... it could not hold it at all (it has one).
	if n := w.count(t, `SELECT count(*) FROM queue_message WHERE held`); n != 0 {
		t.Errorf("%d held messages: the domain admin held a message with another domain's recipient", n)
	}
	shots, _ := filepath.Glob(filepath.Join(artifacts, "*.png"))
	t.Logf("%d screenshots in %s", len(shots), artifacts)
	if len(shots) < 10 {
		t.Errorf("only %d screenshots", len(shots))
	}
}
