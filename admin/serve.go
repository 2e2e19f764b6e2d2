package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// peerAddr returns the address of the TCP peer of r.
func peerAddr(r *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

func (h *Handler) trustedProxy(a netip.Addr) bool {
	for _, p := range h.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// transport reports whether r reached us over TLS (secure), and whether it
// may be served at all (ok): TLS, or plain HTTP from a loopback client, or
// a trusted proxy that says it received https. A trusted proxy that
// forwards plain http is refused: the client's connection was not private.
func (h *Handler) transport(r *http.Request) (secure, ok bool) {
	if r.TLS != nil {
		return true, true
	}
	peer, valid := peerAddr(r)
	if !valid {
		return false, false
	}
	if h.trustedProxy(peer) {
		// The last value is the one our proxy set (it may append to a
		// client's own).
		vals := r.Header.Values("X-Forwarded-Proto")
		if len(vals) > 0 {
			parts := strings.Split(vals[len(vals)-1], ",")
			if strings.EqualFold(strings.TrimSpace(parts[len(parts)-1]), "https") {
				return true, true
			}
		}
		return false, peer.IsLoopback() && len(vals) == 0
	}
	return false, peer.IsLoopback()
}

// clientAddr returns the client's address: the peer, or behind trusted
// proxies the right-most X-Forwarded-For entry that is not a trusted proxy.
func (h *Handler) clientAddr(r *http.Request) netip.Addr {
	peer, ok := peerAddr(r)
	if !ok {
		return netip.Addr{}
	}
	if !h.trustedProxy(peer) {
		return peer
	}
	vals := r.Header.Values("X-Forwarded-For")
	var hops []string
	for _, v := range vals {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return peer // a malformed hop: trust nothing to its left
		}
		a = a.Unmap()
		if !h.trustedProxy(a) {
			return a
		}
		peer = a
	}
	return peer
}

// throttleIPKey is the login_throttle key of a client address: an IPv4
// address, or an IPv6 client's /64 (one subscriber's usual allocation).
func throttleIPKey(a netip.Addr) string {
	if !a.IsValid() {
		return "ip:unknown"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return "ip:" + p.String()
	}
	return "ip:" + a.String()
}

// ErrPlainHTTP is returned by Serve for a plain HTTP listener on a
// non-loopback address without trusted proxies.
var ErrPlainHTTP = errors.New("admin: refusing plain HTTP on a non-loopback address: configure TLS, or a trusted proxy that terminates it")

// loopbackOnly reports whether addr (host:port) listens on loopback only.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// sweepEvery is how often Serve deletes expired sessions and throttle rows.
const sweepEvery = 5 * time.Minute

// Serve listens on addr and serves h until ctx is cancelled, then shuts
// down gracefully. With tlsConfig it serves HTTPS only. Without, it serves
// plain HTTP only on a loopback address, or when h has TrustedProxies (a
// proxy terminates TLS; h still refuses plain requests that did not come
// through one with X-Forwarded-Proto: https); otherwise it returns
// ErrPlainHTTP before listening. It also sweeps expired sessions.
func Serve(ctx context.Context, addr string, tlsConfig *tls.Config, h *Handler) error {
	if tlsConfig == nil && !loopbackOnly(addr) && len(h.opts.TrustedProxies) == 0 {
		return fmt.Errorf("listen %s: %w", addr, ErrPlainHTTP)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	return serveListener(ctx, ln, tlsConfig, h)
}

func serveListener(ctx context.Context, ln net.Listener, tlsConfig *tls.Config, h *Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		// Requests in flight finish during the graceful shutdown.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if tlsConfig != nil {
		c := tlsConfig.Clone()
		if c.MinVersion < tls.VersionTLS12 {
			c.MinVersion = tls.VersionTLS12
		}
		srv.TLSConfig = c
		ln = tls.NewListener(ln, c)
	}
	h.log.Info("admin service listening", "addr", ln.Addr().String(), "tls", tlsConfig != nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("admin serve: %w", err)
		case <-t.C:
			if _, err := h.st.SweepAdminSessions(ctx, h.now(), h.opts.Throttle.Window); err != nil && ctx.Err() == nil {
				h.log.Warn("sweep admin sessions", "err", err)
			}
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				return fmt.Errorf("admin shutdown: %w", err)
			}
			<-errc
			return nil
		}
	}
}
