package admin

import (
	"net/http"
)

// metricsPath is where Options.Metrics is served. It is not a route of the
// route table: it has no principal and no access rule, so the
// authorisation matrix does not cover it; its rule is the client's address.
const metricsPath = "/metrics"

// withMetrics serves Options.Metrics at GET /metrics to loopback clients
// only, and passes every other request to next. A request relayed by a
// proxy (X-Forwarded-For or Forwarded set), even one on loopback, is
// refused: a Prometheus elsewhere scrapes the metrics role's listener
// (listen.metrics) instead, which carries no admin credentials.
func (h *Handler) withMetrics(next http.Handler) http.Handler {
	if h.opts.Metrics == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != metricsPath {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, r, h.log, &apiError{Status: http.StatusMethodNotAllowed, Code: codeMethod, Message: "method not allowed"})
			return
		}
		peer, ok := peerAddr(r)
		if !ok || !peer.IsLoopback() || r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != "" {
			h.log.WarnContext(r.Context(), "metrics request refused: not from loopback", "client", h.clientAddr(r))
			writeError(w, r, h.log, &apiError{Status: http.StatusForbidden, Code: codeForbidden,
				Message: "metrics are served to loopback clients only; scrape the metrics listener"})
			return
		}
		h.opts.Metrics.ServeHTTP(w, r)
	})
}
