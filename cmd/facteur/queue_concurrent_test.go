package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store"
)

// standInManager is a queue manager reduced to the protocol of store/queue.go
// (claim under a lease, read the body, settle, send owed DSNs, finish
// messages and only then remove their bodies), with checks of what the
// operator's actions must never break.
type standInManager struct {
	e *queueEnv

	mu        sync.Mutex
	inFlight  map[int64]string // recipient → worker holding it
	delivered map[int64]int    // recipient → times settled delivered
	final     map[int64]string // recipient → final state it was settled to
	attempts  int
	problems  []string
}

func (m *standInManager) problem(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.problems) < 20 {
		m.problems = append(m.problems, fmt.Sprintf(format, args...))
	}
}

// worker claims and "delivers" until ctx ends: every claimed recipient's
// body must be readable at the start and still there at the end of the
// attempt; no recipient may be claimed while another attempt holds it.
func (m *standInManager) worker(ctx context.Context, name string, seed uint64) {
	st, sp := m.e.st, m.e.sp
	rnd := rand.New(rand.NewPCG(seed, 7))
	for ctx.Err() == nil {
		cs, err := st.Claim(ctx, "mx1", name, 30*time.Second, 4)
		if err != nil {
			if ctx.Err() == nil {
				m.problem("%s: claim: %v", name, err)
			}
			return
		}
		if len(cs) == 0 {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		m.mu.Lock()
		for _, c := range cs {
			if other, ok := m.inFlight[c.ID]; ok {
				m.problems = append(m.problems, fmt.Sprintf("recipient %d claimed by %s while %s holds it", c.ID, name, other))
			}
			m.inFlight[c.ID] = name
		}
		m.attempts++
		m.mu.Unlock()
		for _, c := range cs {
			f, err := sp.Open(c.Message.SpoolKey)
			if err != nil {
				m.problem("%s: body of %s missing for claimed recipient %d: %v", name, c.Message.ID, c.ID, err)
				continue
			}
			f.Close()
		}
		time.Sleep(time.Duration(5+rnd.IntN(40)) * time.Millisecond)
		var sets []store.Settlement
		for _, c := range cs {
			if _, err := os.Stat(sp.Path(c.Message.SpoolKey)); err != nil {
				m.problem("%s: body of %s removed during the attempt of recipient %d: %v", name, c.Message.ID, c.ID, err)
			}
			s := store.Settlement{ID: c.ID, QueueID: c.Message.ID, Node: "mx1", Sender: c.Message.Sender,
				Recipient: c.Address, Domain: c.Domain, Transport: c.Transport, Relay: "mx.example.com[192.0.2.9]:25"}
			switch p := rnd.IntN(10); {
			case p < 5:
				s.Status, s.Reply, s.DSN = store.RcptDelivered, "250 2.0.0 Ok", "2.0.0"
			case p < 9:
				s.Status, s.Reply, s.DSN, s.RetryIn = store.RcptDeferred, "451 4.3.0 try later", "4.3.0", 100*time.Millisecond
			default:
				s.Status, s.Reply, s.DSN, s.DSNAction = store.RcptBounced, "550 5.1.1 no such user", "5.1.1", store.DSNFailed
			}
			sets = append(sets, s)
		}
		m.mu.Lock()
		for _, c := range cs {
			delete(m.inFlight, c.ID)
		}
		m.mu.Unlock()
		// The settlement must find every lease intact: no action breaks one.
		if err := st.Settle(context.WithoutCancel(ctx), name, sets...); err != nil {
			m.problem("%s: settle: %v", name, err)
			continue
		}
		m.mu.Lock()
		for _, s := range sets {
			if s.Status == store.RcptDelivered {
				m.delivered[s.ID]++
			}
			if s.Status != store.RcptDeferred {
				m.final[s.ID] = s.Status
			}
		}
		m.mu.Unlock()
	}
}

// notices clears owed DSNs (as if queued) and finishes messages, removing
// their bodies after their rows, as the queue manager's notices pass does.
func (m *standInManager) notices(ctx context.Context) {
	st, sp := m.e.st, m.e.sp
	for ctx.Err() == nil {
		pend, err := st.PendingDSNs(ctx, "mx1", nil, 100)
		if err != nil {
			if ctx.Err() == nil {
				m.problem("pending DSNs: %v", err)
			}
			return
		}
		for _, p := range pend {
			err := st.WithTx(ctx, func(tx pgx.Tx) error { return store.ClearDSNPending(ctx, tx, p.Recipients) })
			if err != nil && !errors.Is(err, store.ErrLeaseLost) && ctx.Err() == nil {
				m.problem("clear DSN of %s: %v", p.Message.ID, err)
			}
		}
		done, err := st.FinishMessages(ctx, "mx1", nil, 1000)
		if err != nil {
			if ctx.Err() == nil {
				m.problem("finish: %v", err)
			}
			return
		}
		for _, f := range done {
			if err := sp.Remove(f.SpoolKey); err != nil {
				m.problem("remove %s: %v", f.ID, err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConcurrentActionsNeverLoseDuplicateOrStrandRecipients runs flush,
// hold, release, delete and expire through the CLI while three workers
// claim, deliver and settle, then drains the queue and checks that every
// recipient ended exactly once: delivered at most once, never claimed
// twice at the same time, never removed while being delivered, removed
// without a final state only by an operator's delete, and that no body
// went away while a recipient still needed it, nor stayed behind.
func TestConcurrentActionsNeverLoseDuplicateOrStrandRecipients(t *testing.T) {
	e := newQueueEnv(t)
	ctx := context.Background()
	// Record every recipient row that leaves queue_recipient, and the
	// state it left in.
	e.exec(`CREATE TABLE test_rcpt_gone (id bigint, queue_id text, status text);
CREATE FUNCTION test_rcpt_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO test_rcpt_gone VALUES (OLD.id, OLD.queue_id, OLD.status); RETURN NULL; END $$;
CREATE TRIGGER test_rcpt_gone AFTER DELETE ON queue_recipient FOR EACH ROW EXECUTE FUNCTION test_rcpt_gone();`)

	const messages = 120
	var ids []string
	for i := range messages {
		id := fmt.Sprintf("RACE%08d", i)
		ids = append(ids, id)
		e.enqueue(id, "sender@example.org", 400, fmt.Sprintf("a%d@one.example", i), fmt.Sprintf("b%d@two.example", i), fmt.Sprintf("c%d@one.example", i))
	}
	total := e.count("SELECT count(*) FROM queue_recipient")

	m := &standInManager{e: e, inFlight: map[int64]string{}, delivered: map[int64]int{}, final: map[int64]string{}}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() { m.worker(wctx, fmt.Sprintf("w%d", w), uint64(w+1)) })
	}
	wg.Go(func() { m.notices(wctx) })

	// The operator: random actions on random messages for a while.
	deletedByOperator := map[string]bool{}
	rnd := rand.New(rand.NewPCG(42, 42))
	actions, busyActions := 0, 0
	// inFlight picks a message with a recipient being delivered now, so
	// that actions meet attempts in flight.
	inFlight := func() string {
		m.mu.Lock()
		defer m.mu.Unlock()
		for rid := range m.inFlight {
			var qid string
			if err := e.db.Pool.QueryRow(ctx, "SELECT queue_id FROM queue_recipient WHERE id = $1", rid).Scan(&qid); err == nil {
				return qid
			}
		}
		return ids[rnd.IntN(len(ids))]
	}
	start := time.Now()
	for ; time.Since(start) < 3*time.Second || (busyActions < 3 && time.Since(start) < 8*time.Second); actions++ {
		id := ids[rnd.IntN(len(ids))]
		id2 := ids[rnd.IntN(len(ids))]
		var args []string
		switch rnd.IntN(8) {
		case 0:
			args = []string{"queue", "flush", id, id2}
		case 1:
			args = []string{"queue", "hold", id, inFlight()}
		case 2:
			args = []string{"queue", "release", id, id2}
		case 3:
			args = []string{"queue", "delete", "--wait", "0", id}
		case 4, 5:
			args = []string{"queue", "delete", "--wait", "0", inFlight()}
		case 6:
			args = []string{"queue", "expire", "--wait", "0", inFlight()}
		case 7:
			args = []string{"queue", "flush", "--domain", "two.example"}
		}
		out, errOut, code := e.run("", append(args, "--json")...)
		// 1: a message already gone; 75: work left behind a delivery.
		if code != 0 && code != exitFailure && code != exitTempFail {
			t.Fatalf("facteur %s: status %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		for line := range strings.Lines(out) {
			var r store.QueueActionResult
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if r.Busy > 0 && args[1] != "hold" && args[1] != "release" {
				busyActions++
			}
			if args[1] == "delete" && r.Found {
				deletedByOperator[r.ID] = true
			}
		}
	}

	// Drain: release everything (a pending delete is cancelled by
	// release, which is fine: its other recipients are gone already) and
	// let the workers finish the queue.
	e.ok("queue", "release", "ALL")
	e.ok("queue", "flush")
	drained := false
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if e.count("SELECT count(*) FROM queue_message") == 0 {
			drained = true
			break
		}
	}
	stop()
	wg.Wait()
	if !drained {
		t.Fatalf("the queue did not drain: %d messages left", e.count("SELECT count(*) FROM queue_message"))
	}
	for _, p := range m.problems {
		t.Error(p)
	}

	// Every recipient left the table exactly once.
	gone := map[int64]struct{ qid, status string }{}
	rows, err := e.db.Pool.Query(ctx, "SELECT id, queue_id, status FROM test_rcpt_gone")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var qid, status string
		if err := rows.Scan(&id, &qid, &status); err != nil {
			t.Fatal(err)
		}
		if _, dup := gone[id]; dup {
			t.Errorf("recipient %d removed twice", id)
		}
		gone[id] = struct{ qid, status string }{qid, status}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(gone) != total {
		t.Errorf("%d of %d recipients left the queue", len(gone), total)
	}
	operatorRemoved := 0
	for id, g := range gone {
		switch {
		case g.status == store.RcptDelivering:
			t.Errorf("recipient %d of %s removed while being delivered", id, g.qid)
		case g.status == store.RcptDelivered || g.status == store.RcptBounced || g.status == store.RcptExpired:
			// Final: finished by the manager, or removed by a delete.
		default:
			// Removed while still waiting: only a delete may do that.
			if !deletedByOperator[g.qid] {
				t.Errorf("recipient %d of %s (%s) vanished without a delete", id, g.qid, g.status)
			}
			operatorRemoved++
		}
	}
	for id, n := range m.delivered {
		if n > 1 {
			t.Errorf("recipient %d delivered %d times", id, n)
		}
	}
	// Nothing stays behind in the spool.
	left := 0
	if err := e.sp.Keys(ctx, func(string, time.Time) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d bodies left in the spool after every message left the queue", left)
	}
	if _, err := os.Stat(e.sp.Path(ids[0])); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("body of %s: %v", ids[0], err)
	}
	t.Logf("%d operator actions (%d met a delivery in flight), %d attempts, %d recipients delivered, %d removed by deletes while waiting, %d messages deleted",
		actions, busyActions, m.attempts, len(m.delivered), operatorRemoved, len(deletedByOperator))
	if actions < 20 || m.attempts < 20 || busyActions == 0 {
		t.Fatalf("too little happened to show anything: %d actions (%d with a delivery in flight), %d attempts", actions, busyActions, m.attempts)
	}
}
