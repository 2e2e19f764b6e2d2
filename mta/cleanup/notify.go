package cleanup

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/facteur/facteur/store"
)

// notifier coalesces cross-process wake-ups: however many messages are
// queued, it sends at most one NOTIFY facteur_queue per interval (DESIGN.md,
// "NOTIFY is a hint, not a guarantee"), from its own goroutine, which runs
// only while there is something to send.
type notifier struct {
	st       *store.Store
	node     string
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	pending bool // a NOTIFY is wanted
	running bool // the sending goroutine is alive
	last    time.Time
}

// kick asks for a NOTIFY; it never blocks.
func (n *notifier) kick() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pending = true
	if !n.running {
		n.running = true
		go n.loop()
	}
}

func (n *notifier) loop() {
	for {
		n.mu.Lock()
		if !n.pending {
			n.running = false
			n.mu.Unlock()
			return
		}
		wait := time.Until(n.last.Add(n.interval))
		n.mu.Unlock()
		if wait > 0 {
			time.Sleep(wait)
		}
		n.mu.Lock()
		n.pending = false
		n.last = time.Now()
		n.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.st.NotifyQueue(ctx, n.node); err != nil {
			// A hint only: the queue managers poll as well.
			n.log.Warn("queue notify failed", "err", err)
		}
		cancel()
	}
}
