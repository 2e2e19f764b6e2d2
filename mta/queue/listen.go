package queue

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/store"
)

// ListenerApplicationName is the application_name of the manager's LISTEN
// connection in pg_stat_activity.
const ListenerApplicationName = "facteur-queue-listener"

const (
	listenCheck       = 30 * time.Second // ping an idle LISTEN connection this often
	listenPingTimeout = 10 * time.Second
	listenBackoffMin  = 100 * time.Millisecond
	listenBackoffMax  = 5 * time.Second
)

// listen holds a dedicated connection LISTENing on facteur_queue and wakes
// the loop on every notification for this node (NOTIFY is a hint, and
// cleanup coalesces them), and after every (re)connection with a full pass:
// notifications sent while it was down are lost.
func (m *Manager) listen(ctx context.Context) {
	backoff := listenBackoffMin
	for {
		listened, err := m.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		m.log.Warn("queue listen connection lost; reconnecting", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if listened {
			backoff = listenBackoffMin
		} else {
			backoff = min(2*backoff, listenBackoffMax)
		}
	}
}

func (m *Manager) listenOnce(ctx context.Context) (listened bool, err error) {
	cfg := m.st.Pool().Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+store.QueueChannel); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	m.listenConnects.Add(1)
	m.log.Debug("queue: listening", "channel", store.QueueChannel)
	// Anything announced while the connection was down is unknown: a full
	// pass, and a sweep of owed DSNs and finished messages.
	m.Wake()
	m.requestSweep()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			if n.Payload == "" || n.Payload == m.opts.Node {
				m.Wake()
			}
			continue
		case ctx.Err() != nil:
			return true, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pctx, cancel := context.WithTimeout(ctx, listenPingTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
		}
		return true, fmt.Errorf("wait for notification: %w", err)
	}
}

// renew extends the leases of every delivery held, waiting or running,
// every Lease/3.
func (m *Manager) renew(ctx context.Context) {
	t := time.NewTicker(m.opts.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.leaseMu.Lock()
		jobs := make([]*job, 0, len(m.held))
		var ids []int64
		for j := range m.held {
			jobs = append(jobs, j)
			for _, c := range j.rcpts {
				ids = append(ids, c.ID)
			}
		}
		m.leaseMu.Unlock()
		if len(ids) == 0 {
			continue
		}
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, m.opts.Lease/3)
		err := m.st.RenewLease(rctx, m.opts.Owner, ids, m.opts.Lease)
		cancel()
		lost := map[int64]bool{}
		for _, id := range store.LostIDs(err) {
			lost[id] = true
		}
		if err != nil && len(lost) == 0 {
			if ctx.Err() == nil {
				m.log.Error("renew leases; deliveries end before their leases run out", "err", err)
			}
			continue
		}
		if len(lost) > 0 {
			m.log.Warn("leases lost; those recipients may be delivered twice", "recipients", store.LostIDs(err))
		}
		m.leaseMu.Lock()
		for _, j := range jobs {
			ok := true
			for _, c := range j.rcpts {
				if lost[c.ID] {
					ok = false
					break
				}
			}
			if ok {
				j.leaseUntil = start.Add(m.opts.Lease)
			}
		}
		m.leaseMu.Unlock()
	}
}
