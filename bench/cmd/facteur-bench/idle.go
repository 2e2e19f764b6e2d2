package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// cmdIdle opens many SMTP connections from many loopback source addresses,
// reads each banner, holds them all open for a while and reports the
// server's memory. The per-IP connection cap of the server (facteur's
// default is 50) is respected by spreading the connections over -sources
// addresses.
func cmdIdle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	addr := fs.String("addr", "", "SMTP address (loopback)")
	n := fs.Int("n", 10000, "connections")
	sources := fs.Int("sources", 250, "source addresses <src-net>.<x>.<y>")
	srcNet := fs.String("src-net", "127.0", "first two octets of the source addresses")
	pid := fs.Int("pid", 0, "server pid (its tree's memory is measured)")
	hold := fs.Duration("hold", 5*time.Second, "hold every connection this long once all are open")
	parallel := fs.Int("parallel", 200, "connections being opened at once")
	out := fs.String("out", "", "append the result (one JSON line) to this file")
	label := fs.String("label", "facteur", "label")
	fs.Parse(args)
	if *addr == "" || *sources < 1 {
		return errors.New("idle: -addr is required")
	}
	// Go raises the soft RLIMIT_NOFILE to the hard limit at start; say so
	// when that is still too low.
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < uint64(*n)+100 {
		return fmt.Errorf("idle: RLIMIT_NOFILE is %d, need more than %d (raise ulimit -n)", rl.Cur, *n)
	}

	before := treeMem(*pid, true)
	var (
		mu      sync.Mutex
		conns   []net.Conn
		ok, bad atomic.Int64
		errs    []string
	)
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range *n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			// source 127.0.(2+x).(1+y): keep away from 127.0.0.1 and the
			// load client's 127.0.1.x.
			s := i % *sources
			src := net.ParseIP(fmt.Sprintf("%s.%d.%d", *srcNet, 2+s/250, 1+s%250))
			d := net.Dialer{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
			c, err := d.Dial("tcp", *addr)
			if err == nil {
				c.SetReadDeadline(time.Now().Add(60 * time.Second)) //nolint:errcheck
				var line string
				line, err = bufio.NewReader(c).ReadString('\n')
				c.SetReadDeadline(time.Time{}) //nolint:errcheck
				if err == nil && !strings.HasPrefix(line, "220") {
					err = fmt.Errorf("banner %q", strings.TrimSpace(line))
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				bad.Add(1)
				if len(errs) < 10 {
					errs = append(errs, err.Error())
				}
				if c != nil {
					c.Close()
				}
				return
			}
			ok.Add(1)
			conns = append(conns, c)
		})
	}
	wg.Wait()
	openSecs := time.Since(t0).Seconds()
	time.Sleep(*hold)
	held := treeMem(*pid, true)
	_, procs := treeTicks(*pid)
	threads := 0
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", *pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "Threads:") {
				fmt.Sscan(strings.TrimPrefix(l, "Threads:"), &threads)
			}
		}
	}
	// Still open? A server that dropped idle connections would show here.
	alive := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond)) //nolint:errcheck
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				alive++
			}
		}
	}
	for _, c := range conns {
		c.Close()
	}
	r := map[string]any{
		"label": *label, "connections": *n, "sources": *sources, "banner_ok": ok.Load(), "failed": bad.Load(),
		"alive_after_hold": alive, "open_s": openSecs, "hold_s": hold.Seconds(),
		"rss_before_kib": before.rss, "rss_held_kib": held.rss, "pss_held_kib": held.pss, "hwm_kib": held.hwm,
		"rss_per_conn_kib": float64(held.rss-min(before.rss, held.rss)) / float64(max(1, ok.Load())),
		"procs":            procs, "threads": threads, "errors": errs,
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		f.Write(append(b, '\n')) //nolint:errcheck
	}
	if bad.Load() > 0 {
		fmt.Fprintf(os.Stderr, "idle: %d of %d connections failed: %v\n", bad.Load(), *n, errs)
	}
	return nil
}
