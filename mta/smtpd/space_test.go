package smtpd_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/smtpd"
)

// TestFreeSpaceCheck pins Postfix's queue_minfree rule: refused when the
// free space is at most the minimum, or the announced size does not fit
// above it or in half of what is free; a failed statfs refuses too.
func TestFreeSpaceCheck(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		free    uint64
		err     error
		minFree uint64
		size    int64
		ok      bool
	}{
		{free: 500 * mib, minFree: 100 * mib, size: 0, ok: true},
		{free: 500 * mib, minFree: 100 * mib, size: 50 * mib, ok: true},
		{free: 100 * mib, minFree: 100 * mib, size: 0, ok: false},
		{free: 99 * mib, minFree: 100 * mib, size: 0, ok: false},
		{free: 150 * mib, minFree: 100 * mib, size: 50 * mib, ok: false},
		{free: 150 * mib, minFree: 100 * mib, size: 49 * mib, ok: true},
		{free: 100 * mib, minFree: 0, size: 50 * mib, ok: false}, // half of what is free
		{free: 100 * mib, minFree: 0, size: 0, ok: true},
		{free: 0, minFree: 0, size: 0, ok: false},
		{free: 500 * mib, minFree: 100 * mib, size: -1, ok: true},
		{err: errors.New("statfs: input/output error"), minFree: 100 * mib, ok: false},
	}
	for _, tt := range tests {
		check := smtpd.FreeSpaceCheck(func() (uint64, error) { return tt.free, tt.err }, tt.minFree)
		err := check(tt.size)
		if (err == nil) != tt.ok {
			t.Errorf("free %d, min %d, size %d, err %v: got %v, want ok=%v", tt.free, tt.minFree, tt.size, tt.err, err, tt.ok)
			continue
		}
		var rep envelope.Reply
		if err != nil && (!errors.As(err, &rep) || rep.String() != envelope.StorageFull().String()) {
			t.Errorf("free %d, min %d, size %d: error %v does not carry 452 4.3.1", tt.free, tt.minFree, tt.size, err)
		}
	}
}

// TestSpaceCheckAtMail: a full spool refuses MAIL with 452 4.3.1 before the
// client sends anything, with SIZE= handed to the check (0 without it), and
// mail flows again in the same session when space returns.
func TestSpaceCheckAtMail(t *testing.T) {
	w := newWorld(t)
	var full atomic.Bool
	var sizes []int64
	sizeCh := make(chan int64, 10)
	r := w.start(smtpd.Options{SpaceCheck: func(size int64) error {
		sizeCh <- size
		if full.Load() {
			return fmt.Errorf("%w: test spool full", envelope.StorageFull())
		}
		return nil
	}}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	full.Store(true)
	c.cmd("MAIL FROM:<someone@foreign.test> SIZE=12345", "452 4.3.1 Insufficient system storage")
	sizes = append(sizes, <-sizeCh)
	c.cmd("MAIL FROM:<someone@foreign.test>", "452 4.3.1 ")
	sizes = append(sizes, <-sizeCh)
	c.cmd("RCPT TO:<alice@example.test>", "503 5.5.1 ")
	c.cmd("RSET", "250 ")
	if n := w.spoolFiles(); n != 0 {
		t.Errorf("%d spool files", n)
	}

	full.Store(false)
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	sizes = append(sizes, <-sizeCh)
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write(msgBody + ".\r\n")
	c.expect("250 2.0.0 Ok: queued as ")
	if n := w.queued(); n != 1 {
		t.Errorf("%d messages queued, want 1", n)
	}
	if fmt.Sprint(sizes) != "[12345 0 0]" {
		t.Errorf("SpaceCheck saw sizes %v, want [12345 0 0]", sizes)
	}
	if !strings.Contains(w.logs.String(), "452 4.3.1") {
		t.Errorf("the refusal is not logged:\n%s", w.logs.String())
	}
}
