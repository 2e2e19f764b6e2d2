package queue

import (
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/envelope"
)

// destination is the scheduler's view of one destination (Postfix's qmgr
// "queue"): its concurrency window, the deliveries waiting for it and
// whether it is dead. Only the manager's loop touches it.
//
// The window starts at the initial concurrency and moves as Postfix's
// does: +1/window after a delivery that reached the destination (so about
// +1 per window of successes), -1/window after one that could not connect,
// never below 1 nor above the limit. After a window's worth of connection
// failures without a success (one failed pseudo-cohort, Postfix's
// destination_concurrency_failed_cohort_limit = 1) the destination is dead
// for deadTime: its deliveries are deferred without an attempt. It then
// comes back with a window of 1, a single probe.
type destination struct {
	key        string
	window     float64
	inflight   int
	failed     float64 // failed pseudo-cohorts since the last success
	deadUntil  time.Time
	deadReason string
	pending    []*job
}

type concurrencyLimits struct {
	max, initial int
	cohortLimit  float64
	deadTime     time.Duration
}

func newDestination(key string, l concurrencyLimits) *destination {
	return &destination{key: key, window: float64(l.initial)}
}

// dead reports whether the destination is dead at now; one whose time is
// over comes back with a window of 1.
func (d *destination) dead(now time.Time) bool {
	if d.deadUntil.IsZero() {
		return false
	}
	if now.Before(d.deadUntil) {
		return true
	}
	d.deadUntil, d.deadReason, d.window, d.failed = time.Time{}, "", 1, 0
	return false
}

// room reports whether one more delivery may start now.
func (d *destination) room(now time.Time) bool {
	return !d.dead(now) && d.inflight < int(d.window)
}

// success records a delivery that reached the destination.
func (d *destination) success(l concurrencyLimits) {
	d.failed = 0
	d.window = min(d.window+1/d.window, float64(l.max))
}

// failure records a delivery that could not reach the destination, and
// reports whether the destination is now dead.
func (d *destination) failure(now time.Time, reason string, l concurrencyLimits) bool {
	d.failed += 1 / d.window
	d.window = max(d.window-1/d.window, 1)
	if d.failed >= l.cohortLimit && d.deadUntil.IsZero() {
		d.deadUntil, d.deadReason = now.Add(l.deadTime), reason
		return true
	}
	return false
}

// idle reports whether the destination holds nothing worth keeping.
func (d *destination) idle(now time.Time, l concurrencyLimits) bool {
	return d.inflight == 0 && len(d.pending) == 0 && !d.dead(now) && d.failed == 0 && int(d.window) >= l.initial
}

// connectionFailed reports whether results say the destination could not be
// reached at all: every recipient deferred with 421 (the server is closing
// the connection, RFC 5321 3.8) or with X.4.1 (no answer from host) or X.4.2
// (bad connection) (RFC 3463 3.5). Agents report connection failures so.
func connectionFailed(results []deliver.Result) (bool, string) {
	if len(results) == 0 {
		return false, ""
	}
	for _, r := range results {
		if r.Status != deliver.Deferred {
			return false, ""
		}
		e := r.Reply.Enhanced
		if r.Reply.Code != 421 && e != (envelope.Status{4, 4, 1}) && e != (envelope.Status{4, 4, 2}) {
			return false, ""
		}
	}
	return true, results[0].Reply.String()
}
