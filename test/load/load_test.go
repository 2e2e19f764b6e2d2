package load

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/facteur/facteur/store/storetest"
	"github.com/facteur/facteur/test/harness"
)

// Sizes of the load; see README for a heavier manual run.
const (
	loadIPs   = 30 // source addresses of the helper (127.0.5.1 …)
	loadPerIP = 10 // connections per address: 300 held at once
	cycles    = 1000
	cycleIPs  = 100 // the cycles come from 127.0.7.1 … 127.0.7.100
)

// TestLoad runs a real `facteur serve` (default per-address limits: 50
// connections, 5 new ones a second with bursts of 50) and:
//
//  1. holds 300 idle and slow (1 byte / 10 s) connections from 30 source
//     addresses in a separate process, while a legitimate client from
//     another address sends mail: it must be served (its latency is
//     printed, and asserted against a generous 10 s only);
//  2. fills one address's connection cap: the next connection from it gets
//     421 4.7.0, and another address is unaffected;
//  3. makes 1,000 connect and disconnect cycles (greeting and QUIT, an
//     abrupt close, or a close before the greeting) from 100 addresses, and
//     then checks that facteur's goroutines (go_goroutines from its
//     metrics listener) and open file descriptors (/proc/<pid>/fd) return
//     to what they were before.
func TestLoad(t *testing.T) {
	harness.Long(t)
	db := storetest.New(t)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO domain (name) VALUES ('example.test')`,
		`INSERT INTO mailbox (address, password) VALUES ('alice@example.test', '{PLAIN}x')`,
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	f := harness.NewFacteur(t, harness.FacteurConfig{DatabaseURL: db.URL, Metrics: harness.FreeAddr(t)})
	f.Start()
	var fig harness.Figures

	// A first message warms up the pools.
	send := func(from, id string) time.Duration {
		t.Helper()
		start := time.Now()
		c := harness.MustDial(t, f.Cfg.SMTP, from)
		c.Expect(t, "220 ")
		c.MustCmd(t, "EHLO legit.test", "250 ")
		if out, _, err := c.Send("someone@foreign.test", []string{harness.Alice}, harness.Message("someone@foreign.test", harness.Alice, id, "load")); out != harness.Accepted {
			t.Fatalf("legitimate client: %v", err)
		}
		c.MustCmd(t, "QUIT", "221 ")
		return time.Since(start)
	}
	send("127.0.4.1", "<warm@load.test>")
	base := sample(t, f)
	t.Logf("baseline: %s", base)

	// 1. Idle and slow connections from a separate process.
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"=1", helperAddr+"="+f.Cfg.SMTP,
		fmt.Sprintf("%s=%d", helperIPs, loadIPs), fmt.Sprintf("%s=%d", helperPerIP, loadPerIP), helperHold+"=2m")
	stdin, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	helperDone := make(chan struct{})
	go func() { helper.Wait(); close(helperDone) }() //nolint:errcheck
	t.Cleanup(func() {
		helper.Process.Kill()
		<-helperDone
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, stdout) //nolint:errcheck
	}()
	var open, refused int
	select {
	case line := <-ready:
		if _, err := fmt.Sscanf(line, "READY %d %d", &open, &refused); err != nil {
			t.Fatalf("helper: %q", line)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the helper did not open its connections within 90 s")
	}
	if open < loadIPs*loadPerIP*9/10 {
		t.Errorf("the helper holds %d connections (%d refused), want about %d", open, refused, loadIPs*loadPerIP)
	}
	during := sample(t, f)
	var lat []time.Duration
	for i := range 5 {
		lat = append(lat, send("127.0.4.2", fmt.Sprintf("<during%d@load.test>", i)).Round(time.Millisecond))
		time.Sleep(2 * time.Second)
	}
	// 12 s have passed: each slow client has sent a byte or two.
	for _, l := range lat {
		if l > 10*time.Second {
			t.Errorf("the legitimate client took %s under load", l)
		}
	}
	stdin.Close()
	select {
	case <-helperDone:
	case <-time.After(30 * time.Second):
		t.Fatal("the helper did not exit")
	}
	fig.Set("idle and slow connections held", open)
	fig.Set("refused", refused)
	fig.Set("goroutines/fds during", fmt.Sprintf("%.0f/%d", during.goroutines, during.fds))
	fig.Set("legitimate latency", lat)
	after1 := settle(t, f, base, 10, 30*time.Second)
	fig.Set("goroutines/fds after the helper left", fmt.Sprintf("%.0f/%d (baseline %.0f/%d)", after1.goroutines, after1.fds, base.goroutines, base.fds))

	// 2. The per-address cap.
	var capped []*harness.Client
	for i := 0; i < 50; i++ {
		c := harness.MustDial(t, f.Cfg.SMTP, "127.0.6.1")
		c.Expect(t, "220 ")
		capped = append(capped, c)
	}
	over := harness.MustDial(t, f.Cfg.SMTP, "127.0.6.1")
	over.Expect(t, "421 4.7.0 ")
	other := harness.MustDial(t, f.Cfg.SMTP, "127.0.6.2")
	other.Expect(t, "220 ")
	other.MustCmd(t, "QUIT", "221 ")
	for _, c := range capped {
		c.Close()
	}
	fig.Set("per-address cap", "50 held, 51st got 421 4.7.0, another address 220")

	// 3. Connect and disconnect cycles.
	base2 := settle(t, f, base, 10, 30*time.Second)
	var ok, refusedCycles, failed atomic.Int64
	var wg sync.WaitGroup
	next := atomic.Int64{}
	start := time.Now()
	for range 20 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= cycles {
					return
				}
				from := fmt.Sprintf("127.0.7.%d", i%cycleIPs+1)
				c, err := harness.Dial(f.Cfg.SMTP, from)
				if err != nil {
					failed.Add(1)
					continue
				}
				switch i % 3 {
				case 0: // polite
					code, _, err := c.Reply()
					switch {
					case err == nil && code == 220:
						if code, _, err := c.Cmd("QUIT"); err != nil || code != 221 {
							failed.Add(1)
						} else {
							ok.Add(1)
						}
					case err == nil && code == 421:
						refusedCycles.Add(1)
					default:
						failed.Add(1)
					}
				case 1: // greeted, then gone
					c.Reply() //nolint:errcheck
					ok.Add(1)
				default: // gone before the greeting
					ok.Add(1)
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	after2 := settle(t, f, base2, 5, 30*time.Second)
	fig.Set("connect/disconnect cycles", fmt.Sprintf("%d in %s (%d refused by the rate limit, %d failed)", cycles, took.Round(time.Millisecond), refusedCycles.Load(), failed.Load()))
	fig.Set("goroutines/fds after the cycles", fmt.Sprintf("%.0f/%d (before %.0f/%d)", after2.goroutines, after2.fds, base2.goroutines, base2.fds))
	fig.Log(t, "load")
	if failed.Load() > 0 {
		t.Errorf("%d cycles failed", failed.Load())
	}
	f.Stop()
}

type usage struct {
	goroutines float64
	fds        int
}

func (u usage) String() string { return fmt.Sprintf("%.0f goroutines, %d fds", u.goroutines, u.fds) }

func sample(t *testing.T, f *harness.Facteur) usage {
	t.Helper()
	g, err := f.Metric("go_goroutines")
	if err != nil {
		t.Fatalf("go_goroutines: %v", err)
	}
	n, err := f.FDs()
	if err != nil {
		t.Fatal(err)
	}
	return usage{g, n}
}

// settle waits until goroutines and fds are within slack of base, and
// fails t if they are not within the time given.
func settle(t *testing.T, f *harness.Facteur, base usage, slack int, within time.Duration) usage {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		u := sample(t, f)
		if u.goroutines <= base.goroutines+float64(slack) && u.fds <= base.fds+slack {
			return u
		}
		if time.Now().After(deadline) {
			t.Errorf("not back to the baseline within %s: %s, baseline %s (slack %d)", within, u, base, slack)
			return u
		}
		time.Sleep(200 * time.Millisecond)
	}
}
