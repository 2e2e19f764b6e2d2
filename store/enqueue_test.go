package store_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

func ptr[T any](v T) *T { return &v }

func sampleMessage(id string) store.QueueMessage {
	return store.QueueMessage{
		ID: id, Node: "node1", SpoolKey: id, Sender: "alice@example.org", Size: 1234,
		MessageID: "<m1@example.org>", ClientAddr: "192.0.2.1", ClientHelo: "mx.example.org",
		Protocol: "ESMTPSA", AuthUser: ptr("alice@example.org"), DSNRet: ptr("HDRS"), DSNEnvID: ptr("env-1"),
		BodyType: "8BITMIME", SMTPUTF8: true,
	}
}

func sampleRecipients() []store.QueueRecipient {
	return []store.QueueRecipient{
		{Address: "bob@example.com", OrigAddress: "team@example.com", Domain: "example.com", Transport: "maildir",
			DSNNotify: ptr("SUCCESS,FAILURE"), DSNOrcpt: ptr("rfc822;team@example.com")},
		{Address: "carol@example.com", OrigAddress: "team@example.com", Domain: "example.com", Transport: "maildir"},
		{Address: "dave@remote.test", OrigAddress: "team@example.com", Domain: "remote.test", Transport: "smtp"},
	}
}

func TestEnqueueInsertsAllRowsInOneTransaction(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx := context.Background()
	if err := st.Enqueue(ctx, sampleMessage("AAAAAAAA0001"), sampleRecipients(), store.AcceptedLog{TLS: "TLSv1.3 X"}); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}

	var (
		node, key, sender, protocol, bodyType, kind, helo string
		size                                              int64
		auth, ret, envid                                  *string
		utf8, held                                        bool
	)
	err := db.Pool.QueryRow(ctx, `SELECT node, spool_key, sender, size, protocol, body_type, kind, client_helo,
		auth_user, dsn_ret, dsn_envid, smtputf8, held FROM queue_message WHERE id = 'AAAAAAAA0001'`).
		Scan(&node, &key, &sender, &size, &protocol, &bodyType, &kind, &helo, &auth, &ret, &envid, &utf8, &held)
	if err != nil {
		t.Fatalf("read queue_message: %v", err)
	}
	if node != "node1" || key != "AAAAAAAA0001" || sender != "alice@example.org" || size != 1234 ||
		protocol != "ESMTPSA" || bodyType != "8BITMIME" || kind != "mail" || helo != "mx.example.org" ||
		auth == nil || *auth != "alice@example.org" || ret == nil || *ret != "HDRS" || envid == nil || *envid != "env-1" ||
		!utf8 || held {
		t.Errorf("queue_message row = %v %v %v %v %v %v %v %v %v %v %v %v %v", node, key, sender, size, protocol,
			bodyType, kind, helo, auth, ret, envid, utf8, held)
	}

	rows, err := db.Pool.Query(ctx, `SELECT address, orig_address, domain, transport, coalesce(dsn_notify, '-'),
		coalesce(dsn_orcpt, '-'), status FROM queue_recipient WHERE queue_id = 'AAAAAAAA0001' ORDER BY address`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var a, o, d, tr, n, oc, st string
		if err := rows.Scan(&a, &o, &d, &tr, &n, &oc, &st); err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.Join([]string{a, o, d, tr, n, oc, st}, " "))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"bob@example.com team@example.com example.com maildir SUCCESS,FAILURE rfc822;team@example.com queued",
		"carol@example.com team@example.com example.com maildir - - queued",
		"dave@remote.test team@example.com remote.test smtp - - queued",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("recipients:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	var nrcpt int
	var accSender, tls, accNode string
	var accSize int64
	if err := db.Pool.QueryRow(ctx, `SELECT recipients, sender, size, tls, node FROM accepted_log WHERE queue_id = 'AAAAAAAA0001'`).
		Scan(&nrcpt, &accSender, &accSize, &tls, &accNode); err != nil {
		t.Fatalf("read accepted_log: %v", err)
	}
	if nrcpt != 3 || accSender != "alice@example.org" || accSize != 1234 || tls != "TLSv1.3 X" || accNode != "node1" {
		t.Errorf("accepted_log = %d %q %d %q %q", nrcpt, accSender, accSize, tls, accNode)
	}

	ok, err := st.QueueMessageExists(ctx, "AAAAAAAA0001")
	if err != nil || !ok {
		t.Errorf("QueueMessageExists = %v, %v; want true", ok, err)
	}
	ok, err = st.QueueMessageExists(ctx, "AAAAAAAA0002")
	if err != nil || ok {
		t.Errorf("QueueMessageExists(missing) = %v, %v; want false", ok, err)
	}
}

func countQueueRows(t *testing.T, db *storetest.DB, id string) (msgs, rcpts, acc int) {
	t.Helper()
	err := db.Pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM queue_message WHERE id = $1),
		(SELECT count(*) FROM queue_recipient WHERE queue_id = $1),
		(SELECT count(*) FROM accepted_log WHERE queue_id = $1)`, id).Scan(&msgs, &rcpts, &acc)
	if err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return
}

func TestEnqueueStatementFailureLeavesNothing(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx := context.Background()
	// The last statement of the batch fails: the first two must be rolled back.
	if _, err := db.Pool.Exec(ctx, `CREATE FUNCTION fail_acc() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
		CREATE TRIGGER fail_acc BEFORE INSERT ON accepted_log FOR EACH ROW EXECUTE FUNCTION fail_acc()`); err != nil {
		t.Fatal(err)
	}
	err := st.Enqueue(ctx, sampleMessage("BBBBBBBB0001"), sampleRecipients(), store.AcceptedLog{})
	if err == nil {
		t.Fatal("Enqueue succeeded despite a failing trigger")
	}
	if errors.Is(err, store.ErrCommitUnknown) {
		t.Errorf("a failure before COMMIT reported as unknown outcome: %v", err)
	}
	if m, r, a := countQueueRows(t, db, "BBBBBBBB0001"); m+r+a != 0 {
		t.Errorf("rows left after a failed enqueue: %d messages, %d recipients, %d accepted", m, r, a)
	}
	// The pool still works (the failed connection was not returned inside a transaction).
	if _, err := db.Pool.Exec(ctx, "DROP TRIGGER fail_acc ON accepted_log"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := st.Enqueue(ctx, sampleMessage(fmt.Sprintf("BBBBBBBB000%d", i+2)), sampleRecipients(), store.AcceptedLog{}); err != nil {
			t.Fatalf("Enqueue after failure: %v", err)
		}
	}
}

func TestEnqueueCommitRejectedIsNotUnknown(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx := context.Background()
	// A deferred constraint trigger fails at COMMIT: the server answers, so
	// the outcome is known (rolled back) even though COMMIT itself failed.
	if _, err := db.Pool.Exec(ctx, `CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'injected commit failure'; END $$;
		CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON queue_message
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit()`); err != nil {
		t.Fatal(err)
	}
	err := st.Enqueue(ctx, sampleMessage("CCCCCCCC0001"), sampleRecipients(), store.AcceptedLog{})
	if err == nil || !strings.Contains(err.Error(), "commit") {
		t.Fatalf("Enqueue = %v; want a commit failure", err)
	}
	if errors.Is(err, store.ErrCommitUnknown) {
		t.Errorf("a COMMIT the server refused reported as unknown outcome: %v", err)
	}
	if m, r, a := countQueueRows(t, db, "CCCCCCCC0001"); m+r+a != 0 {
		t.Errorf("rows left: %d %d %d", m, r, a)
	}
}

func TestEnqueueDuplicateIDIsConflict(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx := context.Background()
	if err := st.Enqueue(ctx, sampleMessage("DDDDDDDD0001"), sampleRecipients(), store.AcceptedLog{}); err != nil {
		t.Fatal(err)
	}
	err := st.Enqueue(ctx, sampleMessage("DDDDDDDD0001"), sampleRecipients()[:1], store.AcceptedLog{})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second Enqueue with the same id = %v; want ErrConflict", err)
	}
	if _, r, a := countQueueRows(t, db, "DDDDDDDD0001"); r != 3 || a != 1 {
		t.Errorf("after the duplicate: %d recipients, %d accepted; want 3, 1", r, a)
	}
}

func TestEnqueueClosedPoolFailsCleanly(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	db.Pool.Close()
	err := st.Enqueue(context.Background(), sampleMessage("EEEEEEEE0001"), sampleRecipients(), store.AcceptedLog{})
	if err == nil || errors.Is(err, store.ErrCommitUnknown) {
		t.Fatalf("Enqueue on a closed pool = %v; want a plain error", err)
	}
}

func TestEnqueueWithoutRecipientsIsInvalid(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	err := st.Enqueue(context.Background(), sampleMessage("FFFFFFFF0001"), nil, store.AcceptedLog{})
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Enqueue without recipients = %v; want ErrInvalid", err)
	}
}

func TestSpoolKeysReferencedAndHold(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx := context.Background()
	for _, id := range []string{"GGGGGGGG0001", "GGGGGGGG0002"} {
		if err := st.Enqueue(ctx, sampleMessage(id), sampleRecipients(), store.AcceptedLog{}); err != nil {
			t.Fatal(err)
		}
	}
	other := sampleMessage("GGGGGGGG0003")
	other.Node = "node2"
	if err := st.Enqueue(ctx, other, sampleRecipients(), store.AcceptedLog{}); err != nil {
		t.Fatal(err)
	}
	ref, err := st.SpoolKeysReferenced(ctx, "node1", []string{"GGGGGGGG0001", "GGGGGGGG0003", "GGGGGGGG0009"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ref) != 1 || !ref["GGGGGGGG0001"] {
		t.Errorf("SpoolKeysReferenced = %v; want only GGGGGGGG0001 (0003 is node2's, 0009 does not exist)", ref)
	}

	var listed []string
	collect := func(r store.QueueSpoolRef) error { listed = append(listed, r.ID+"="+r.SpoolKey); return nil }
	if err := st.QueueSpoolRefs(ctx, "node1", time.Now().Add(time.Hour), collect); err != nil {
		t.Fatal(err)
	}
	if strings.Join(listed, ",") != "GGGGGGGG0001=GGGGGGGG0001,GGGGGGGG0002=GGGGGGGG0002" {
		t.Errorf("QueueSpoolRefs = %v", listed)
	}

	if err := st.HoldMissingBody(ctx, "GGGGGGGG0002", "spool file missing"); err != nil {
		t.Fatal(err)
	}
	// An operator's hold keeps its own reason.
	if _, err := db.Pool.Exec(ctx, "UPDATE queue_message SET held = true, hold_reason = 'operator' WHERE id = 'GGGGGGGG0001'"); err != nil {
		t.Fatal(err)
	}
	if err := st.HoldMissingBody(ctx, "GGGGGGGG0001", "spool file missing"); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Pool.Query(ctx, "SELECT id || ':' || held || ':' || coalesce(hold_reason, '') FROM queue_message ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		states = append(states, s)
	}
	want := "GGGGGGGG0001:true:operator,GGGGGGGG0002:true:spool file missing,GGGGGGGG0003:false:"
	if strings.Join(states, ",") != want {
		t.Errorf("after holds: %v; want %s", states, want)
	}
	listed = nil
	if err := st.QueueSpoolRefs(ctx, "node1", time.Now().Add(time.Hour), collect); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 0 {
		t.Errorf("held messages listed: %v", listed)
	}
	if err := st.HoldMissingBody(ctx, "GGGGGGGG0099", "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("HoldMissingBody(missing) = %v; want ErrNotFound", err)
	}
}

// blockEnqueues holds a lock that makes every Enqueue wait at its INSERT
// into accepted_log, until the returned function releases it, and waits
// until n enqueues wait for it.
func blockEnqueues(t *testing.T, db *storetest.DB) (waitFor func(n int), release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			if err := tx.Commit(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(release)
	if _, err := tx.Exec(ctx, "LOCK TABLE accepted_log IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	waitFor = func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var waiting int
			if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
			if waiting >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d enqueues wait for the lock, want %d", waiting, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return waitFor, release
}

// busyGroup makes both transactions of the group wait for the lock of
// blockEnqueues, with a message each, and returns their outcome when it
// comes.
func busyGroup(st *store.Store, waitFor func(int), ids [2]string) <-chan map[string]error {
	first, second := make(chan map[string]error, 1), make(chan map[string]error, 1)
	go func() { first <- enqueueAll(st, ids[:1]) }()
	waitFor(1)
	go func() { second <- enqueueAll(st, ids[1:]) }()
	waitFor(2)
	out := make(chan map[string]error, 1)
	go func() {
		m := <-first
		maps.Copy(m, <-second)
		out <- m
	}()
	return out
}

// enqueueAll enqueues the messages ids concurrently and returns each one's
// error.
func enqueueAll(st *store.Store, ids []string) map[string]error {
	var mu sync.Mutex
	out := map[string]error{}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			err := st.Enqueue(context.Background(), sampleMessage(id), sampleRecipients(), store.AcceptedLog{})
			mu.Lock()
			out[id] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// Enqueues that arrive while the group's transactions are busy share the
// next one (one xmin), and each returns after its COMMIT with every row.
func TestEnqueueGroupCommit(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	waitFor, release := blockEnqueues(t, db)
	first := busyGroup(st, waitFor, [2]string{"GROUP0000001", "GROUP0000002"})
	var later []string
	for i := range 6 {
		later = append(later, fmt.Sprintf("GROUP00000%02d", 10+i))
	}
	rest := make(chan map[string]error)
	go func() { rest <- enqueueAll(st, later) }()
	time.Sleep(200 * time.Millisecond) // they wait for a transaction
	release()
	for id, err := range <-first {
		if err != nil {
			t.Errorf("Enqueue %s: %v", id, err)
		}
	}
	for id, err := range <-rest {
		if err != nil {
			t.Errorf("Enqueue %s: %v", id, err)
		}
		if m, r, a := countQueueRows(t, db, id); m != 1 || r != 3 || a != 1 {
			t.Errorf("%s: %d messages, %d recipients, %d accepted; want 1, 3, 1", id, m, r, a)
		}
	}
	var xmins int
	if err := db.Pool.QueryRow(context.Background(), "SELECT count(DISTINCT xmin::text) FROM queue_message WHERE id = ANY ($1)",
		later).Scan(&xmins); err != nil {
		t.Fatal(err)
	}
	if xmins != 1 {
		t.Errorf("the 6 later messages were committed in %d transactions, want 1", xmins)
	}
}

// A message that cannot be queued fails alone: the others of its shared
// transaction are queued.
func TestEnqueueGroupIsolatesAFailingMessage(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx := context.Background()
	if err := st.Enqueue(ctx, sampleMessage("ISOL00000012"), sampleRecipients()[:1], store.AcceptedLog{}); err != nil {
		t.Fatal(err)
	}
	// A deferred trigger that refuses one message at COMMIT, too.
	if _, err := db.Pool.Exec(ctx, `CREATE FUNCTION fail_one() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN IF NEW.id = 'ISOL00000014' THEN RAISE EXCEPTION 'injected commit failure'; END IF; RETURN NULL; END $$;
		CREATE CONSTRAINT TRIGGER fail_one AFTER INSERT ON queue_message
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_one()`); err != nil {
		t.Fatal(err)
	}
	waitFor, release := blockEnqueues(t, db)
	first := busyGroup(st, waitFor, [2]string{"ISOL00000001", "ISOL00000002"})
	ids := []string{"ISOL00000011", "ISOL00000012", "ISOL00000013", "ISOL00000014", "ISOL00000015"}
	rest := make(chan map[string]error)
	go func() { rest <- enqueueAll(st, ids) }()
	time.Sleep(200 * time.Millisecond)
	release()
	<-first
	for id, err := range <-rest {
		switch id {
		case "ISOL00000012":
			if !errors.Is(err, store.ErrConflict) {
				t.Errorf("duplicate %s: %v; want ErrConflict", id, err)
			}
			if _, r, a := countQueueRows(t, db, id); r != 1 || a != 1 {
				t.Errorf("the first %s was changed: %d recipients, %d accepted", id, r, a)
			}
		case "ISOL00000014":
			if err == nil || errors.Is(err, store.ErrCommitUnknown) {
				t.Errorf("%s refused at COMMIT: %v; want a known failure", id, err)
			}
			if m, r, a := countQueueRows(t, db, id); m+r+a != 0 {
				t.Errorf("%s left rows: %d %d %d", id, m, r, a)
			}
		default:
			if err != nil {
				t.Errorf("Enqueue %s: %v", id, err)
			}
			if m, r, a := countQueueRows(t, db, id); m != 1 || r != 3 || a != 1 {
				t.Errorf("%s: %d messages, %d recipients, %d accepted; want 1, 3, 1", id, m, r, a)
			}
		}
	}
}

// An enqueue whose context ends while it waits for a transaction returns at
// once, and nothing of it is committed.
func TestEnqueueGroupCancelledWhileWaiting(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	waitFor, release := blockEnqueues(t, db)
	first := busyGroup(st, waitFor, [2]string{"CANC00000001", "CANC00000002"})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := st.Enqueue(ctx, sampleMessage("CANC00000003"), sampleRecipients(), store.AcceptedLog{})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrCommitUnknown) {
		t.Errorf("Enqueue with an ended context = %v; want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned after %v", d)
	}
	release()
	<-first
	time.Sleep(100 * time.Millisecond)
	if m, r, a := countQueueRows(t, db, "CANC00000003"); m+r+a != 0 {
		t.Errorf("rows of the cancelled enqueue: %d %d %d", m, r, a)
	}
}
