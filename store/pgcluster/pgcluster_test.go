package pgcluster_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store/pgcluster"
)

// clusterDir returns a directory the server's user can reach: as root,
// t.TempDir() (mode 0700, owned by root) is not.
func clusterDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("/var/tmp", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestInitStartStop(t *testing.T) {
	dir := clusterDir(t)
	port := freePort(t)
	c, err := pgcluster.New(filepath.Join(dir, "pg"), port)
	if err != nil {
		t.Skipf("no PostgreSQL server binaries: %v", err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = c.Stop(ctx) })
	if err := c.PrepareDirs(0o700); err != nil {
		t.Fatal(err)
	}
	if c.Initialised() || c.Running(ctx) {
		t.Fatal("a new directory reports a cluster")
	}
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.Initialised() {
		t.Fatal("no cluster after Init")
	}
	if err := c.Start(ctx, map[string]string{"listen_addresses": "127.0.0.1", "fsync": "off"}); err != nil {
		t.Fatal(err)
	}
	if !c.Running(ctx) || !c.Ping(ctx) {
		t.Fatal("server not running after Start")
	}
	// Both the socket and the TCP listener answer.
	for _, u := range []string{c.URL("postgres"), "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/postgres?sslmode=disable"} {
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatalf("connect %s: %v", u, err)
		}
		var fsync string
		if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "off" {
			t.Errorf("fsync = %q, %v: the settings did not reach the server", fsync, err)
		}
		conn.Close(ctx)
	}
	if err := c.Start(ctx, map[string]string{"bad": "it's"}); err == nil {
		t.Error("a setting with a quote was accepted")
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Running(ctx) || c.Ping(ctx) {
		t.Fatal("server still running after Stop")
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop of a stopped server: %v", err)
	}
}
