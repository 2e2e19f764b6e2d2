package lookups

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Channel is the notification channel of control-plane changes
// (migrations/00001_control_plane.sql, facteur_changed).
const Channel = "facteur_config"

// ListenerApplicationName is the application_name of Run's connection in
// pg_stat_activity.
const ListenerApplicationName = "facteur-lookups-listener"

const (
	// listenCheck is how long Run waits for a notification before it checks
	// that its connection still answers (a dead peer can leave a read
	// blocked long after TCP keepalives would notice).
	listenCheck = 30 * time.Second
	// pingTimeout bounds that check.
	pingTimeout = 10 * time.Second
	// Reconnection backoff, doubled after each failure, with jitter.
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// Run keeps the cache in step with the database until ctx is done. It holds
// its own connection (not one of the pool's), LISTENs on facteur_config,
// and drops the whole cache on every notification (any table: an alias
// chain crosses domains, so dropping by domain would not be correct), on
// every connection and reconnection, and when the connection is lost; it
// tells Options.OnInvalidate of each notification and (re)connection. While
// the connection is down the cache is bypassed; Run reconnects with backoff
// (100 ms doubling to 5 s). Run returns nil when ctx is done; only one Run
// may be active per Resolver.
//
// Before Run is first called the cache relies on its TTL alone, which suits
// short-lived tools; a server runs Run for as long as it resolves. After Run
// returns the cache stays bypassed.
func (r *Resolver) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("lookups: Run is already active")
	}
	defer r.running.Store(false)
	r.setListen(listenDown)
	defer r.setListen(listenDown)

	backoff := backoffMin
	for {
		listened, err := r.listenOnce(ctx)
		r.setListen(listenDown)
		if ctx.Err() != nil {
			return nil
		}
		r.opts.Logger.Warn("lookups: listen connection lost; cache bypassed until reconnected",
			"err", err, "retry_in", backoff)
		t := time.NewTimer(backoff + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if listened {
			backoff = backoffMin
		} else {
			backoff = min(2*backoff, backoffMax)
		}
	}
}

// listenOnce connects, listens and waits for notifications until the
// connection fails or ctx is done. listened reports that LISTEN succeeded
// (so the next attempt may start with the shortest backoff).
func (r *Resolver) listenOnce(ctx context.Context) (listened bool, err error) {
	cfg := r.st.Pool().Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	// Listening from here on: anything cached before may be stale.
	r.connects.Add(1)
	r.setListen(listenUp)
	r.notifyInvalidate("", "")
	r.opts.Logger.Debug("lookups: listening", "channel", Channel)
	for {
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			r.Invalidate()
			table, key, _ := strings.Cut(n.Payload, ":")
			r.notifyInvalidate(table, key)
			r.opts.Logger.Debug("lookups: cache dropped", "payload", n.Payload)
			continue
		case ctx.Err() != nil:
			return true, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pctx, cancel := context.WithTimeout(ctx, pingTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
		}
		return true, fmt.Errorf("wait for notification: %w", err)
	}
}

// notifyInvalidate calls Options.OnInvalidate, if set.
func (r *Resolver) notifyInvalidate(table, key string) {
	if f := r.opts.OnInvalidate; f != nil {
		f(table, key)
	}
}

// setListen records the LISTEN connection's state and drops the cache:
// every transition may hide changes.
func (r *Resolver) setListen(state int32) {
	r.listen.Store(state)
	r.Invalidate()
}
