package store

import (
	"context"
	"slices"
	"sync"
	"time"
)

// groupCommit shares transactions among concurrent calls (group commit,
// bench/PROFILING.md): a call that finds fewer than maxRunning transactions
// of the group running starts one at once; calls that arrive while they run
// wait, and go together into the next one. Each call returns only once the
// transaction that holds its work has its outcome. Enqueue and Settle use
// it: one statement per table for all calls, one COMMIT, so one WAL flush
// and one pooled connection for all of them.
//
// The zero value is ready to use; the limits come with each call.
type groupCommit[T any] struct {
	mu      sync.Mutex
	pending []*groupCall[T]
	running int
}

// groupLimits bound the transactions of a groupCommit.
type groupLimits struct {
	running int // transactions of the group at once
	calls   int // calls in one transaction
	weight  int // summed weights in one transaction (beyond one call's)
}

// groupCall is one call waiting in a groupCommit.
type groupCall[T any] struct {
	ctx    context.Context
	key    string // only calls with the same key share a transaction
	weight int    // rows, for maxWeight
	item   T
	taken  bool // in a transaction (guarded by groupCommit.mu)
	done   chan error
}

// do queues item and waits for its outcome. run commits the calls of one
// transaction and sends each call's outcome on its done channel (buffered:
// it never blocks). Until its call is taken into a transaction, ctx ending
// makes do return ctx's error at once, nothing done; once it is taken, do
// waits for the outcome whatever ctx says (it cannot be taken back).
func (g *groupCommit[T]) do(ctx context.Context, lim groupLimits, key string, weight int, item T, run func(batch []*groupCall[T])) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := &groupCall[T]{ctx: ctx, key: key, weight: weight, item: item, done: make(chan error, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, c)
	start := g.running < lim.running
	if start {
		g.running++
	}
	g.mu.Unlock()
	if start {
		go g.runAll(lim, run)
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
	}
	g.mu.Lock()
	if !c.taken {
		g.pending = slices.DeleteFunc(g.pending, func(x *groupCall[T]) bool { return x == c })
		g.mu.Unlock()
		return ctx.Err()
	}
	g.mu.Unlock()
	return <-c.done
}

// runAll runs transactions of waiting calls until none is left.
func (g *groupCommit[T]) runAll(lim groupLimits, run func(batch []*groupCall[T])) {
	for {
		batch := g.take(lim)
		if batch == nil {
			return
		}
		run(batch)
	}
}

// take takes the calls of the next transaction out of pending: the oldest
// call and those after it with its key, within the limits. It returns nil
// (and counts its runner out) when nothing waits.
func (g *groupCommit[T]) take(lim groupLimits) []*groupCall[T] {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) == 0 {
		g.running--
		return nil
	}
	key := g.pending[0].key
	var batch []*groupCall[T]
	weight := 0
	rest := g.pending[:0]
	for _, c := range g.pending {
		if c.key != key || len(batch) >= lim.calls || (len(batch) > 0 && weight+c.weight > lim.weight) {
			rest = append(rest, c)
			continue
		}
		c.taken = true
		weight += c.weight
		batch = append(batch, c)
	}
	clear(g.pending[len(rest):])
	g.pending = rest
	return batch
}

// groupContext returns the context for the statements of a transaction of
// several calls: not any one call's context (one client going away must not
// fail the others), but the latest of their deadlines, or fallback from now
// when one of them has none.
func groupContext[T any](batch []*groupCall[T], fallback time.Duration) (context.Context, context.CancelFunc) {
	var d time.Time
	for _, c := range batch {
		cd, ok := c.ctx.Deadline()
		if !ok {
			return context.WithTimeout(context.Background(), fallback)
		}
		if cd.After(d) {
			d = cd
		}
	}
	return context.WithDeadline(context.Background(), d)
}
