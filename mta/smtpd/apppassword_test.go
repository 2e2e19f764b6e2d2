package smtpd_test

import (
	"context"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/store"
)

// appPassword creates an app password of mailbox and returns its id.
func (w *world) appPassword(mailbox, name, password string, active bool, expires *time.Time) int64 {
	w.t.Helper()
	h, err := w.hasher.Hash(password)
	if err != nil {
		w.t.Fatal(err)
	}
	p, err := w.st.CreateAppPassword(context.Background(), store.AppPassword{
		Mailbox: mailbox, Name: name, Password: h, Active: active, ExpiresAt: expires})
	if err != nil {
		w.t.Fatal(err)
	}
	return p.ID
}

func TestAuthWithAppPassword(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	phone := w.appPassword(alice, "Phone", "phone app secret", true, &future)
	w.appPassword(alice, "old", "old app secret", true, &past)
	w.appPassword(alice, "off", "off app secret", false, nil)
	w.appPassword(inactiveUser, "phone", "carol app secret", true, nil)
	r := w.start(smtpd.Options{Limits: smtpd.Limits{ErrorsBeforeDelay: 100, ErrorLimit: 100}}, nil)
	addr := r.addrs[smtpd.Submission]

	lastUsed := func() (used *time.Time, updated time.Time) {
		t.Helper()
		p, err := w.st.GetAppPassword(ctx, phone)
		if err != nil {
			t.Fatal(err)
		}
		return p.LastUsedAt, p.UpdatedAt
	}
	if u, _ := lastUsed(); u != nil {
		t.Fatalf("last_used_at before any login: %v", u)
	}

	// The app password logs in as the mailbox: it sends as alice, not as bob.
	c := login(t, addr, "Alice@Example.TEST#phone", "phone app secret")
	c.cmd("MAIL FROM:<bob@example.test>", "553 5.7.1 ")
	c.cmd("MAIL FROM:<alice@example.test>", "250 ")
	c.cmd("RCPT TO:<bob@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write("Subject: from the phone\r\n\r\nhi\r\n.\r\n")
	c.expect("250 2.0.0 Ok: queued as ")
	var sender string
	if err := w.db.Pool.QueryRow(ctx, `SELECT sender FROM queue_message`).Scan(&sender); err != nil {
		t.Fatal(err)
	}
	if sender != alice {
		t.Errorf("queued sender %q", sender)
	}
	used, updated := lastUsed()
	if used == nil || time.Since(*used) > time.Minute {
		t.Fatalf("last_used_at after login: %v", used)
	}
	// A second login within the minute writes nothing.
	login(t, addr, alice+"#PHONE", "phone app secret")
	if u2, up2 := lastUsed(); u2 == nil || !u2.Equal(*used) || !up2.Equal(updated) {
		t.Errorf("second login rewrote the row: last_used_at %v → %v, updated_at %v → %v", used, u2, updated, up2)
	}
	// Older than a minute: written again.
	if _, err := w.db.Pool.Exec(ctx, `UPDATE app_password SET last_used_at = now() - interval '2 minutes' WHERE id = $1`, phone); err != nil {
		t.Fatal(err)
	}
	login(t, addr, alice+"#phone", "phone app secret")
	if u3, _ := lastUsed(); u3 == nil || time.Since(*u3) > time.Minute {
		t.Errorf("last_used_at after a login two minutes later: %v", u3)
	}

	// The mailbox's own password still works.
	login(t, addr, alice, alicePass).cmd("MAIL FROM:<alice@example.test>", "250 ")

	for _, tc := range []struct{ name, user, pass string }{
		{"expired", alice + "#old", "old app secret"},
		{"inactive", alice + "#off", "off app secret"},
		{"inactive mailbox", inactiveUser + "#phone", "carol app secret"},
		{"unknown app", alice + "#tablet", "phone app secret"},
		{"wrong password", alice + "#phone", "wrong"},
		{"mailbox password as app password", alice + "#phone", alicePass},
		{"app password without its name", alice, "phone app secret"},
		{"empty app name", alice + "#", "phone app secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialGreeted(t, addr)
			c.ehlo()
			c.starttls()
			c.ehlo()
			c.authPlain(tc.user, tc.pass, "535 5.7.8 ")
			c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0 ")
		})
	}
}
