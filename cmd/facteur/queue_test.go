package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/store/storetest"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/ with the output of the tests")

// queueEnv is a database with a queue, a spool on node mx1, and the CLI.
type queueEnv struct {
	t   *testing.T
	db  *storetest.DB
	st  *store.Store
	sp  *spool.Spool
	cfg *Config
}

func newQueueEnv(t *testing.T) *queueEnv {
	t.Helper()
	db := storetest.New(t)
	dir := t.TempDir()
	cfg := &Config{DatabaseURL: db.URL, Hostname: "mx1.example.test", Node: "mx1",
		SpoolDir: filepath.Join(dir, "spool"), MailRoot: filepath.Join(dir, "mail")}
	cfg.applyDefaults()
	sp, err := spool.Open(cfg.SpoolDir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return &queueEnv{t: t, db: db, st: store.New(db.Pool), sp: sp, cfg: cfg}
}

// run runs `facteur ARGS` in process with stdin, and returns its standard
// output and error and the exit status run() would give.
func (e *queueEnv) run(stdin string, args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	cfg := *e.cfg
	a := &app{cfg: &cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer a.close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := newRoot(a)
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(ctx)
	code = exitOK
	if err != nil {
		fmt.Fprintf(&errOut, "facteur: %v\n", err)
		code = exitFailure
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
	}
	return out.String(), errOut.String(), code
}

// ok runs a command that must succeed and returns its standard output.
func (e *queueEnv) ok(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.run("", args...)
	if code != 0 {
		e.t.Fatalf("facteur %s: status %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (e *queueEnv) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *queueEnv) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// enqueue writes a body into the spool and queues it as cleanup does (body
// durable first, then the rows).
func (e *queueEnv) enqueue(id, sender string, size int, rcpts ...string) {
	e.t.Helper()
	ctx := context.Background()
	w, err := e.sp.Create(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	body := fmt.Sprintf("Received: from client.example.org by mx1.example.test with ESMTPS id %s\r\nFrom: <%s>\r\nSubject: test %s\r\nMessage-ID: <%s@example.org>\r\n\r\n", id, sender, id, id)
	body += strings.Repeat("x", max(0, size-len(body)-2)) + "\r\n"
	if _, err := w.WriteString(body); err != nil {
		e.t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		e.t.Fatal(err)
	}
	var rs []store.QueueRecipient
	for _, r := range rcpts {
		addr, tr, ok := strings.Cut(r, ">")
		if !ok {
			tr = "smtp"
		}
		rs = append(rs, store.QueueRecipient{Address: addr, OrigAddress: addr, Domain: queueDomainPart(addr), Transport: tr})
	}
	msg := store.QueueMessage{ID: id, Node: "mx1", SpoolKey: id, Sender: sender, Size: int64(len(body)),
		MessageID: "<" + id + "@example.org>", ClientAddr: "192.0.2.7", ClientHelo: "client.example.org", Protocol: "ESMTPS"}
	if err := e.st.Enqueue(ctx, msg, rs, store.AcceptedLog{TLS: "TLSv1.3 TLS_AES_128_GCM_SHA256"}); err != nil {
		e.t.Fatal(err)
	}
}

// settle claims every due recipient and settles each with result(address).
func (e *queueEnv) settle(result func(addr string) store.Settlement) {
	e.t.Helper()
	ctx := context.Background()
	cs, err := e.st.Claim(ctx, "mx1", "test-worker", time.Minute, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	var sets []store.Settlement
	for _, c := range cs {
		s := result(c.Address)
		s.ID, s.QueueID, s.Node, s.Sender, s.Recipient = c.ID, c.Message.ID, "mx1", c.Message.Sender, c.Address
		s.OrigRecipient, s.Domain, s.Transport = c.OrigAddress, c.Domain, c.Transport
		sets = append(sets, s)
	}
	if err := e.st.Settle(ctx, "test-worker", sets...); err != nil {
		e.t.Fatal(err)
	}
}

// queueFixture fills the queue with messages in every state, with fixed
// times so that listings can be compared with golden files:
//
//	Q1DEFER00001  two recipients deferred with the same reply
//	Q2BOUNCE0002  a DSN (null sender) never tried
//	Q3HELD000003  held, three recipients deferred with two replies
//	Q4ACTIVE0004  one recipient being delivered, one queued
//	Q5EXPIRE0005  expired by the operator, its DSN not sent yet
//	Q6DONE000006  delivered, not yet removed (not listed)
func queueFixture(e *queueEnv) {
	ctx := context.Background()
	grey := "451 4.7.1 Greylisted, try again later (in reply to RCPT TO command)"
	e.enqueue("Q1DEFER00001", "john@example.test", 1500, "bob@partner.example", "carol@partner.example")
	e.settle(func(string) store.Settlement {
		return store.Settlement{Status: store.RcptDeferred, RetryIn: time.Hour, Reply: grey, DSN: "4.7.1",
			Relay: "mx.partner.example[192.0.2.25]:25", Delay: 1200 * time.Millisecond}
	})
	e.enqueue("Q6DONE000006", "john@example.test", 500, "done@example.test>maildir")
	e.settle(func(string) store.Settlement {
		return store.Settlement{Status: store.RcptDelivered, Reply: "250 2.0.0 delivered to maildir", DSN: "2.0.0",
			Relay: "maildir", Delay: 40 * time.Millisecond}
	})
	e.enqueue("Q3HELD000003", "spam@bulk.example", 40000, "u1@partner.example", "u2@other.example", "u3@other.example")
	e.settle(func(addr string) store.Settlement {
		s := store.Settlement{Status: store.RcptDeferred, RetryIn: time.Hour, Reply: "450 4.2.0 mailbox busy", DSN: "4.2.0",
			Relay: "mx.other.example[198.51.100.3]:25", Delay: 3 * time.Second}
		if addr == "u1@partner.example" {
			s.Reply, s.DSN, s.Relay = "421 4.7.0 too many connections", "4.7.0", "mx.partner.example[192.0.2.25]:25"
		}
		return s
	})
	if _, err := e.st.HoldMessages(store.WithActor(ctx, "cli:root"), []string{"Q3HELD000003"}, ""); err != nil {
		e.t.Fatal(err)
	}
	e.enqueue("Q5EXPIRE0005", "john@example.test", 2100, "z@gone.example")
	if _, err := e.st.ExpireMessages(ctx, []string{"Q5EXPIRE0005"}); err != nil {
		e.t.Fatal(err)
	}
	e.enqueue("Q4ACTIVE0004", "jane@example.test", 800, "x@remote.test", "y@remote.test")
	if cs, err := e.st.Claim(ctx, "mx1", "mx1-queue-1", time.Minute, 1); err != nil || len(cs) != 1 || cs[0].Address != "x@remote.test" {
		e.t.Fatalf("claim = %v, %v", cs, err)
	}
	e.enqueue("Q2BOUNCE0002", "", 3000, "alice@remote.test")
	e.exec("UPDATE queue_message SET kind = 'dsn' WHERE id = 'Q2BOUNCE0002'")

	// Fixed times.
	e.exec(`UPDATE queue_message m SET arrived_at = t.at::timestamptz
FROM (VALUES ('Q1DEFER00001', '2026-03-01 09:15:02Z'), ('Q2BOUNCE0002', '2026-03-01 11:00:00Z'),
             ('Q3HELD000003', '2026-02-27 23:59:59Z'), ('Q4ACTIVE0004', '2026-03-01 10:30:00Z'),
             ('Q5EXPIRE0005', '2026-02-20 08:00:00Z'), ('Q6DONE000006', '2026-03-01 09:20:00Z')) AS t (id, at)
WHERE m.id = t.id`)
	e.exec(`UPDATE queue_recipient r SET next_attempt_at = m.arrived_at + interval '1 hour',
	last_attempt_at = CASE WHEN r.attempts > 0 THEN m.arrived_at + interval '2 seconds' END,
	lease_expires_at = CASE WHEN r.status = 'delivering' THEN '2099-01-01 00:00:00Z'::timestamptz END
FROM queue_message m WHERE m.id = r.queue_id`)
	e.exec(`UPDATE accepted_log a SET at = m.arrived_at FROM queue_message m WHERE m.id = a.queue_id`)
	e.exec(`UPDATE delivery_log l SET at = m.arrived_at + interval '2 seconds' + (l.id % 10) * interval '1 millisecond',
	delay_seconds = round(l.delay_seconds::numeric, 3)
FROM queue_message m WHERE m.id = l.queue_id AND l.status <> 'expired'`)
	e.exec(`UPDATE delivery_log l SET at = '2026-03-01 12:00:00Z', delay_seconds = 792000 WHERE l.status = 'expired'`)
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -run %s -update rewrites it):\n--- got\n%s\n--- want\n%s", path, t.Name(), got, want)
	}
}

// transcript runs commands and returns their output, each after a "$ facteur
// ARGS" line, for golden files.
func (e *queueEnv) transcript(cmds ...[]string) string {
	e.t.Helper()
	var sb strings.Builder
	for _, args := range cmds {
		out, errOut, code := e.run("", args...)
		fmt.Fprintf(&sb, "$ facteur %s\n%s", strings.Join(args, " "), out)
		if code != 0 {
			fmt.Fprintf(&sb, "[exit %d] %s", code, errOut)
		}
	}
	return sb.String()
}

func TestQueueListMatchesGolden(t *testing.T) {
	e := newQueueEnv(t)
	queueFixture(e)
	golden(t, "queue/list.golden", e.transcript(
		[]string{"queue", "list", "--utc"},
		[]string{"queue", "list", "--utc", "--domain", "other.example"},
		[]string{"queue", "list", "--utc", "--status", "held"},
		[]string{"queue", "list", "--utc", "--sender", "<>"},
		[]string{"queue", "list", "--utc", "--recipient", "remote.test", "--status", "delivering"},
		[]string{"queue", "list", "--utc", "--older-than", "1000d"},
		[]string{"queue", "list", "--utc", "--node", "mx2"},
		[]string{"queue", "list", "--status", "lost"},
	))
	golden(t, "queue/list.json.golden", e.ok("queue", "list", "--json"))
}

func TestQueueShowMatchesGolden(t *testing.T) {
	e := newQueueEnv(t)
	queueFixture(e)
	golden(t, "queue/show.golden", e.transcript(
		[]string{"queue", "show", "--utc", "Q1DEFER00001"},
		[]string{"queue", "show", "--utc", "Q3HELD000003"},
		[]string{"queue", "show", "--utc", "Q4ACTIVE0004"},
		[]string{"queue", "show", "--utc", "Q5EXPIRE0005"},
		[]string{"queue", "show", "--utc", "NOSUCHID0000"},
	))
	// A message that left the queue is shown from the logs.
	if _, err := e.st.FinishMessages(context.Background(), "mx1", []string{"Q6DONE000006"}, 0); err != nil {
		t.Fatal(err)
	}
	e.exec("UPDATE accepted_log SET finished_at = '2026-03-01 09:20:03Z' WHERE queue_id = 'Q6DONE000006'")
	golden(t, "queue/show_finished.golden", e.ok("queue", "show", "--utc", "Q6DONE000006"))
}

func TestLogMatchesGolden(t *testing.T) {
	e := newQueueEnv(t)
	queueFixture(e)
	golden(t, "log/log.golden", e.transcript(
		[]string{"log", "--utc"},
		[]string{"log", "--utc", "--id", "Q3HELD000003"},
		[]string{"log", "--utc", "--address", "partner.example", "--status", "deferred"},
		[]string{"log", "--utc", "--domain", "gone.example"},
		[]string{"log", "--utc", "--since", "2026-03-01 09:30", "--until", "2026-03-01 11:30"},
		[]string{"log", "--utc", "--address", "<>"},
		[]string{"log", "--status", "lost"},
	))
	golden(t, "log/log.json.golden", e.ok("log", "--json", "--id", "Q1DEFER00001"))

	// A window shows the events inside it: here the delivery and the
	// removal, not the acceptance before it.
	if _, err := e.st.FinishMessages(context.Background(), "mx1", []string{"Q6DONE000006"}, 0); err != nil {
		t.Fatal(err)
	}
	e.exec("UPDATE accepted_log SET finished_at = '2026-03-01 09:20:03Z' WHERE queue_id = 'Q6DONE000006'")
	out := e.ok("log", "--utc", "--since", "2026-03-01 09:20:01", "--until", "2026-03-01 09:30")
	want := "2026-03-01T09:20:02.003Z mx1 facteur/maildir: Q6DONE000006: to=<done@example.test>, relay=maildir, delay=0.04, dsn=2.0.0, status=sent (250 2.0.0 delivered to maildir)\n" +
		"2026-03-01T09:20:03.000Z mx1 facteur/qmgr: Q6DONE000006: removed\n"
	if out != want {
		t.Errorf("log of a window:\n%s\nwant\n%s", out, want)
	}
}

func TestLogFollowPrintsNewDeliveries(t *testing.T) {
	e := newQueueEnv(t)
	e.enqueue("FOLLOW000001", "a@example.org", 300, "b@example.com")
	cfg := *e.cfg
	a := &app{cfg: &cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer a.close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRoot(a)
	pr, pw := io.Pipe()
	root.SetArgs([]string{"log", "--follow", "--utc"})
	root.SetOut(pw)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx); pw.Close() }()
	lines := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		var acc string
		for {
			n, err := pr.Read(buf)
			acc += string(buf[:n])
			for {
				i := strings.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				lines <- acc[:i]
				acc = acc[i+1:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	next := func(want string) {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("follow ended before %q", want)
				}
				if strings.Contains(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no line with %q", want)
			}
		}
	}
	next("FOLLOW000001: client=192.0.2.7")
	e.settle(func(string) store.Settlement {
		return store.Settlement{Status: store.RcptDelivered, Reply: "250 2.0.0 Ok", DSN: "2.0.0", Relay: "mx.example.com[192.0.2.9]:25"}
	})
	next("FOLLOW000001: to=<b@example.com>, relay=mx.example.com[192.0.2.9]:25")
	e.enqueue("FOLLOW000002", "a@example.org", 300, "c@example.com")
	next("FOLLOW000002: client=192.0.2.7")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow: %v", err)
	}
	// Each line once: drain what is left and look for repeats.
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	for _, l := range rest {
		if strings.Contains(l, "FOLLOW000001: to=") || strings.Contains(l, "FOLLOW000002: client=") {
			t.Errorf("line printed twice: %s", l)
		}
	}
}

func TestQueueShapeMatchesGolden(t *testing.T) {
	e := newQueueEnv(t)
	e.enqueue("SHAPE0000001", "a@example.org", 100, "a@one.example", "b@one.example", "c@two.example")
	e.enqueue("SHAPE0000002", "b@example.org", 100, "d@two.example")
	e.enqueue("SHAPE0000003", "", 100, "e@three.example")
	e.enqueue("SHAPE0000004", "c@example.net", 100, "f@a-very-long-subdomain.of.some-rather-long-domain-name.example")
	e.enqueue("SHAPE0000005", "c@example.net", 100, "g@one.example")
	e.exec("UPDATE queue_message SET arrived_at = now() - interval '7 minutes' WHERE id = 'SHAPE0000002'")
	e.exec("UPDATE queue_message SET arrived_at = now() - interval '3 days' WHERE id = 'SHAPE0000003'")
	e.exec("UPDATE queue_message SET arrived_at = now() - interval '90 minutes' WHERE id = 'SHAPE0000004'")
	e.exec("UPDATE queue_message SET arrived_at = now() - interval '30 minutes', held = true WHERE id = 'SHAPE0000005'")
	e.exec("UPDATE queue_recipient SET status = 'deferred', attempts = 1 WHERE address IN ('c@two.example', 'e@three.example')")
	golden(t, "queue/shape.golden", e.transcript(
		[]string{"queue", "shape"},
		[]string{"queue", "shape", "deferred"},
		[]string{"queue", "shape", "hold"},
		[]string{"queue", "shape", "--held", "--sender"},
		[]string{"queue", "shape", "--json"},
		[]string{"queue", "shape", "nosuch"},
	))
}

func TestQueueCatPrintsTheSpooledMessage(t *testing.T) {
	e := newQueueEnv(t)
	queueFixture(e)
	out := e.ok("queue", "cat", "Q1DEFER00001")
	body, err := os.ReadFile(e.sp.Path("Q1DEFER00001"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"*** ENVELOPE RECORDS deferred/Q1DEFER00001 ***\n", "sender: john@example.test\n",
		"recipient: bob@partner.example\n", "recipient: carol@partner.example\n",
		"*** MESSAGE CONTENTS deferred/Q1DEFER00001 ***\n" + string(body) + "*** MESSAGE FILE END deferred/Q1DEFER00001 ***\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("cat output lacks %q:\n%s", want, out)
		}
	}
	// Fields kept beside the spool file come first, as agents send them.
	e.exec(`UPDATE queue_message SET prepend = E'Authentication-Results: mx1.example.test; spf=pass\r\n' WHERE id = 'Q1DEFER00001'`)
	if out := e.ok("queue", "cat", "Q1DEFER00001"); !strings.Contains(out, "*** MESSAGE CONTENTS deferred/Q1DEFER00001 ***\nAuthentication-Results: mx1.example.test; spf=pass\r\nReceived: ") {
		t.Errorf("cat with prepended fields:\n%s", out)
	}
	hdr := e.ok("queue", "cat", "--header", "Q1DEFER00001")
	if !strings.Contains(hdr, "Message-ID: <Q1DEFER00001@example.org>\r\n\r\n*** MESSAGE FILE END") || !strings.Contains(hdr, "spf=pass") ||
		strings.Contains(hdr, "xxxx") || strings.Contains(hdr, "ENVELOPE") {
		t.Errorf("cat --header:\n%s", hdr)
	}
	bd := e.ok("queue", "cat", "--body", "Q1DEFER00001")
	if strings.Contains(bd, "Subject:") || strings.Contains(bd, "spf=pass") || !strings.Contains(bd, "xxxx") {
		t.Errorf("cat --body:\n%s", bd)
	}

	// Another node's message: say where to run it.
	e.exec("UPDATE queue_message SET node = 'mx2' WHERE id = 'Q2BOUNCE0002'")
	_, errOut, code := e.run("", "queue", "cat", "Q2BOUNCE0002")
	if code != exitFailure || !strings.Contains(errOut, "in the spool of node mx2; this is node mx1: run `facteur queue cat Q2BOUNCE0002` on mx2") {
		t.Errorf("cat of another node's message: status %d, %s", code, errOut)
	}
	// A missing body is said so.
	if err := e.sp.Remove("Q4ACTIVE0004"); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := e.run("", "queue", "cat", "Q4ACTIVE0004"); code != exitFailure || !strings.Contains(errOut, "spool file Q4ACTIVE0004 is missing") {
		t.Errorf("cat of a missing body: status %d, %s", code, errOut)
	}
}

func TestQueueActionsThroughTheCLI(t *testing.T) {
	e := newQueueEnv(t)
	queueFixture(e)
	e.exec("UPDATE queue_recipient SET next_attempt_at = now() + interval '1 hour' WHERE status = 'deferred'")
	out := e.transcript(
		[]string{"queue", "hold", "Q1DEFER00001", "Q4ACTIVE0004*", "NOSUCHID0000"},
		[]string{"queue", "release", "--status", "held"},
		[]string{"queue", "flush", "--domain", "partner.example"},
		[]string{"queue", "flush", "Q3HELD000003"},
		[]string{"queue", "expire", "--wait", "0", "Q4ACTIVE0004"},
		[]string{"queue", "delete", "--wait", "0", "Q4ACTIVE0004"},
		[]string{"queue", "delete", "--sender", "spam@bulk.example"},
		[]string{"queue", "hold"},
		[]string{"queue", "hold", "ALL", "Q1DEFER00001"},
		[]string{"queue", "hold", "not-an-id!"},
	)
	golden(t, "queue/actions.golden", out)

	// State after the transcript.
	if n := e.count("SELECT count(*) FROM queue_message WHERE id = 'Q3HELD000003'"); n != 0 {
		t.Error("Q3HELD000003 was not deleted")
	}
	if _, err := os.Stat(e.sp.Path("Q3HELD000003")); !os.IsNotExist(err) {
		t.Errorf("body of the deleted message: %v", err)
	}
	// The delete of Q4 waits for its delivery: held, one recipient left,
	// body kept.
	if n := e.count("SELECT count(*) FROM queue_recipient WHERE queue_id = 'Q4ACTIVE0004'"); n != 1 {
		t.Errorf("Q4ACTIVE0004 has %d recipients, want the one being delivered", n)
	}
	if _, err := os.Stat(e.sp.Path("Q4ACTIVE0004")); err != nil {
		t.Errorf("body of a message with a delivery in flight: %v", err)
	}
	// Flush made partner.example due, and woke nothing else.
	if n := e.count("SELECT count(*) FROM queue_recipient WHERE domain = 'partner.example' AND next_attempt_at > now()"); n != 0 {
		t.Errorf("%d partner.example recipients not due after flush", n)
	}
	rows := e.count("SELECT count(*) FROM audit_log WHERE table_name = 'queue_message' AND actor LIKE 'cli:%'")
	if rows < 6 {
		t.Errorf("%d audit rows from the CLI, want one per changed message", rows)
	}

	// IDs from standard input, as mailq prints them.
	stdout, stderr, code := e.run("Q1DEFER00001!\n  Q2BOUNCE0002 \n", "queue", "hold", "--reason", "investigating", "-")
	if code != 0 || stdout != "Q1DEFER00001: placed on hold\nQ2BOUNCE0002: placed on hold\n" {
		t.Errorf("hold from stdin: %d\n%s%s", code, stdout, stderr)
	}
	if n := e.count("SELECT count(*) FROM queue_message WHERE held AND hold_reason = 'investigating'"); n != 2 {
		t.Errorf("%d messages held with the reason", n)
	}
}

func TestQueueRequeueReresolvesThroughLookups(t *testing.T) {
	e := newQueueEnv(t)
	e.exec(`INSERT INTO domain (name) VALUES ('example.test');
INSERT INTO mailbox (address) VALUES ('john@example.test'), ('jane@example.test');
INSERT INTO alias (address, destinations) VALUES ('sales@example.test', '{john@example.test}')`)
	e.enqueue("REQUEUE00001", "a@example.org", 300, "john@example.test>maildir")
	e.exec("UPDATE queue_recipient SET orig_address = 'sales@example.test', status = 'deferred', attempts = 3, next_attempt_at = now() + interval '1 hour'")
	e.enqueue("REQUEUE00002", "a@example.org", 300, "gone@example.test>maildir")
	// The alias now leads to jane as well; gone@ no longer exists.
	e.exec("UPDATE alias SET destinations = '{john@example.test,jane@example.test}' WHERE address = 'sales@example.test'")
	golden(t, "queue/requeue.golden", e.transcript([]string{"queue", "requeue", "REQUEUE00001", "REQUEUE00002"}))
	rows, err := e.db.Pool.Query(context.Background(), `SELECT queue_id || ' ' || address || ' ' || transport || ' ' || status || ' ' || attempts || ' ' || (next_attempt_at <= now())
FROM queue_recipient ORDER BY queue_id, address`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	want := []string{
		"REQUEUE00001 jane@example.test maildir queued 0 true",
		"REQUEUE00001 john@example.test maildir deferred 3 true",
		"REQUEUE00002 gone@example.test error:5.1.1 user unknown queued 0 true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after requeue:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// checkMailq runs Debian's check_mailq -M postfix (monitoring-plugins) on
// our mailq output; it skips when the plugin is missing, except under
// FACTEUR_REQUIRE_PEERS=1.
func checkMailq(t *testing.T, listing string, args ...string) string {
	t.Helper()
	const plugin = "/usr/lib/nagios/plugins/check_mailq"
	perl, perr := exec.LookPath("perl")
	if _, err := os.Stat(plugin); err != nil || perr != nil {
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatalf("check_mailq is required (apt-get install -y monitoring-plugins-standard): %v %v", err, perr)
		}
		t.Skipf("check_mailq not installed (apt-get install -y monitoring-plugins-standard): %v", err)
	}
	dir := t.TempDir()
	// The plugin runs $utils::PATH_TO_MAILQ from the utils.pm beside it:
	// copy both, pointing that path at a script that prints our listing.
	src, err := os.ReadFile(plugin)
	if err != nil {
		t.Fatal(err)
	}
	utils, err := os.ReadFile(filepath.Join(filepath.Dir(plugin), "utils.pm"))
	if err != nil {
		t.Fatal(err)
	}
	listPath := filepath.Join(dir, "listing")
	mailq := filepath.Join(dir, "mailq")
	if err := os.WriteFile(listPath, []byte(listing), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mailq, []byte("#!/bin/sh\nexec cat "+listPath+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\$PATH_TO_MAILQ\s*=.*$`)
	if !re.Match(utils) {
		t.Fatal("utils.pm has no PATH_TO_MAILQ")
	}
	utils = re.ReplaceAll(utils, []byte(`$$PATH_TO_MAILQ = "`+mailq+`";`))
	if err := os.WriteFile(filepath.Join(dir, "utils.pm"), utils, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "check_mailq"), src, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(perl, append([]string{filepath.Join(dir, "check_mailq"), "-M", "postfix"}, args...)...)
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func TestMailqIsReadByCheckMailq(t *testing.T) {
	e := newQueueEnv(t)
	if got := checkMailq(t, e.ok("queue", "list"), "-w", "3", "-c", "10"); !strings.HasPrefix(got, "OK: postfix mailq reports queue is empty") {
		t.Fatalf("check_mailq on an empty queue: %s", got)
	}
	queueFixture(e)
	listing := e.ok("queue", "list")
	if got := checkMailq(t, listing, "-w", "3", "-c", "10"); !strings.HasPrefix(got, "WARNING: postfix mailq is 5 (threshold w = 3)") {
		t.Fatalf("check_mailq: %s\n%s", got, listing)
	}
	if got := checkMailq(t, listing, "-w", "6", "-c", "10"); !strings.HasPrefix(got, "OK: postfix mailq (5) is below threshold (6/10)") {
		t.Fatalf("check_mailq: %s", got)
	}
	if got := checkMailq(t, listing, "-w", "2", "-c", "5"); !strings.HasPrefix(got, "CRITICAL: postfix mailq is 5 (threshold c = 5)") {
		t.Fatalf("check_mailq: %s", got)
	}
	// The summary is exact: the sizes of the listed messages, in KiB, and
	// their number.
	var total int64
	if err := e.db.Pool.QueryRow(context.Background(),
		"SELECT sum(size) FROM queue_message WHERE id <> 'Q6DONE000006'").Scan(&total); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("\n-- %d Kbytes in 5 Requests.\n", total/1024); !strings.HasSuffix(listing, want) {
		t.Fatalf("listing ends %q, want %q", listing[max(0, len(listing)-60):], want)
	}
}
