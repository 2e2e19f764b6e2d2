package main

// Issue 6, "Metrics and health": /metrics scraped after real traffic through
// one `facteur serve` shows the counters moved by the right amounts, and the
// log has one structured line per SMTP session end, per accepted message
// and per delivery attempt.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/smtp"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/internal/dovecottest"
	"github.com/facteur/facteur/store/storetest"
)

// scrapeMetrics reads /metrics at addr into series → value; a series is
// written as exposed: name{label="v",...} with the labels sorted.
func scrapeMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, b)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsCountRealTrafficThroughServe(t *testing.T) {
	uid, gid := dovecottest.MailOwner(t)
	db := storetest.New(t)
	ctx := context.Background()

	remote := &scriptedRemote{}
	remotePort := startRemote(t, remote)
	for _, q := range []string{
		`INSERT INTO domain (name) VALUES ('example.test')`,
		`INSERT INTO mailbox (address, password) VALUES ('alice@example.test', '{PLAIN}x'), ('bob@example.test', '{PLAIN}x')`,
		`INSERT INTO client_access (network, action) VALUES ('127.0.0.0/8', 'permit_relay')`,
		fmt.Sprintf(`INSERT INTO transport (key, nexthop) VALUES ('remote.test', 'smtp:[127.0.0.1]:%d')`, remotePort),
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("/tmp", "fmet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	mailRoot := filepath.Join(dir, "mail")
	smtpAddr, metricsAddr, adminAddr := freePort(t), freePort(t), freePort(t)
	conf := fmt.Sprintf(`database_url = %s
spool_dir = %s
mail_root = %s
hostname = "mx.example.test"
mail_owner = "%d:%d"
[log]
format = "json"
level = "info"
[listen]
smtp = %q
metrics = %q
admin = %q
pickup = %s
[dns]
resolver = "none"
[queue]
poll_interval = "1s"
`, tomlQuote(db.URL), tomlQuote(filepath.Join(dir, "spool")), tomlQuote(mailRoot), uid, gid, smtpAddr, metricsAddr, adminAddr,
		tomlQuote(filepath.Join(sockDir, "pickup.sock")))
	logs := startServe(t, dir, conf)
	// A whole session (banner to QUIT) proves the listener up; the
	// baseline is taken once it has ended.
	waitFor(t, "the smtp listener", 10*time.Second, func() bool {
		c, err := smtp.Dial(smtpAddr)
		if err != nil {
			return false
		}
		return c.Quit() == nil
	})
	waitListening(t, "the metrics listener", metricsAddr)
	sessions := `facteur_smtp_sessions{listener="smtp"}`
	waitFor(t, "the probe session to end", 10*time.Second, func() bool { return scrapeMetrics(t, metricsAddr)[sessions] == 0 })
	before := scrapeMetrics(t, metricsAddr)

	send := func(from string, to []string, subject string) {
		t.Helper()
		msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nbody of %s\r\n", from, strings.Join(to, ">, <"), subject, subject)
		if err := smtp.SendMail(smtpAddr, nil, from, to, []byte(msg)); err != nil {
			t.Fatalf("send %q: %v", subject, err)
		}
	}
	// 1. To a local mailbox: delivered by maildir.
	send("someone@elsewhere.test", []string{"bob@example.test"}, "local")
	// 2. To the remote: one recipient accepted, one refused (550) → one
	// failure DSN to alice, delivered by maildir.
	send("alice@example.test", []string{"ok@remote.test", "nobody@remote.test"}, "remote")

	alice := filepath.Join(mailRoot, "example.test", "alice")
	bob := filepath.Join(mailRoot, "example.test", "bob")
	waitFor(t, "bob's message and alice's DSN", 30*time.Second, func() bool {
		return len(maildirFiles(t, bob)) == 1 && len(maildirFiles(t, alice)) == 1
	})
	delta := func(after map[string]float64, series string) float64 { return after[series] - before[series] }
	var after map[string]float64
	waitFor(t, "the counters to settle", 15*time.Second, func() bool {
		after = scrapeMetrics(t, metricsAddr)
		return after[sessions] == 0 && delta(after, `facteur_deliveries_total{result="sent",transport="maildir"}`) >= 2 &&
			delta(after, `facteur_dsns_sent_total{action="failed"}`) >= 1
	})

	// Each net/smtp.SendMail session: 220 banner, 250 EHLO, 250 MAIL, 250
	// per RCPT, 354 DATA, 250 queued, 221 QUIT.
	for series, want := range map[string]float64{
		`facteur_smtp_connections_total{listener="smtp"}`:                             2,
		`facteur_smtp_replies_total{class="2xx",listener="smtp"}`:                     6 + 7,
		`facteur_smtp_replies_total{class="3xx",listener="smtp"}`:                     2,
		`facteur_smtp_replies_total{class="4xx",listener="smtp"}`:                     0,
		`facteur_smtp_replies_total{class="5xx",listener="smtp"}`:                     0,
		`facteur_messages_accepted_total`:                                             2,
		`facteur_deliveries_total{result="sent",transport="maildir"}`:                 2, // bob, and the DSN to alice
		`facteur_deliveries_total{result="sent",transport="smtp"}`:                    1,
		`facteur_deliveries_total{result="bounced",transport="smtp"}`:                 1,
		`facteur_deliveries_total{result="deferred",transport="smtp"}`:                0,
		`facteur_delivery_duration_seconds_count{result="sent",transport="smtp"}`:     1, // one attempt for both
		`facteur_delivery_duration_seconds_count{result="bounced",transport="smtp"}`:  1,
		`facteur_delivery_duration_seconds_count{result="sent",transport="maildir"}`:  2,
		`facteur_dsns_sent_total{action="failed"}`:                                    1,
		`facteur_dsns_sent_total{action="delayed"}`:                                   0,
		`facteur_smtp_sessions{listener="smtp"}`:                                      0,
		`facteur_queue_dsn_pending{node="mx.example.test"}`:                           0,
		`facteur_queue_recipients{age="5",node="mx.example.test",state="delivering"}`: 0,
	} {
		if got := delta(after, series); got != want {
			t.Errorf("%s moved by %v, want %v", series, got, want)
		}
	}
	if got := delta(after, "facteur_messages_accepted_bytes_total"); got < 100 {
		t.Errorf("facteur_messages_accepted_bytes_total moved by %v, want the size of two messages", got)
	}
	// The admin listener serves the same registry to loopback clients. It
	// opens a pool of its own at start: wait until it listens.
	waitListening(t, "the admin listener", adminAddr)
	if got := scrapeMetrics(t, adminAddr)["facteur_messages_accepted_total"]; got != after["facteur_messages_accepted_total"] {
		t.Errorf("admin /metrics: facteur_messages_accepted_total %v, want %v", got, after["facteur_messages_accepted_total"])
	}
	for _, series := range []string{"facteur_lookup_cache_hits_total", "facteur_lookup_cache_misses_total"} {
		if after[series] <= 0 {
			t.Errorf("%s = %v, want > 0", series, after[series])
		}
	}

	// The log: one "session end" per SMTP session (the probe and the two
	// messages), one accepted line per message queued (two received, one
	// DSN) and one line per delivery attempt of each recipient (bob, ok@,
	// nobody@, alice's DSN), each with its queue id.
	var sessionEnds, accepted, attempts int
	ids := map[string]bool{}
	for _, r := range logRecords(t, logs.String()) {
		msg, _ := r["msg"].(string)
		qid, _ := r["queue_id"].(string)
		switch {
		case msg == "session end" && r["listener"] == "smtp":
			sessionEnds++
		case qid != "" && strings.HasPrefix(msg, qid+": from=<"):
			accepted++
			if ids[qid] {
				t.Errorf("two accepted lines for %s", qid)
			}
			ids[qid] = true
		case qid != "" && strings.HasPrefix(msg, qid+": to=<") && r["status"] != nil:
			attempts++
		}
	}
	if sessionEnds != 3 || accepted != 3 || attempts != 4 {
		t.Errorf("log lines: %d session end, %d accepted, %d delivery attempts; want 3, 3, 4", sessionEnds, accepted, attempts)
	}
}

// TestServeLogFormatFlag: --log-format picks text or JSON whatever the
// configuration says.
func TestServeLogFormatFlag(t *testing.T) {
	for _, tc := range []struct{ conf, flag, prefix string }{
		{"json", "text", "time="},
		{"text", "json", "{"},
		{"json", "", "{"},
	} {
		var b bytes.Buffer
		log, err := serveLogger(&b, LogConfig{Format: tc.conf, Level: "info"}, tc.flag, "")
		if err != nil {
			t.Fatal(err)
		}
		log.Info("session end", "queue_id", "X")
		if !strings.HasPrefix(b.String(), tc.prefix) {
			t.Errorf("log.format %q, --log-format %q: %q", tc.conf, tc.flag, b.String())
		}
	}
	root := newRoot(&app{})
	serve, _, err := root.Find([]string{"serve"})
	if err != nil || serve.Flags().Lookup("log-format") == nil {
		t.Fatalf("serve has no --log-format flag (%v)", err)
	}
}
