package queue

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/dsn"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
)

// The kill -9 test: a real manager process is killed during a delivery
// burst, several times, then a last one runs to the end. Every recipient
// must have been delivered at least once, and every bounced message must
// have had exactly one DSN queued.

const crashHelperEnv = "FACTEUR_QUEUE_CRASH_HELPER"

// fileAgent records every delivery as a line in a file before it reports
// it delivered: the record of what a remote would have received. Recipients
// starting with "bounce" bounce; DSNs are recorded with the queue id of the
// message they report on.
type fileAgent struct {
	f     *os.File
	delay time.Duration
}

func (a fileAgent) Deliver(ctx context.Context, _ string, msg *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	time.Sleep(a.delay)
	out := make([]deliver.Result, len(rcpts))
	var lines bytes.Buffer
	for i, r := range rcpts {
		if strings.HasPrefix(r.Address, "bounce") {
			out[i] = deliver.Result{Status: deliver.Bounced, Relay: "mx.example.com[192.0.2.25]:25",
				Reply: envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 1, 1}, Text: "unknown"}}
			continue
		}
		switch msg.Kind {
		case KindDSN:
			f, err := msg.Open()
			if err != nil {
				out[i] = deliver.Result{Status: deliver.Deferred, Reply: envelope.Reply{Code: 451, Text: err.Error()}}
				continue
			}
			p, err := dsn.ParseReport(f)
			f.Close()
			if err != nil {
				out[i] = deliver.Result{Status: deliver.Deferred, Reply: envelope.Reply{Code: 451, Text: err.Error()}}
				continue
			}
			fmt.Fprintf(&lines, "dsn %s %s\n", p.QueueID, msg.QueueID)
		default:
			fmt.Fprintf(&lines, "mail %s %s\n", msg.QueueID, r.Address)
		}
		out[i] = deliver.Result{Status: deliver.Delivered, Relay: "mx.example.com[192.0.2.25]:25",
			Reply: envelope.Reply{Code: 250, Enhanced: envelope.Status{2, 0, 0}, Text: "Ok"}}
	}
	// One write: O_APPEND keeps concurrent lines whole.
	if lines.Len() > 0 {
		if _, err := a.f.Write(lines.Bytes()); err != nil {
			return deliver.All(rcpts, deliver.Result{Status: deliver.Deferred, Reply: envelope.Reply{Code: 451, Text: err.Error()}})
		}
	}
	return out
}

func crashManager(st *store.Store, sp *spool.Spool, record *os.File, lease time.Duration) *Manager {
	res := lookups.New(st, lookups.Options{Hostname: "mx.test", CacheTTL: -1})
	var m *Manager
	sub := &StoreSubmitter{Store: st, Spool: sp, Resolver: res, Node: node, Hostname: "mx.test", Wake: func() { m.Wake() }}
	m = New(st, sp, Options{Node: node, Hostname: "mx.test", Agents: map[string]deliver.Agent{"smtp": fileAgent{f: record, delay: 3 * time.Millisecond}},
		Submitter: sub, Policy: fast(), Lease: lease, PollInterval: 300 * time.Millisecond, Concurrency: 20})
	return m
}

// TestCrashHelperProcess is the manager process that TestKill9 kills.
func TestCrashHelperProcess(t *testing.T) {
	if os.Getenv(crashHelperEnv) == "" {
		t.Skip("helper process of TestKill9DuringDeliveryBurst")
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("FACTEUR_CRASH_DB"))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(os.Getenv("FACTEUR_CRASH_SPOOL"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(os.Getenv("FACTEUR_CRASH_RECORD"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	m := crashManager(store.New(pool), sp, f, 2*time.Second)
	_ = m.Run(ctx) // until killed
}

func TestKill9DuringDeliveryBurst(t *testing.T) {
	if os.Getenv("FACTEUR_LONG") == "" {
		t.Skip("kill -9 cycles are a long test: set FACTEUR_LONG=1")
	}
	e := newEnv(t)
	record := filepath.Join(t.TempDir(), "delivered")
	const msgs = 300
	want := map[string]bool{}
	bounced := map[string]bool{}
	for i := range msgs {
		rs := []rcpt{{addr: fmt.Sprintf("a%d@d%d.example", i, i%7)}, {addr: fmt.Sprintf("b%d@d%d.example", i, (i+3)%7)}}
		if i%10 == 0 {
			rs = append(rs, rcpt{addr: fmt.Sprintf("bounce%d@d%d.example", i, i%7)})
		}
		id := e.queue("alice@sender.test", rs, msgOpts{})
		for _, r := range rs[:2] {
			want["mail "+id+" "+r.addr] = true
		}
		if i%10 == 0 {
			bounced[id] = true
		}
	}
	lines := func() int {
		b, _ := os.ReadFile(record)
		return bytes.Count(b, []byte("\n"))
	}
	for cycle, at := range []int{60, 250, 450} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelperProcess$")
		cmd.Env = append(os.Environ(), crashHelperEnv+"=1", "FACTEUR_CRASH_DB="+e.db.URL,
			"FACTEUR_CRASH_SPOOL="+e.sp.Dir(), "FACTEUR_CRASH_RECORD="+record)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for lines() < at && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		t.Logf("cycle %d: killed at %d delivery records (%d recipients delivering)", cycle, lines(),
			e.count("SELECT count(*) FROM queue_recipient WHERE status = 'delivering'"))
	}
	f, err := os.OpenFile(record, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := crashManager(e.st, e.sp, f, 2*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	e.waitFor("every message to finish", 60*time.Second, e.queueEmpty)
	cancel()
	<-done

	got := map[string]int{}
	dsns := map[string]map[string]bool{} // original queue id -> DSN queue ids
	rf, err := os.Open(record)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	sc := bufio.NewScanner(rf)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "dsn ") {
			parts := strings.Fields(line)
			if dsns[parts[1]] == nil {
				dsns[parts[1]] = map[string]bool{}
			}
			dsns[parts[1]][parts[2]] = true
			continue
		}
		got[line]++
	}
	twice := 0
	for k := range want {
		switch n := got[k]; {
		case n == 0:
			t.Errorf("never delivered: %s", k)
		case n > 1:
			twice++
		}
	}
	for id := range bounced {
		if n := len(dsns[id]); n != 1 {
			t.Errorf("message %s: %d DSNs queued, want exactly 1", id, n)
		}
	}
	if len(dsns) != len(bounced) {
		t.Errorf("DSNs for %d messages, want %d", len(dsns), len(bounced))
	}
	t.Logf("%d recipients delivered, %d of them twice; %d DSNs", len(want), twice, len(dsns))
}
