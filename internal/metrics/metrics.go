// Package metrics holds facteur's Prometheus registry: the counters and
// histograms that the mail path increments (SMTP connections, sessions and
// replies, accepted messages, deliveries and their latency, DSNs), and
// collectors that compute gauges at scrape time from what already exists
// (the queue tables, the database pool, the lookups cache, free disk
// space), so that nothing is counted twice and a restart loses no gauge.
//
// One Metrics per process: cmd/facteur builds it and hands it to the parts
// it wires (every method is a no-op on a nil *Metrics, so a part built
// without metrics needs no check). Handler serves /metrics in the text
// exposition format.
//
// Labels are kept to small, fixed sets: a listener name, a reply class, a
// transport kind ("smtp", not "smtp:[mx.example]:25"), a result.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/store"
)

const namespace = "facteur"

// Delivery results (the result label of Deliveries and DeliveryDuration).
const (
	ResultSent     = "sent"
	ResultDeferred = "deferred"
	ResultBounced  = "bounced"
	ResultExpired  = "expired"
)

// Metrics is the process's registry and the instruments the mail path
// uses. Use the methods; the fields are there for tests and for parts that
// need a label set of their own.
type Metrics struct {
	reg *prometheus.Registry

	// SMTPConnections counts accepted TCP connections, by listener (smtp,
	// submission, submissions, qmqp, pickup).
	SMTPConnections *prometheus.CounterVec
	// SMTPSessions is the number of sessions open now, by listener.
	SMTPSessions *prometheus.GaugeVec
	// SMTPReplies counts replies sent, by listener and class (2xx, 3xx,
	// 4xx, 5xx).
	SMTPReplies *prometheus.CounterVec
	// MessagesAccepted and BytesAccepted count messages queued (after the
	// 250), and their size.
	MessagesAccepted prometheus.Counter
	BytesAccepted    prometheus.Counter
	// Deliveries counts delivery attempts per recipient, by transport kind
	// and result (sent, deferred, bounced, expired).
	Deliveries *prometheus.CounterVec
	// DeliveryDuration is the time of each delivery attempt (one
	// observation per attempt, whatever its number of recipients), by
	// transport kind and result.
	DeliveryDuration *prometheus.HistogramVec
	// DSNsSent counts DSNs queued, by action (failed, delayed, delivered,
	// relayed).
	DSNsSent *prometheus.CounterVec
}

// New returns a registry with facteur's instruments and the Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		SMTPConnections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "smtp",
			Name: "connections_total", Help: "Connections accepted, by listener."}, []string{"listener"}),
		SMTPSessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "smtp",
			Name: "sessions", Help: "Sessions open now, by listener."}, []string{"listener"}),
		SMTPReplies: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "smtp",
			Name: "replies_total", Help: "Replies sent, by listener and reply class."}, []string{"listener", "class"}),
		MessagesAccepted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace,
			Name: "messages_accepted_total", Help: "Messages accepted into the queue."}),
		BytesAccepted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace,
			Name: "messages_accepted_bytes_total", Help: "Size of the messages accepted into the queue, in bytes."}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "deliveries_total", Help: "Delivery attempts per recipient, by transport kind and result."},
			[]string{"transport", "result"}),
		DeliveryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace,
			Name: "delivery_duration_seconds", Help: "Duration of delivery attempts, by transport kind and result.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}},
			[]string{"transport", "result"}),
		DSNsSent: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "dsns_sent_total", Help: "Delivery status notifications queued, by action."}, []string{"action"}),
	}
	m.reg.MustRegister(m.SMTPConnections, m.SMTPSessions, m.SMTPReplies, m.MessagesAccepted, m.BytesAccepted,
		m.Deliveries, m.DeliveryDuration, m.DSNsSent,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry, to register more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format. A
// collector that fails leaves out its own series and the others are served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Registry: m.reg})
}

// Connection counts an accepted connection and an open session on
// listener; call the returned function when the session ends.
func (m *Metrics) Connection(listener string) (end func()) {
	if m == nil {
		return func() {}
	}
	m.SMTPConnections.WithLabelValues(listener).Inc()
	g := m.SMTPSessions.WithLabelValues(listener)
	g.Inc()
	return g.Dec
}

// Reply counts a reply of code sent on listener.
func (m *Metrics) Reply(listener string, code int) {
	if m == nil {
		return
	}
	m.SMTPReplies.WithLabelValues(listener, ReplyClass(code)).Inc()
}

// Accepted counts a message queued, of size bytes.
func (m *Metrics) Accepted(size int64) {
	if m == nil {
		return
	}
	m.MessagesAccepted.Inc()
	m.BytesAccepted.Add(float64(max(size, 0)))
}

// Delivered counts one attempt to one next hop: n recipients with result,
// through the transport (next hop or kind), and observes its duration once.
func (m *Metrics) Delivered(transport, result string, n int, d time.Duration) {
	if m == nil {
		return
	}
	kind := TransportKind(transport)
	m.Deliveries.WithLabelValues(kind, result).Add(float64(n))
	m.DeliveryDuration.WithLabelValues(kind, result).Observe(d.Seconds())
}

// DSN counts a DSN queued with the given action.
func (m *Metrics) DSN(action string) {
	if m == nil {
		return
	}
	m.DSNsSent.WithLabelValues(action).Inc()
}

// ReplyClass is the class label of an SMTP reply code: "2xx" … "5xx", or
// "other".
func ReplyClass(code int) string {
	if code >= 200 && code < 600 {
		return string(rune('0'+code/100)) + "xx"
	}
	return "other"
}

// TransportKind reduces a next hop to its kind, the part before the first
// colon ("smtp:[mx.example]:25" is smtp, "error:5.1.1 …" is error), so that
// labels stay few.
func TransportKind(nexthop string) string {
	k, _, _ := strings.Cut(nexthop, ":")
	k = strings.ToLower(strings.TrimSpace(k))
	if k == "" {
		return "none"
	}
	return k
}

// QueueOptions configures the queue collector.
type QueueOptions struct {
	// Node limits the counts to one node's messages ("" counts every
	// node: use it on one scrape target only, or sum by node).
	Node string
	// Timeout bounds the queries of one scrape (default 5 s).
	Timeout time.Duration
}

// WatchQueue registers the collector of the queue's size, computed from the
// queue tables at scrape time:
//
//	facteur_queue_recipients{node,state,age}   recipients waiting, by state
//	    (queued, delivering, deferred, held: waiting in a held message) and
//	    age bucket (minutes since arrival, qshape's: "5" is under 5, "10" is
//	    5 to 10, … "1280+")
//	facteur_queue_messages{node,held}          messages in the queue
//	facteur_queue_dsn_pending{node}            recipients owing a DSN
//	facteur_queue_oldest_message_age_seconds{node}
//	facteur_queue_up{node}                     1 when the last scrape's queries worked
func (m *Metrics) WatchQueue(st *store.Store, o QueueOptions) error {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	return m.reg.Register(newQueueCollector(st, o))
}

type queueCollector struct {
	st                                    *store.Store
	o                                     QueueOptions
	recipients, messages, pending, oldest *prometheus.Desc
	up                                    *prometheus.Desc
}

func newQueueCollector(st *store.Store, o QueueOptions) *queueCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "queue", name), help, append([]string{"node"}, labels...), nil)
	}
	return &queueCollector{st: st, o: o,
		recipients: d("recipients", "Recipients waiting in the queue, by state and age bucket (minutes since arrival, qshape's).", "state", "age"),
		messages:   d("messages", "Messages in the queue.", "held"),
		pending:    d("dsn_pending", "Recipients owing a DSN."),
		oldest:     d("oldest_message_age_seconds", "Age of the oldest message in the queue."),
		up:         d("up", "1 when the queue could be read at this scrape."),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.recipients
	ch <- c.messages
	ch <- c.pending
	ch <- c.oldest
	ch <- c.up
}

// queueStates are the state label values, all exported (0 when empty) so
// that series do not come and go.
var queueStates = []string{store.RcptQueued, store.RcptDelivering, store.RcptDeferred, "held"}

// AgeBuckets are the age label values, in order.
func AgeBuckets() []string {
	out := make([]string, 0, len(store.ShapeBoundsMinutes)+1)
	for _, b := range store.ShapeBoundsMinutes {
		out = append(out, fmt.Sprint(b))
	}
	return append(out, fmt.Sprint(store.ShapeBoundsMinutes[len(store.ShapeBoundsMinutes)-1])+"+")
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.o.Timeout)
	defer cancel()
	node := c.o.Node
	counts, msgs, pending, oldest, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0, node)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, node)
	ages := AgeBuckets()
	for _, s := range queueStates {
		for i, a := range ages {
			ch <- prometheus.MustNewConstMetric(c.recipients, prometheus.GaugeValue, float64(counts[s][i]), node, s, a)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(msgs[0]), node, "false")
	ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(msgs[1]), node, "true")
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(pending), node)
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, oldest, node)
}

func (c *queueCollector) read(ctx context.Context) (counts map[string][]int64, msgs [2]int64, pending int64, oldest float64, err error) {
	pool := c.st.Pool()
	nb := len(store.ShapeBoundsMinutes) + 1
	counts = map[string][]int64{}
	for _, s := range queueStates {
		counts[s] = make([]int64, nb)
	}
	rows, err := pool.Query(ctx, `SELECT CASE WHEN m.held AND r.status <> 'delivering' THEN 'held' ELSE r.status END,
	width_bucket(extract(epoch FROM now() - m.arrived_at) / 60, $1::float8[]), count(*)
FROM queue_recipient r JOIN queue_message m ON m.id = r.queue_id
WHERE r.status IN ('queued', 'delivering', 'deferred') AND ($2 = '' OR m.node = $2)
GROUP BY 1, 2`, store.ShapeBoundsMinutes, c.o.Node)
	if err != nil {
		return nil, msgs, 0, 0, fmt.Errorf("queue metrics: %w", err)
	}
	for rows.Next() {
		var s string
		var b int
		var n int64
		if err := rows.Scan(&s, &b, &n); err != nil {
			rows.Close()
			return nil, msgs, 0, 0, fmt.Errorf("queue metrics: %w", err)
		}
		if cs, ok := counts[s]; ok {
			cs[min(max(b, 0), nb-1)] += n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, msgs, 0, 0, fmt.Errorf("queue metrics: %w", err)
	}
	err = pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE NOT m.held), count(*) FILTER (WHERE m.held),
	coalesce(extract(epoch FROM now() - min(m.arrived_at)), 0)::float8,
	(SELECT count(*) FROM queue_recipient r JOIN queue_message pm ON pm.id = r.queue_id
	 WHERE r.dsn_pending AND ($1 = '' OR pm.node = $1))
FROM queue_message m WHERE $1 = '' OR m.node = $1`, c.o.Node).Scan(&msgs[0], &msgs[1], &oldest, &pending)
	if err != nil {
		return nil, msgs, 0, 0, fmt.Errorf("queue metrics: %w", err)
	}
	return counts, msgs, pending, oldest, nil
}

// WatchPool registers gauges and counters of a database pool, read at
// scrape time (pgxpool.Stat): facteur_db_pool_{acquired,idle,total,max}_conns,
// facteur_db_pool_acquires_total, facteur_db_pool_empty_acquires_total
// (acquires that had to wait for a connection) and
// facteur_db_pool_acquire_wait_seconds_total.
func (m *Metrics) WatchPool(pool *pgxpool.Pool) error {
	g := func(name, help string, f func(*pgxpool.Stat) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "db_pool", Name: name, Help: help},
			func() float64 { return f(pool.Stat()) })
	}
	c := func(name, help string, f func(*pgxpool.Stat) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Subsystem: "db_pool", Name: name, Help: help},
			func() float64 { return f(pool.Stat()) })
	}
	return registerAll(m.reg,
		g("acquired_conns", "Connections in use.", func(s *pgxpool.Stat) float64 { return float64(s.AcquiredConns()) }),
		g("idle_conns", "Idle connections.", func(s *pgxpool.Stat) float64 { return float64(s.IdleConns()) }),
		g("total_conns", "Open connections.", func(s *pgxpool.Stat) float64 { return float64(s.TotalConns()) }),
		g("max_conns", "Most connections the pool opens.", func(s *pgxpool.Stat) float64 { return float64(s.MaxConns()) }),
		c("acquires_total", "Connections acquired from the pool.", func(s *pgxpool.Stat) float64 { return float64(s.AcquireCount()) }),
		c("empty_acquires_total", "Acquires that waited because the pool was empty.", func(s *pgxpool.Stat) float64 { return float64(s.EmptyAcquireCount()) }),
		c("acquire_wait_seconds_total", "Time spent acquiring connections.", func(s *pgxpool.Stat) float64 { return s.AcquireDuration().Seconds() }),
	)
}

// WatchLookups registers the lookups cache's counters, read at scrape time:
// facteur_lookup_cache_hits_total, facteur_lookup_cache_misses_total,
// facteur_lookup_cache_entries and facteur_lookup_cache_invalidations_total.
func (m *Metrics) WatchLookups(stats func() lookups.Stats) error {
	c := func(name, help string, f func(lookups.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Subsystem: "lookup_cache", Name: name, Help: help},
			func() float64 { return f(stats()) })
	}
	return registerAll(m.reg,
		c("hits_total", "Lookups answered from the cache.", func(s lookups.Stats) float64 { return float64(s.Hits) }),
		c("misses_total", "Lookups that went to the database.", func(s lookups.Stats) float64 { return float64(s.Misses) }),
		c("invalidations_total", "Times the cache was dropped (NOTIFY facteur_config).", func(s lookups.Stats) float64 { return float64(s.Invalidations) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "lookup_cache", Name: "entries",
			Help: "Results in the cache now."}, func() float64 { return float64(stats().Entries) }),
	)
}

// WatchFree registers facteur_<name>_free_bytes, the free space that free
// reports at scrape time (left out of a scrape when free fails). name is
// "spool" or "mail_root".
func (m *Metrics) WatchFree(name string, free func() (uint64, error)) error {
	return m.reg.Register(&freeCollector{free: free, desc: prometheus.NewDesc(
		prometheus.BuildFQName(namespace, name, "free_bytes"), "Free space on the file system of the "+strings.ReplaceAll(name, "_", " ")+", in bytes.", nil, nil)})
}

type freeCollector struct {
	free func() (uint64, error)
	desc *prometheus.Desc
}

func (c *freeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *freeCollector) Collect(ch chan<- prometheus.Metric) {
	n, err := c.free()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
}

func registerAll(reg *prometheus.Registry, cs ...prometheus.Collector) error {
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Serve serves h on addr (the metrics listener) until ctx is cancelled,
// then shuts down within 5 seconds and returns nil.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return ServeListener(ctx, ln, h, log)
}

// ServeListener is Serve on an open listener (tests pass 127.0.0.1:0).
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("metrics listening", "addr", ln.Addr().String())
	select {
	case err := <-done:
		return fmt.Errorf("metrics listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("metrics listener shutdown: %w", err)
	}
	<-done
	return nil
}

// durabilityCollector reports, at scrape time, whether each step that backs
// a 250 reply or a "delivered" is durable: the database's own settings, read
// from one of facteur's sessions (so a per-role or per-user override shows),
// and facteur's file steps, which have no switch to turn them off.
type durabilityCollector struct {
	pool *pgxpool.Pool
	desc *prometheus.Desc
}

func (c *durabilityCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *durabilityCollector) Collect(ch chan<- prometheus.Metric) {
	// The spool fsyncs each body and its directory before a commit, and
	// the Maildir agent fsyncs each file and new/ before "delivered":
	// always (DESIGN "Durability rules").
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, "spool_fsync")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, "maildir_fsync")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var fsync, syncCommit, fpw string
	err := c.pool.QueryRow(ctx, `SELECT current_setting('fsync'), current_setting('synchronous_commit'),
		current_setting('full_page_writes')`).Scan(&fsync, &syncCommit, &fpw)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, fmt.Errorf("read database durability settings: %w", err))
		return
	}
	on := func(v string, yes ...string) float64 {
		for _, y := range yes {
			if v == y {
				return 1
			}
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, on(fsync, "on"), "postgres_fsync")
	// "local", "remote_write", "on" and "remote_apply" all wait for the
	// local WAL flush; only "off" answers before it.
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue,
		on(syncCommit, "on", "local", "remote_write", "remote_apply"), "postgres_synchronous_commit")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, on(fpw, "on"), "postgres_full_page_writes")
}

// WatchDurability registers facteur_durability{step}: 1 when the step that
// a 250 or a delivery relies on is durable, 0 when it is switched off
// (bench/run.sh refuses to measure with any 0).
func (m *Metrics) WatchDurability(pool *pgxpool.Pool) error {
	return registerAll(m.reg, &durabilityCollector{pool: pool, desc: prometheus.NewDesc(namespace+"_durability",
		"Whether each durability step is on (1) or off (0).", []string{"step"}, nil)})
}
