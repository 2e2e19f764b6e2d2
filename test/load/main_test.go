// Package load is facteur's load suite (issue 5, FACTEUR_LONG=1): hundreds
// of idle and slow clients from many loopback addresses, held by a separate
// process (this test binary re-executed as a helper), while a legitimate
// client is served; per-address connection caps; and 1,000 connect and
// disconnect cycles after which facteur's goroutines and file descriptors
// are back to their baseline.
package load

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/facteur/facteur/test/harness"
)

// Environment of the helper process.
const (
	helperEnv   = "FACTEUR_LOAD_HELPER" // "1": run as the helper
	helperAddr  = "FACTEUR_LOAD_ADDR"   // facteur's SMTP address
	helperIPs   = "FACTEUR_LOAD_IPS"    // how many source addresses (127.0.5.1 …)
	helperPerIP = "FACTEUR_LOAD_PER_IP" // connections per source address
	helperHold  = "FACTEUR_LOAD_HOLD"   // how long to hold them (Go duration)
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(loadHelper())
	}
	os.Exit(harness.Main(m))
}

// loadHelper opens IPs × PER_IP connections to ADDR, each from its source
// address in 127.0.5.0/24, reads each greeting, and holds them for HOLD:
// even-numbered ones idle, odd-numbered ones sending "NOOP\r\n" one byte
// every 10 seconds (a slow client, well inside the server's timeouts). It
// prints "READY <open> <refused>" once every connection is greeted (or
// refused), then exits when HOLD has passed or stdin closes.
func loadHelper() int {
	addr := os.Getenv(helperAddr)
	ips, _ := strconv.Atoi(os.Getenv(helperIPs))
	per, _ := strconv.Atoi(os.Getenv(helperPerIP))
	hold, err := time.ParseDuration(os.Getenv(helperHold))
	if addr == "" || ips <= 0 || ips > 250 || per <= 0 || err != nil {
		fmt.Fprintln(os.Stderr, "load helper: bad environment")
		return 2
	}
	var open, refused atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := 0; i < ips*per; i++ {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			from := fmt.Sprintf("127.0.5.%d", i%ips+1)
			d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				refused.Add(1)
				return
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || len(line) < 4 || line[:4] != "220 " {
				refused.Add(1)
				c.Close()
				return
			}
			c.SetReadDeadline(time.Time{})
			open.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	fmt.Printf("READY %d %d\n", open.Load(), refused.Load())
	stop := make(chan struct{})
	go func() {
		b := make([]byte, 1)
		os.Stdin.Read(b) //nolint:errcheck // EOF or anything: stop
		close(stop)
	}()
	deadline := time.After(hold)
	// The slow ones: one byte of "NOOP\r\n" every 10 s.
	const noop = "NOOP\r\n"
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	pos := 0
	for {
		select {
		case <-stop:
			return 0
		case <-deadline:
			return 0
		case <-tick.C:
			for i, c := range conns {
				if i%2 == 1 {
					c.SetWriteDeadline(time.Now().Add(time.Second))
					c.Write([]byte{noop[pos%len(noop)]}) //nolint:errcheck
				}
			}
			pos++
		}
	}
}
