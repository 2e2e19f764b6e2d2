package spool

import (
	"os"
	"sync"
)

// dirSyncer shares fsyncs of one directory among concurrent callers (group
// sync). The guarantee: sync returns nil only after an fsync of the directory
// that started after sync was called has succeeded, so every rename the caller
// made before calling sync is durable.
//
// At most one fsync runs at a time. Syncs are numbered in the order they
// start; a caller that arrives while sync number n runs needs sync n+1 or a
// later one, because n may have started before its rename. Whoever finds no
// sync running starts the next one, so each caller runs at most one fsync and
// nobody waits behind more than two.
type dirSyncer struct {
	f *os.File // the directory, open for the lifetime of the Spool

	mu        sync.Mutex
	cond      sync.Cond // signalled (Broadcast) when a sync completes
	running   bool
	started   uint64 // number of the last sync started
	completed uint64 // number of the last sync completed
	lastOK    uint64 // number of the last sync that succeeded
	lastErr   error  // error of the last sync that failed

	fsync func(*os.File) error // for tests; nil means f.Sync
}

func (d *dirSyncer) init(f *os.File) {
	d.f = f
	d.cond.L = &d.mu
}

// sync waits for an fsync of the directory that starts after it is called.
func (d *dirSyncer) sync() error {
	d.mu.Lock()
	need := d.started + 1
	for d.completed < need {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		d.started++
		n := d.started
		d.mu.Unlock()
		err := d.do()
		d.mu.Lock()
		d.running = false
		d.completed = n
		if err == nil {
			d.lastOK = n
		} else {
			d.lastErr = err
		}
		d.cond.Broadcast()
	}
	// Syncs need..completed all started after the call; one success among
	// them is enough.
	var err error
	if d.lastOK < need {
		err = d.lastErr
	}
	d.mu.Unlock()
	return err
}

func (d *dirSyncer) do() error {
	if d.fsync != nil {
		return d.fsync(d.f)
	}
	return d.f.Sync()
}
