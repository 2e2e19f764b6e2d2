package durability

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/store/storetest"
	"github.com/facteur/facteur/test/harness"
)

// TestMissingSpoolFileIsHeldNeverDeleted removes the spool file of a queued
// message behind facteur's back, once while it runs and once while it is
// down, through a real `facteur serve`: the queue manager must set the
// message aside (held, with a reason naming the missing file), keep every
// row, send no bounce, and leave it held across a restart.
func TestMissingSpoolFileIsHeldNeverDeleted(t *testing.T) {
	harness.Long(t)
	db := storetest.New(t)
	ctx := context.Background()
	sink := harness.NewSink(t)
	for _, q := range []string{
		`INSERT INTO domain (name) VALUES ('example.test')`,
		`INSERT INTO mailbox (address, password) VALUES ('alice@example.test', '{PLAIN}x')`,
		`INSERT INTO client_access (network, action) VALUES ('127.0.0.0/8', 'permit_relay')`,
		fmt.Sprintf(`INSERT INTO transport (key, nexthop) VALUES ('remote.test', 'smtp:[127.0.0.1]:%d')`, sink.Port()),
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	f := harness.NewFacteur(t, harness.FacteurConfig{DatabaseURL: db.URL})
	f.Start()

	// Two messages the sink defers (451), from alice, so that a bounce
	// would land in her Maildir.
	send := func(rcpt string) string {
		t.Helper()
		c := harness.MustDial(t, f.Cfg.SMTP, "")
		c.Expect(t, "220 ")
		c.MustCmd(t, "EHLO client.test", "250 ")
		id := "<missing-" + strings.Split(rcpt, "@")[0] + "@client.test>"
		if out, _, err := c.Send(harness.Alice, []string{rcpt}, harness.Message(harness.Alice, rcpt, id, "missing body")); out != harness.Accepted {
			t.Fatalf("send to %s: %v", rcpt, err)
		}
		var qid string
		if err := db.Pool.QueryRow(ctx, `SELECT m.id FROM queue_message m JOIN queue_recipient r ON r.queue_id = m.id WHERE r.address = $1`, rcpt).Scan(&qid); err != nil {
			t.Fatalf("queue row of %s: %v", rcpt, err)
		}
		return qid
	}
	deferred := func(qid string) bool {
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM delivery_log WHERE queue_id = $1 AND status = 'deferred'`, qid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	held := func(qid string) (bool, string) {
		var h bool
		var reason *string
		if err := db.Pool.QueryRow(ctx, `SELECT held, hold_reason FROM queue_message WHERE id = $1`, qid).Scan(&h, &reason); err != nil {
			t.Fatalf("queue_message %s: %v (the row must never be deleted)", qid, err)
		}
		if reason == nil {
			return h, ""
		}
		return h, *reason
	}
	removeBody := func(qid string) {
		t.Helper()
		var key string
		if err := db.Pool.QueryRow(ctx, `SELECT spool_key FROM queue_message WHERE id = $1`, qid).Scan(&key); err != nil {
			t.Fatal(err)
		}
		matches, _ := filepath.Glob(filepath.Join(f.Spool, "q", "*", key))
		if len(matches) != 1 {
			t.Fatalf("spool file of %s: %v", key, matches)
		}
		if err := os.Remove(matches[0]); err != nil {
			t.Fatal(err)
		}
	}

	live := send("defer-live@remote.test")
	down := send("defer-down@remote.test")
	harness.WaitFor(t, "both messages deferred once", 30*time.Second, func() bool { return deferred(live) && deferred(down) })

	removeBody(live) // while facteur runs
	f.Kill()
	expireLeases(t, db)
	removeBody(down) // while it is down
	f.Start()
	for _, qid := range []string{live, down} {
		harness.WaitFor(t, qid+" held", 30*time.Second, func() bool { h, _ := held(qid); return h })
	}
	// Some more passes of the queue, and a restart: still held, never
	// deleted, never bounced.
	time.Sleep(3 * time.Second)
	f.Kill()
	f.Start()
	time.Sleep(3 * time.Second)
	f.Stop()
	for _, qid := range []string{live, down} {
		h, reason := held(qid)
		if !h || !strings.Contains(reason, "missing") {
			t.Errorf("%s: held %v, reason %q; want held with a reason naming the missing file", qid, h, reason)
		}
		var rcpts int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM queue_recipient WHERE queue_id = $1 AND status NOT IN ('delivered', 'bounced', 'expired')`, qid).Scan(&rcpts); err != nil {
			t.Fatal(err)
		}
		if rcpts != 1 {
			t.Errorf("%s: %d pending recipients, want 1 (kept for an operator)", qid, rcpts)
		}
		t.Logf("%s held: %s", qid, reason)
	}
	if got := harness.MaildirMessageIDs(t, filepath.Join(f.Mail, "example.test", "alice")); len(got) != 0 {
		t.Errorf("alice received %d messages (bounces?), want none", len(got))
	}
	var fig harness.Figures
	fig.Set("messages with a missing body", 2)
	fig.Set("held", 2)
	fig.Set("deleted", 0)
	fig.Log(t, "missing spool file")
}
