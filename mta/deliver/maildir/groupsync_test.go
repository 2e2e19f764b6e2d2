package maildir

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/deliver"
)

// Callers that arrive while an fsync runs share the next one, and each
// returns only after an fsync that started after its call.
func TestDirSyncSharesFsyncs(t *testing.T) {
	var d dirSync
	d.cond.L = &d.mu
	var fsyncs atomic.Int64
	var mu sync.Mutex
	var starts []time.Time
	fsync := func() error {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		fsyncs.Add(1)
		time.Sleep(20 * time.Millisecond)
		return nil
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			called := time.Now()
			if err := d.sync(fsync); err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, s := range starts {
				if !s.Before(called) {
					return
				}
			}
			t.Errorf("returned without an fsync started after the call")
		})
	}
	wg.Wait()
	if n := fsyncs.Load(); n > 4 {
		t.Errorf("%d fsyncs for 20 concurrent callers; want them shared", n)
	}
}

// A failed fsync fails the callers that needed it; the next success clears
// it.
func TestDirSyncReportsFailure(t *testing.T) {
	var d dirSync
	d.cond.L = &d.mu
	boom := errors.New("boom")
	if err := d.sync(func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("sync = %v; want boom", err)
	}
	if err := d.sync(func() error { return nil }); err != nil {
		t.Fatalf("sync after a failure = %v", err)
	}
}

// Many recipients of one delivery are written at once, each into its own
// Maildir, duplicates once.
func TestManyRecipientsInParallel(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, nil)
	var rcpts []deliver.Recipient
	for i := range 30 {
		rcpts = append(rcpts, rcpt(fmt.Sprintf("u%02d@example.com", i%25), nil))
	}
	res := a.Deliver(context.Background(), "", message(t, "alice@example.net", testBody), rcpts)
	for i, r := range res {
		if r.Status != deliver.Delivered {
			t.Errorf("recipient %d: %+v", i, r)
		}
	}
	for i := range 25 {
		if names := newFiles(t, fmt.Sprintf("%s/example.com/u%02d", root, i)); len(names) != 1 {
			t.Errorf("u%02d: %d files in new/, want 1", i, len(names))
		}
	}
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	if len(a.syncs) != 0 {
		t.Errorf("%d group syncs left after the deliveries", len(a.syncs))
	}
}
