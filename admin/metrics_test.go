package admin

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMetricsServedToLoopbackOnly(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("facteur_test_total 1\n"))
	})
	e := newEnv(t, func(o *Options) { o.Metrics = metrics })

	// Over the real listener on 127.0.0.1, without credentials.
	r := e.client().do("GET", "/metrics", nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "facteur_test_total 1") {
		t.Fatalf("GET /metrics from loopback = %s", r)
	}
	if r := e.client().do("POST", "/metrics", nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics = %s, want 405", r)
	}

	for _, tc := range []struct {
		name, remote, xff string
	}{
		{"another host over TLS", "192.0.2.7:40000", ""},
		{"a proxy on loopback relaying a client", "127.0.0.1:40000", "192.0.2.7"},
	} {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.RemoteAddr = tc.remote
		req.TLS = &tls.ConnectionState{}
		if tc.xff != "" {
			req.Header.Set("X-Forwarded-For", tc.xff)
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || strings.Contains(rec.Body.String(), "facteur_test_total") {
			t.Errorf("%s: %d %s, want 403", tc.name, rec.Code, rec.Body.String())
		}
	}

	// Without Options.Metrics the path does not exist.
	e2 := newEnv(t, nil)
	if r := e2.client().do("GET", "/metrics", nil); r.status != http.StatusNotFound {
		t.Errorf("GET /metrics without Options.Metrics = %s, want 404", r)
	}
}
