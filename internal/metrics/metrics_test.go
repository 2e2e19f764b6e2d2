package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/facteur/facteur/internal/health"
	"github.com/facteur/facteur/internal/metrics"
	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// scrape fetches url and returns every sample as "name{label=value,…}" →
// value (histograms as name_count and name_sum).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			key := name
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[strings.Replace(key, name, name+"_count", 1)] = float64(m.GetHistogram().GetSampleCount())
				out[strings.Replace(key, name, name+"_sum", 1)] = m.GetHistogram().GetSampleSum()
			case dto.MetricType_UNTYPED:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func enqueue(t *testing.T, st *store.Store, id string, rcpts ...string) {
	t.Helper()
	var rs []store.QueueRecipient
	for _, r := range rcpts {
		rs = append(rs, store.QueueRecipient{Address: r, OrigAddress: r, Domain: r[strings.IndexByte(r, '@')+1:], Transport: "smtp"})
	}
	if err := st.Enqueue(context.Background(), store.QueueMessage{ID: id, Node: "mx1", SpoolKey: id, Sender: "a@example.org", Size: 100}, rs, store.AcceptedLog{}); err != nil {
		t.Fatal(err)
	}
}

func TestScrapeShowsQueueAndCountersMovedByTheRightAmounts(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx := context.Background()
	exec := func(sql string) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	exec("INSERT INTO domain (name) VALUES ('example.test'); INSERT INTO mailbox (address) VALUES ('john@example.test')")
	enqueue(t, st, "METRIC000001", "a@one.test", "b@one.test") // queued, age < 5 min
	enqueue(t, st, "METRIC000002", "c@two.test")               // deferred, 7 min
	enqueue(t, st, "METRIC000003", "d@two.test")               // held, 2 days
	enqueue(t, st, "METRIC000004", "e@two.test")               // on node mx2: not counted
	exec(`UPDATE queue_message SET arrived_at = now() - interval '7 minutes' WHERE id = 'METRIC000002';
UPDATE queue_recipient SET status = 'deferred', attempts = 1, next_attempt_at = now() + interval '1 hour' WHERE queue_id = 'METRIC000002';
UPDATE queue_message SET arrived_at = now() - interval '2 days', held = true WHERE id = 'METRIC000003';
UPDATE queue_message SET node = 'mx2' WHERE id = 'METRIC000004'`)

	m := metrics.New()
	res := lookups.New(st, lookups.Options{Hostname: "mx1.example.test"})
	dir := t.TempDir()
	for _, err := range []error{
		m.WatchQueue(st, metrics.QueueOptions{Node: "mx1"}),
		m.WatchPool(db.Pool),
		m.WatchLookups(res.Stats),
		m.WatchFree("spool", func() (uint64, error) { return health.FreeBytes(dir) }),
		m.WatchFree("mail_root", func() (uint64, error) { return 0, fmt.Errorf("unmounted") }),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := m.WatchQueue(st, metrics.QueueOptions{Node: "mx1"}); err == nil {
		t.Error("a second queue collector was registered")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	go func() { served <- metrics.ServeListener(sctx, ln, mux, nil) }()
	url := "http://" + ln.Addr().String() + "/metrics"

	// Traffic: a session with three replies, two accepted messages, a
	// delivery of two recipients, a DSN, and two lookups of one address.
	end := m.Connection("smtp")
	for _, c := range []int{220, 250, 550} {
		m.Reply("smtp", c)
	}
	m.Accepted(1000)
	m.Accepted(234)
	m.Delivered("smtp:[mx.one.test]:25", metrics.ResultSent, 2, 1500*time.Millisecond)
	m.DSN("failed")
	for range 2 {
		if _, _, err := res.Resolve(ctx, "john@example.test"); err != nil {
			t.Fatal(err)
		}
	}
	var nilMetrics *metrics.Metrics // parts built without metrics
	nilMetrics.Accepted(1)
	nilMetrics.Connection("smtp")()

	s1 := scrape(t, url)
	want := map[string]float64{
		`facteur_queue_up{node=mx1}`:                                          1,
		`facteur_queue_recipients{age=5,node=mx1,state=queued}`:               2,
		`facteur_queue_recipients{age=10,node=mx1,state=deferred}`:            1,
		`facteur_queue_recipients{age=1280+,node=mx1,state=held}`:             1,
		`facteur_queue_recipients{age=5,node=mx1,state=deferred}`:             0,
		`facteur_queue_messages{held=false,node=mx1}`:                         2,
		`facteur_queue_messages{held=true,node=mx1}`:                          1,
		`facteur_queue_dsn_pending{node=mx1}`:                                 0,
		`facteur_smtp_connections_total{listener=smtp}`:                       1,
		`facteur_smtp_sessions{listener=smtp}`:                                1,
		`facteur_smtp_replies_total{class=2xx,listener=smtp}`:                 2,
		`facteur_smtp_replies_total{class=5xx,listener=smtp}`:                 1,
		`facteur_messages_accepted_total`:                                     2,
		`facteur_messages_accepted_bytes_total`:                               1234,
		`facteur_deliveries_total{result=sent,transport=smtp}`:                2,
		`facteur_delivery_duration_seconds_count{result=sent,transport=smtp}`: 1,
		`facteur_delivery_duration_seconds_sum{result=sent,transport=smtp}`:   1.5,
		`facteur_dsns_sent_total{action=failed}`:                              1,
		`facteur_lookup_cache_hits_total`:                                     1,
		`facteur_lookup_cache_misses_total`:                                   1,
		`facteur_lookup_cache_entries`:                                        1,
	}
	for k, v := range want {
		if got, ok := s1[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if age := s1[`facteur_queue_oldest_message_age_seconds{node=mx1}`]; age < 2*86400 || age > 2*86400+600 {
		t.Errorf("oldest message age = %v, want about two days", age)
	}
	if s1["facteur_spool_free_bytes"] <= 0 {
		t.Errorf("spool free bytes = %v", s1["facteur_spool_free_bytes"])
	}
	if _, ok := s1["facteur_mail_root_free_bytes"]; ok {
		t.Error("a failing free-space probe was exported")
	}
	if s1["facteur_db_pool_acquires_total"] < 1 || s1["facteur_db_pool_max_conns"] < 1 {
		t.Errorf("pool metrics: acquires %v, max %v", s1["facteur_db_pool_acquires_total"], s1["facteur_db_pool_max_conns"])
	}
	if _, ok := s1["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}

	// More traffic, then the deltas.
	end()
	m.Accepted(66)
	enqueue(t, st, "METRIC000005", "f@one.test")
	cs, err := st.Claim(ctx, "mx1", "w", time.Minute, 1)
	if err != nil || len(cs) != 1 {
		t.Fatal(cs, err)
	}
	if err := st.Settle(ctx, "w", store.Settlement{ID: cs[0].ID, Status: store.RcptBounced, Reply: "550 5.1.1 no", DSN: "5.1.1",
		DSNAction: store.DSNFailed, QueueID: cs[0].Message.ID, Recipient: cs[0].Address}); err != nil {
		t.Fatal(err)
	}
	s2 := scrape(t, url)
	delta := func(k string) float64 { return s2[k] - s1[k] }
	for k, v := range map[string]float64{
		`facteur_smtp_sessions{listener=smtp}`:                  -1,
		`facteur_messages_accepted_total`:                       1,
		`facteur_messages_accepted_bytes_total`:                 66,
		`facteur_queue_recipients{age=5,node=mx1,state=queued}`: 0, // +1 enqueued, -1 bounced
		`facteur_queue_messages{held=false,node=mx1}`:           1,
		`facteur_queue_dsn_pending{node=mx1}`:                   1,
		`facteur_smtp_connections_total{listener=smtp}`:         0,
	} {
		if got := delta(k); got != v {
			t.Errorf("%s moved by %v, want %v", k, got, v)
		}
	}

	// The database gone: the queue gauges say so, the rest is served.
	db.Pool.Close()
	s3 := scrape(t, url)
	if s3[`facteur_queue_up{node=mx1}`] != 0 || s3[`facteur_messages_accepted_total`] != 3 {
		t.Errorf("with the database closed: up %v, accepted %v", s3[`facteur_queue_up{node=mx1}`], s3[`facteur_messages_accepted_total`])
	}
	if _, ok := s3[`facteur_queue_recipients{age=5,node=mx1,state=queued}`]; ok {
		t.Error("queue gauges exported without a database")
	}
	stop()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

func TestHelpers(t *testing.T) {
	for in, want := range map[string]string{"smtp:[mx.example]:25": "smtp", "lmtp:unix:/run/x": "lmtp", "maildir": "maildir",
		"error:5.1.1 user unknown": "error", "": "none", "SMTP": "smtp"} {
		if got := metrics.TransportKind(in); got != want {
			t.Errorf("TransportKind(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[int]string{250: "2xx", 354: "3xx", 421: "4xx", 554: "5xx", 99: "other", 600: "other"} {
		if got := metrics.ReplyClass(in); got != want {
			t.Errorf("ReplyClass(%d) = %q, want %q", in, got, want)
		}
	}
	if got := strings.Join(metrics.AgeBuckets(), " "); got != "5 10 20 40 80 160 320 640 1280 1280+" {
		t.Errorf("age buckets: %s", got)
	}
}

func TestDurabilityGaugeReflectsTheDatabaseSettings(t *testing.T) {
	db := storetest.New(t)
	ctx := context.Background()
	scrape := func() string {
		t.Helper()
		m := metrics.New()
		if err := m.WatchDurability(db.Pool); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(m.Handler())
		defer srv.Close()
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var fsync string
	if err := db.Pool.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"on": "1", "off": "0"}[fsync]
	for _, step := range []string{`step="spool_fsync"} 1`, `step="maildir_fsync"} 1`, `step="postgres_fsync"} ` + want} {
		if out := scrape(); !strings.Contains(out, "facteur_durability{"+step) {
			t.Errorf("scrape lacks facteur_durability{%s:\n%s", step, out)
		}
	}
	// synchronous_commit as facteur's sessions see it: a per-database
	// setting shows.
	for _, tc := range []struct{ set, want string }{{"off", "0"}, {"local", "1"}, {"on", "1"}} {
		if _, err := db.Pool.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s SET synchronous_commit = %s", db.Name, tc.set)); err != nil {
			t.Fatal(err)
		}
		db.Pool.Reset() // new sessions pick the setting up
		if out := scrape(); !strings.Contains(out, `facteur_durability{step="postgres_synchronous_commit"} `+tc.want) {
			t.Errorf("synchronous_commit = %s: want gauge %s:\n%s", tc.set, tc.want, out)
		}
	}
}
