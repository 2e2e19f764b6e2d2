package main

// End to end on one `facteur serve` (issue 4): a real SMTP client → the smtp
// role → cleanup → queue → Maildir, and → a remote SMTP server on loopback
// reached through a transport row, with delivery_log rows and DSNs checked.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/facteur/facteur/internal/dovecottest"
	"github.com/facteur/facteur/store/storetest"
)

// scriptedRemote is a remote MX on loopback that answers RCPT by the local
// part: "ok" accepts, "nobody" gets 550 5.1.1, "slow" gets 451 4.3.2.
type scriptedRemote struct {
	mu       sync.Mutex
	received []string // recipients of accepted messages
}

func (r *scriptedRemote) NewSession(*gosmtp.Conn) (gosmtp.Session, error) {
	return &remoteSession{r: r}, nil
}

type remoteSession struct {
	r     *scriptedRemote
	rcpts []string
}

func (s *remoteSession) AuthPlain(string, string) error         { return nil }
func (s *remoteSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (s *remoteSession) Reset()                                 { s.rcpts = nil }
func (s *remoteSession) Logout() error                          { return nil }
func (s *remoteSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	switch strings.SplitN(to, "@", 2)[0] {
	case "ok":
		s.rcpts = append(s.rcpts, to)
		return nil
	case "slow":
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "try again later"}
	default:
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
	}
}
func (s *remoteSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.r.mu.Lock()
	s.r.received = append(s.r.received, s.rcpts...)
	s.r.mu.Unlock()
	return nil
}

func (r *scriptedRemote) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.received...)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// maildirFiles returns the contents of the files in a Maildir's new/.
func maildirFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// startServe writes conf into dir/facteur.toml and runs `facteur serve`
// with it in this process until the test ends; it returns once every role
// has started. The serve log is printed if the test fails.
func startServe(t *testing.T, dir, conf string) *syncBuffer {
	t.Helper()
	path := filepath.Join(dir, "facteur.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &app{configPath: path}
	t.Cleanup(a.close)
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan []string, 1)
	go func() { done <- a.serve(ctx, serveOptions{logTo: logs, ready: func(r []string) { ready <- r }}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("serve did not stop")
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", logs.String())
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve stopped: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve not ready")
	}
	return logs
}

// waitListening waits until something accepts connections at addr.
func waitListening(t *testing.T, what, addr string) {
	t.Helper()
	waitFor(t, what, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestEndToEndSMTPToQueueToMaildirRemoteAndDSNs(t *testing.T) {
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
	sockDir, err := os.MkdirTemp("/tmp", "fe2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	mailRoot := filepath.Join(dir, "mail")
	smtpAddr := freePort(t)
	conf := fmt.Sprintf(`database_url = %s
spool_dir = %s
mail_root = %s
hostname = "mx.example.test"
mail_owner = "%d:%d"
[log]
format = "json"
level = "debug"
[listen]
smtp = %q
pickup = %s
[dns]
resolver = "none"
[queue]
min_backoff = "1s"
max_backoff = "1s"
delay_warning = "2s"
max_lifetime = "6s"
poll_interval = "1s"
`, tomlQuote(db.URL), tomlQuote(filepath.Join(dir, "spool")), tomlQuote(mailRoot), uid, gid, smtpAddr,
		tomlQuote(filepath.Join(sockDir, "pickup.sock")))
	startServe(t, dir, conf)
	waitListening(t, "the smtp listener", smtpAddr)

	send := func(from string, to []string, subject string) {
		t.Helper()
		msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\nbody of %s\r\n",
			from, strings.Join(to, ">, <"), subject, strings.ReplaceAll(subject, " ", "-"), subject)
		if err := smtp.SendMail(smtpAddr, nil, from, to, []byte(msg)); err != nil {
			t.Fatalf("send %q: %v", subject, err)
		}
	}
	alice := filepath.Join(mailRoot, "example.test", "alice")
	bob := filepath.Join(mailRoot, "example.test", "bob")

	// 1. swaks, as a user would, to a local mailbox.
	if swaks, err := exec.LookPath("swaks"); err == nil {
		out, err := exec.Command(swaks, "--server", smtpAddr, "--from", "someone@elsewhere.test",
			"--to", "bob@example.test", "--header", "Subject: by swaks").CombinedOutput()
		if err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		if !bytes.Contains(out, []byte("250 2.0.0 Ok: queued as")) {
			t.Fatalf("swaks did not get a queue id:\n%s", out)
		}
	} else if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
		t.Fatal("swaks is required (FACTEUR_REQUIRE_PEERS=1)")
	} else {
		t.Log("swaks not installed: sending with net/smtp instead")
		send("someone@elsewhere.test", []string{"bob@example.test"}, "by swaks")
	}
	waitFor(t, "bob's message in his Maildir", 15*time.Second, func() bool { return len(maildirFiles(t, bob)) == 1 })
	if m := maildirFiles(t, bob)[0]; !strings.Contains(m, "Subject: by swaks") || !strings.Contains(m, "Delivered-To: bob@example.test") {
		t.Errorf("bob's message:\n%s", m)
	}

	// 2. Remote: one accepted, one unknown user (550) → exactly one failure
	// DSN to alice naming the failed recipient with its original address.
	send("alice@example.test", []string{"ok@remote.test", "nobody@remote.test"}, "mixed remote")
	// 3. Two recipients that both fail → one DSN naming both.
	send("alice@example.test", []string{"nobody@remote.test", "nobody2@remote.test"}, "both fail")
	// 4. A 4xx destination: a delay DSN after the warning time, then a
	// failure DSN after the lifetime.
	send("alice@example.test", []string{"slow@remote.test"}, "slow remote")

	waitFor(t, "four DSNs in alice's Maildir", 40*time.Second, func() bool { return len(maildirFiles(t, alice)) >= 4 })
	time.Sleep(3 * time.Second) // nothing more may come
	dsns := maildirFiles(t, alice)
	if len(dsns) != 4 {
		t.Fatalf("alice has %d messages, want 4 DSNs", len(dsns))
	}
	var failedMixed, failedBoth, delayed, expired int
	for _, d := range dsns {
		if !strings.Contains(d, "Content-Type: multipart/report; report-type=delivery-status") {
			t.Errorf("not a DSN:\n%s", d)
			continue
		}
		switch {
		case strings.Contains(d, "Final-Recipient: rfc822; nobody@remote.test") && strings.Contains(d, "Final-Recipient: rfc822; nobody2@remote.test"):
			failedBoth++
			if strings.Count(d, "Action: failed") != 2 {
				t.Errorf("the both-fail DSN should list two failed recipients:\n%s", d)
			}
		case strings.Contains(d, "Final-Recipient: rfc822; nobody@remote.test"):
			failedMixed++
			if strings.Contains(d, "ok@remote.test") && strings.Contains(d, "Final-Recipient: rfc822; ok@remote.test") {
				t.Errorf("the DSN names the delivered recipient:\n%s", d)
			}
			if !strings.Contains(d, "550") || !strings.Contains(d, "no such user here") {
				t.Errorf("the DSN lacks the remote reply:\n%s", d)
			}
		case strings.Contains(d, "Final-Recipient: rfc822; slow@remote.test") && strings.Contains(d, "Action: delayed"):
			delayed++
		case strings.Contains(d, "Final-Recipient: rfc822; slow@remote.test") && strings.Contains(d, "Action: failed"):
			expired++
		default:
			t.Errorf("unexpected DSN:\n%s", d)
		}
	}
	if failedMixed != 1 || failedBoth != 1 || delayed != 1 || expired != 1 {
		t.Errorf("DSNs: mixed=%d both=%d delayed=%d expired=%d, want one of each", failedMixed, failedBoth, delayed, expired)
	}
	if got := remote.got(); len(got) != 1 || got[0] != "ok@remote.test" {
		t.Errorf("the remote accepted %v, want [ok@remote.test]", got)
	}

	// delivery_log: one sent row per delivered recipient, bounced rows for
	// the 550s, deferred then expired for slow@.
	rows, err := db.Pool.Query(ctx, `SELECT recipient, status, count(*) FROM delivery_log
		WHERE recipient IN ('bob@example.test', 'ok@remote.test', 'nobody@remote.test', 'nobody2@remote.test', 'slow@remote.test')
		GROUP BY recipient, status`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var r, s string
		var n int
		if err := rows.Scan(&r, &s, &n); err != nil {
			t.Fatal(err)
		}
		got[r+" "+s] = n
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	for _, want := range []string{"bob@example.test sent", "ok@remote.test sent", "nobody2@remote.test bounced", "slow@remote.test expired"} {
		if got[want] != 1 {
			t.Errorf("delivery_log %q: %d rows, want 1 (all: %v)", want, got[want], got)
		}
	}
	if got["nobody@remote.test bounced"] != 2 {
		t.Errorf("delivery_log nobody@remote.test bounced: %d rows, want 2 (all: %v)", got["nobody@remote.test bounced"], got)
	}
	if got["slow@remote.test deferred"] < 1 {
		t.Errorf("delivery_log has no deferral of slow@remote.test (all: %v)", got)
	}
	// Finished mail leaves the hot tables once every DSN is queued and
	// delivered.
	waitFor(t, "the queue to empty", 20*time.Second, func() bool {
		var n int
		if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM queue_message").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	var spooled int
	filepath.WalkDir(filepath.Join(dir, "spool", "q"), func(_ string, d os.DirEntry, err error) error { //nolint:errcheck
		if err == nil && !d.IsDir() {
			spooled++
		}
		return nil
	})
	if spooled != 0 {
		t.Errorf("%d spool files remain after every message finished", spooled)
	}
}
