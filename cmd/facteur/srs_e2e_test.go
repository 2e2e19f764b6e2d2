package main

// SRS through one `facteur serve` (issue 4, DESIGN "Forwarding"): an alias
// forwarding to another host rewrites a foreign envelope sender into an SRS0
// address of this host, and a bounce sent back to that address on port 25
// (no relay permission) reaches the original sender.

import (
	"context"
	"fmt"
	"io"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/srs"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// envelopeRecorder is a remote MX that accepts everything and records each
// message's envelope as "from>to".
type envelopeRecorder struct {
	mu    sync.Mutex
	seen  []string
	calls chan struct{}
}

func (r *envelopeRecorder) NewSession(*gosmtp.Conn) (gosmtp.Session, error) {
	return &recorderSession{r: r}, nil
}

func (r *envelopeRecorder) envelopes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

type recorderSession struct {
	r     *envelopeRecorder
	from  string
	rcpts []string
}

func (s *recorderSession) AuthPlain(string, string) error { return nil }
func (s *recorderSession) Mail(from string, _ *gosmtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *recorderSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *recorderSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *recorderSession) Logout() error { return nil }
func (s *recorderSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.r.mu.Lock()
	for _, to := range s.rcpts {
		s.r.seen = append(s.r.seen, s.from+">"+to)
	}
	s.r.mu.Unlock()
	return nil
}

func TestEndToEndSRSForwardAndBounceBack(t *testing.T) {
	db := storetest.New(t)
	ctx := context.Background()
	remote := &envelopeRecorder{}
	hop := fmt.Sprintf("smtp:[127.0.0.1]:%d", startRemote(t, remote))

	// No client_access row: the bounce below is accepted because the SRS
	// address is ours, not because loopback may relay.
	for _, q := range []string{
		`INSERT INTO domain (name) VALUES ('example.test')`,
		`INSERT INTO mailbox (address, password) VALUES ('alice@example.test', '{PLAIN}x')`,
		`INSERT INTO alias (address, destinations) VALUES ('fwd@example.test', '{friend@remote.test}')`,
		fmt.Sprintf(`INSERT INTO transport (key, nexthop) VALUES ('remote.test', '%s'), ('elsewhere.test', '%s')`, hop, hop),
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	secret := filepath.Join(t.TempDir(), "srs.secret")
	if err := os.WriteFile(secret, []byte("# comment\n\nnew-secret\nold-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	smtpAddr := startServeSMTP(t, db, t.TempDir(), "[srs]\nsecret_file = "+tomlQuote(secret)+"\n")

	send := func(from, to string) error {
		msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: srs\r\n\r\nhello\r\n", from, to)
		return smtp.SendMail(smtpAddr, nil, from, []string{to}, []byte(msg))
	}

	// 1. Forwarded by the alias: the remote sees an SRS0 sender of ours.
	if err := send("someone@elsewhere.test", "fwd@example.test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the forwarded message at the remote", 15*time.Second, func() bool { return len(remote.envelopes()) == 1 })
	from, to, _ := strings.Cut(remote.envelopes()[0], ">")
	if to != "friend@remote.test" || !strings.HasPrefix(from, "SRS0=") || !strings.HasSuffix(from, "=elsewhere.test=someone@mx.example.test") {
		t.Fatalf("forwarded envelope %q, want an SRS0 sender in mx.example.test for someone@elsewhere.test", remote.envelopes()[0])
	}

	// 2. The remote bounces to that address: accepted on port 25 without
	// relay permission, and sent on to the original sender.
	if err := smtp.SendMail(smtpAddr, nil, "", []string{from}, []byte("Subject: bounce\r\n\r\nundeliverable\r\n")); err != nil {
		t.Fatalf("bounce to %s: %v", from, err)
	}
	waitFor(t, "the bounce at the original sender", 15*time.Second, func() bool { return len(remote.envelopes()) == 2 })
	if got := remote.envelopes()[1]; got != ">someone@elsewhere.test" {
		t.Errorf("bounce envelope %q, want >someone@elsewhere.test", got)
	}

	// 3. A forged SRS address (hash of another secret) is unknown: 550.
	other, err := srs.New(srs.Options{Secrets: []string{"not-ours"}})
	if err != nil {
		t.Fatal(err)
	}
	forged := other.Forward("victim@elsewhere.test", "mx.example.test")
	err = smtp.SendMail(smtpAddr, nil, "", []string{forged}, []byte("Subject: backscatter\r\n\r\nx\r\n"))
	if err == nil || !strings.Contains(err.Error(), "550") || !strings.Contains(err.Error(), "5.1.1") {
		t.Errorf("bounce to forged %s: %v, want 550 5.1.1", forged, err)
	}
	// An address signed with the second (older) secret still verifies.
	old, err := srs.New(srs.Options{Secrets: []string{"old-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := smtp.SendMail(smtpAddr, nil, "", []string{old.Forward("late@elsewhere.test", "mx.example.test")}, []byte("Subject: late\r\n\r\nx\r\n")); err != nil {
		t.Errorf("bounce to an address of the old secret: %v", err)
	}
	waitFor(t, "the late bounce", 15*time.Second, func() bool { return len(remote.envelopes()) == 3 })
}

// TestForwardedFrom checks which deliveries get an SRS sender: only
// expanded recipients, only for senders outside our domains.
func TestForwardedFrom(t *testing.T) {
	db := storetest.New(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO domain (name) VALUES ('example.test')`); err != nil {
		t.Fatal(err)
	}
	res := lookups.New(store.New(db.Pool), lookups.Options{Hostname: "mx.example.test"})
	fwd := forwardedFrom(res)
	expanded := []deliver.Recipient{{Address: "friend@remote.test", Orig: "fwd@example.test"}}
	asSent := []deliver.Recipient{{Address: "friend@remote.test", Orig: "Friend@Remote.test"}}
	for _, c := range []struct {
		sender string
		rcpts  []deliver.Recipient
		want   bool
	}{
		{"someone@elsewhere.test", expanded, true},
		{"someone@elsewhere.test", asSent, false},
		{"alice@example.test", expanded, false},
		{"", expanded, false},
	} {
		got, err := fwd(ctx, &deliver.Message{Sender: c.sender}, c.rcpts)
		if err != nil || got != c.want {
			t.Errorf("sender %q, rcpts %+v: %v, %v; want %v", c.sender, c.rcpts, got, err, c.want)
		}
	}
}
