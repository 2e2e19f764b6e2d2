package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store/pgcluster"
)

// OwnCluster is a PostgreSQL cluster of one test's own, for tests that stop
// and restart the server: the shared cluster of store/storetest serves
// every test process of the run and must never be stopped.
type OwnCluster struct {
	*pgcluster.Cluster
	t testing.TB
}

// NewOwnCluster initialises and starts a private cluster (unix socket only,
// durable settings: fsync and synchronous_commit on) in a directory under
// /var/tmp that the postgres user can reach, and creates the database
// "facteur". It is stopped and removed at the test's end.
func NewOwnCluster(t testing.TB) *OwnCluster {
	t.Helper()
	if _, err := pgcluster.FindServerBinaries(); err != nil {
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	base, err := os.MkdirTemp("/var/tmp", "facteur-own-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	port := 20000 + int(time.Now().UnixNano()%20000)
	c, err := pgcluster.New(filepath.Join(base, "pg"), port)
	if err != nil {
		t.Fatal(err)
	}
	oc := &OwnCluster{Cluster: c, t: t}
	stop := fmt.Sprintf("%q -D %q -m immediate -w stop; rm -rf %q", filepath.Join(c.BinDir, "pg_ctl"), c.DataDir, base)
	if c.AsUser != "" {
		stop = fmt.Sprintf("runuser -u %s -- %q -D %q -m immediate -w stop; rm -rf %q", c.AsUser, filepath.Join(c.BinDir, "pg_ctl"), c.DataDir, base)
	}
	stopWdog := watchdog(stop)
	t.Cleanup(func() {
		defer stopWdog()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Logf("stop own cluster: %v; stopping it immediately", err)
			oc.StopImmediate()
		}
		os.RemoveAll(base)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.PrepareDirs(0o700); err != nil {
		t.Fatal(err)
	}
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	oc.Start()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE facteur"); err != nil {
		t.Fatal(err)
	}
	return oc
}

// Start starts the server (again) and waits until it accepts connections.
func (c *OwnCluster) Start() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := c.Cluster.Start(ctx, map[string]string{
		"listen_addresses":   "",
		"max_connections":    "200",
		"fsync":              "on",
		"synchronous_commit": "on",
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

// StopImmediate is `pg_ctl stop -m immediate`: every server process quits
// at once, without a checkpoint, as in a crash; committed transactions
// survive through the WAL.
func (c *OwnCluster) StopImmediate() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.Run(ctx, "pg_ctl", "-D", c.DataDir, "-m", "immediate", "-w", "-t", "60", "stop")
	if err != nil && c.Running(ctx) {
		c.t.Fatalf("pg_ctl stop -m immediate: %v: %s", err, strings.TrimSpace(string(out)))
	}
}

// URL returns the URL of the database "facteur".
func (c *OwnCluster) URL() string { return c.Cluster.URL("facteur") }

// Exec runs SQL on the database "facteur".
func (c *OwnCluster) Exec(sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}
