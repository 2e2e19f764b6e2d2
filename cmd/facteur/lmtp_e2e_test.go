package main

// LMTP through one `facteur serve` (issue 4): a mailbox whose transport is
// Dovecot's LMTP socket gets its mail through the queue and the lmtp agent,
// and its owner reads it over IMAP with the password stored by facteur;
// Dovecot refusing a recipient (over quota) bounces it with a DSN.

import (
	"context"
	"fmt"
	"net/smtp"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/internal/dovecottest"
	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store/storetest"
)

func TestEndToEndLMTPToDovecot(t *testing.T) {
	db := storetest.New(t)
	ctx := context.Background()
	srv := dovecottest.StartSQL(t, dovecottest.SQLOptions{DatabaseURL: db.URL})

	h, err := passwd.New(passwd.CheapOptions())
	if err != nil {
		t.Fatal(err)
	}
	pw, err := h.Hash("dana-secret")
	if err != nil {
		t.Fatal(err)
	}
	lmtpHop := "lmtp:unix:" + srv.LMTPSocket
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO domain (name) VALUES ('example.test')`, nil},
		{`INSERT INTO mailbox (address, password, transport) VALUES ('dana@example.test', $1, $2)`, []any{pw, lmtpHop}},
		// 1 KiB of quota: the second message does not fit.
		{`INSERT INTO mailbox (address, password, transport, quota_bytes) VALUES ('full@example.test', $1, $2, 1024)`, []any{pw, lmtpHop}},
		{`INSERT INTO mailbox (address, password) VALUES ('sender@example.test', $1)`, []any{pw}},
	} {
		if _, err := db.Pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}

	// Maildirs under Dovecot's mail root: the Maildir agent (for the DSN
	// to sender@) and Dovecot share it, as on a host.
	smtpAddr := startServeSMTP(t, db, srv.MailRoot, "")

	send := func(to, subject string, body string) {
		t.Helper()
		msg := fmt.Sprintf("From: <sender@example.test>\r\nTo: <%s>\r\nSubject: %s\r\n\r\n%s\r\n", to, subject, body)
		if err := smtp.SendMail(smtpAddr, nil, "sender@example.test", []string{to}, []byte(msg)); err != nil {
			t.Fatalf("send %s: %v", subject, err)
		}
	}
	send("dana@example.test", "over lmtp", "hello dana")
	var got [][]byte
	waitFor(t, "dana's message over IMAP", 20*time.Second, func() bool {
		got, err = srv.Fetch(ctx, "dana@example.test", "dana-secret")
		return err == nil && len(got) == 1
	})
	if m := string(got[0]); !strings.Contains(m, "Subject: over lmtp") || !strings.Contains(m, "hello dana") ||
		!strings.Contains(m, "Received: from ") {
		t.Errorf("dana's message over IMAP:\n%s", m)
	}
	var status, transport string
	waitFor(t, "dana's delivery_log row", 10*time.Second, func() bool {
		return db.Pool.QueryRow(ctx, `SELECT status, transport FROM delivery_log WHERE recipient = 'dana@example.test'`).
			Scan(&status, &transport) == nil
	})
	if status != "sent" || transport != lmtpHop {
		t.Errorf("delivery_log for dana: %q %q, want sent over %s", status, transport, lmtpHop)
	}

	// Over quota at Dovecot: 552 5.2.2 from LMTP, a failure DSN to the
	// sender's Maildir.
	send("full@example.test", "too big", strings.Repeat(strings.Repeat("x", 76)+"\r\n", 60))
	senderDir := filepath.Join(srv.MailRoot, "example.test", "sender")
	waitFor(t, "the DSN for full@", 20*time.Second, func() bool { return len(maildirFiles(t, senderDir)) == 1 })
	dsn := maildirFiles(t, senderDir)[0]
	if !strings.Contains(dsn, "Final-Recipient: rfc822; full@example.test") || !strings.Contains(dsn, "Action: failed") ||
		!strings.Contains(dsn, "5.2.2") {
		t.Errorf("DSN for full@:\n%s", dsn)
	}
}
