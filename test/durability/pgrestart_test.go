package durability

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/test/harness"
)

// TestPostgresRestartUnderLoad stops facteur's PostgreSQL with `pg_ctl stop
// -m immediate` (a crash of every server process) while ten clients send,
// twice, on a cluster of the test's own (durable settings). While the
// database is down the replies are 451 or 421, never a 5xx; facteur recovers
// by itself (same process) and 250s resume; every message that got a 250,
// before, during or after, is delivered.
func TestPostgresRestartUnderLoad(t *testing.T) {
	harness.Long(t)
	pg := harness.NewOwnCluster(t)
	sink := harness.NewSink(t)
	f := harness.NewFacteur(t, harness.FacteurConfig{DatabaseURL: pg.URL()})
	f.Run("migrate", "up")
	for _, q := range []string{
		`INSERT INTO domain (name) VALUES ('example.test')`,
		`INSERT INTO mailbox (address, password) VALUES ('alice@example.test', '{PLAIN}x'), ('bob@example.test', '{PLAIN}x'), ('carol@example.test', '{PLAIN}x')`,
		`INSERT INTO client_access (network, action) VALUES ('127.0.0.0/8', 'permit_relay')`,
		fmt.Sprintf(`INSERT INTO transport (key, nexthop) VALUES ('remote.test', 'smtp:[127.0.0.1]:%d')`, sink.Port()),
	} {
		if err := pg.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	f.Start()
	pid := f.PID()

	led := newLedger()
	var phase atomic.Value
	phase.Store("up0")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() { sendLoop(i, f.Cfg.SMTP, func() string { return phase.Load().(string) }, led, stop) })
	}
	const restarts = 2
	downReplies := map[int]int{}
	var outage []time.Duration
	for r := 1; r <= restarts; r++ {
		time.Sleep(3 * time.Second)
		before := codeSnapshot(led)
		phase.Store(fmt.Sprintf("down%d", r))
		pg.StopImmediate()
		down := time.Now()
		time.Sleep(4 * time.Second)
		for c, n := range codeDiff(codeSnapshot(led), before) {
			downReplies[c] += n
		}
		pg.Start()
		phase.Store(fmt.Sprintf("up%d", r))
		// 250s resume without a restart of facteur.
		tag := fmt.Sprintf("-up%d-", r)
		harness.WaitFor(t, "250s after PostgreSQL came back", time.Minute, func() bool {
			return led.acceptedWhere(func(id string) bool { return strings.Contains(id, tag) }) >= 5
		})
		outage = append(outage, time.Since(down).Round(100*time.Millisecond))
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if f.PID() != pid || !f.Running() {
		t.Fatalf("facteur restarted or stopped (pid %d, then %d)", pid, f.PID())
	}

	// Drain, then tally.
	conn, err := pgx.Connect(context.Background(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	harness.WaitFor(t, "the queue to drain", 2*time.Minute, func() bool {
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM queue_message`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	f.Stop()
	local := map[string]map[string]int{}
	for _, b := range localBoxes {
		local[b+"@example.test"] = harness.MaildirMessageIDs(t, filepath.Join(f.Mail, "example.test", b))
	}
	remote := sink.Snapshot()
	var accepted, acceptedDown, lost, dups int
	led.mu.Lock()
	for id, m := range led.msgs {
		if m.outcome != harness.Accepted {
			continue
		}
		accepted++
		if strings.Contains(id, "-down") {
			acceptedDown++
		}
		got := 0
		for _, r := range m.rcpts {
			n := remote[id][r]
			if strings.HasSuffix(r, "@example.test") {
				n = local[r][id]
			}
			if n > 0 {
				got++
			}
			if n > 1 {
				dups += n - 1
			}
		}
		if got < len(m.rcpts) {
			lost++
			t.Errorf("%s got a 250 but reached %d of %d recipients", id, got, len(m.rcpts))
		}
	}
	perm := append([]string(nil), led.perm...)
	led.mu.Unlock()
	all := codeSnapshot(led)

	var fig harness.Figures
	fig.Set("PostgreSQL restarts", restarts)
	fig.Set("outage until the first 250", outage)
	fig.Set("replies while down", codesString(downReplies))
	fig.Set("all replies", codesString(all))
	fig.Set("messages accepted (250)", accepted)
	fig.Set("accepted while PostgreSQL was stopping or down", acceptedDown)
	fig.Set("lost", lost)
	fig.Set("duplicates", dups)
	fig.Log(t, "PostgreSQL restart")
	for c := range all {
		if c >= 500 {
			t.Errorf("permanent replies under a PostgreSQL outage: %v", perm)
			break
		}
	}
	for c := range downReplies {
		if c != 250 && c != 220 && c != 354 && c != 451 && c != 421 && c != 221 {
			t.Errorf("reply %d while PostgreSQL was down (want 451 or 421)", c)
		}
	}
	if downReplies[451]+downReplies[421] == 0 {
		t.Errorf("no 451 or 421 while PostgreSQL was down: %v", codesString(downReplies))
	}
}

func codeSnapshot(l *ledger) map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int]int{}
	for c, n := range l.codes {
		out[c] = n
	}
	return out
}

func codeDiff(after, before map[int]int) map[int]int {
	out := map[int]int{}
	for c, n := range after {
		if d := n - before[c]; d > 0 {
			out[c] = d
		}
	}
	return out
}

func codesString(m map[int]int) string {
	var keys []int
	for c := range m {
		keys = append(keys, c)
	}
	sort.Ints(keys)
	var parts []string
	for _, c := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", c, m[c]))
	}
	return strings.Join(parts, " ")
}
