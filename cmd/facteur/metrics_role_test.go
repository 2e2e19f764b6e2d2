package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeMetricsRoleServesMetricsAndProbes runs `facteur serve` with the
// metrics role alone and scrapes its listener.
func TestServeMetricsRoleServesMetricsAndProbes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a, db := serveTestApp(t, `metrics = "`+addr+`"`)
	if err := os.Mkdir(filepath.Join(filepath.Dir(a.configPath), "spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(context.Background(), `INSERT INTO queue_message (id, node, spool_key, sender, size) VALUES ('ROLE00000001', 'mx.test', 'k', '', 10);
INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport) VALUES ('ROLE00000001', 'a@b.test', 'a@b.test', 'b.test', 'smtp')`); err != nil {
		t.Fatal(err)
	}
	var table []role
	for _, r := range roleTable() {
		if r.name == "metrics" {
			table = append(table, r)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	var logs syncBuffer
	go func() {
		done <- a.serve(ctx, serveOptions{logTo: &logs, table: table, ready: func(r []string) { ready <- r }})
	}()
	select {
	case r := <-ready:
		if len(r) != 1 || r[0] != "metrics" {
			t.Fatalf("running roles = %v", r)
		}
	case err := <-done:
		t.Fatalf("serve: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve not ready")
	}
	get := func(path string) (int, string) {
		t.Helper()
		var last error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				last = err
				continue
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			return resp.StatusCode, string(b)
		}
		t.Fatalf("GET %s: %v", path, last)
		return 0, ""
	}
	code, body := get("/metrics")
	for _, want := range []string{`facteur_queue_up{node="mx.test"} 1`,
		`facteur_queue_recipients{age="5",node="mx.test",state="queued"} 1`, "facteur_spool_free_bytes ", "facteur_db_pool_max_conns "} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
	}
	if code, body := get("/readyz"); code != http.StatusOK || !strings.Contains(body, "ok migrations") {
		t.Errorf("/readyz = %d\n%s", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
