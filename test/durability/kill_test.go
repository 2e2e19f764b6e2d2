package durability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/facteur/facteur/store/storetest"
	"github.com/facteur/facteur/test/harness"
)

// KillCyclesEnv sets the number of SIGKILL cycles of TestKill9UnderLoad
// (default 20, as in CI; FACTEUR_KILL_CYCLES=100 for the longer manual run
// that README documents). FACTEUR_KILL_SEED replays a run's random choices.
const (
	KillCyclesEnv = "FACTEUR_KILL_CYCLES"
	KillSeedEnv   = "FACTEUR_KILL_SEED"
)

// ledger is what the clients know of every message they tried to send.
type ledger struct {
	mu    sync.Mutex
	msgs  map[string]*sent // Message-ID -> what happened
	codes map[int]int      // every reply code seen -> how often
	perm  []string         // 5xx replies, for the report
}

func newLedger() *ledger { return &ledger{msgs: map[string]*sent{}, codes: map[int]int{}} }

// sawCodes counts reply codes, and remembers permanent ones with their text.
func (l *ledger) sawCodes(codes []int, text string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range codes {
		l.codes[c]++
		if c >= 500 && len(l.perm) < 20 {
			l.perm = append(l.perm, text)
		}
	}
}

// acceptedSince returns how many messages whose ids satisfy since were accepted.
func (l *ledger) acceptedWhere(pred func(id string) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for id, m := range l.msgs {
		if m.outcome == harness.Accepted && pred(id) {
			n++
		}
	}
	return n
}

type sent struct {
	rcpts   []string
	outcome harness.Outcome
}

func (l *ledger) record(id string, rcpts []string, o harness.Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs[id] = &sent{rcpts: rcpts, outcome: o}
}

func (l *ledger) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m.outcome == harness.Accepted {
			n++
		}
	}
	return n
}

var localBoxes = []string{"alice", "bob", "carol"}

// TestKill9UnderLoad is the promise that a 250 is never lost, tested the
// hard way: ten clients send to local mailboxes (Maildir) and to remote
// recipients (a transport row to a counting SMTP sink) while a driver kills
// `facteur serve` with SIGKILL at random points and restarts it, many times.
// At the end a last run drains the queue, and:
//
//   - every message that got a 250 reached every one of its recipients at
//     least once (lost = 0);
//   - duplicates are counted and reported: they may only come from a
//     delivery cut between the remote's (or the Maildir's) success and the
//     commit of its result;
//   - a message whose DATA got no reply (the 250 was lost with the process:
//     "accepted but unacknowledged") may or may not be delivered; one that
//     got an error reply, or never reached its final dot, must not be;
//   - no queue row and no spool file is left.
//
// Two things a crash leaves are fast-forwarded rather than waited for, while
// facteur is down: the leases of the killed process (10 minutes in
// production) are made to run out at once, and before the last run the
// spool files are made older than the reconciler's age (1 h), so that its
// pass at start removes the bodies whose enqueue died between the spool's
// rename and the COMMIT.
func TestKill9UnderLoad(t *testing.T) {
	harness.Long(t)
	cycles := harness.IntEnv(KillCyclesEnv, 20)
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv(KillSeedEnv), 10, 64); err == nil {
		seed = v
	}
	t.Logf("%d kill cycles, seed %d (%s=%d replays it)", cycles, seed, KillSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	var rngMu sync.Mutex
	randDur := func(lo, hi time.Duration) time.Duration {
		rngMu.Lock()
		defer rngMu.Unlock()
		return lo + time.Duration(rng.Int64N(int64(hi-lo)))
	}

	db := storetest.New(t)
	ctx := context.Background()
	sink := harness.NewSink(t)
	sink.Delay = func() time.Duration { return randDur(0, 30*time.Millisecond) }
	for _, q := range []string{
		`INSERT INTO domain (name) VALUES ('example.test')`,
		`INSERT INTO mailbox (address, password) VALUES ('alice@example.test', '{PLAIN}x'), ('bob@example.test', '{PLAIN}x'), ('carol@example.test', '{PLAIN}x')`,
		`INSERT INTO client_access (network, action) VALUES ('127.0.0.0/8', 'permit_relay')`,
		fmt.Sprintf(`INSERT INTO transport (key, nexthop) VALUES ('remote.test', 'smtp:[127.0.0.1]:%d')`, sink.Port()),
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	f := harness.NewFacteur(t, harness.FacteurConfig{DatabaseURL: db.URL})
	f.Start()

	led := newLedger()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const clients = 10
	for i := range clients {
		wg.Go(func() { sendLoop(i, f.Cfg.SMTP, func() string { return "k" }, led, stop) })
	}

	start := time.Now()
	survived := 0
	for cycle := 1; cycle <= cycles; cycle++ {
		time.Sleep(randDur(300*time.Millisecond, 2*time.Second))
		f.Kill()
		expireLeases(t, db)
		if cycle == cycles {
			break // the last run comes after the clients stop
		}
		if err := f.StartNoWait(); err != nil {
			t.Fatal(err)
		}
		if err := f.WaitReady(60 * time.Second); err != nil {
			t.Fatalf("cycle %d: facteur did not come back: %v\n%s", cycle, err, f.LogTail(60))
		}
		survived++
	}
	close(stop)
	wg.Wait()
	loadTime := time.Since(start)

	// The last run: the reconciler's age is fast-forwarded, and the queue
	// must drain.
	backdateSpool(t, f.Spool, 3*time.Hour)
	f.Start()
	survived++
	harness.WaitFor(t, "the queue to drain", 3*time.Minute, func() bool {
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM queue_message`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	// The reconciler's first pass runs at start; the spool empties once it
	// has removed the orphans and the queue has removed delivered bodies.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if n, _ := harness.CountSpoolFiles(t, f.Spool); n == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.Stop()

	// Tally.
	local := map[string]map[string]int{} // mailbox -> Message-ID -> files
	for _, b := range localBoxes {
		local[b+"@example.test"] = harness.MaildirMessageIDs(t, filepath.Join(f.Mail, "example.test", b))
	}
	remote := sink.Snapshot()
	deliveries := func(id, rcpt string) int {
		if strings.HasSuffix(rcpt, "@example.test") {
			return local[rcpt][id]
		}
		return remote[id][rcpt]
	}
	var accepted, lost, dups, unack, unackDelivered, refusedDelivered, refused int
	var lostIDs []string
	led.mu.Lock()
	known := map[string]bool{}
	for id, m := range led.msgs {
		known[id] = true
		got := 0
		for _, r := range m.rcpts {
			n := deliveries(id, r)
			if n > 1 {
				dups += n - 1
			}
			if n > 0 {
				got++
			}
		}
		switch m.outcome {
		case harness.Accepted:
			accepted++
			if got < len(m.rcpts) {
				lost++
				lostIDs = append(lostIDs, id)
			}
		case harness.Unacknowledged:
			unack++
			if got > 0 {
				unackDelivered++
			}
		default:
			refused++
			if got > 0 {
				refusedDelivered++
				t.Errorf("%s was refused or never finished, yet delivered to %d recipients", id, got)
			}
		}
	}
	led.mu.Unlock()
	unexpected := 0
	for _, ids := range local {
		for id := range ids {
			if !known[id] {
				unexpected++
				t.Errorf("a Maildir holds %s, which no client sent", id)
			}
		}
	}
	for id := range remote {
		if !known[id] {
			unexpected++
			t.Errorf("the sink received %s, which no client sent", id)
		}
	}
	removed := strings.Count(f.Log(), "reconcile: removed spool file")
	spoolLeft, names := harness.CountSpoolFiles(t, f.Spool)
	var held int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM queue_message WHERE held`).Scan(&held); err != nil {
		t.Fatal(err)
	}

	var fig harness.Figures
	fig.Set("cycles survived", fmt.Sprintf("%d/%d", survived, cycles))
	fig.Set("messages accepted (250)", accepted)
	fig.Set("lost", lost)
	fig.Set("duplicates", dups)
	fig.Set("accepted-but-unacknowledged", unack)
	fig.Set("unacknowledged but delivered", unackDelivered)
	fig.Set("refused or unfinished", refused)
	fig.Set("refused but delivered", refusedDelivered)
	fig.Set("orphan bodies removed by the reconciler", removed)
	fig.Set("spool files left", spoolLeft)
	fig.Set("load time", loadTime.Round(time.Second))
	fig.Log(t, "kill -9")

	if survived != cycles {
		t.Errorf("facteur survived %d of %d cycles", survived, cycles)
	}
	if accepted < cycles {
		t.Errorf("only %d messages accepted in %d cycles: the load did not get through", accepted, cycles)
	}
	if lost != 0 {
		if len(lostIDs) > 20 {
			lostIDs = lostIDs[:20]
		}
		t.Errorf("%d messages that got a 250 were not delivered to every recipient: %v", lost, lostIDs)
	}
	if spoolLeft != 0 {
		t.Errorf("spool files left after the queue drained: %v", names)
	}
	if held != 0 {
		t.Errorf("%d messages held", held)
	}
}

// sendLoop is one client: from its own source address, it keeps a session
// open and sends messages until stop, reconnecting whenever facteur dies.
// Message-IDs are <d-TAG-CLIENT-SEQ@durability.test>, with tag() read for
// each message (the phase of a test).
func sendLoop(client int, addr string, tag func() string, led *ledger, stop <-chan struct{}) {
	from := fmt.Sprintf("127.0.1.%d", client+1)
	seq := 0
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := harness.Dial(addr, from)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		code, text, err := c.Reply()
		if err == nil {
			led.sawCodes([]int{code}, text)
		}
		if err != nil || code != 220 {
			c.Close()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		code, text, err = c.Cmd("EHLO client" + strconv.Itoa(client) + ".test")
		if err == nil {
			led.sawCodes([]int{code}, text)
		}
		if err != nil || code != 250 {
			c.Close()
			continue
		}
		for {
			select {
			case <-stop:
				c.Cmd("QUIT") //nolint:errcheck
				c.Close()
				return
			default:
			}
			seq++
			id := fmt.Sprintf("<d-%s-%d-%d@durability.test>", tag(), client, seq)
			var rcpts []string
			localRcpt := localBoxes[(client+seq)%len(localBoxes)] + "@example.test"
			remoteRcpt := fmt.Sprintf("r%d@remote.test", client)
			switch seq % 3 {
			case 0:
				rcpts = []string{localRcpt}
			case 1:
				rcpts = []string{remoteRcpt}
			default:
				rcpts = []string{localRcpt, remoteRcpt}
			}
			sender := fmt.Sprintf("sender%d@client.test", client)
			out, codes, err := c.Send(sender, rcpts, harness.Message(sender, rcpts[0], id, "durability "+id))
			led.record(id, rcpts, out)
			errText := ""
			if err != nil {
				errText = err.Error()
			}
			led.sawCodes(codes, errText)
			if err != nil {
				c.Close()
				if out == harness.Rejected || len(codes) > 0 && codes[len(codes)-1] >= 400 {
					time.Sleep(100 * time.Millisecond) // refused: do not hammer
				}
				break
			}
			c.Conn.SetDeadline(time.Now().Add(30 * time.Second))
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// expireLeases makes the leases of a killed process run out now, as they
// would 10 minutes later; facteur must not be running.
func expireLeases(t *testing.T, db *storetest.DB) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(),
		`UPDATE queue_recipient SET lease_expires_at = now() - interval '1 second' WHERE status = 'delivering'`); err != nil {
		t.Fatal(err)
	}
}

// backdateSpool sets the modification time of every file in the spool to
// age ago.
func backdateSpool(t *testing.T, dir string, age time.Duration) {
	t.Helper()
	_, names := harness.CountFiles(t, dir)
	then := time.Now().Add(-age)
	for _, n := range names {
		if err := os.Chtimes(filepath.Join(dir, n), then, then); err != nil {
			t.Fatal(err)
		}
	}
}
