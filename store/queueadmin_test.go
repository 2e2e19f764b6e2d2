package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// qaMessage queues a message from sender to rcpts (address or
// "address>transport") on node mx1 and returns its recipients' ids.
func qaMessage(t *testing.T, s *Store, id, sender string, rcpts ...string) []int64 {
	t.Helper()
	ctx := context.Background()
	var rs []QueueRecipient
	for _, r := range rcpts {
		addr, tr, ok := strings.Cut(r, ">")
		if !ok {
			tr = "smtp"
		}
		rs = append(rs, QueueRecipient{Address: addr, OrigAddress: addr, Domain: addr[strings.LastIndexByte(addr, '@')+1:], Transport: tr})
	}
	if err := s.Enqueue(ctx, QueueMessage{ID: id, Node: "mx1", SpoolKey: id, Sender: sender, Size: 2048}, rs, AcceptedLog{}); err != nil {
		t.Fatalf("enqueue %s: %v", id, err)
	}
	rows, err := s.pool.Query(ctx, "SELECT id FROM queue_recipient WHERE queue_id = $1 ORDER BY id", id)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func qaExec(t *testing.T, s *Store, sql string, args ...any) {
	t.Helper()
	if _, err := s.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func qaCount(t *testing.T, s *Store, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// qaOne returns the only result of an action: qaOne(t)(s.HoldMessages(…)).
func qaOne(t *testing.T) func(res []QueueActionResult, err error) QueueActionResult {
	return func(res []QueueActionResult, err error) QueueActionResult {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 {
			t.Fatalf("results = %+v, want one", res)
		}
		return res[0]
	}
}

func TestHoldStopsClaimsAndReleaseResumes(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := WithActor(context.Background(), "cli:alice")
	qaMessage(t, s, "HOLD0001", "a@example.org", "b@example.com")

	r := qaOne(t)(s.HoldMessages(ctx, []string{"HOLD0001"}, ""))
	if !r.Found || r.Changed != 1 || r.Busy != 0 {
		t.Fatalf("hold = %+v", r)
	}
	if cs, err := s.Claim(ctx, "mx1", "w1", time.Minute, 10); err != nil || len(cs) != 0 {
		t.Fatalf("claim of a held message = %v, %v", cs, err)
	}
	var reason string
	if err := s.pool.QueryRow(ctx, "SELECT hold_reason FROM queue_message WHERE id = 'HOLD0001'").Scan(&reason); err != nil || reason != "held by cli:alice" {
		t.Fatalf("hold reason = %q, %v", reason, err)
	}
	// Holding again changes nothing and says why.
	if r := qaOne(t)(s.HoldMessages(ctx, []string{"HOLD0001"}, "other")); r.Changed != 0 || !strings.Contains(r.Note, "already held") {
		t.Fatalf("second hold = %+v", r)
	}
	r = qaOne(t)(s.ReleaseMessages(ctx, []string{"HOLD0001"}))
	if r.Changed != 1 {
		t.Fatalf("release = %+v", r)
	}
	if cs, err := s.Claim(ctx, "mx1", "w1", time.Minute, 10); err != nil || len(cs) != 1 {
		t.Fatalf("claim after release = %v, %v", cs, err)
	}
	// One audit row per action that changed something, with the actor.
	rows, err := s.pool.Query(ctx, `SELECT actor, operation, new->>'action' FROM audit_log
WHERE table_name = 'queue_message' AND row_key = 'HOLD0001' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var a, op, act string
		err := r.Scan(&a, &op, &act)
		return a + " " + op + " " + act, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"cli:alice UPDATE hold", "cli:alice UPDATE release"}; !slices.Equal(got, want) {
		t.Fatalf("audit = %q, want %q", got, want)
	}
}

func TestHoldLeavesADeliveryInFlightAlone(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	qaMessage(t, s, "HOLD0002", "a@example.org", "b@example.com", "c@example.com")
	cs, err := s.Claim(ctx, "mx1", "w1", time.Minute, 1)
	if err != nil || len(cs) != 1 {
		t.Fatal(cs, err)
	}
	r := qaOne(t)(s.HoldMessages(ctx, []string{"HOLD0002"}, "spam run"))
	if r.Changed != 1 || r.Busy != 1 {
		t.Fatalf("hold = %+v, want changed 1, busy 1", r)
	}
	// The attempt in flight settles as usual (the lease is intact).
	if err := s.Settle(ctx, "w1", Settlement{ID: cs[0].ID, Status: RcptDeferred, RetryIn: 0, Reply: "451 4.3.0 later",
		DSN: "4.3.0", QueueID: "HOLD0002", Recipient: cs[0].Address}); err != nil {
		t.Fatalf("settle after hold: %v", err)
	}
	if cs, err := s.Claim(ctx, "mx1", "w1", time.Minute, 10); err != nil || len(cs) != 0 {
		t.Fatalf("claim while held = %v, %v", cs, err)
	}
}

func TestFlushMakesWaitingRecipientsDueAndSkipsHeld(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	a := qaMessage(t, s, "FLUSH001", "a@example.org", "x@one.test", "y@two.test")
	qaMessage(t, s, "FLUSH002", "a@example.org", "z@one.test")
	qaExec(t, s, "UPDATE queue_recipient SET status = 'deferred', attempts = 1, next_attempt_at = now() + interval '1 hour'")
	qaExec(t, s, "UPDATE queue_message SET held = true WHERE id = 'FLUSH002'")

	res, err := s.FlushMessages(ctx, []string{"FLUSH001", "FLUSH002", "NOSUCH01"}, "two.test")
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Changed != 1 || res[1].Changed != 0 || !strings.Contains(res[1].Note, "held") || res[2].Found {
		t.Fatalf("flush = %+v", res)
	}
	due := qaCount(t, s, "SELECT count(*) FROM queue_recipient WHERE next_attempt_at <= now()")
	if due != 1 {
		t.Fatalf("%d recipients due, want only y@two.test", due)
	}
	if n := qaCount(t, s, "SELECT count(*) FROM queue_recipient WHERE id = $1 AND next_attempt_at > now()", a[0]); n != 1 {
		t.Fatal("x@one.test was flushed despite the domain")
	}
	// Without a domain the rest of the message goes too; a second flush
	// has nothing left to do.
	if r := qaOne(t)(s.FlushMessages(ctx, []string{"FLUSH001"}, "")); r.Changed != 1 {
		t.Fatalf("flush = %+v", r)
	}
	if r := qaOne(t)(s.FlushMessages(ctx, []string{"FLUSH001"}, "")); r.Changed != 0 || r.Note != "already due" {
		t.Fatalf("second flush = %+v", r)
	}
}

func TestDeleteRemovesAMessageAtOnceWhenNothingIsInFlight(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := WithActor(context.Background(), "cli:bob")
	qaMessage(t, s, "DEL00001", "a@example.org", "b@example.com", "c@example.com")
	r := qaOne(t)(s.DeleteMessages(ctx, []string{"DEL00001"}))
	if !r.Deleted || r.SpoolKey != "DEL00001" || r.Busy != 0 {
		t.Fatalf("delete = %+v", r)
	}
	if n := qaCount(t, s, "SELECT count(*) FROM queue_recipient WHERE queue_id = 'DEL00001'"); n != 0 {
		t.Fatalf("%d recipient rows left", n)
	}
	if n := qaCount(t, s, "SELECT count(*) FROM accepted_log WHERE queue_id = 'DEL00001' AND finished_at IS NOT NULL"); n != 1 {
		t.Fatal("accepted_log not marked finished")
	}
	if n := qaCount(t, s, "SELECT count(*) FROM audit_log WHERE row_key = 'DEL00001' AND operation = 'DELETE' AND actor = 'cli:bob' AND old->>'sender' = 'a@example.org'"); n != 1 {
		t.Fatal("no DELETE audit row with the old message")
	}
}

func TestDeleteWithADeliveryInFlightWaitsForTheAttempt(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	ids := qaMessage(t, s, "DEL00002", "a@example.org", "b@example.com", "c@example.com", "d@example.com")
	cs, err := s.Claim(ctx, "mx1", "w1", time.Minute, 1)
	if err != nil || len(cs) != 1 || cs[0].ID != ids[0] {
		t.Fatal(cs, err)
	}
	r := qaOne(t)(s.DeleteMessages(ctx, []string{"DEL00002"}))
	if r.Deleted || r.Busy != 1 || r.Changed != 2 || r.SpoolKey != "" {
		t.Fatalf("delete with a delivery in flight = %+v", r)
	}
	// The body is still referenced; only the delivering recipient is left,
	// and the message is held.
	if n := qaCount(t, s, "SELECT count(*) FROM queue_recipient WHERE queue_id = 'DEL00002'"); n != 1 {
		t.Fatalf("%d recipients left, want the one in flight", n)
	}
	if n := qaCount(t, s, "SELECT count(*) FROM queue_message WHERE id = 'DEL00002' AND held AND hold_reason LIKE 'delete pending%'"); n != 1 {
		t.Fatal("message not held as delete pending")
	}
	// The attempt settles (its lease was never broken)…
	if err := s.Settle(ctx, "w1", Settlement{ID: cs[0].ID, Status: RcptDeferred, Reply: "451 4.4.1 timeout", DSN: "4.4.1",
		QueueID: "DEL00002", Recipient: cs[0].Address}); err != nil {
		t.Fatalf("settle: %v", err)
	}
	// … and the next delete removes the message.
	r = qaOne(t)(s.DeleteMessages(ctx, []string{"DEL00002"}))
	if !r.Deleted || r.SpoolKey != "DEL00002" {
		t.Fatalf("second delete = %+v", r)
	}

	// When the attempt delivers, the message finishes by itself.
	ids = qaMessage(t, s, "DEL00003", "a@example.org", "b@example.com", "c@example.com")
	cs, err = s.Claim(ctx, "mx1", "w1", time.Minute, 1)
	if err != nil || len(cs) != 1 || cs[0].ID != ids[0] {
		t.Fatal(cs, err)
	}
	if r := qaOne(t)(s.DeleteMessages(ctx, []string{"DEL00003"})); r.Deleted || r.Busy != 1 {
		t.Fatalf("delete = %+v", r)
	}
	if err := s.Settle(ctx, "w1", Settlement{ID: cs[0].ID, Status: RcptDelivered, Reply: "250 ok", DSN: "2.0.0",
		QueueID: "DEL00003", Recipient: cs[0].Address}); err != nil {
		t.Fatal(err)
	}
	fin, err := s.FinishMessages(ctx, "mx1", []string{"DEL00003"}, 0)
	if err != nil || len(fin) != 1 {
		t.Fatalf("finish = %v, %v", fin, err)
	}
}

func TestActionsTreatRowsLockedByAClaimAsBusy(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	ids := qaMessage(t, s, "LOCK0001", "a@example.org", "b@example.com", "c@example.com")
	// A claim (or settlement) in progress holds a recipient row.
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, "SELECT 1 FROM queue_recipient WHERE id = $1 FOR UPDATE", ids[0]); err != nil {
		t.Fatal(err)
	}
	done := make(chan QueueActionResult, 1)
	go func() {
		res, err := s.ExpireMessages(ctx, []string{"LOCK0001"})
		if err != nil {
			t.Error(err)
		}
		done <- res[0]
	}()
	select {
	case r := <-done:
		if r.Busy != 1 || r.Changed != 1 {
			t.Fatalf("expire = %+v, want 1 busy (locked), 1 expired", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("expire waited for a locked recipient row")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	st := stateOf(t, s, ids[0])
	if st.status != RcptQueued {
		t.Fatalf("locked recipient changed to %s", st.status)
	}
}

func TestExpireOwesDSNsAsThePolicySays(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	a := qaMessage(t, s, "EXP00001", "a@example.org", "b@example.com", "c@example.com", "d@example.com")
	qaExec(t, s, "UPDATE queue_recipient SET status = 'deferred', attempts = 2, last_reply = '451 4.7.1 greylisted', last_dsn = '4.7.1', last_relay = 'mx.example.com[192.0.2.1]:25' WHERE id = $1", a[0])
	qaExec(t, s, "UPDATE queue_recipient SET dsn_notify = 'NEVER' WHERE id = $1", a[1])
	qaExec(t, s, "UPDATE queue_recipient SET dsn_notify = 'SUCCESS,FAILURE' WHERE id = $1", a[2])
	null := qaMessage(t, s, "EXP00002", "", "e@example.com")
	dsn := qaMessage(t, s, "EXP00003", "", "f@example.com")
	qaExec(t, s, "UPDATE queue_message SET kind = 'dsn' WHERE id = 'EXP00003'")

	res, err := s.ExpireMessages(ctx, []string{"EXP00001", "EXP00002", "EXP00003"})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{3, 1, 1} {
		if res[i].Changed != want {
			t.Fatalf("expire %s changed %d, want %d", res[i].ID, res[i].Changed, want)
		}
	}
	check := func(id int64, pending bool, dsn, reply, relay string) {
		t.Helper()
		var st, lastDSN, lastReply, lastRelay string
		var p bool
		var action *string
		if err := s.pool.QueryRow(ctx, "SELECT status, dsn_pending, dsn_action, last_dsn, last_reply, last_relay FROM queue_recipient WHERE id = $1", id).
			Scan(&st, &p, &action, &lastDSN, &lastReply, &lastRelay); err != nil {
			t.Fatal(err)
		}
		if st != RcptExpired || p != pending || (p && (action == nil || *action != DSNFailed)) || lastDSN != dsn || lastReply != reply || lastRelay != relay {
			t.Errorf("recipient %d: %s pending=%v action=%v dsn=%s reply=%q relay=%q", id, st, p, action, lastDSN, lastReply, lastRelay)
		}
	}
	check(a[0], true, "5.7.1", "451 4.7.1 greylisted", "mx.example.com[192.0.2.1]:25") // the last reply stays the diagnostic
	check(a[1], false, "5.4.7", ExpireReply, "none")                                   // NOTIFY=NEVER
	check(a[2], true, "5.4.7", ExpireReply, "none")                                    // NOTIFY with FAILURE
	check(null[0], false, "5.4.7", ExpireReply, "none")                                // never to the null sender
	check(dsn[0], true, "5.4.7", ExpireReply, "none")                                  // a failed DSN goes to the postmaster
	// PendingDSNs sees them: the queue manager will send them.
	pend, err := s.PendingDSNs(ctx, "mx1", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pend) != 2 || len(pend[0].Recipients) != 2 || pend[0].Action != DSNFailed {
		t.Fatalf("pending DSNs = %+v", pend)
	}
	if n := qaCount(t, s, "SELECT count(*) FROM delivery_log WHERE status = 'expired'"); n != 5 {
		t.Fatalf("%d expired delivery_log rows, want 5", n)
	}
	// Nothing left to expire.
	if r := qaOne(t)(s.ExpireMessages(ctx, []string{"EXP00001"})); r.Changed != 0 || r.Note == "" {
		t.Fatalf("second expire = %+v", r)
	}
}

func TestRequeueReexpandsWithoutDuplicates(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	// sales@ expanded to john (delivered), jane (deferred) and old@ (deferred).
	qaExec(t, s, `INSERT INTO queue_message (id, node, spool_key, sender, size) VALUES ('REQ00001', 'mx1', 'REQ00001', 'a@example.org', 10)`)
	qaExec(t, s, `INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport, status, attempts, dsn_notify) VALUES
	('REQ00001', 'john@example.test', 'sales@example.test', 'example.test', 'maildir', 'delivered', 1, 'FAILURE'),
	('REQ00001', 'jane@example.test', 'sales@example.test', 'example.test', 'maildir', 'deferred', 2, 'FAILURE'),
	('REQ00001', 'old@example.test', 'sales@example.test', 'example.test', 'maildir', 'deferred', 2, 'FAILURE'),
	('REQ00001', 'x@remote.test', 'x@remote.test', 'remote.test', 'smtp', 'queued', 0, NULL)`)
	qaExec(t, s, "UPDATE queue_recipient SET next_attempt_at = now() + interval '1 hour'")
	resolved := map[string][]QueueRecipient{
		"sales@example.test": {
			{Address: "john@example.test", Domain: "example.test", Transport: "maildir"},
			{Address: "jane@example.test", Domain: "example.test", Transport: "lmtp:unix:/run/dovecot/lmtp"},
			{Address: "new@example.test", Domain: "example.test", Transport: "maildir"},
		},
		"x@remote.test": {{Address: "x@remote.test", Domain: "remote.test", Transport: "smtp:[relay.test]:587"}},
	}
	calls := 0
	r := qaOne(t)(s.RequeueMessages(ctx, []string{"REQ00001"}, func(_ context.Context, orig string) ([]QueueRecipient, error) {
		calls++
		return resolved[orig], nil
	}))
	if r.Changed != 4 || calls != 2 {
		t.Fatalf("requeue = %+v (%d lookups)", r, calls)
	}
	rows, err := s.pool.Query(ctx, `SELECT address || ' ' || transport || ' ' || status || ' ' || attempts || ' ' || coalesce(dsn_notify, '-') || ' ' || (next_attempt_at <= now())
FROM queue_recipient WHERE queue_id = 'REQ00001' ORDER BY address`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"jane@example.test lmtp:unix:/run/dovecot/lmtp deferred 2 FAILURE true", // kept its row, new transport, due
		"john@example.test maildir delivered 1 FAILURE false",                   // final: not added again
		"new@example.test maildir queued 0 FAILURE true",                        // new, with the DSN parameters
		"x@remote.test smtp:[relay.test]:587 queued 0 - true",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after requeue:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A lookup failure leaves the message as it was.
	before := qaCount(t, s, "SELECT count(*) FROM queue_recipient WHERE queue_id = 'REQ00001'")
	_, err = s.RequeueMessages(ctx, []string{"REQ00001"}, func(context.Context, string) ([]QueueRecipient, error) {
		return nil, errors.New("database down")
	})
	if err == nil || !strings.Contains(err.Error(), "database down") {
		t.Fatalf("requeue with a failing lookup: %v", err)
	}
	if after := qaCount(t, s, "SELECT count(*) FROM queue_recipient WHERE queue_id = 'REQ00001'"); after != before {
		t.Fatalf("rows changed from %d to %d", before, after)
	}
}

func TestRequeueLeavesAGroupWithAnAttemptInFlight(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	qaExec(t, s, `INSERT INTO queue_message (id, node, spool_key, sender, size) VALUES ('REQ00002', 'mx1', 'REQ00002', 'a@example.org', 10)`)
	qaExec(t, s, `INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport) VALUES
	('REQ00002', 'a@example.test', 'list@example.test', 'example.test', 'maildir'),
	('REQ00002', 'b@example.test', 'list@example.test', 'example.test', 'maildir'),
	('REQ00002', 'c@other.test', 'c@other.test', 'other.test', 'smtp')`)
	cs, err := s.Claim(ctx, "mx1", "w1", time.Minute, 1)
	if err != nil || len(cs) != 1 || cs[0].Address != "a@example.test" {
		t.Fatal(cs, err)
	}
	r := qaOne(t)(s.RequeueMessages(ctx, []string{"REQ00002"}, func(_ context.Context, orig string) ([]QueueRecipient, error) {
		if orig == "list@example.test" {
			t.Error("the group with an attempt in flight was resolved")
		}
		return []QueueRecipient{{Address: "c@other.test", Domain: "other.test", Transport: "smtp:[new.test]"}}, nil
	}))
	if r.Changed != 1 || r.Busy != 1 {
		t.Fatalf("requeue = %+v", r)
	}
}

func TestQueueFiltersSelectMessages(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	qaMessage(t, s, "FILT0001", "Alice@Example.org", "x@one.test")
	qaMessage(t, s, "FILT0002", "", "y@two.test")
	qaMessage(t, s, "FILT0003", "bob@example.net", "z@one.test", "w@two.test")
	qaExec(t, s, "UPDATE queue_message SET arrived_at = now() - interval '3 hours' WHERE id = 'FILT0001'")
	qaExec(t, s, "UPDATE queue_message SET held = true WHERE id = 'FILT0002'")
	qaExec(t, s, "UPDATE queue_recipient SET status = 'deferred', attempts = 1 WHERE address = 'w@two.test'")
	qaExec(t, s, "UPDATE queue_message SET node = 'mx2' WHERE id = 'FILT0003'")
	for _, c := range []struct {
		f    QueueFilter
		want []string
	}{
		{QueueFilter{}, []string{"FILT0001", "FILT0002", "FILT0003"}},
		{QueueFilter{Domain: "one.test"}, []string{"FILT0001", "FILT0003"}},
		{QueueFilter{Sender: "alice@example.ORG"}, []string{"FILT0001"}},
		{QueueFilter{Sender: "example.net"}, []string{"FILT0003"}},
		{QueueFilter{Sender: "<>"}, []string{"FILT0002"}},
		{QueueFilter{Recipient: "two.test"}, []string{"FILT0002", "FILT0003"}},
		{QueueFilter{Recipient: "z@one.test"}, []string{"FILT0003"}},
		{QueueFilter{Status: "deferred"}, []string{"FILT0003"}},
		{QueueFilter{Status: "deferred", Domain: "one.test"}, nil},
		{QueueFilter{Status: "held"}, []string{"FILT0002"}},
		{QueueFilter{OlderThan: time.Hour}, []string{"FILT0001"}},
		{QueueFilter{Node: "mx2"}, []string{"FILT0003"}},
		{QueueFilter{IDs: []string{"FILT0002", "FILT0003"}, Domain: "one.test"}, []string{"FILT0003"}},
	} {
		got, err := s.SelectQueueIDs(ctx, c.f)
		if err != nil {
			t.Fatalf("%+v: %v", c.f, err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%+v selects %v, want %v", c.f, got, c.want)
		}
	}
	if _, err := s.SelectQueueIDs(ctx, QueueFilter{Status: "lost"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown status: %v", err)
	}
}

func TestListQueueReadsEveryMessageAcrossPages(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	n := queueListPage*2 + 7
	qaExec(t, s, `INSERT INTO queue_message (id, node, spool_key, sender, size, arrived_at)
SELECT 'PAGE' || lpad(i::text, 6, '0'), 'mx1', 'k' || lpad(i::text, 8, '0'), 'a@example.org', i,
       '2026-01-01'::timestamptz + (i / 3) * interval '1 second'
FROM generate_series(1, $1) i`, n)
	qaExec(t, s, `INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport)
SELECT id, 'r@example.com', 'r@example.com', 'example.com', 'smtp' FROM queue_message`)
	var got []string
	var size int64
	err := s.ListQueue(ctx, QueueFilter{}, func(e *QueueEntry) error {
		got = append(got, e.ID)
		size += e.Size
		if len(e.Recipients) != 1 {
			return fmt.Errorf("%s has %d recipients", e.ID, len(e.Recipients))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n || !slices.IsSorted(got) || size != int64(n*(n+1)/2) {
		t.Fatalf("listed %d messages (sorted %v, size %d), want %d", len(got), slices.IsSorted(got), size, n)
	}
	if len(slices.Compact(slices.Clone(got))) != n {
		t.Fatal("a message was listed twice")
	}
}

func TestQueueShapeCountsByDomainAndAge(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	qaMessage(t, s, "SHAP0001", "a@example.org", "x@one.test", "y@one.test", "z@two.test")
	qaMessage(t, s, "SHAP0002", "a@example.org", "w@two.test")
	qaMessage(t, s, "SHAP0003", "", "v@one.test")
	qaExec(t, s, "UPDATE queue_message SET arrived_at = now() - interval '7 minutes' WHERE id = 'SHAP0002'")
	qaExec(t, s, "UPDATE queue_message SET arrived_at = now() - interval '2 days', held = true WHERE id = 'SHAP0003'")
	qaExec(t, s, "UPDATE queue_recipient SET status = 'delivered' WHERE address = 'y@one.test'")

	rows, err := s.QueueShape(ctx, ShapeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(rows)
	want := "[{TOTAL 3 [2 1 0 0 0 0 0 0 0 0]} {two.test 2 [1 1 0 0 0 0 0 0 0 0]} {one.test 1 [1 0 0 0 0 0 0 0 0 0]}]"
	if got != want {
		t.Fatalf("shape = %s\nwant    %s", got, want)
	}
	rows, err = s.QueueShape(ctx, ShapeOptions{Queues: []string{"hold"}, BySender: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(rows), "[{TOTAL 1 [0 0 0 0 0 0 0 0 0 1]} {MAILER-DAEMON 1 [0 0 0 0 0 0 0 0 0 1]}]"; got != want {
		t.Fatalf("held shape by sender = %s\nwant %s", got, want)
	}
}

func TestLogFiltersMatchSenderRecipientAndStatus(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	qaMessage(t, s, "LOGS0001", "alice@example.org", "bob@example.com", "carol@example.net")
	qaMessage(t, s, "LOGS0002", "dave@example.org", "erin@example.com")
	cs, err := s.Claim(ctx, "mx1", "w1", time.Minute, 10)
	if err != nil || len(cs) != 3 {
		t.Fatal(cs, err)
	}
	var sets []Settlement
	for _, c := range cs {
		st := RcptDelivered
		if c.Address == "carol@example.net" {
			st = RcptDeferred
		}
		sets = append(sets, Settlement{ID: c.ID, Status: st, Reply: "250 ok", DSN: "2.0.0", QueueID: c.Message.ID, Node: "mx1",
			Sender: c.Message.Sender, Recipient: c.Address, Domain: c.Domain, Transport: c.Transport})
	}
	if err := s.Settle(ctx, "w1", sets...); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f         LogFilter
		del, accs int
	}{
		{LogFilter{}, 3, 2},
		{LogFilter{QueueID: "LOGS0001"}, 2, 1},
		{LogFilter{Address: "alice@example.org"}, 2, 1},
		{LogFilter{Address: "erin@example.com"}, 1, 1},
		{LogFilter{Address: "example.org"}, 3, 2},
		{LogFilter{Domain: "example.net"}, 1, 1},
		{LogFilter{Status: "deferred"}, 1, 1},
		{LogFilter{Status: "sent", Address: "dave@example.org"}, 1, 1},
		{LogFilter{Since: time.Now().Add(time.Hour)}, 0, 0},
	} {
		del, err := s.DeliveryLog(ctx, c.f)
		if err != nil {
			t.Fatal(err)
		}
		acc, err := s.AcceptedLog(ctx, c.f)
		if err != nil {
			t.Fatal(err)
		}
		if len(del) != c.del || len(acc) != c.accs {
			b, _ := json.Marshal(c.f)
			t.Errorf("%s: %d delivery rows, %d accepted rows, want %d, %d", b, len(del), len(acc), c.del, c.accs)
		}
	}
}
