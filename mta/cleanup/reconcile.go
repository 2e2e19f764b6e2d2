package cleanup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
)

// MinReconcileAge is the least age at which Reconcile treats a spool file as
// settled. An enqueue renames its file into place and then spends at most
// DBTimeout before COMMIT and the store's 30 s bound on COMMIT itself, so a
// younger file may belong to an enqueue still in flight.
const MinReconcileAge = 5 * time.Minute

// ReconcileStats counts what one Reconcile pass did.
type ReconcileStats struct {
	Removed int // committed spool files that no queue row referenced
	Swept   int // temp files left in incoming/
	Held    int // queue rows whose spool file was missing
}

// reconcileBatch is how many spool keys are checked per query.
const reconcileBatch = 500

// Reconcile settles what crashes and unknown COMMIT outcomes leave behind
// (DESIGN.md, "Unknown COMMIT outcome"), for this node's spool and rows:
//
//   - a committed spool file older than olderThan that no queue_message row
//     of this node references is removed (its enqueue failed, or COMMIT's
//     outcome was unknown and it did not commit, or the queue manager
//     crashed between deleting the rows and the file);
//   - a temp file in incoming/ older than olderThan and than
//     Options.MaxReceiveTime is removed (its writer crashed);
//   - a queue_message row of this node, not held and older than olderThan,
//     whose spool file is missing is held with a reason, never deleted: an
//     operator decides.
//
// olderThan below MinReconcileAge is raised to it. The queue manager must
// delete a finished message's rows before its file, never the other way
// round, or a pass running in between would hold a message on its way out.
// Every action is logged on its own line.
func (c *Cleanup) Reconcile(ctx context.Context, olderThan time.Duration) (ReconcileStats, error) {
	var st ReconcileStats
	olderThan = max(olderThan, MinReconcileAge)
	cutoff := time.Now().Add(-olderThan)

	n, err := c.sp.SweepIncoming(ctx, max(olderThan, c.opts.MaxReceiveTime))
	st.Swept = n
	if n > 0 {
		c.log.Info("reconcile: removed stale temp files", "count", n)
	}
	if err != nil {
		return st, fmt.Errorf("reconcile: %w", err)
	}

	// Files first: list the old ones, then ask which are referenced. A row
	// is always committed after its file, so a file old enough that has no
	// row now never will.
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		ref, err := c.st.SpoolKeysReferenced(ctx, c.opts.Node, batch)
		if err != nil {
			return err
		}
		for _, key := range batch {
			if ref[key] {
				continue
			}
			if err := c.sp.Remove(key); err != nil {
				return err
			}
			st.Removed++
			c.log.Warn("reconcile: removed spool file that no queue row references", "queue_id", key, "path", c.sp.Path(key))
		}
		batch = batch[:0]
		return nil
	}
	err = c.sp.Keys(ctx, func(key string, modTime time.Time) error {
		if !modTime.Before(cutoff) {
			return nil
		}
		batch = append(batch, key)
		if len(batch) >= reconcileBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return st, fmt.Errorf("reconcile: %w", err)
	}

	// Then rows whose file is missing.
	err = c.st.QueueSpoolRefs(ctx, c.opts.Node, cutoff, func(r store.QueueSpoolRef) error {
		reason := ""
		if !spool.ValidKey(r.SpoolKey) {
			reason = fmt.Sprintf("spool key %q is not valid (reconciler)", r.SpoolKey)
		} else if _, err := c.sp.Stat(r.SpoolKey); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			reason = fmt.Sprintf("spool file %s missing on node %s (reconciler)", r.SpoolKey, c.opts.Node)
		}
		if reason == "" {
			return nil
		}
		if err := c.st.HoldMissingBody(ctx, r.ID, reason); err != nil {
			return err
		}
		st.Held++
		c.log.Error("reconcile: held queue message whose spool file is missing", "queue_id", r.ID, "spool_key", r.SpoolKey, "reason", reason)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("reconcile: %w", err)
	}
	return st, nil
}

// RunReconciler runs Reconcile with Options.ReconcileAge now and then every
// interval until ctx is done. Errors are logged and the next pass tries again.
func (c *Cleanup) RunReconciler(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		every = 5 * time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		st, err := c.Reconcile(ctx, c.opts.ReconcileAge)
		if err != nil && ctx.Err() == nil {
			c.log.Error("reconcile failed", "err", err)
		} else if err == nil {
			c.log.Debug("reconcile done", "removed", st.Removed, "swept", st.Swept, "held", st.Held)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
