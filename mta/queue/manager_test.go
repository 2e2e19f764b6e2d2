package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/dsn"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/store/storetest"
)

// The manager's tests run it against a real database (storetest), a real
// spool and real DSNs re-entering the queue; the agents are in-process and
// scripted per recipient, so the tests drive the manager's own logic.

const node = "node1"

// call is one delivery an agent received.
type call struct {
	queueID, kind, sender, nexthop string
	rcpts                          []string
	results                        []deliver.Result
	body                           []byte
	at                             time.Time
}

// scriptAgent answers per recipient from a script (the last answer
// repeats; none means delivered) and records every delivery.
type scriptAgent struct {
	mu       sync.Mutex
	plan     map[string][]deliver.Result
	calls    []call
	running  map[string]int // per nexthop/domain, now
	maxRun   map[string]int
	total    int
	maxTotal int
	hold     chan struct{} // when set, deliveries wait for it (or ctx)
}

func newScript() *scriptAgent {
	return &scriptAgent{plan: map[string][]deliver.Result{}, running: map[string]int{}, maxRun: map[string]int{}}
}

func (a *scriptAgent) set(rcpt string, rs ...deliver.Result) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.plan[rcpt] = rs
}

func (a *scriptAgent) Deliver(ctx context.Context, nexthop string, msg *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	dest := nexthop + "/" + domainOf(rcpts[0].Address)
	f, err := msg.Open()
	var body []byte
	if err == nil {
		body, _ = io.ReadAll(f)
		f.Close()
	}
	a.mu.Lock()
	a.running[dest]++
	a.maxRun[dest] = max(a.maxRun[dest], a.running[dest])
	a.total++
	a.maxTotal = max(a.maxTotal, a.total)
	hold := a.hold
	c := call{queueID: msg.QueueID, kind: msg.Kind, sender: msg.Sender, nexthop: nexthop, body: body, at: time.Now()}
	out := make([]deliver.Result, len(rcpts))
	for i, r := range rcpts {
		c.rcpts = append(c.rcpts, r.Address)
		out[i] = deliver.Result{Status: deliver.Delivered, Relay: "mx." + domainOf(r.Address) + "[192.0.2.25]:25",
			Reply: envelope.Reply{Code: 250, Enhanced: envelope.Status{2, 0, 0}, Text: "Ok"}}
		if p := a.plan[r.Address]; len(p) > 0 {
			out[i] = p[0]
			if len(p) > 1 {
				a.plan[r.Address] = p[1:]
			}
		}
	}
	a.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			for i := range out {
				out[i] = deliver.Result{Status: deliver.Deferred, Relay: "none",
					Reply: envelope.Reply{Code: 421, Enhanced: envelope.Status{4, 4, 2}, Text: "interrupted"}}
			}
		}
	}
	a.mu.Lock()
	a.running[dest]--
	a.total--
	c.results = out
	a.calls = append(a.calls, c)
	a.mu.Unlock()
	return out
}

func (a *scriptAgent) callsOf(kind string) []call {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []call
	for _, c := range a.calls {
		if kind == "" || c.kind == kind {
			out = append(out, c)
		}
	}
	return out
}

func (a *scriptAgent) deliveredTo(rcpt string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.calls {
		if i := slices.Index(c.rcpts, rcpt); c.kind == KindMail && i >= 0 && c.results[i].Status == deliver.Delivered {
			n++
		}
	}
	return n
}

func bounce(text string) deliver.Result {
	st, rest, _ := envelope.ParseEnhanced(text)
	return deliver.Result{Status: deliver.Bounced, Relay: "mx.example.com[192.0.2.25]:25", RemoteMTA: "mx.example.com",
		Reply: envelope.Reply{Code: 550, Enhanced: st, Text: rest}}
}

func deferral(text string) deliver.Result {
	st, rest, _ := envelope.ParseEnhanced(text)
	return deliver.Result{Status: deliver.Deferred, Relay: "mx.example.com[192.0.2.25]:25",
		Reply: envelope.Reply{Code: 450, Enhanced: st, Text: rest}}
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	t     *testing.T
	db    *storetest.DB
	st    *store.Store
	sp    *spool.Spool
	res   *lookups.Resolver
	agent *scriptAgent
	logs  *syncBuffer
	log   *slog.Logger
	seq   atomic.Int64
	// submitWrap, when set, wraps the manager's Submitter (fault injection).
	submitWrap func(Submitter) Submitter
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := storetest.New(t)
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	st := store.New(db.Pool)
	logs := &syncBuffer{}
	e := &env{t: t, db: db, st: st, sp: sp, agent: newScript(), logs: logs,
		log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		res: lookups.New(st, lookups.Options{Hostname: "mx.test", CacheTTL: -1})}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", logs.String())
		}
	})
	return e
}

type rcpt struct {
	addr, orig, transport, notify, orcpt string
}

type msgOpts struct {
	ret, envid string
	kind       string
	age        time.Duration
	prepend    string // queue_message.prepend
}

// queue writes a message into the spool and the queue, as cleanup does.
func (e *env) queue(sender string, rcpts []rcpt, o msgOpts) string {
	e.t.Helper()
	ctx := context.Background()
	id := fmt.Sprintf("T%011d", e.seq.Add(1))
	body := "From: <" + sender + ">\r\nSubject: test " + id + "\r\nMessage-ID: <" + id + "@client.test>\r\n\r\nHello " + id + "\r\n"
	w, err := e.sp.Create(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := io.WriteString(w, body); err != nil {
		e.t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		e.t.Fatal(err)
	}
	qm := store.QueueMessage{ID: id, Node: node, SpoolKey: id, Sender: sender, Size: int64(len(o.prepend) + len(body)),
		MessageID: "<" + id + "@client.test>", Kind: o.kind, Prepend: o.prepend}
	if o.ret != "" {
		qm.DSNRet = &o.ret
	}
	if o.envid != "" {
		qm.DSNEnvID = &o.envid
	}
	var qr []store.QueueRecipient
	for _, r := range rcpts {
		x := store.QueueRecipient{Address: r.addr, OrigAddress: r.orig, Domain: domainOf(r.addr), Transport: r.transport}
		if x.OrigAddress == "" {
			x.OrigAddress = r.addr
		}
		if x.Transport == "" {
			x.Transport = "smtp"
		}
		if r.notify != "" {
			x.DSNNotify = &r.notify
		}
		if r.orcpt != "" {
			x.DSNOrcpt = &r.orcpt
		}
		qr = append(qr, x)
	}
	if err := e.st.Enqueue(ctx, qm, qr, store.AcceptedLog{}); err != nil {
		e.t.Fatal(err)
	}
	if o.age > 0 {
		if _, err := e.db.Pool.Exec(ctx, "UPDATE queue_message SET arrived_at = now() - $2::bigint * interval '1 microsecond' WHERE id = $1",
			id, o.age.Microseconds()); err != nil {
			e.t.Fatal(err)
		}
	}
	return id
}

// fast is a policy for tests: retries within a second.
func fast() *PolicyConfig {
	return &PolicyConfig{MinBackoff: 200 * time.Millisecond, MaxBackoff: 400 * time.Millisecond,
		MaxQueueLifetime: time.Hour, BounceQueueLifetime: time.Hour}
}

type running struct {
	m      *Manager
	cancel context.CancelFunc
	done   chan struct{}
}

// stop cancels the manager and waits for Run to return.
func (r *running) stop() {
	r.cancel()
	<-r.done
}

// start runs a manager with test options over e's database and spool.
func (e *env) start(o Options) *running {
	e.t.Helper()
	o.Node = node
	if o.Hostname == "" {
		o.Hostname = "mx.test"
	}
	if o.Agents == nil {
		o.Agents = map[string]deliver.Agent{"smtp": e.agent}
	}
	if o.Policy == nil {
		o.Policy = fast()
	}
	if o.Lease == 0 {
		o.Lease = 5 * time.Second
	}
	if o.PollInterval == 0 {
		o.PollInterval = 500 * time.Millisecond
	}
	o.Log = e.log
	var m *Manager
	sub := Submitter(&StoreSubmitter{Store: e.st, Spool: e.sp, Resolver: e.res, Node: node, Hostname: "mx.test",
		Wake: func() { m.Wake() }, Log: e.log})
	if e.submitWrap != nil {
		sub = e.submitWrap(sub)
	}
	if o.Submitter == nil {
		o.Submitter = sub
	}
	m = New(e.st, e.sp, o)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{m: m, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := m.Run(ctx); err != nil {
			e.t.Errorf("Run: %v", err)
		}
	}()
	e.t.Cleanup(r.stop)
	return r
}

// waitFor polls cond until it is true or the timeout passes.
func (e *env) waitFor(what string, timeout time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// queueEmpty reports whether no message is left in the queue tables.
func (e *env) queueEmpty() bool { return e.count("SELECT count(*) FROM queue_message") == 0 }

func (e *env) logStatuses(id string) []string {
	e.t.Helper()
	rows, err := e.db.Pool.Query(context.Background(),
		"SELECT recipient || ' ' || status || ' ' || dsn FROM delivery_log WHERE queue_id = $1 ORDER BY at, recipient", id)
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func parseDSN(t *testing.T, c call) *dsn.Parsed {
	t.Helper()
	// The spooled DSN starts with its Received: field.
	p, err := dsn.ParseReport(bytes.NewReader(c.body))
	if err != nil {
		t.Fatalf("DSN %s does not parse: %v\n%s", c.queueID, err, c.body)
	}
	return p
}

func TestDeliveredMessageLeavesTheQueue(t *testing.T) {
	e := newEnv(t)
	id := e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com", orig: "team@example.com"}, {addr: "carol@example.com"}}, msgOpts{})
	e.start(Options{})
	e.waitFor("the message to finish", 10*time.Second, e.queueEmpty)

	calls := e.agent.callsOf("")
	if len(calls) != 1 || !slices.Equal(calls[0].rcpts, []string{"bob@example.com", "carol@example.com"}) ||
		calls[0].queueID != id || !strings.Contains(string(calls[0].body), "Hello "+id) {
		t.Fatalf("deliveries: %+v; want one carrying both recipients and the body", calls)
	}
	if got := e.logStatuses(id); !slices.Equal(got, []string{"bob@example.com sent 2.0.0", "carol@example.com sent 2.0.0"}) {
		t.Errorf("delivery_log: %v", got)
	}
	if n := e.count("SELECT count(*) FROM accepted_log WHERE queue_id = $1 AND finished_at IS NOT NULL", id); n != 1 {
		t.Errorf("accepted_log finished rows: %d", n)
	}
	e.waitFor("the spool file to go", 5*time.Second, func() bool { _, err := e.sp.Stat(id); return err != nil })
	if len(e.agent.callsOf(KindDSN)) != 0 {
		t.Error("a DSN was sent for a delivered message")
	}
	logs := e.logs.String()
	want := id + ": to=<bob@example.com>, orig_to=<team@example.com>, relay=mx.example.com[192.0.2.25]:25, delay="
	if !strings.Contains(logs, want) || !strings.Contains(logs, "dsn=2.0.0, status=sent (250 2.0.0 Ok)") {
		t.Errorf("no Postfix-shaped log line %q in:\n%s", want, logs)
	}
}

func TestDeferredIsRetriedAfterTheBackoff(t *testing.T) {
	e := newEnv(t)
	e.agent.set("bob@example.com", deferral("4.2.1 mailbox busy"), deferral("4.2.1 mailbox busy"),
		deliver.Result{Status: deliver.Delivered, Relay: "mx[192.0.2.1]:25", Reply: envelope.Reply{Code: 250, Text: "ok"}})
	id := e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com"}}, msgOpts{})
	e.start(Options{Policy: &PolicyConfig{MinBackoff: 400 * time.Millisecond, MaxBackoff: 600 * time.Millisecond}})
	e.waitFor("the message to finish", 15*time.Second, e.queueEmpty)

	calls := e.agent.callsOf(KindMail)
	if len(calls) != 3 {
		t.Fatalf("%d attempts, want 3", len(calls))
	}
	for i := 1; i < len(calls); i++ {
		// The message is younger than MinBackoff: each retry waits at least that.
		if gap := calls[i].at.Sub(calls[i-1].at); gap < 380*time.Millisecond {
			t.Errorf("attempt %d came %v after the previous one, want >= 400ms", i+1, gap)
		}
	}
	want := []string{"bob@example.com deferred 4.2.1", "bob@example.com deferred 4.2.1", "bob@example.com sent 2.0.0"}
	if got := e.logStatuses(id); !slices.Equal(got, want) {
		t.Errorf("delivery_log: %v, want %v", got, want)
	}
	if len(e.agent.callsOf(KindDSN)) != 0 {
		t.Error("a DSN was sent")
	}
}

func TestTwoFailedRecipientsGiveOneDSNNamingBoth(t *testing.T) {
	e := newEnv(t)
	e.agent.set("bob@example.com", bounce("5.1.1 <bob@example.com>: User unknown"))
	e.agent.set("carol@other.example", bounce("5.2.2 <carol@other.example>: Mailbox full"))
	id := e.queue("alice@sender.test", []rcpt{
		{addr: "bob@example.com", orig: "team@example.com", orcpt: "rfc822;Team@Example.com"},
		{addr: "carol@other.example"},
		{addr: "dave@example.com"},
	}, msgOpts{envid: "ENV-42"})
	e.start(Options{})
	e.waitFor("every message to finish", 10*time.Second, func() bool {
		return e.queueEmpty() && len(e.agent.callsOf(KindDSN)) > 0
	})

	dsns := e.agent.callsOf(KindDSN)
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want exactly 1", len(dsns))
	}
	d := dsns[0]
	if d.sender != "" || !slices.Equal(d.rcpts, []string{"alice@sender.test"}) {
		t.Errorf("DSN envelope: from <%s> to %v", d.sender, d.rcpts)
	}
	p := parseDSN(t, d)
	if p.Kind() != dsn.KindFailure || p.QueueID != id || p.EnvelopeID != "ENV-42" || len(p.Recipients) != 2 {
		t.Fatalf("DSN: kind %s, queue id %s, envid %q, recipients %+v", p.Kind(), p.QueueID, p.EnvelopeID, p.Recipients)
	}
	byAddr := map[string]dsn.Recipient{}
	for _, r := range p.Recipients {
		byAddr[r.FinalRecipient] = r
	}
	bob, carol := byAddr["bob@example.com"], byAddr["carol@other.example"]
	if bob.Action != dsn.ActionFailed || bob.Status != (envelope.Status{5, 1, 1}) || bob.OriginalRecipient != "rfc822;Team@Example.com" ||
		bob.RemoteMTA != "mx.example.com" || !strings.Contains(bob.Diagnostic, "550 5.1.1 <bob@example.com>: User unknown") {
		t.Errorf("bob in DSN: %+v", bob)
	}
	if carol.Status != (envelope.Status{5, 2, 2}) {
		t.Errorf("carol in DSN: %+v", carol)
	}
	// RET not given: a failure returns the whole message.
	if p.OriginalType != "message/rfc822" || !strings.Contains(string(p.Original), "Hello "+id) {
		t.Errorf("original part %s: %q", p.OriginalType, p.Original)
	}
	if p.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("DSN header: %v", p.Header)
	}
	if !strings.Contains(e.logs.String(), id+": sender non-delivery notification: "+d.queueID) {
		t.Errorf("no notification log line")
	}
}

func TestDelayNoticeAfterTheWarningTime(t *testing.T) {
	e := newEnv(t)
	busy := deferral("4.2.1 mailbox busy")
	e.agent.set("bob@example.com", busy, busy, busy, busy, busy, busy, busy, busy, busy, busy,
		deliver.Result{Status: deliver.Delivered, Relay: "mx[192.0.2.1]:25", Reply: envelope.Reply{Code: 250, Text: "ok"}})
	id := e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com"}}, msgOpts{ret: "FULL"})
	e.start(Options{Policy: &PolicyConfig{MinBackoff: 100 * time.Millisecond, MaxBackoff: 150 * time.Millisecond,
		MaxQueueLifetime: time.Hour, DelayWarningTime: 700 * time.Millisecond}})
	e.waitFor("the message to finish", 20*time.Second, e.queueEmpty)

	dsns := e.agent.callsOf(KindDSN)
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want exactly 1 delay notice", len(dsns))
	}
	p := parseDSN(t, dsns[0])
	if p.Kind() != dsn.KindDelay || len(p.Recipients) != 1 || p.Recipients[0].Action != dsn.ActionDelayed ||
		p.Recipients[0].Status != (envelope.Status{4, 2, 1}) || p.Recipients[0].WillRetryUntil.IsZero() {
		t.Fatalf("delay notice: %+v", p.Recipients)
	}
	// The notice came after the warning time, not before.
	first := e.agent.callsOf(KindMail)[0].at
	if gap := dsns[0].at.Sub(first); gap < 600*time.Millisecond {
		t.Errorf("delay notice %v after the first attempt, want >= the 700ms warning time", gap)
	}
	// RET=FULL is honoured for delay notices too.
	if p.OriginalType != "message/rfc822" {
		t.Errorf("original part %s", p.OriginalType)
	}
	if got := e.logStatuses(id); len(got) != 11 || got[10] != "bob@example.com sent 2.0.0" {
		t.Errorf("delivery_log: %v", got)
	}
}

func TestExpiryGivesAFailureDSN(t *testing.T) {
	e := newEnv(t)
	e.agent.set("bob@example.com", deferral("4.4.1 connect to mx.example.com: Connection refused"))
	id := e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com"}}, msgOpts{ret: "HDRS"})
	e.start(Options{Policy: &PolicyConfig{MinBackoff: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		MaxQueueLifetime: 1500 * time.Millisecond}, DeadTime: 50 * time.Millisecond})
	e.waitFor("the message to expire", 20*time.Second, func() bool {
		return e.queueEmpty() && len(e.agent.callsOf(KindDSN)) > 0
	})
	dsns := e.agent.callsOf(KindDSN)
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want 1", len(dsns))
	}
	p := parseDSN(t, dsns[0])
	r := p.Recipients
	if p.Kind() != dsn.KindFailure || len(r) != 1 || r[0].Action != dsn.ActionFailed || r[0].Status != (envelope.Status{5, 4, 1}) ||
		!strings.Contains(r[0].Diagnostic+r[0].Reason, "Connection refused") {
		t.Fatalf("expiry DSN: %+v", r)
	}
	if p.OriginalType != "text/rfc822-headers" || strings.Contains(string(p.Original), "Hello") {
		t.Errorf("RET=HDRS not honoured: %s %q", p.OriginalType, p.Original)
	}
	got := e.logStatuses(id)
	if len(got) < 2 || got[len(got)-1] != "bob@example.com expired 5.4.1" {
		t.Errorf("delivery_log: %v", got)
	}
}

func TestNoDSNToTheNullSender(t *testing.T) {
	e := newEnv(t)
	e.agent.set("bob@example.com", bounce("5.1.1 unknown"))
	e.queue("", []rcpt{{addr: "bob@example.com"}}, msgOpts{})
	e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com", notify: "NEVER"}}, msgOpts{})
	e.start(Options{})
	e.waitFor("the messages to finish", 10*time.Second, e.queueEmpty)
	time.Sleep(300 * time.Millisecond) // a DSN would have been queued by now
	if n := len(e.agent.callsOf(KindDSN)); n != 0 || !e.queueEmpty() {
		t.Fatalf("%d DSNs sent (to <> or despite NOTIFY=NEVER)", n)
	}
	if !strings.Contains(e.logs.String(), "no_dsn=\"no DSN to the null sender\"") {
		t.Errorf("no log of the DSN not sent")
	}
}

func TestFailedDSNGoesToThePostmasterOnce(t *testing.T) {
	e := newEnv(t)
	e.agent.set("bob@example.com", bounce("5.1.1 unknown"))
	e.agent.set("alice@sender.test", bounce("5.1.1 sender gone"))
	e.agent.set("postmaster@mx.test", bounce("5.2.0 postmaster broken"))
	e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com"}}, msgOpts{})
	e.start(Options{})
	e.waitFor("the double bounce to be dropped", 10*time.Second, func() bool {
		return len(e.agent.callsOf(KindDoubleBounce)) > 0 && e.queueEmpty()
	})
	time.Sleep(300 * time.Millisecond)
	dsns, doubles := e.agent.callsOf(KindDSN), e.agent.callsOf(KindDoubleBounce)
	if len(dsns) != 1 || len(doubles) != 1 || !e.queueEmpty() {
		t.Fatalf("%d DSNs, %d double bounces; want 1 each and nothing left", len(dsns), len(doubles))
	}
	if doubles[0].sender != "" || !slices.Equal(doubles[0].rcpts, []string{"postmaster@mx.test"}) {
		t.Errorf("double bounce envelope: <%s> %v", doubles[0].sender, doubles[0].rcpts)
	}
	p := parseDSN(t, doubles[0])
	if len(p.Recipients) != 1 || p.Recipients[0].FinalRecipient != "alice@sender.test" || p.QueueID != dsns[0].queueID ||
		!strings.Contains(string(p.Original), "Undelivered Mail Returned to Sender") {
		t.Errorf("double bounce: %+v original %q", p.Recipients, p.Original)
	}
	if !strings.Contains(e.logs.String(), "undeliverable double bounce to <postmaster@mx.test> dropped") {
		t.Errorf("no log line for the dropped double bounce")
	}
}

func TestErrorAndDiscardTransports(t *testing.T) {
	e := newEnv(t)
	id := e.queue("alice@sender.test", []rcpt{
		{addr: "gone@example.com", transport: "error:5.1.1 mailbox retired"},
		{addr: "later@example.com", transport: "error:4.3.2 try tomorrow"},
		{addr: "void@example.com", transport: "discard"},
		{addr: "nowhere@example.com", transport: "carrier-pigeon:loft"},
	}, msgOpts{})
	e.start(Options{})
	e.waitFor("results", 10*time.Second, func() bool {
		return e.count("SELECT count(DISTINCT recipient) FROM delivery_log WHERE queue_id = $1", id) == 4 && len(e.agent.callsOf(KindDSN)) == 1
	})
	rows := map[string]string{}
	r, err := e.db.Pool.Query(context.Background(), "SELECT DISTINCT ON (recipient) recipient, status || ' ' || reply FROM delivery_log WHERE queue_id = $1 ORDER BY recipient, at", id)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var a, s string
		if err := r.Scan(&a, &s); err != nil {
			t.Fatal(err)
		}
		rows[a] = s
	}
	want := map[string]string{
		"gone@example.com":    "bounced 550 5.1.1 mailbox retired",
		"later@example.com":   "deferred 450 4.3.2 try tomorrow",
		"void@example.com":    "sent 250 2.0.0 discarded",
		"nowhere@example.com": "deferred 451 4.3.0 mail transport unavailable",
	}
	for k, v := range want {
		if rows[k] != v {
			t.Errorf("%s: %q, want %q", k, rows[k], v)
		}
	}
	p := parseDSN(t, e.agent.callsOf(KindDSN)[0])
	if len(p.Recipients) != 1 || p.Recipients[0].FinalRecipient != "gone@example.com" || p.Recipients[0].Reason == "" {
		t.Errorf("DSN: %+v", p.Recipients)
	}
}

func TestRecipientLimitSplitsDeliveries(t *testing.T) {
	e := newEnv(t)
	var rs []rcpt
	for i := range 5 {
		rs = append(rs, rcpt{addr: fmt.Sprintf("u%d@example.com", i)})
	}
	rs = append(rs, rcpt{addr: "x@other.example"})
	e.queue("alice@sender.test", rs, msgOpts{})
	e.start(Options{RecipientLimits: map[string]int{"smtp": 2}})
	e.waitFor("the message to finish", 10*time.Second, e.queueEmpty)
	var sizes []int
	for _, c := range e.agent.callsOf(KindMail) {
		sizes = append(sizes, len(c.rcpts))
		for _, r := range c.rcpts {
			if domainOf(r) != domainOf(c.rcpts[0]) {
				t.Errorf("one delivery mixes destinations: %v", c.rcpts)
			}
		}
	}
	slices.Sort(sizes)
	if !slices.Equal(sizes, []int{1, 1, 2, 2}) {
		t.Errorf("delivery sizes %v, want [1 1 2 2]", sizes)
	}
}

func TestConcurrencyLimits(t *testing.T) {
	e := newEnv(t)
	e.agent.hold = make(chan struct{})
	for i := range 12 {
		e.queue("alice@sender.test", []rcpt{{addr: fmt.Sprintf("u%d@slow.example", i)}}, msgOpts{})
		e.queue("alice@sender.test", []rcpt{{addr: fmt.Sprintf("u%d@other.example", i)}}, msgOpts{})
	}
	e.start(Options{Concurrency: 5, DestinationConcurrency: 4, InitialDestinationConcurrency: 3})
	e.waitFor("deliveries to start", 5*time.Second, func() bool {
		e.agent.mu.Lock()
		defer e.agent.mu.Unlock()
		return e.agent.total >= 5
	})
	time.Sleep(200 * time.Millisecond)
	e.agent.mu.Lock()
	total, slow := e.agent.total, e.agent.running["/slow.example"]
	e.agent.mu.Unlock()
	if total != 5 || slow > 3 {
		t.Errorf("%d deliveries at once (want the global 5), %d to slow.example (want <= initial 3)", total, slow)
	}
	close(e.agent.hold)
	e.waitFor("every message to finish", 15*time.Second, e.queueEmpty)
	e.agent.mu.Lock()
	defer e.agent.mu.Unlock()
	if e.agent.maxTotal > 5 || e.agent.maxRun["/slow.example"] > 4 || e.agent.maxRun["/other.example"] > 4 {
		t.Errorf("limits exceeded: total %d, per destination %v", e.agent.maxTotal, e.agent.maxRun)
	}
}

func TestDeadDestinationWaitsInsteadOfHammering(t *testing.T) {
	e := newEnv(t)
	refused := deliver.Result{Status: deliver.Deferred, Relay: "mx.down.example[192.0.2.7]:25",
		Reply: envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 4, 1}, Text: "connect to mx.down.example: Connection refused"}}
	for i := range 20 {
		e.agent.set(fmt.Sprintf("u%d@down.example", i), refused)
		e.queue("alice@sender.test", []rcpt{{addr: fmt.Sprintf("u%d@down.example", i)}}, msgOpts{})
	}
	e.queue("alice@sender.test", []rcpt{{addr: "fine@up.example"}}, msgOpts{})
	e.start(Options{InitialDestinationConcurrency: 2, DeadTime: time.Hour,
		Policy: &PolicyConfig{MinBackoff: time.Hour, MaxBackoff: time.Hour, MaxQueueLifetime: 24 * time.Hour}})
	e.waitFor("every recipient to be tried or suspended", 10*time.Second, func() bool {
		return e.count("SELECT count(*) FROM queue_recipient WHERE status = 'deferred'") == 20
	})
	tried := 0
	for _, c := range e.agent.callsOf(KindMail) {
		if domainOf(c.rcpts[0]) == "down.example" {
			tried++
		}
	}
	// Two connections at once, then one failed cohort (a window's worth)
	// marks it dead: a handful of attempts, not twenty.
	if tried > 3 || tried < 1 {
		t.Errorf("%d attempts at the dead destination, want 1 to 3", tried)
	}
	if n := e.count("SELECT count(*) FROM delivery_log WHERE reply LIKE '%delivery temporarily suspended%'"); n != 20-tried {
		t.Errorf("%d suspended deferrals logged, want %d", n, 20-tried)
	}
	if e.agent.deliveredTo("fine@up.example") != 1 {
		t.Errorf("the live destination was not delivered")
	}
	if !strings.Contains(e.logs.String(), "destination unreachable; deliveries suspended") {
		t.Errorf("no log line for the dead destination")
	}
}

func TestMissingBodyHoldsTheMessage(t *testing.T) {
	e := newEnv(t)
	id := e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com"}}, msgOpts{})
	if err := e.sp.Remove(id); err != nil {
		t.Fatal(err)
	}
	e.start(Options{})
	e.waitFor("the message to be held", 10*time.Second, func() bool {
		return e.count("SELECT count(*) FROM queue_message WHERE id = $1 AND held AND hold_reason LIKE '%missing%'", id) == 1
	})
	time.Sleep(200 * time.Millisecond)
	if n := e.count("SELECT count(*) FROM queue_recipient WHERE queue_id = $1 AND status = 'queued' AND attempts = 0", id); n != 1 {
		t.Errorf("the held message's recipient is not back in the queue untried")
	}
	if len(e.agent.callsOf("")) != 0 {
		t.Errorf("a message without a body was delivered")
	}
}

func TestAbandonedClaimIsDeliveredByTheNextManager(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 10 {
		ids = append(ids, e.queue("alice@sender.test", []rcpt{{addr: fmt.Sprintf("u%d@example.com", i)}, {addr: fmt.Sprintf("v%d@example.org", i)}}, msgOpts{}))
	}
	// A manager claims half and dies (kill -9): nothing is settled.
	cs, err := e.st.Claim(context.Background(), node, node+":dead", time.Second, 10)
	if err != nil || len(cs) != 10 {
		t.Fatalf("claim: %d %v", len(cs), err)
	}
	e.start(Options{})
	e.waitFor("every message to finish", 15*time.Second, e.queueEmpty)
	for i := range 10 {
		for _, a := range []string{fmt.Sprintf("u%d@example.com", i), fmt.Sprintf("v%d@example.org", i)} {
			if n := e.agent.deliveredTo(a); n != 1 {
				t.Errorf("%s delivered %d times, want 1", a, n)
			}
		}
	}
	_ = ids
}

// A manager that is its node's only one (serve holds the spool's lock)
// takes back at once the leases a killed process of the node left, instead
// of waiting for them to run out.
func TestSoleManagerTakesBackLeasesOfAKilledProcess(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.queue("alice@sender.test", []rcpt{{addr: fmt.Sprintf("u%d@example.com", i)}}, msgOpts{})
	}
	cs, err := e.st.Claim(context.Background(), node, node+":killed", time.Hour, 10)
	if err != nil || len(cs) != 5 {
		t.Fatalf("claim: %d %v", len(cs), err)
	}
	e.start(Options{SoleManager: true})
	e.waitFor("every message to finish", 15*time.Second, e.queueEmpty)
	for i := range 5 {
		if a := fmt.Sprintf("u%d@example.com", i); e.agent.deliveredTo(a) != 1 {
			t.Errorf("%s delivered %d times, want 1", a, e.agent.deliveredTo(a))
		}
	}
	if !strings.Contains(e.logs.String(), "released the leases of earlier processes of this node") {
		t.Error("no log line for the leases taken back")
	}
}

func TestStopMidBatchThenRestartDeliversEverything(t *testing.T) {
	e := newEnv(t)
	e.agent.hold = make(chan struct{}) // deliveries hang until cancelled
	var addrs []string
	for i := range 30 {
		a := fmt.Sprintf("u%d@d%d.example", i, i%4)
		addrs = append(addrs, a)
		e.queue("alice@sender.test", []rcpt{{addr: a}}, msgOpts{})
	}
	r := e.start(Options{Concurrency: 6, StopGrace: 100 * time.Millisecond})
	e.waitFor("deliveries in flight", 5*time.Second, func() bool {
		e.agent.mu.Lock()
		defer e.agent.mu.Unlock()
		return e.agent.total >= 6
	})
	r.stop()
	// Nothing is left delivering: the attempts in flight were deferred,
	// the claimed but untried recipients given back.
	if n := e.count("SELECT count(*) FROM queue_recipient WHERE status = 'delivering'"); n != 0 {
		t.Fatalf("%d recipients left delivering after a stop", n)
	}
	if n := e.count("SELECT count(*) FROM queue_recipient WHERE status = 'queued' AND attempts = 0"); n != 30-6 {
		t.Errorf("%d recipients given back untried, want 24", n)
	}
	e.agent.mu.Lock()
	e.agent.hold = nil
	e.agent.mu.Unlock()
	e.start(Options{})
	e.waitFor("every message to finish", 15*time.Second, e.queueEmpty)
	for _, a := range addrs {
		if e.agent.deliveredTo(a) < 1 {
			t.Errorf("%s never delivered", a)
		}
	}
}

func TestListenerKilledMailStillFlows(t *testing.T) {
	e := newEnv(t)
	// A long poll, and no in-process wake: only NOTIFY (or a reconnection)
	// wakes the manager.
	r := e.start(Options{PollInterval: time.Hour})
	e.waitFor("the listener", 5*time.Second, func() bool { return r.m.ListenConnects() == 1 })
	ctx := context.Background()

	a := e.queue("alice@sender.test", []rcpt{{addr: "first@example.com"}}, msgOpts{})
	if err := e.st.NotifyQueue(ctx, node); err != nil {
		t.Fatal(err)
	}
	e.waitFor("delivery after NOTIFY", 5*time.Second, func() bool { return e.agent.deliveredTo("first@example.com") == 1 })

	// Queued without a NOTIFY (a lost one): only the reconnection's full
	// pass can find it.
	e.queue("alice@sender.test", []rcpt{{addr: "second@example.com"}}, msgOpts{})
	time.Sleep(200 * time.Millisecond)
	if e.agent.deliveredTo("second@example.com") != 0 {
		t.Fatal("delivered without a wake-up")
	}
	admin, err := pgx.Connect(ctx, storetest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var killed int
	if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = $1 AND application_name = $2`, e.db.Name, ListenerApplicationName).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d listener backends: %v", killed, err)
	}
	e.waitFor("the listener to reconnect", 10*time.Second, func() bool { return r.m.ListenConnects() >= 2 })
	e.waitFor("delivery after the reconnection", 5*time.Second, func() bool { return e.agent.deliveredTo("second@example.com") == 1 })

	e.queue("alice@sender.test", []rcpt{{addr: "third@example.com"}}, msgOpts{})
	if err := e.st.NotifyQueue(ctx, node); err != nil {
		t.Fatal(err)
	}
	e.waitFor("delivery after NOTIFY on the new connection", 5*time.Second, func() bool { return e.agent.deliveredTo("third@example.com") == 1 })
	_ = a
}

// A manager that died between settling a bounce and committing its DSN:
// the next one sends the DSN, once.
func TestKillBetweenBounceAndDSNCommitYieldsOneDSN(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com"}, {addr: "carol@example.com"}}, msgOpts{})
	cs, err := e.st.Claim(ctx, node, "dead", time.Minute, 10)
	if err != nil || len(cs) != 2 {
		t.Fatal(cs, err)
	}
	var sets []store.Settlement
	for _, c := range cs {
		sets = append(sets, store.Settlement{ID: c.ID, Status: store.RcptBounced, Reply: "550 5.1.1 unknown", DSN: "5.1.1",
			Relay: "mx.example.com[192.0.2.25]:25", DSNAction: store.DSNFailed, QueueID: id, Recipient: c.Address})
	}
	if err := e.st.Settle(ctx, "dead", sets...); err != nil {
		t.Fatal(err)
	}
	// The first DSN transaction fails after its spool file is written
	// and the debt cleared, before COMMIT: nothing of it may remain.
	var failed atomic.Int32
	e.submitWrap = func(s Submitter) Submitter {
		return submitFunc(func(ctx context.Context, sub Submission, body io.Reader, inTx func(context.Context, pgx.Tx) error) (string, error) {
			if failed.Add(1) == 1 {
				return s.Submit(ctx, sub, body, func(ctx context.Context, tx pgx.Tx) error {
					if err := inTx(ctx, tx); err != nil {
						return err
					}
					return errors.New("injected: connection lost before COMMIT")
				})
			}
			return s.Submit(ctx, sub, body, inTx)
		})
	}
	e.start(Options{})
	e.waitFor("the DSN and the message to finish", 10*time.Second, func() bool {
		return e.queueEmpty() && len(e.agent.callsOf(KindDSN)) > 0
	})
	time.Sleep(300 * time.Millisecond)
	dsns := e.agent.callsOf(KindDSN)
	if len(dsns) != 1 || failed.Load() < 2 {
		t.Fatalf("%d DSNs after %d attempts to queue one; want exactly 1", len(dsns), failed.Load())
	}
	if p := parseDSN(t, dsns[0]); len(p.Recipients) != 2 {
		t.Errorf("DSN names %d recipients, want both", len(p.Recipients))
	}
	if n := e.count("SELECT count(*) FROM accepted_log"); n != 2 {
		t.Errorf("accepted_log has %d rows, want 2 (the message and one DSN)", n)
	}
	// The failed attempt's spool file is gone; only bodies of queued
	// messages remain (none now).
	var left []string
	_ = e.sp.Keys(ctx, func(k string, _ time.Time) error { left = append(left, k); return nil })
	if len(left) != 0 {
		t.Errorf("spool files left: %v", left)
	}
}

type submitFunc func(ctx context.Context, sub Submission, body io.Reader, inTx func(context.Context, pgx.Tx) error) (string, error)

func (f submitFunc) Submit(ctx context.Context, sub Submission, body io.Reader, inTx func(context.Context, pgx.Tx) error) (string, error) {
	return f(ctx, sub, body, inTx)
}

func TestSuccessNotice(t *testing.T) {
	e := newEnv(t)
	e.agent.set("relayed@example.com", deliver.Result{Status: deliver.Delivered, Relayed: true, Relay: "mx.example.com[192.0.2.25]:25",
		Reply: envelope.Reply{Code: 250, Enhanced: envelope.Status{2, 0, 0}, Text: "Ok"}})
	e.queue("alice@sender.test", []rcpt{
		{addr: "bob@example.com", notify: "SUCCESS,FAILURE"},
		{addr: "relayed@example.com", notify: "SUCCESS"},
		{addr: "quiet@example.com"},
	}, msgOpts{})
	e.start(Options{})
	e.waitFor("the notice", 10*time.Second, func() bool { return e.queueEmpty() && len(e.agent.callsOf(KindDSN)) > 0 })
	dsns := e.agent.callsOf(KindDSN)
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs", len(dsns))
	}
	p := parseDSN(t, dsns[0])
	acts := map[string]string{}
	for _, r := range p.Recipients {
		acts[r.FinalRecipient] = r.Action
	}
	if p.Kind() != dsn.KindSuccess || len(acts) != 2 || acts["bob@example.com"] != dsn.ActionDelivered || acts["relayed@example.com"] != dsn.ActionRelayed {
		t.Errorf("success notice: %v", acts)
	}
	if p.OriginalType != "text/rfc822-headers" {
		t.Errorf("success notice encloses %s, want the header only", p.OriginalType)
	}
}

func TestDeliveredHookSeesDeliveredRecipients(t *testing.T) {
	e := newEnv(t)
	e.agent.set("bob@example.com", bounce("5.1.1 unknown"))
	var mu sync.Mutex
	var got []string
	e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com"}, {addr: "carol@example.com"}}, msgOpts{})
	e.start(Options{Delivered: func(ctx context.Context, msg *deliver.Message, rcpts []deliver.Recipient) {
		if msg.Kind != KindMail {
			return // the DSN for bob
		}
		f, err := msg.Open()
		if err != nil {
			t.Errorf("body not readable in the hook: %v", err)
			return
		}
		f.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, r := range rcpts {
			got = append(got, msg.QueueID+" "+r.Address)
		}
	}})
	e.waitFor("the message to finish", 10*time.Second, e.queueEmpty)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || !strings.HasSuffix(got[0], " carol@example.com") {
		t.Errorf("hook saw %v, want carol only", got)
	}
}

// A delivery slower than the lease keeps its recipients while the lease is
// renewed: a second manager on the node never claims them, and the remote
// gets one copy.
func TestStallPastTheLeaseIsDeliveredOnce(t *testing.T) {
	e := newEnv(t)
	e.agent.hold = make(chan struct{})
	e.queue("alice@sender.test", []rcpt{{addr: "slow@example.com"}}, msgOpts{})
	o := Options{Lease: 900 * time.Millisecond, DeliveryTimeout: 10 * time.Second, PollInterval: 100 * time.Millisecond}
	e.start(o)
	e.waitFor("the delivery to start", 5*time.Second, func() bool {
		e.agent.mu.Lock()
		defer e.agent.mu.Unlock()
		return e.agent.total == 1
	})
	e.start(o)                          // another worker of the same node, polling every 100 ms
	time.Sleep(2500 * time.Millisecond) // almost three leases
	close(e.agent.hold)
	e.waitFor("the message to finish", 5*time.Second, e.queueEmpty)
	if n := len(e.agent.callsOf(KindMail)); n != 1 {
		t.Fatalf("%d deliveries of a message stalled past its lease, want 1", n)
	}
	if n := e.count("SELECT count(*) FROM delivery_log"); n != 1 {
		t.Errorf("%d attempts logged, want 1", n)
	}
}

// When the lease cannot be renewed (here: it was taken), the delivery is
// cancelled before the lease runs out, and its result changes nothing.
func TestDeliveryEndsBeforeAnUnrenewedLease(t *testing.T) {
	e := newEnv(t)
	e.agent.hold = make(chan struct{})
	defer close(e.agent.hold)
	id := e.queue("alice@sender.test", []rcpt{{addr: "slow@example.com"}}, msgOpts{})
	// No poll: one just after the lease ran out would release it (the
	// thief's lease ran out too), which is not what is checked here.
	e.start(Options{Lease: time.Second, DeliveryTimeout: 10 * time.Second, PollInterval: time.Hour})
	e.waitFor("the delivery to start", 5*time.Second, func() bool {
		e.agent.mu.Lock()
		defer e.agent.mu.Unlock()
		return e.agent.total == 1
	})
	started := time.Now()
	if _, err := e.db.Pool.Exec(context.Background(), "UPDATE queue_recipient SET lease_owner = 'thief' WHERE queue_id = $1", id); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the delivery to be cancelled", 5*time.Second, func() bool { return len(e.agent.callsOf(KindMail)) == 1 })
	if d := time.Since(started); d > 1500*time.Millisecond {
		t.Errorf("cancelled %v after the lease was lost, want within the 1 s lease", d)
	}
	time.Sleep(200 * time.Millisecond)
	if n := e.count("SELECT count(*) FROM queue_recipient WHERE lease_owner = 'thief' AND status = 'delivering'"); n != 1 {
		t.Errorf("the stale result changed the recipient")
	}
	if !strings.Contains(e.logs.String(), "delivery cancelled") {
		t.Errorf("no log line for the cancelled delivery")
	}
}

// The fields cleanup computed after the body was spooled
// (queue_message.prepend) reach every agent first, and the original in a
// failure DSN.
func TestPrependedFieldsComeFirst(t *testing.T) {
	e := newEnv(t)
	ar := "Authentication-Results: mx.test;\r\n\tspf=pass smtp.mailfrom=alice@sender.test\r\n"
	e.queue("alice@sender.test", []rcpt{{addr: "bob@example.com"}, {addr: "carol@example.com"}}, msgOpts{prepend: ar})
	e.agent.set("carol@example.com", bounce("5.1.1 no such user"))
	e.start(Options{})
	e.waitFor("the message to finish", 10*time.Second, e.queueEmpty)
	calls := e.agent.callsOf(KindMail)
	if len(calls) == 0 || !strings.HasPrefix(string(calls[0].body), ar+"From: <alice@sender.test>\r\n") {
		t.Fatalf("deliveries %+v; want the prepended fields, then the spool file", calls)
	}
	dsns := e.agent.callsOf(KindDSN)
	if len(dsns) != 1 || !strings.Contains(string(dsns[0].body), ar+"From: <alice@sender.test>\r\n") {
		t.Fatalf("DSNs %d; want one returning the message with its prepended fields", len(dsns))
	}
}
