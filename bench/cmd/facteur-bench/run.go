package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

// result is one run of one MTA for one case: a line of results.jsonl.
type result struct {
	MTA      string `json:"mta"`
	Case     string `json:"case"`   // mailbox or relay
	Loader   string `json:"loader"` // go or smtp-source
	Sessions int    `json:"sessions"`
	Size     int    `json:"size"`
	N        int    `json:"n"`
	Rep      int    `json:"rep"`
	Label    string `json:"label"`
	Start    string `json:"start"`

	Sent      int  `json:"sent"`      // 250 replies (go loader) or n (smtp-source)
	Failed    int  `json:"failed"`    // messages not accepted (go loader)
	Delivered int  `json:"delivered"` // files found
	Complete  bool `json:"complete"`  // every expected message delivered before the timeout

	ReceiveSecs float64 `json:"receive_s"`
	E2ESecs     float64 `json:"e2e_s"` // load start to the last delivered file's mtime
	ReceiveRate float64 `json:"receive_rate"`
	E2ERate     float64 `json:"e2e_rate"`

	// Accept-to-delivered latency (go loader only): delivered file mtime
	// minus the time the client read the 250 to DATA. -1 when not measured.
	LatP50ms float64 `json:"lat_p50_ms"`
	LatP99ms float64 `json:"lat_p99_ms"`
	LatMaxms float64 `json:"lat_max_ms"`

	MTACPUSecs  float64            `json:"mta_cpu_s"`
	PGCPUSecs   float64            `json:"pg_cpu_s"`
	MTACPUms    float64            `json:"mta_cpu_ms_per_msg"`
	PGCPUms     float64            `json:"pg_cpu_ms_per_msg"`
	MTAProcs    int                `json:"mta_procs"`             // processes in the MTA's tree at the end
	PeakRSSKiB  uint64             `json:"peak_rss_kib"`          // max over samples of the tree's summed VmRSS
	PeakPSSKiB  uint64             `json:"peak_pss_kib"`          // max over samples of the tree's summed Pss
	SumHWMKiB   uint64             `json:"sum_hwm_kib"`           // summed VmHWM of the live tree at the end (reset at start)
	SinkCPUSecs float64            `json:"sink_cpu_s"`            // relay case: smtp-sink's CPU (not in the MTA figures)
	PGCPUBy     map[string]float64 `json:"pg_cpu_s_by,omitempty"` // by PostgreSQL process kind (backend <db>, walwriter, autovacuum worker, exited, …)
	Clock       string             `json:"clock"`                 // where delivery times come from: inotify, mtime, or mixed
	Errors      []string           `json:"errors,omitempty"`
}

type runOpts struct {
	mta, kase, loader, addr, label string
	sessions, n, size, rep         int
	seed                           uint64
	mailboxes                      string // mailboxes.tsv (mailbox case)
	relayDomain                    string // relay case: recipients r<k>@relayDomain
	root                           string // Maildir root, or the smtp-sink dump directory (relay)
	mtaPid, pgPid, sinkPid         int
	srcNet                         string // go loader: bind sessions to srcNet.1 … srcNet.250
	timeout, settle, stall         time.Duration
	smtpSource, raw                string
}

func cmdRun(args []string) error {
	var o runOpts
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&o.mta, "mta", "", "postfix or facteur (a label)")
	fs.StringVar(&o.kase, "case", "mailbox", "mailbox (virtual Maildir delivery) or relay (to smtp-sink)")
	fs.StringVar(&o.loader, "loader", "go", "go (random recipients, latency) or smtp-source")
	fs.StringVar(&o.addr, "addr", "", "the MTA's SMTP address (loopback)")
	fs.StringVar(&o.label, "label", "", "run label written into every message")
	fs.IntVar(&o.sessions, "sessions", 1, "concurrent SMTP sessions")
	fs.IntVar(&o.n, "n", 200, "messages")
	fs.IntVar(&o.size, "size", 4096, "message body bytes (headers not counted, as smtp-source -l)")
	fs.IntVar(&o.rep, "rep", 1, "repetition number (a label)")
	fs.Uint64Var(&o.seed, "seed", 1, "recipient choice seed")
	fs.StringVar(&o.mailboxes, "mailboxes", "", "mailboxes.tsv from gen")
	fs.StringVar(&o.relayDomain, "relay-domain", "relay.bench.test", "relay case: recipient domain")
	fs.StringVar(&o.root, "root", "", "Maildir root (mailbox case) or smtp-sink dump directory (relay case)")
	fs.IntVar(&o.mtaPid, "mta-pid", 0, "root pid of the MTA (Postfix master, facteur)")
	fs.IntVar(&o.pgPid, "pg-pid", 0, "PostgreSQL postmaster pid")
	fs.IntVar(&o.sinkPid, "sink-pid", 0, "smtp-sink pid (relay case)")
	fs.StringVar(&o.srcNet, "src-net", "127.0.1", "go loader: source addresses <src-net>.1-250")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up waiting for deliveries after this")
	fs.DurationVar(&o.stall, "stall", time.Minute, "give up when no delivery happened for this long")
	fs.DurationVar(&o.settle, "settle", time.Second, "wait after the last delivery before the final CPU reading")
	fs.StringVar(&o.smtpSource, "smtp-source", "smtp-source", "smtp-source binary")
	fs.StringVar(&o.raw, "raw", "", "directory for raw outputs (smtp-source output, per-message latencies)")
	out := fs.String("out", "", "append the result (one JSON line) to this file")
	fs.Parse(args)
	if o.addr == "" || o.root == "" || o.mta == "" {
		return errors.New("run: -mta, -addr and -root are required")
	}
	if o.kase == "mailbox" && o.mailboxes == "" {
		return errors.New("run: the mailbox case needs -mailboxes")
	}
	if o.label == "" {
		o.label = fmt.Sprintf("%s-%s-%s-s%d-z%d-r%d", o.mta, o.kase, o.loader, o.sessions, o.size, o.rep)
	}
	r, err := run(o)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	return nil
}

// target is one recipient with where its messages land.
type target struct {
	addr string
	dir  string // the directory whose entries are counted: <maildir>/new, or the dump directory
}

func run(o runOpts) (*result, error) {
	res := &result{MTA: o.mta, Case: o.kase, Loader: o.loader, Sessions: o.sessions, Size: o.size, N: o.n,
		Rep: o.rep, Label: o.label, LatP50ms: -1, LatP99ms: -1, LatMaxms: -1}

	// Recipients: message i goes to plan[i].
	var pool []target
	switch o.kase {
	case "mailbox":
		mbs, err := readMailboxes(o.mailboxes)
		if err != nil {
			return nil, err
		}
		for _, m := range mbs {
			pool = append(pool, target{addr: m[0], dir: filepath.Join(o.root, m[1], "new")})
		}
		if err := cleanMaildirs(o.root, mbs); err != nil {
			return nil, err
		}
	case "relay":
		for k := range 10000 {
			pool = append(pool, target{addr: fmt.Sprintf("r%05d@%s", k+1, o.relayDomain), dir: o.root})
		}
		if err := cleanDir(o.root); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown case %q", o.kase)
	}
	rng := rand.New(rand.NewPCG(o.seed, uint64(o.rep)))
	var plan []target
	var procs []sourceProc
	switch o.loader {
	case "go":
		plan = make([]target, o.n)
		for i := range plan {
			plan[i] = pool[rng.IntN(len(pool))]
		}
	case "smtp-source":
		// smtp-source sends every message of a process to one -t address:
		// run min(sessions, 10) processes, each with its own random
		// recipient and its share of sessions and messages.
		np := min(o.sessions, 10, o.n)
		for p := range np {
			sp := sourceProc{t: pool[rng.IntN(len(pool))], sessions: o.sessions / np, count: o.n / np}
			if p < o.sessions%np {
				sp.sessions++
			}
			if p < o.n%np {
				sp.count++
			}
			procs = append(procs, sp)
			for range sp.count {
				plan = append(plan, sp.t)
			}
		}
	default:
		return nil, fmt.Errorf("unknown loader %q", o.loader)
	}
	expect := map[string]int{}
	for _, t := range plan {
		expect[t.dir]++
	}

	// Delivery times: inotify events (mtimes are coarse: one kernel tick).
	var dirs []string
	for d := range expect {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	mask := uint32(syscall.IN_CREATE | syscall.IN_MOVED_TO)
	if o.kase == "relay" {
		mask = syscall.IN_CLOSE_WRITE
	}
	clock, err := watchDirs(dirs, mask)
	if err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("inotify: %v (delivery times from mtimes)", err))
	}

	// Measure.
	res.Start = time.Now().UTC().Format(time.RFC3339)
	resetHWM(o.mtaPid)
	mta0, _ := treeTicks(o.mtaPid)
	pg0, _ := treeTicks(o.pgPid)
	pgBy0 := treeTicksBy(o.pgPid)
	sink0, _ := treeTicks(o.sinkPid)
	stopSampler, peak := sampleMem(o.mtaPid, 250*time.Millisecond)

	t0 := time.Now()
	var accepts []int64 // unix ns of the 250 to DATA, by sequence; 0 = not accepted
	switch o.loader {
	case "go":
		var errs []string
		accepts, errs = loadGo(o, plan)
		res.Errors = append(res.Errors, errs...)
		for _, a := range accepts {
			if a != 0 {
				res.Sent++
			}
		}
		res.Failed = o.n - res.Sent
	case "smtp-source":
		errs := loadSmtpSource(o, procs)
		res.Errors = append(res.Errors, errs...)
		res.Sent = o.n
	}
	t1 := time.Now()
	res.ReceiveSecs = t1.Sub(t0).Seconds()
	res.ReceiveRate = float64(res.Sent) / res.ReceiveSecs

	// Wait until every accepted message is in a Maildir (or the sink).
	want := res.Sent
	if o.loader == "go" {
		// Only accepted messages can arrive.
		expect = map[string]int{}
		for i, t := range plan {
			if accepts[i] != 0 {
				expect[t.dir]++
			}
		}
	}
	got, complete, why := waitDelivered(expect, o.timeout, o.stall)
	res.Delivered, res.Complete = got, complete
	if !complete {
		res.Errors = append(res.Errors, fmt.Sprintf("%s: %d of %d delivered", why, got, want))
	}
	time.Sleep(o.settle)
	clock.stop()
	mta1, nprocs := treeTicks(o.mtaPid)
	pg1, _ := treeTicks(o.pgPid)
	pgBy1 := treeTicksBy(o.pgPid)
	sink1, _ := treeTicks(o.sinkPid)
	stopSampler()
	res.MTAProcs = nprocs
	res.MTACPUSecs = float64(mta1-mta0) / clockTicks
	res.PGCPUSecs = float64(pg1-pg0) / clockTicks
	res.PGCPUBy = map[string]float64{}
	for k, v := range pgBy1 {
		// A process gone since the first reading shows up under "exited".
		if d := float64(int64(v)-int64(pgBy0[k])) / clockTicks; d != 0 {
			res.PGCPUBy[k] = d
		}
	}
	res.SinkCPUSecs = float64(sink1-sink0) / clockTicks
	if res.Delivered > 0 {
		res.MTACPUms = 1000 * res.MTACPUSecs / float64(res.Delivered)
		res.PGCPUms = 1000 * res.PGCPUSecs / float64(res.Delivered)
	}
	p := peak()
	res.PeakRSSKiB, res.PeakPSSKiB = p.rss, p.pss
	res.SumHWMKiB = treeMem(o.mtaPid, false).hwm
	if nprocs == 1 {
		// One process (facteur): its VmHWM since the reset is the exact
		// peak, which sampling could miss.
		res.PeakRSSKiB = max(res.PeakRSSKiB, res.SumHWMKiB)
	}

	// Read back the delivered files: the last delivery and the latencies.
	lats, last, clocked, files, err := readDelivered(dirs, o.label, accepts, o.raw, clock)
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
	}
	switch {
	case clocked == files:
		res.Clock = "inotify"
	case clocked == 0:
		res.Clock = "mtime"
	default:
		res.Clock = fmt.Sprintf("mixed (%d of %d by inotify)", clocked, files)
	}
	if !last.IsZero() {
		res.E2ESecs = last.Sub(t0).Seconds()
		res.E2ERate = float64(res.Delivered) / res.E2ESecs
	}
	if len(lats) > 0 {
		slices.Sort(lats)
		res.LatP50ms = pct(lats, 50)
		res.LatP99ms = pct(lats, 99)
		res.LatMaxms = lats[len(lats)-1]
	}
	if len(res.Errors) > 10 {
		res.Errors = append(res.Errors[:10], fmt.Sprintf("… %d more", len(res.Errors)-10))
	}
	return res, nil
}

func pct(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func readMailboxes(path string) ([][2]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for _, l := range strings.Split(string(b), "\n") {
		if a, d, ok := strings.Cut(l, "\t"); ok {
			out = append(out, [2]string{a, d})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no mailboxes", path)
	}
	return out, nil
}

// cleanMaildirs empties new/, cur/ and tmp/ of every mailbox (the Maildirs
// themselves stay, as on a running host).
func cleanMaildirs(root string, mbs [][2]string) error {
	for _, m := range mbs {
		for _, sub := range []string{"new", "cur", "tmp"} {
			if err := cleanDir(filepath.Join(root, m[1], sub)); err != nil {
				return err
			}
		}
	}
	return nil
}

func cleanDir(dir string) error {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

func countEntries(dir string) int {
	f, err := os.Open(dir)
	if err != nil {
		return 0
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	n := 0
	for _, x := range names {
		if !strings.HasPrefix(x, ".") {
			n++
		}
	}
	return n
}

// waitDelivered polls the expected directories until each holds its count.
// Only directories still short are re-read, so polling costs little.
func waitDelivered(expect map[string]int, timeout, stall time.Duration) (int, bool, string) {
	have := map[string]int{}
	deadline := time.Now().Add(timeout)
	lastTotal, lastProgress := -1, time.Now()
	for {
		total, short := 0, 0
		for d, n := range expect {
			if have[d] < n {
				have[d] = countEntries(d)
			}
			total += min(have[d], n)
			if have[d] < n {
				short++
			}
		}
		if short == 0 {
			sum := 0
			for _, v := range have {
				sum += v
			}
			return sum, true, ""
		}
		if total != lastTotal {
			lastTotal, lastProgress = total, time.Now()
		}
		if time.Now().After(deadline) {
			return total, false, fmt.Sprintf("timeout after %s", timeout)
		}
		if time.Since(lastProgress) > stall {
			return total, false, fmt.Sprintf("no delivery for %s", stall)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readDelivered reads every file in dirs: when it arrived (its inotify
// event, else its mtime), and the X-Bench-Seq header that the go loader
// wrote, for the latency.
func readDelivered(dirs []string, label string, accepts []int64, raw string, clock *deliveryClock) (lats []float64, last time.Time, clocked, files int, _ error) {
	var w *bufio.Writer
	if raw != "" && accepts != nil {
		f, err := os.Create(filepath.Join(raw, label+".latency.tsv"))
		if err == nil {
			defer f.Close()
			w = bufio.NewWriter(f)
			defer w.Flush()
			fmt.Fprintln(w, "seq\taccept_unix_ns\tdelivered_unix_ns\tmtime_unix_ns\tlatency_ms")
		}
	}
	key := []byte("\nX-Bench-Seq: " + label + " ")
	buf := make([]byte, 32<<10)
	seen := map[int]bool{}
	var firstErr error
	for _, d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			continue
		}
		names, _ := f.Readdirnames(-1)
		f.Close()
		for _, n := range names {
			if strings.HasPrefix(n, ".") {
				continue
			}
			p := filepath.Join(d, n)
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
				continue
			}
			files++
			mtime := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
			mt := mtime
			if t, ok := clock.at(p); ok {
				mt = t
				clocked++
			}
			if mt.After(last) {
				last = mt
			}
			if accepts == nil {
				continue
			}
			fh, err := os.Open(p)
			if err != nil {
				continue
			}
			k, _ := io.ReadFull(fh, buf)
			fh.Close()
			i := bytes.Index(buf[:k], key)
			if i < 0 {
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: no X-Bench-Seq header of run %s", p, label)
				}
				continue
			}
			rest := buf[i+len(key) : k]
			if j := bytes.IndexAny(rest, "\r\n"); j >= 0 {
				rest = rest[:j]
			}
			seq, err := strconv.Atoi(string(rest))
			if err != nil || seq < 0 || seq >= len(accepts) || accepts[seq] == 0 {
				continue
			}
			if seen[seq] {
				continue // a duplicate delivery: the first copy counts
			}
			seen[seq] = true
			lat := float64(mt.UnixNano()-accepts[seq]) / 1e6
			lats = append(lats, lat)
			if w != nil {
				fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%.3f\n", seq, accepts[seq], mt.UnixNano(), mtime.UnixNano(), lat)
			}
		}
	}
	return lats, last, clocked, files, firstErr
}

// sampleMem samples the tree's summed RSS and PSS until stopped.
func sampleMem(root int, every time.Duration) (stop func(), peak func() memInfo) {
	var mu sync.Mutex
	var p memInfo
	done := make(chan struct{})
	var wg sync.WaitGroup
	take := func() {
		m := treeMem(root, true)
		mu.Lock()
		p.rss, p.pss = max(p.rss, m.rss), max(p.pss, m.pss)
		mu.Unlock()
	}
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			take()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() { close(done); wg.Wait(); take() }, func() memInfo { mu.Lock(); defer mu.Unlock(); return p }
}

// body returns a message body of size bytes on the wire: 76 characters and
// CRLF per line (the client turns LF into CRLF).
func body(size int) []byte {
	var b bytes.Buffer
	line := 0
	for b.Len()+line < size {
		n := min(76, size-b.Len()-line-2)
		if n <= 0 {
			break
		}
		for i := range n {
			b.WriteByte(byte('a' + (i+line)%26))
		}
		b.WriteByte('\n')
		line++ // the CR the client adds
	}
	return b.Bytes()
}

// loadGo sends plan[i] as message i over o.sessions connections (one
// message per transaction, the next MAIL on the same connection; a session
// reconnects after an error). It returns the accept times.
func loadGo(o runOpts, plan []target) ([]int64, []string) {
	accepts := make([]int64, len(plan))
	var next atomic.Int64
	var mu sync.Mutex
	var errs []string
	fail := func(err error) {
		mu.Lock()
		if len(errs) < 20 {
			errs = append(errs, err.Error())
		}
		mu.Unlock()
	}
	bd := body(o.size)
	var wg sync.WaitGroup
	for s := range o.sessions {
		wg.Go(func() {
			var c *smtp.Client
			defer func() {
				if c != nil {
					c.Quit() //nolint:errcheck
				}
			}()
			src := net.ParseIP(fmt.Sprintf("%s.%d", o.srcNet, s%250+1))
			for {
				i := int(next.Add(1) - 1)
				if i >= len(plan) {
					return
				}
				if c == nil {
					var err error
					if c, err = dial(o.addr, src); err != nil {
						fail(fmt.Errorf("session %d: %w", s, err))
						time.Sleep(100 * time.Millisecond)
						continue
					}
				}
				if err := sendOne(c, o.label, i, plan[i].addr, bd); err != nil {
					fail(fmt.Errorf("message %d to %s: %w", i, plan[i].addr, err))
					c.Close()
					c = nil
					continue
				}
				accepts[i] = time.Now().UnixNano()
			}
		})
	}
	wg.Wait()
	return accepts, errs
}

func dial(addr string, src net.IP) (*smtp.Client, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout = 5 * time.Minute
	c.SubmissionTimeout = 10 * time.Minute
	if err := c.Hello("bench-client.invalid"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

const benchSender = "bench@client.bench.invalid"

func sendOne(c *smtp.Client, label string, seq int, rcpt string, bd []byte) error {
	if err := c.Mail(benchSender, nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		c.Reset() //nolint:errcheck
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: <%s>\nTo: <%s>\nSubject: facteur-bench %s %d\nDate: %s\n"+
		"Message-ID: <%s.%d@client.bench.invalid>\nX-Bench-Seq: %s %d\nMIME-Version: 1.0\n"+
		"Content-Type: text/plain; charset=us-ascii\n\n",
		benchSender, rcpt, label, seq, time.Now().Format(time.RFC1123Z), label, seq, label, seq)
	if _, err := w.Write(bd); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// sourceProc is one smtp-source process: its recipient, sessions and count.
type sourceProc struct {
	t               target
	sessions, count int
}

func loadSmtpSource(o runOpts, procs []sourceProc) []string {
	var errs []string
	var wg sync.WaitGroup
	var mu sync.Mutex
	for p, sp := range procs {
		args := []string{"-d", "-s", strconv.Itoa(max(1, sp.sessions)), "-m", strconv.Itoa(sp.count),
			"-l", strconv.Itoa(o.size), "-f", benchSender, "-t", sp.t.addr, "-M", "bench-client.invalid",
			"-S", "facteur-bench " + o.label, o.addr}
		wg.Go(func() {
			cmd := exec.Command(o.smtpSource, args...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if o.raw != "" {
				os.WriteFile(filepath.Join(o.raw, fmt.Sprintf("%s.smtp-source.%d.txt", o.label, p)), //nolint:errcheck
					fmt.Appendf(nil, "$ %s %s\n%s(exit: %v)\n", o.smtpSource, strings.Join(args, " "), out.String(), err), 0o644)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("smtp-source %d: %v: %s", p, err, strings.TrimSpace(out.String())))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs
}
