// Package pfaimporttest loads the PostfixAdmin fixture
// (testdata/postfixadmin: PostfixAdmin's PostgreSQL schema and a small
// installation) into a scratch database of the test PostgreSQL server.
package pfaimporttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store/storetest"
)

// Load creates a database holding dir's schema.sql and data.sql (dir is
// the testdata/postfixadmin directory, relative to the test's package), drops
// it when t ends, and returns its URL.
func Load(t testing.TB, dir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := storetest.AdminURL(t)
	b := make([]byte, 6)
	rand.Read(b)
	name := "pfa_" + hex.EncodeToString(b)
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("pfaimporttest: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pfaimporttest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Logf("pfaimporttest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("pfaimporttest: drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	db, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatalf("pfaimporttest: %v", err)
	}
	defer db.Close(ctx)
	for _, f := range []string{"schema.sql", "data.sql"} {
		sql, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		// Without arguments, pgx sends the file with the simple query
		// protocol: several statements at once.
		if _, err := db.Exec(ctx, string(sql)); err != nil {
			t.Fatalf("pfaimporttest: load %s: %v", f, err)
		}
	}
	return u.String()
}
