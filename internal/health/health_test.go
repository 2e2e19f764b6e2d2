package health_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/facteur/facteur/internal/health"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// serve starts the probes on a loopback listener and returns their base URL.
func serve(t *testing.T, c *health.Checker) string {
	t.Helper()
	mux := http.NewServeMux()
	c.Register(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestReadyWhenDatabaseSchemaAndSpoolAreFine(t *testing.T) {
	db := storetest.New(t)
	spool := t.TempDir()
	url := serve(t, health.New(health.Options{Store: store.New(db.Pool), SpoolDir: spool}))
	code, body := get(t, url+"/readyz")
	if code != http.StatusOK {
		t.Fatalf("readyz = %d\n%s", code, body)
	}
	for _, want := range []string{"ok database: reachable\n", "(current)\n", "ok spool: " + spool + " writable\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("readyz lacks %q:\n%s", want, body)
		}
	}
	if code, body := get(t, url+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("healthz = %d %q", code, body)
	}
	// The probe leaves nothing in the spool.
	if ents, err := os.ReadDir(spool); err != nil || len(ents) != 0 {
		t.Errorf("spool after the probe: %v, %v", ents, err)
	}
}

func TestNotReadyForEachFailure(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		opts health.Options
		want string
	}{
		{"spool not a directory", health.Options{Store: st, SpoolDir: file}, "fail spool: " + file + " is not a directory"},
		{"spool missing", health.Options{Store: st, SpoolDir: filepath.Join(file, "x")}, "fail spool: stat"},
		{"schema behind", health.Options{Store: st, Migrations: func(context.Context) (int64, int64, error) { return 5, 9, nil }},
			"fail migrations: the database is at version 5, this build needs 9"},
		{"schema unknown", health.Options{Store: st, Migrations: func(context.Context) (int64, int64, error) { return 0, 0, errors.New("boom") }},
			"fail migrations: version unknown: boom"},
		{"no database", health.Options{}, "fail database: no database configured"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := get(t, serve(t, health.New(c.opts))+"/readyz")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, c.want) {
				t.Errorf("readyz = %d\n%s\nwant 503 with %q", code, body, c.want)
			}
		})
	}
	// A newer schema (rolling upgrade) is ready.
	code, body := get(t, serve(t, health.New(health.Options{Store: st,
		Migrations: func(context.Context) (int64, int64, error) { return 10, 9, nil }}))+"/readyz")
	if code != http.StatusOK || !strings.Contains(body, "newer than this build's 9") {
		t.Errorf("newer schema: %d\n%s", code, body)
	}
	// The database going away makes the node unready; healthz stays up.
	c := health.New(health.Options{Store: st})
	url := serve(t, c)
	if code, _ := get(t, url+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz before: %d", code)
	}
	db.Pool.Close()
	rep := c.Ready(context.Background()) // within a second: the kept result
	if !rep.Ready {
		t.Error("the result was not kept for a second")
	}
	c2 := health.New(health.Options{Store: st})
	if rep := c2.Ready(context.Background()); rep.Ready || rep.Checks[0].OK {
		t.Errorf("with the pool closed: %+v", rep)
	}
	if code, _ := get(t, url+"/healthz"); code != http.StatusOK {
		t.Errorf("healthz with the database gone: %d", code)
	}
}

func TestFreeBytesAndWritableDir(t *testing.T) {
	dir := t.TempDir()
	free, err := health.FreeBytes(dir)
	if err != nil || free == 0 {
		t.Fatalf("free = %d, %v", free, err)
	}
	total, err := health.TotalBytes(dir)
	if err != nil || total < free {
		t.Fatalf("total = %d, %v (free %d)", total, err, free)
	}
	if _, err := health.FreeBytes(filepath.Join(dir, "nosuch")); err == nil {
		t.Error("free space of a missing path")
	}
	if err := health.WritableDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := health.WritableDir(filepath.Join(dir, "nosuch")); err == nil {
		t.Error("a missing directory is writable")
	}
}
