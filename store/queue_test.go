package store

// Internal tests: TestClaimUsesDueIndex EXPLAINs the claim statement itself.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store/storetest"
)

func newQueueStore(t *testing.T) (*Store, *storetest.DB) {
	t.Helper()
	db := storetest.New(t)
	return New(db.Pool), db
}

// enqueueN queues a message with n recipients on node and returns its id.
func enqueueN(t *testing.T, s *Store, id, node string, n int) {
	t.Helper()
	rcpts := make([]QueueRecipient, n)
	for i := range rcpts {
		rcpts[i] = QueueRecipient{Address: fmt.Sprintf("r%d@example.com", i), OrigAddress: fmt.Sprintf("r%d@example.com", i),
			Domain: "example.com", Transport: "smtp"}
	}
	msg := QueueMessage{ID: id, Node: node, SpoolKey: id, Sender: "s@example.org", Size: 100}
	if err := s.Enqueue(context.Background(), msg, rcpts, AcceptedLog{}); err != nil {
		t.Fatalf("enqueue %s: %v", id, err)
	}
}

type rcptState struct {
	status, owner string
	attempts      int
	pending       bool
	action        string
	reply, relay  string
	delayNotified bool
	next          time.Time
}

func stateOf(t *testing.T, s *Store, id int64) rcptState {
	t.Helper()
	var st rcptState
	var owner, action *string
	err := s.pool.QueryRow(context.Background(), `SELECT status, lease_owner, attempts, dsn_pending, dsn_action,
		last_reply, last_relay, delay_notified, next_attempt_at FROM queue_recipient WHERE id = $1`, id).
		Scan(&st.status, &owner, &st.attempts, &st.pending, &action, &st.reply, &st.relay, &st.delayNotified, &st.next)
	if err != nil {
		t.Fatalf("read recipient %d: %v", id, err)
	}
	if owner != nil {
		st.owner = *owner
	}
	if action != nil {
		st.action = *action
	}
	return st
}

func ids(cs []ClaimedRecipient) []int64 {
	out := make([]int64, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

func TestClaimIsExclusiveAcrossConcurrentOwners(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	const msgs, per = 40, 5
	for i := range msgs {
		enqueueN(t, s, fmt.Sprintf("MSG%08d", i), "node1", per)
	}
	var mu sync.Mutex
	got := map[string][]int64{}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, owner := range []string{"node1:a", "node1:b", "node1:c", "node1:d"} {
		wg.Go(func() {
			for {
				cs, err := s.Claim(ctx, "node1", owner, time.Minute, 7)
				if err != nil {
					errs <- err
					return
				}
				if len(cs) == 0 {
					return
				}
				for _, c := range cs {
					if c.Attempts != 1 || c.Message.Node != "node1" || c.Message.SpoolKey != c.Message.ID ||
						c.Message.Sender != "s@example.org" || !c.LeaseExpiresAt.After(c.ClaimedAt) {
						errs <- fmt.Errorf("claimed row %+v", c)
						return
					}
				}
				mu.Lock()
				got[owner] = append(got[owner], ids(cs)...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[int64]string{}
	for owner, list := range got {
		for _, id := range list {
			if prev, dup := seen[id]; dup {
				t.Fatalf("recipient %d claimed by %s and %s", id, prev, owner)
			}
			seen[id] = owner
			if st := stateOf(t, s, id); st.status != RcptDelivering || st.owner != owner {
				t.Fatalf("recipient %d: %+v, want delivering by %s", id, st, owner)
			}
		}
	}
	if len(seen) != msgs*per {
		t.Fatalf("claimed %d recipients, want %d", len(seen), msgs*per)
	}
	t.Logf("claims per owner: a=%d b=%d c=%d d=%d", len(got["node1:a"]), len(got["node1:b"]), len(got["node1:c"]), len(got["node1:d"]))
}

func TestClaimSkipsHeldOtherNodesAndNotDue(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	enqueueN(t, s, "HELD0001", "node1", 2)
	enqueueN(t, s, "OTHER001", "node2", 2)
	enqueueN(t, s, "LATER001", "node1", 1)
	enqueueN(t, s, "DUE00001", "node1", 2)
	if _, err := s.pool.Exec(ctx, "UPDATE queue_message SET held = true WHERE id = 'HELD0001'"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "UPDATE queue_recipient SET next_attempt_at = now() + interval '1 hour' WHERE queue_id = 'LATER001'"); err != nil {
		t.Fatal(err)
	}
	cs, err := s.Claim(ctx, "node1", "o", time.Minute, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Message.ID != "DUE00001" || cs[1].Message.ID != "DUE00001" {
		t.Fatalf("claimed %+v, want the two recipients of DUE00001", cs)
	}
	next, ok, err := s.NextDue(ctx, "node1")
	if err != nil || !ok {
		t.Fatalf("NextDue = %v %v %v", next, ok, err)
	}
	if d := time.Until(next); d < 50*time.Minute || d > 70*time.Minute {
		t.Errorf("NextDue in %v, want about an hour (LATER001; the held message does not count)", d)
	}
	if _, ok, err := s.NextDue(ctx, "node3"); ok || err != nil {
		t.Errorf("NextDue(node3) = %v %v, want none", ok, err)
	}
}

func TestStaleOwnerChangesNothingAndGetsErrLeaseLost(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	enqueueN(t, s, "STALE001", "node1", 2)
	a, err := s.Claim(ctx, "node1", "A", time.Minute, 10)
	if err != nil || len(a) != 2 {
		t.Fatalf("claim A: %v %v", a, err)
	}
	// A stalls; its lease runs out and B takes the recipients.
	if _, err := s.pool.Exec(ctx, "UPDATE queue_recipient SET lease_expires_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	n, err := s.ReleaseExpiredLeases(ctx)
	if err != nil || n != 2 {
		t.Fatalf("ReleaseExpiredLeases = %d, %v; want 2", n, err)
	}
	if st := stateOf(t, s, a[0].ID); st.status != RcptDeferred || st.owner != "" || st.attempts != 1 || time.Until(st.next) > time.Second {
		t.Fatalf("released recipient: %+v, want deferred, due now, attempt kept", st)
	}
	b, err := s.Claim(ctx, "node1", "B", time.Minute, 10)
	if err != nil || len(b) != 2 || b[0].Attempts != 2 {
		t.Fatalf("claim B: %+v %v", b, err)
	}

	if err := s.RenewLease(ctx, "A", ids(a), time.Minute); !errors.Is(err, ErrLeaseLost) || len(LostIDs(err)) != 2 {
		t.Errorf("RenewLease by A = %v, want ErrLeaseLost naming both", err)
	}
	err = s.Settle(ctx, "A", Settlement{ID: a[0].ID, Status: RcptBounced, Reply: "550 5.1.1 no", DSN: "5.1.1", DSNAction: DSNFailed,
		QueueID: "STALE001", Recipient: a[0].Address})
	if !errors.Is(err, ErrLeaseLost) || !slices.Equal(LostIDs(err), []int64{a[0].ID}) {
		t.Fatalf("Settle by A = %v, want ErrLeaseLost", err)
	}
	if err := s.Unclaim(ctx, "A", ids(a), 0); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Unclaim by A = %v, want ErrLeaseLost", err)
	}
	st := stateOf(t, s, a[0].ID)
	if st.status != RcptDelivering || st.owner != "B" || st.pending {
		t.Fatalf("after A's stale settle: %+v, want still delivering under B", st)
	}
	// The attempt A made is still a fact in delivery_log.
	var logged int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM delivery_log WHERE queue_id = 'STALE001'").Scan(&logged); err != nil || logged != 1 {
		t.Errorf("delivery_log rows = %d, %v; want 1", logged, err)
	}
	if err := s.RenewLease(ctx, "B", ids(b), time.Hour); err != nil {
		t.Errorf("RenewLease by B: %v", err)
	}
	if err := s.Settle(ctx, "B", Settlement{ID: b[0].ID, Status: RcptDelivered, Reply: "250 ok", QueueID: "STALE001"},
		Settlement{ID: b[1].ID, Status: RcptDelivered, Reply: "250 ok", QueueID: "STALE001"}); err != nil {
		t.Fatalf("Settle by B: %v", err)
	}
	// Settling twice is stale too.
	if err := s.Settle(ctx, "B", Settlement{ID: b[0].ID, Status: RcptDelivered, QueueID: "STALE001"}); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("second Settle = %v, want ErrLeaseLost", err)
	}
}

func TestSettleRecordsOutcomesDSNDebtsAndLog(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	enqueueN(t, s, "SETTLE01", "node1", 5)
	cs, err := s.Claim(ctx, "node1", "o", time.Minute, 10)
	if err != nil || len(cs) != 5 {
		t.Fatalf("claim: %v %v", cs, err)
	}
	base := func(i int, status string) Settlement {
		return Settlement{ID: cs[i].ID, Status: status, QueueID: "SETTLE01", Node: "node1", Sender: "s@example.org",
			Recipient: cs[i].Address, OrigRecipient: cs[i].OrigAddress, Domain: "example.com", Transport: "smtp",
			Relay: "mx.example.com[192.0.2.1]:25", Delay: 1500 * time.Millisecond}
	}
	delivered := base(0, RcptDelivered)
	delivered.Reply, delivered.DSN = "250 2.0.0 Ok", "2.0.0"
	deferred := base(1, RcptDeferred)
	deferred.Reply, deferred.DSN, deferred.RetryIn = "451 4.3.0 try later", "4.3.0", 10*time.Minute
	bounced := base(2, RcptBounced)
	bounced.Reply, bounced.DSN, bounced.DSNAction = "550 5.1.1 unknown", "5.1.1", DSNFailed
	delayed := base(3, RcptDeferred)
	delayed.Reply, delayed.DSN, delayed.RetryIn, delayed.DSNAction = "421 4.4.2 lost", "4.4.2", time.Minute, DSNDelayed
	expired := base(4, RcptExpired)
	expired.Reply, expired.DSN, expired.DSNAction = "451 4.3.0 try later", "4.4.7", DSNFailed
	if err := s.Settle(ctx, "o", delivered, deferred, bounced, delayed, expired); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	check := func(i int, status string, pending bool, action string) rcptState {
		t.Helper()
		st := stateOf(t, s, cs[i].ID)
		if st.status != status || st.owner != "" || st.pending != pending || st.action != action || st.relay != "mx.example.com[192.0.2.1]:25" {
			t.Errorf("recipient %d: %+v, want %s pending=%v %q", i, st, status, pending, action)
		}
		return st
	}
	check(0, RcptDelivered, false, "")
	if st := check(1, RcptDeferred, false, ""); time.Until(st.next) < 9*time.Minute || time.Until(st.next) > 11*time.Minute {
		t.Errorf("deferred next attempt in %v, want 10m", time.Until(st.next))
	}
	check(2, RcptBounced, true, DSNFailed)
	if st := check(3, RcptDeferred, true, DSNDelayed); !st.delayNotified {
		t.Errorf("delay notice not marked as given")
	}
	check(4, RcptExpired, true, DSNFailed)
	var warned bool
	if err := s.pool.QueryRow(ctx, "SELECT delay_warned FROM queue_message WHERE id = 'SETTLE01'").Scan(&warned); err != nil || !warned {
		t.Errorf("delay_warned = %v, %v", warned, err)
	}

	rows, err := s.pool.Query(ctx, `SELECT recipient, status, dsn, reply, relay, delay_seconds, node, transport
		FROM delivery_log WHERE queue_id = 'SETTLE01' ORDER BY recipient`)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for rows.Next() {
		var rc, st, dsn, reply, relay, node, tr string
		var delay float64
		if err := rows.Scan(&rc, &st, &dsn, &reply, &relay, &delay, &node, &tr); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, fmt.Sprintf("%s %s %s %s|%s|%.1f|%s|%s", rc, st, dsn, reply, relay, delay, node, tr))
	}
	want := []string{
		"r0@example.com sent 2.0.0 250 2.0.0 Ok|mx.example.com[192.0.2.1]:25|1.5|node1|smtp",
		"r1@example.com deferred 4.3.0 451 4.3.0 try later|mx.example.com[192.0.2.1]:25|1.5|node1|smtp",
		"r2@example.com bounced 5.1.1 550 5.1.1 unknown|mx.example.com[192.0.2.1]:25|1.5|node1|smtp",
		"r3@example.com deferred 4.4.2 421 4.4.2 lost|mx.example.com[192.0.2.1]:25|1.5|node1|smtp",
		"r4@example.com expired 4.4.7 451 4.3.0 try later|mx.example.com[192.0.2.1]:25|1.5|node1|smtp",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("delivery_log:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}

	// The delayed recipient is retried: a deferral keeps its pending delay
	// notice, a delivery drops it (moot).
	if _, err := s.pool.Exec(ctx, "UPDATE queue_recipient SET next_attempt_at = now() WHERE id = $1", cs[3].ID); err != nil {
		t.Fatal(err)
	}
	again, err := s.Claim(ctx, "node1", "o", time.Minute, 10)
	if err != nil || len(again) != 1 || again[0].ID != cs[3].ID || !again[0].DelayNotified {
		t.Fatalf("reclaim: %+v %v", again, err)
	}
	if err := s.Settle(ctx, "o", Settlement{ID: cs[3].ID, Status: RcptDeferred, RetryIn: 0, QueueID: "SETTLE01"}); err != nil {
		t.Fatal(err)
	}
	if st := stateOf(t, s, cs[3].ID); !st.pending || st.action != DSNDelayed {
		t.Errorf("after a second deferral: %+v, want the delay notice still owed", st)
	}
	again, err = s.Claim(ctx, "node1", "o", time.Minute, 10)
	if err != nil || len(again) != 1 {
		t.Fatalf("reclaim: %+v %v", again, err)
	}
	if err := s.Settle(ctx, "o", Settlement{ID: cs[3].ID, Status: RcptDelivered, QueueID: "SETTLE01"}); err != nil {
		t.Fatal(err)
	}
	if st := stateOf(t, s, cs[3].ID); st.pending || st.action != "" {
		t.Errorf("after delivery: %+v, want no notice owed", st)
	}

	if err := s.Settle(ctx, "o", Settlement{ID: cs[0].ID, Status: RcptDelivering}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Settle to delivering = %v, want ErrInvalid", err)
	}
}

func TestUnclaimGivesTheAttemptBack(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	enqueueN(t, s, "UNCLAIM1", "node1", 1)
	cs, err := s.Claim(ctx, "node1", "o", time.Minute, 10)
	if err != nil || len(cs) != 1 {
		t.Fatal(cs, err)
	}
	if err := s.Unclaim(ctx, "o", ids(cs), 0); err != nil {
		t.Fatal(err)
	}
	if st := stateOf(t, s, cs[0].ID); st.status != RcptQueued || st.attempts != 0 || st.owner != "" {
		t.Errorf("after unclaim: %+v, want queued with 0 attempts", st)
	}
	// A recipient tried before goes back to deferred.
	cs, _ = s.Claim(ctx, "node1", "o", time.Minute, 10)
	_ = s.Settle(ctx, "o", Settlement{ID: cs[0].ID, Status: RcptDeferred, QueueID: "UNCLAIM1"})
	cs, _ = s.Claim(ctx, "node1", "o", time.Minute, 10)
	if err := s.Unclaim(ctx, "o", ids(cs), time.Hour); err != nil {
		t.Fatal(err)
	}
	if st := stateOf(t, s, cs[0].ID); st.status != RcptDeferred || st.attempts != 1 || time.Until(st.next) < 50*time.Minute {
		t.Errorf("after unclaim: %+v, want deferred, 1 attempt, due in an hour", st)
	}
}

func TestFinishMessagesMovesFinishedMailOut(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	enqueueN(t, s, "DONE0001", "node1", 2) // both delivered
	enqueueN(t, s, "OWES0001", "node1", 1) // bounced, DSN owed
	enqueueN(t, s, "HALF0001", "node1", 2) // one delivered, one deferred
	cs, err := s.Claim(ctx, "node1", "o", time.Minute, 10)
	if err != nil || len(cs) != 5 {
		t.Fatal(cs, err)
	}
	var set []Settlement
	for _, c := range cs {
		st := Settlement{ID: c.ID, Status: RcptDelivered, QueueID: c.Message.ID, Recipient: c.Address}
		switch {
		case c.Message.ID == "OWES0001":
			st.Status, st.DSNAction = RcptBounced, DSNFailed
		case c.Message.ID == "HALF0001" && c.Address == "r1@example.com":
			st.Status, st.RetryIn = RcptDeferred, time.Hour
		}
		set = append(set, st)
	}
	if err := s.Settle(ctx, "o", set...); err != nil {
		t.Fatal(err)
	}
	done, err := s.FinishMessages(ctx, "node1", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 1 || done[0] != (FinishedMessage{ID: "DONE0001", SpoolKey: "DONE0001"}) {
		t.Fatalf("finished %+v, want DONE0001 only", done)
	}
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM queue_recipient WHERE queue_id = 'DONE0001'").Scan(&n); err != nil || n != 0 {
		t.Errorf("DONE0001 recipients left: %d %v", n, err)
	}
	var finished *time.Time
	if err := s.pool.QueryRow(ctx, "SELECT finished_at FROM accepted_log WHERE queue_id = 'DONE0001'").Scan(&finished); err != nil || finished == nil {
		t.Errorf("accepted_log.finished_at = %v, %v", finished, err)
	}

	// The DSN owed by OWES0001 is queued in the same transaction that
	// clears the debt; then the message can finish.
	pend, err := s.PendingDSNs(ctx, "node1", nil, 0)
	if err != nil || len(pend) != 1 || pend[0].Message.ID != "OWES0001" || pend[0].Action != DSNFailed || len(pend[0].Recipients) != 1 {
		t.Fatalf("PendingDSNs = %+v, %v", pend, err)
	}
	if pend[0].Recipients[0].LastAttemptAt.IsZero() || pend[0].Recipients[0].Status != RcptBounced {
		t.Errorf("pending recipient %+v", pend[0].Recipients[0])
	}
	dsn := QueueMessage{ID: "DSN00001", Node: "node1", SpoolKey: "DSN00001", Sender: "", Size: 10, Kind: "dsn"}
	err = s.EnqueueWith(ctx, dsn, []QueueRecipient{{Address: "s@example.org", OrigAddress: "s@example.org", Domain: "example.org", Transport: "smtp"}},
		AcceptedLog{}, func(ctx context.Context, tx pgx.Tx) error {
			return ClearDSNPending(ctx, tx, pend[0].Recipients)
		})
	if err != nil {
		t.Fatalf("EnqueueWith: %v", err)
	}
	done, err = s.FinishMessages(ctx, "node1", []string{"OWES0001", "HALF0001"}, 0)
	if err != nil || len(done) != 1 || done[0].ID != "OWES0001" {
		t.Fatalf("FinishMessages = %+v, %v; want OWES0001", done, err)
	}
	if done, err := s.FinishMessages(ctx, "node2", nil, 0); err != nil || len(done) != 0 {
		t.Errorf("FinishMessages(node2) = %+v, %v", done, err)
	}
	if ok, _ := s.QueueMessageExists(ctx, "HALF0001"); !ok {
		t.Errorf("HALF0001 was finished with a deferred recipient")
	}
}

func TestDSNIsQueuedExactlyOnceByConcurrentSenders(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	enqueueN(t, s, "BOUNCE01", "node1", 2)
	cs, _ := s.Claim(ctx, "node1", "o", time.Minute, 10)
	if err := s.Settle(ctx, "o",
		Settlement{ID: cs[0].ID, Status: RcptBounced, DSNAction: DSNFailed, QueueID: "BOUNCE01"},
		Settlement{ID: cs[1].ID, Status: RcptBounced, DSNAction: DSNFailed, QueueID: "BOUNCE01"}); err != nil {
		t.Fatal(err)
	}
	pend, err := s.PendingDSNs(ctx, "node1", []string{"BOUNCE01"}, 0)
	if err != nil || len(pend) != 1 || len(pend[0].Recipients) != 2 {
		t.Fatalf("PendingDSNs = %+v, %v; want one DSN for both recipients", pend, err)
	}
	owed := pend[0].Recipients
	var wg sync.WaitGroup
	results := make([]error, 4)
	for i := range results {
		wg.Go(func() {
			id := fmt.Sprintf("DSNRACE%d", i)
			results[i] = s.EnqueueWith(ctx, QueueMessage{ID: id, Node: "node1", SpoolKey: id, Size: 1, Kind: "dsn"},
				[]QueueRecipient{{Address: "s@example.org", OrigAddress: "s@example.org", Domain: "example.org", Transport: "smtp"}},
				AcceptedLog{}, func(ctx context.Context, tx pgx.Tx) error { return ClearDSNPending(ctx, tx, owed) })
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range results {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrLeaseLost):
			t.Errorf("EnqueueWith: %v, want nil or ErrLeaseLost", err)
		}
	}
	var dsns int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM queue_message WHERE kind = 'dsn'").Scan(&dsns); err != nil {
		t.Fatal(err)
	}
	var acc int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM accepted_log WHERE queue_id LIKE 'DSNRACE%'").Scan(&acc); err != nil {
		t.Fatal(err)
	}
	if ok != 1 || dsns != 1 || acc != 1 {
		t.Fatalf("%d enqueues succeeded, %d DSN messages, %d accepted_log rows; want exactly 1 each", ok, dsns, acc)
	}
	// A hook error rolls the whole enqueue back.
	boom := errors.New("boom")
	err = s.EnqueueWith(ctx, QueueMessage{ID: "ROLLBACK1", Node: "node1", SpoolKey: "ROLLBACK1", Size: 1},
		[]QueueRecipient{{Address: "x@example.org", OrigAddress: "x@example.org", Domain: "example.org", Transport: "smtp"}},
		AcceptedLog{}, func(context.Context, pgx.Tx) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("EnqueueWith with a failing hook = %v", err)
	}
	if exists, _ := s.QueueMessageExists(ctx, "ROLLBACK1"); exists {
		t.Fatal("a failed hook left the message queued")
	}
}

func TestClaimUsesDueIndex(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	// A queue where most recipients are not due (delivered, waiting for
	// the rest of their message), as the planner would see it in production.
	if _, err := s.pool.Exec(ctx, `INSERT INTO queue_message (id, node, spool_key, sender, size)
		SELECT 'IDX' || lpad(g::text, 6, '0'), 'node' || (g % 3), 'IDX' || lpad(g::text, 6, '0'), '', 1
		FROM generate_series(1, 3000) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport, status, next_attempt_at)
		SELECT m.id, 'r' || k || '@example.com', 'r' || k || '@example.com', 'example.com', 'smtp',
		       CASE WHEN k < 9 THEN 'delivered' ELSE 'deferred' END, now() + (k || ' minutes')::interval
		FROM queue_message m, generate_series(0, 9) k`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "ANALYZE queue_recipient; ANALYZE queue_message"); err != nil {
		t.Fatal(err)
	}
	rows, err := s.pool.Query(ctx, "EXPLAIN "+sqlClaim, "node1", "o", int64(60e6), 100)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if !strings.Contains(text, "queue_recipient_due") {
		t.Fatalf("the claim does not use queue_recipient_due:\n%s", text)
	}
	t.Logf("claim plan:\n%s", text)

	// A burst: everything is due. The claim must still walk the index in
	// order and stop at the limit, not sort the whole due set.
	if _, err := s.pool.Exec(ctx, "UPDATE queue_recipient SET status = 'queued', next_attempt_at = now() - interval '1 minute'"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "VACUUM ANALYZE queue_recipient"); err != nil {
		t.Fatal(err)
	}
	rows, err = s.pool.Query(ctx, "EXPLAIN "+sqlClaim, "node1", "o", int64(60e6), 100)
	if err != nil {
		t.Fatal(err)
	}
	plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	text = strings.Join(plan, "\n")
	if !strings.Contains(text, "Index Scan using queue_recipient_due") || strings.Contains(text, "Sort Key") {
		t.Fatalf("with everything due, the claim sorts instead of walking queue_recipient_due:\n%s", text)
	}
}

func TestOperatorViews(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	enqueueN(t, s, "VIEW0001", "node1", 3) // r0..r2@example.com
	enqueueN(t, s, "VIEW0002", "node1", 1)
	if _, err := s.pool.Exec(ctx, "UPDATE queue_message SET held = true, hold_reason = 'look' WHERE id = 'VIEW0002'"); err != nil {
		t.Fatal(err)
	}
	cs, err := s.Claim(ctx, "node1", "o", time.Minute, 10)
	if err != nil || len(cs) != 3 {
		t.Fatal(cs, err)
	}
	if err := s.Settle(ctx, "o",
		Settlement{ID: cs[0].ID, Status: RcptDelivered, Reply: "250 ok", QueueID: "VIEW0001", Recipient: cs[0].Address, Domain: "example.com"},
		Settlement{ID: cs[1].ID, Status: RcptDeferred, RetryIn: time.Hour, Reply: "451 4.4.1 refused", QueueID: "VIEW0001", Recipient: cs[1].Address, Domain: "example.com"},
		Settlement{ID: cs[2].ID, Status: RcptDeferred, RetryIn: time.Hour, Reply: "451 4.4.1 refused", QueueID: "VIEW0001", Recipient: cs[2].Address, Domain: "example.com"},
	); err != nil {
		t.Fatal(err)
	}

	var recipients, delivered, deferred int
	var held bool
	var detail string
	if err := s.pool.QueryRow(ctx, `SELECT recipients, delivered, deferred, held, recipients_detail::text FROM mailq WHERE queue_id = 'VIEW0001'`).
		Scan(&recipients, &delivered, &deferred, &held, &detail); err != nil {
		t.Fatal(err)
	}
	if recipients != 3 || delivered != 1 || deferred != 2 || held || !strings.Contains(detail, `"last_reply": "451 4.4.1 refused"`) {
		t.Errorf("mailq row: %d %d %d %v %s", recipients, delivered, deferred, held, detail)
	}

	var queued, dHeld int
	var reasons string
	var oldest time.Time
	if err := s.pool.QueryRow(ctx, `SELECT queued, deferred, held, oldest_arrival, top_deferral_reasons::text
		FROM queue_by_domain WHERE domain = 'example.com'`).Scan(&queued, &deferred, &dHeld, &oldest, &reasons); err != nil {
		t.Fatal(err)
	}
	if queued != 1 || deferred != 2 || dHeld != 1 || oldest.IsZero() || reasons != `[{"reason": "451 4.4.1 refused", "recipients": 2}]` {
		t.Errorf("queue_by_domain: queued %d deferred %d held %d oldest %v reasons %s", queued, deferred, dHeld, oldest, reasons)
	}

	var attempts, sent int
	if err := s.pool.QueryRow(ctx, `SELECT attempts, delivered, deferred, top_deferral_reasons::text
		FROM delivery_stats_daily WHERE domain = 'example.com' AND day = (now() AT TIME ZONE 'UTC')::date`).
		Scan(&attempts, &sent, &deferred, &reasons); err != nil {
		t.Fatal(err)
	}
	if attempts != 3 || sent != 1 || deferred != 2 || reasons != `[{"reason": "451 4.4.1 refused", "attempts": 2}]` {
		t.Errorf("delivery_stats_daily: %d %d %d %s", attempts, sent, deferred, reasons)
	}
}

// BenchmarkClaimSettle measures the queue's own cost per recipient: one
// claim of 100 and one settle (with its delivery_log rows) per 100.
func BenchmarkClaimSettle(b *testing.B) {
	db := storetest.New(b)
	s := New(db.Pool)
	ctx := context.Background()
	n := b.N
	if _, err := s.pool.Exec(ctx, `INSERT INTO queue_message (id, node, spool_key, sender, size)
		SELECT 'B' || lpad(g::text, 9, '0'), 'node1', 'B' || lpad(g::text, 9, '0'), 's@example.org', 1
		FROM generate_series(1, $1) g`, n); err != nil {
		b.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO queue_recipient (queue_id, address, orig_address, domain, transport)
		SELECT id, 'r@example.com', 'r@example.com', 'example.com', 'smtp' FROM queue_message`); err != nil {
		b.Fatal(err)
	}
	_, _ = s.pool.Exec(ctx, "ANALYZE queue_recipient; ANALYZE queue_message")
	b.ResetTimer()
	for done := 0; done < n; {
		cs, err := s.Claim(ctx, "node1", "o", time.Minute, 100)
		if err != nil {
			b.Fatal(err)
		}
		if len(cs) == 0 {
			b.Fatalf("claimed nothing after %d", done)
		}
		set := make([]Settlement, len(cs))
		for i, c := range cs {
			set[i] = Settlement{ID: c.ID, Status: RcptDelivered, Reply: "250 2.0.0 Ok", DSN: "2.0.0", QueueID: c.Message.ID,
				Recipient: c.Address, Domain: c.Domain, Transport: c.Transport}
		}
		if err := s.Settle(ctx, "o", set...); err != nil {
			b.Fatal(err)
		}
		done += len(cs)
	}
}

// Settles that arrive while the group's transactions are busy share the
// next one; each call gets its own lost recipients, and a settlement the
// database refuses fails alone.
func TestSettleGroupCommit(t *testing.T) {
	s, db := newQueueStore(t)
	ctx := context.Background()
	for i := range 8 {
		enqueueN(t, s, fmt.Sprintf("GRPSET%02d", i), "node1", 1)
	}
	cs, err := s.Claim(ctx, "node1", "o", time.Minute, 10)
	if err != nil || len(cs) != 8 {
		t.Fatalf("claim: %d %v", len(cs), err)
	}
	// The lease of the last one was taken by another owner.
	if _, err := db.Pool.Exec(ctx, "UPDATE queue_recipient SET lease_owner = 'other' WHERE id = $1", cs[7].ID); err != nil {
		t.Fatal(err)
	}
	settle := func(c ClaimedRecipient, reply string) <-chan error {
		out := make(chan error, 1)
		go func() {
			out <- s.Settle(ctx, "o", Settlement{ID: c.ID, Status: RcptDelivered, Reply: reply, DSN: "2.0.0",
				Relay: "maildir", QueueID: c.Message.ID, Node: "node1", Recipient: c.Address})
		}()
		return out
	}
	// Both transactions of the group wait for a lock on delivery_log.
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, "LOCK TABLE delivery_log IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	waiting := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			var w int
			if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&w); err != nil {
				t.Fatal(err)
			}
			if w >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d settles wait for the lock, want %d", w, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	first := []<-chan error{settle(cs[0], "250 ok")}
	waiting(1)
	first = append(first, settle(cs[1], "250 ok"))
	waiting(2)
	var later []<-chan error
	for i := 2; i < 8; i++ {
		reply := "250 ok"
		if i == 4 {
			reply = "250 \x00" // text cannot hold NUL: the database refuses it
		}
		later = append(later, settle(cs[i], reply))
	}
	time.Sleep(200 * time.Millisecond)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for i, ch := range append(first, later...) {
		err := <-ch
		switch i {
		case 4:
			if err == nil || errors.Is(err, ErrLeaseLost) {
				t.Errorf("settlement with a NUL: %v; want a database error", err)
			}
			if st := stateOf(t, s, cs[i].ID); st.status != RcptDelivering {
				t.Errorf("refused settlement changed the recipient: %+v", st)
			}
		case 7:
			if !errors.Is(err, ErrLeaseLost) || !slices.Equal(LostIDs(err), []int64{cs[7].ID}) {
				t.Errorf("settlement of a lost lease: %v; want ErrLeaseLost naming it", err)
			}
		default:
			if err != nil {
				t.Errorf("settle %d: %v", i, err)
			}
			if st := stateOf(t, s, cs[i].ID); st.status != RcptDelivered {
				t.Errorf("recipient %d: %+v; want delivered", i, st)
			}
		}
	}
	// The settled ones are final: settling again finds no lease.
	for i := 2; i < 8; i++ {
		if i == 4 {
			continue
		}
		if err := settleOnce(ctx, s, "o", cs[i]); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("second settle of %d = %v; want ErrLeaseLost", i, err)
		}
	}
}

func settleOnce(ctx context.Context, s *Store, owner string, c ClaimedRecipient) error {
	return s.Settle(ctx, owner, Settlement{ID: c.ID, Status: RcptDelivered, QueueID: c.Message.ID})
}

// Settles of concurrent deliveries share transactions: one delivery_log
// xmin for several of them.
func TestSettleGroupSharesTransactions(t *testing.T) {
	s, db := newQueueStore(t)
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	for i := range 12 {
		enqueueN(t, s, fmt.Sprintf("SHRSET%02d", i), "node1", 1)
	}
	cs, err := s.Claim(ctx, "node1", "o", time.Minute, 20)
	if err != nil || len(cs) != 12 {
		t.Fatalf("claim: %d %v", len(cs), err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE delivery_log IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(cs))
	for i, c := range cs {
		wg.Go(func() { errs[i] = settleOnce(ctx, s, "o", c) })
	}
	time.Sleep(300 * time.Millisecond)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("settle %d: %v", i, err)
		}
	}
	var rows, txs int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT xmin::text) FROM delivery_log WHERE queue_id LIKE 'SHRSET%'").
		Scan(&rows, &txs); err != nil {
		t.Fatal(err)
	}
	if rows != 12 || txs > 4 {
		t.Errorf("%d delivery_log rows in %d transactions; want 12 in at most 4", rows, txs)
	}
}

func TestReleaseNodeLeasesTakesBackOtherOwnersOfTheNode(t *testing.T) {
	s, _ := newQueueStore(t)
	ctx := context.Background()
	enqueueN(t, s, "NODEA001", "node1", 2)
	enqueueN(t, s, "NODEA002", "node1", 1)
	enqueueN(t, s, "NODEB001", "node2", 1)
	dead, err := s.Claim(ctx, "node1", "node1:dead", time.Hour, 2)
	if err != nil || len(dead) != 2 {
		t.Fatalf("claim by the dead owner: %v %v", dead, err)
	}
	mine, err := s.Claim(ctx, "node1", "node1:me", time.Hour, 10)
	if err != nil || len(mine) != 1 {
		t.Fatalf("claim by this owner: %v %v", mine, err)
	}
	other, err := s.Claim(ctx, "node2", "node2:x", time.Hour, 10)
	if err != nil || len(other) != 1 {
		t.Fatalf("claim on node2: %v %v", other, err)
	}
	n, err := s.ReleaseNodeLeases(ctx, "node1", "node1:me")
	if err != nil || n != 2 {
		t.Fatalf("ReleaseNodeLeases: %d %v, want the dead owner's 2", n, err)
	}
	for _, c := range dead {
		if st := stateOf(t, s, c.ID); st.status != RcptDeferred || st.owner != "" || time.Until(st.next) > 0 {
			t.Errorf("dead owner's recipient %d: %+v, want deferred, due now, no lease", c.ID, st)
		}
	}
	if st := stateOf(t, s, mine[0].ID); st.status != "delivering" || st.owner != "node1:me" {
		t.Errorf("this owner's recipient: %+v, want its lease kept", st)
	}
	if st := stateOf(t, s, other[0].ID); st.status != "delivering" || st.owner != "node2:x" {
		t.Errorf("node2's recipient: %+v, want its lease kept", st)
	}
}
