package smtpd_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/foxcpp/go-mockdns"

	"github.com/facteur/facteur/mta/dkimsign"
	"github.com/facteur/facteur/mta/dnsbl"
	"github.com/facteur/facteur/mta/greylist"
	"github.com/facteur/facteur/mta/msgauth"
	"github.com/facteur/facteur/mta/ratelimit"
	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/store"
)

// fakeDNS is the in-process resolver of these tests (DESIGN "DNS": no test
// reaches the machine's resolver); names without the trailing dot.
func fakeDNS(zones map[string]mockdns.Zone) *mockdns.Resolver {
	z := map[string]mockdns.Zone{}
	for k, v := range zones {
		z[strings.ToLower(strings.TrimSuffix(k, "."))+"."] = v
	}
	return &mockdns.Resolver{Zones: z}
}

// msgauthDeps adds SPF, DKIM and DMARC over dns, with the database's
// domain policies.
func (w *world) msgauthDeps(dns *mockdns.Resolver) func(*smtpd.Deps) {
	return func(d *smtpd.Deps) {
		d.MsgAuth = msgauth.New(msgauth.Options{Resolver: dns, Timeout: 5 * time.Second})
		d.Policies = w.st
	}
}

// send runs one transaction on c and returns the last reply (the queue id
// follows "queued as " when it is 250).
func send(c *client, from, to, msg, want string) string {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", "250 ")
	c.cmd("RCPT TO:<"+to+">", "250 ")
	c.cmd("DATA", "354 ")
	c.write(msg + ".\r\n")
	return c.expect(want)
}

// queueID returns the id of a "250 2.0.0 Ok: queued as ID" reply.
func queueID(t *testing.T, reply string) string {
	t.Helper()
	id, ok := strings.CutPrefix(reply, "250 2.0.0 Ok: queued as ")
	if !ok {
		t.Fatalf("not queued: %q", reply)
	}
	return id
}

// delivered returns a queued message as delivery agents read it
// (deliver.Message.Open): queue_message.prepend, then the spool file.
func (w *world) delivered(id string) string {
	w.t.Helper()
	var prepend string
	if err := w.db.Pool.QueryRow(context.Background(), `SELECT prepend FROM queue_message WHERE id = $1`, id).Scan(&prepend); err != nil {
		w.t.Fatalf("queue row of %s: %v", id, err)
	}
	f, err := w.sp.Open(id)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		w.t.Fatal(err)
	}
	return prepend + string(b)
}

// ourResults returns the Authentication-Results fields of msg's header
// that name testHost, unfolded.
func ourResults(msg string) []string {
	hdr, _, _ := strings.Cut(msg, "\r\n\r\n")
	var out []string
	for _, f := range strings.Split(strings.ReplaceAll(hdr, "\r\n\t", " "), "\r\n") {
		if name, v, ok := strings.Cut(f, ":"); ok && strings.EqualFold(name, msgauth.HeaderName) &&
			strings.HasPrefix(strings.TrimSpace(v), testHost) {
			out = append(out, f)
		}
	}
	return out
}

func message(from, extra string) string {
	return "From: Someone <" + from + ">\r\nTo: alice@example.test\r\nSubject: test\r\n" +
		"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + from + ".1@client.test>\r\n" + extra +
		"\r\nHello,\r\nthis is a test.\r\n"
}

func TestSPFResultsInAuthenticationResults(t *testing.T) {
	w := newWorld(t)
	dns := fakeDNS(map[string]mockdns.Zone{
		"spf-pass.test": {TXT: []string{"v=spf1 ip4:127.0.0.0/8 -all"}},
		"spf-fail.test": {TXT: []string{"v=spf1 ip4:192.0.2.1 -all"}},
		"spf-soft.test": {TXT: []string{"v=spf1 ~all"}},
		"spf-none.test": {A: []string{"192.0.2.1"}},
	})
	r := w.start(smtpd.Options{}, w.msgauthDeps(dns))
	for _, c := range []struct{ domain, result string }{
		{"spf-pass.test", "spf=pass"}, {"spf-fail.test", "spf=fail"}, {"spf-soft.test", "spf=softfail"}, {"spf-none.test", "spf=none"},
	} {
		cl := dialGreeted(t, r.addrs[smtpd.MX])
		cl.ehlo()
		from := "someone@" + c.domain
		id := queueID(t, send(cl, from, alice, message(from, ""), "250 "))
		msg := w.delivered(id)
		ar := ourResults(msg)
		if len(ar) != 1 {
			t.Fatalf("%s: %d Authentication-Results fields for %s, want 1:\n%s", c.domain, len(ar), testHost, msg)
		}
		for _, want := range []string{c.result + " smtp.mailfrom=" + from, "dkim=none", "dmarc=none header.from=" + c.domain} {
			if !strings.Contains(ar[0], want) {
				t.Errorf("%s: %q lacks %q", c.domain, ar[0], want)
			}
		}
		if !strings.HasPrefix(msg, "Authentication-Results: "+testHost+";") {
			t.Errorf("%s: the message does not start with our Authentication-Results:\n%s", c.domain, msg)
		}
	}
	// The null sender: SPF checks the HELO name (RFC 7208 2.4).
	cl := dialGreeted(t, r.addrs[smtpd.MX])
	cl.cmd("EHLO spf-pass.test", "250 ")
	id := queueID(t, send(cl, "", alice, message("someone@spf-pass.test", ""), "250 "))
	if ar := ourResults(w.delivered(id)); len(ar) != 1 || !strings.Contains(ar[0], "spf=pass smtp.helo=spf-pass.test") {
		t.Errorf("null sender: %q", ar)
	}
}

func TestForgedResultsForOurHostAreReplaced(t *testing.T) {
	w := newWorld(t)
	dns := fakeDNS(map[string]mockdns.Zone{"spf-fail.test": {TXT: []string{"v=spf1 -all"}}})
	r := w.start(smtpd.Options{}, w.msgauthDeps(dns))
	cl := dialGreeted(t, r.addrs[smtpd.MX])
	cl.ehlo()
	forged := "Authentication-Results: " + testHost + "; spf=pass smtp.mailfrom=ceo@spf-fail.test;\r\n\tdmarc=pass header.from=spf-fail.test\r\n" +
		"Authentication-Results: " + strings.ToUpper(testHost) + "; dkim=pass header.d=spf-fail.test\r\n" +
		"Authentication-Results: relay.other.test; spf=pass smtp.mailfrom=ceo@spf-fail.test\r\n" +
		"X-Facteur-Quarantine: none\r\n"
	id := queueID(t, send(cl, "ceo@spf-fail.test", alice, message("ceo@spf-fail.test", forged), "250 "))
	msg := w.delivered(id)
	ar := ourResults(msg)
	if len(ar) != 1 || !strings.Contains(ar[0], "spf=fail") || strings.Contains(ar[0], "dmarc=pass") {
		t.Fatalf("our results: %q; want only ours, spf=fail, in:\n%s", ar, msg)
	}
	if strings.Count(msg, "Authentication-Results:") != 2 || !strings.Contains(msg, "Authentication-Results: relay.other.test; spf=pass") {
		t.Errorf("another host's results must stay, the forged ones go:\n%s", msg)
	}
	if strings.Contains(msg, "X-Facteur-Quarantine") {
		t.Errorf("a quarantine mark came through from the client:\n%s", msg)
	}
}

func TestDMARCPolicy(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.st.CreateDomain(ctx, store.Domain{Name: "second.test", Active: true}); err != nil {
		t.Fatal(err)
	}
	w.mailbox("erin@second.test", "erin's password", true)
	// A domain that signs its mail: DKIM keeps DMARC passing where SPF fails.
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dns := fakeDNS(map[string]mockdns.Zone{
		"reject.test":               {TXT: []string{"v=spf1 ip4:192.0.2.1 -all"}},
		"_dmarc.reject.test":        {TXT: []string{"v=DMARC1; p=reject"}},
		"quar.test":                 {TXT: []string{"v=spf1 ip4:192.0.2.1 -all"}},
		"_dmarc.quar.test":          {TXT: []string{"v=DMARC1; p=quarantine"}},
		"signed.test":               {TXT: []string{"v=spf1 ip4:192.0.2.1 -all"}},
		"_dmarc.signed.test":        {TXT: []string{"v=DMARC1; p=reject; adkim=s"}},
		"s1._domainkey.signed.test": {TXT: []string{"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)}},
		"_dmarc.example.test":       {TXT: []string{"v=DMARC1; p=none"}},
	})
	r := w.start(smtpd.Options{}, w.msgauthDeps(dns))
	policy := func(domain, failure string) {
		t.Helper()
		if _, err := w.st.PutDomainPolicy(ctx, store.DomainPolicy{Domain: domain, DMARCFailure: failure, Active: true}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("honour p=reject: 550 5.7.1, nothing queued", func(t *testing.T) {
		cl := dialGreeted(t, r.addrs[smtpd.MX])
		cl.ehlo()
		rep := send(cl, "x@reject.test", alice, message("x@reject.test", ""), "550 5.7.1 ")
		if !strings.Contains(rep, "DMARC") || !strings.Contains(rep, "reject.test") {
			t.Errorf("reply %q does not name DMARC and the domain", rep)
		}
		if n, f := w.queued(), w.spoolFiles(); n != 0 || f != 0 {
			t.Fatalf("%d messages, %d spool files after a DMARC reject", n, f)
		}
		cl.cmd("RSET", "250 ") // the session goes on
	})
	t.Run("aligned DKIM passes where SPF fails", func(t *testing.T) {
		var signed bytes.Buffer
		err := dkim.Sign(&signed, strings.NewReader(message("x@signed.test", "")),
			&dkim.SignOptions{Domain: "signed.test", Selector: "s1", Signer: priv})
		if err != nil {
			t.Fatal(err)
		}
		cl := dialGreeted(t, r.addrs[smtpd.MX])
		cl.ehlo()
		id := queueID(t, send(cl, "x@signed.test", alice, signed.String(), "250 "))
		ar := ourResults(w.delivered(id))
		if len(ar) != 1 || !strings.Contains(ar[0], "spf=fail") || !strings.Contains(ar[0], "dkim=pass header.d=signed.test") ||
			!strings.Contains(ar[0], "dmarc=pass header.from=signed.test") {
			t.Errorf("results %q", ar)
		}
	})
	t.Run("p=quarantine: delivered with the mark", func(t *testing.T) {
		cl := dialGreeted(t, r.addrs[smtpd.MX])
		cl.ehlo()
		id := queueID(t, send(cl, "x@quar.test", alice, message("x@quar.test", ""), "250 "))
		msg := w.delivered(id)
		if !strings.Contains(msg, "X-Facteur-Quarantine: dmarc; from=quar.test; policy=quarantine\r\n") {
			t.Errorf("no quarantine mark:\n%s", msg)
		}
		if ar := ourResults(msg); len(ar) != 1 || !strings.Contains(ar[0], "dmarc=fail") {
			t.Errorf("results %q", ar)
		}
	})
	t.Run("local policy quarantine turns reject into the mark", func(t *testing.T) {
		policy("example.test", store.DMARCQuarantine)
		defer policy("example.test", store.DMARCHonour)
		cl := dialGreeted(t, r.addrs[smtpd.MX])
		cl.ehlo()
		id := queueID(t, send(cl, "x@reject.test", alice, message("x@reject.test", ""), "250 "))
		if msg := w.delivered(id); !strings.Contains(msg, "X-Facteur-Quarantine: dmarc; from=reject.test; policy=reject\r\n") {
			t.Errorf("no quarantine mark:\n%s", msg)
		}
	})
	t.Run("local policy record: only the result", func(t *testing.T) {
		policy("example.test", store.DMARCRecord)
		defer policy("example.test", store.DMARCHonour)
		cl := dialGreeted(t, r.addrs[smtpd.MX])
		cl.ehlo()
		id := queueID(t, send(cl, "x@reject.test", alice, message("x@reject.test", ""), "250 "))
		msg := w.delivered(id)
		if strings.Contains(msg, "X-Facteur-Quarantine") || len(ourResults(msg)) != 1 || !strings.Contains(ourResults(msg)[0], "dmarc=fail") {
			t.Errorf("record: want dmarc=fail and no mark:\n%s", msg)
		}
	})
	t.Run("rejected only when every recipient's domain rejects", func(t *testing.T) {
		policy("second.test", store.DMARCRecord)
		cl := dialGreeted(t, r.addrs[smtpd.MX])
		cl.ehlo()
		cl.cmd("MAIL FROM:<x@reject.test>", "250 ")
		cl.cmd("RCPT TO:<"+alice+">", "250 ")
		cl.cmd("RCPT TO:<erin@second.test>", "250 ")
		cl.cmd("DATA", "354 ")
		cl.write(message("x@reject.test", "") + ".\r\n")
		id := queueID(t, cl.expect("250 "))
		if msg := w.delivered(id); !strings.Contains(msg, "X-Facteur-Quarantine: dmarc; from=reject.test; policy=reject") {
			t.Errorf("a message delivered despite a rejecting domain must carry the mark:\n%s", msg)
		}
	})
}

func TestDNSBLListedClientIsRefused(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.st.CreateDNSBLSite(ctx, store.DNSBLSite{Zone: "bl.test", Weight: 2, Active: true}); err != nil {
		t.Fatal(err)
	}
	dns := fakeDNS(map[string]mockdns.Zone{
		"1.0.0.127.bl.test": {A: []string{"127.0.0.2"}, TXT: []string{"Listed for testing, see https://bl.test/q?127.0.0.1"}},
	})
	r := w.start(smtpd.Options{}, func(d *smtpd.Deps) {
		d.DNSBL = dnsbl.New(dns, w.st, dnsbl.Options{Threshold: 2})
	})
	c := dial(t, r.addrs[smtpd.MX])
	greeting := c.expect("554 5.7.1 ")
	if !strings.Contains(greeting, "bl.test") || !strings.Contains(greeting, "Listed for testing") || strings.Contains(greeting, "220") {
		t.Errorf("greeting %q; want the list and its reason instead of the banner", greeting)
	}
	// The rest of the session is refused (RFC 5321 3.1), QUIT ends it.
	c.cmd("EHLO client.test", "554 5.7.1 ")
	c.cmd("MAIL FROM:<spam@foreign.test>", "554 5.7.1 ")
	c.cmd("RCPT TO:<"+alice+">", "554 5.7.1 ")
	c.cmd("QUIT", "221 ")
	c.expectClosed()
	if w.queued() != 0 {
		t.Fatal("mail queued from a listed client")
	}
	// A permit_relay network is not checked.
	w.permitRelay("127.0.0.0/8")
	w.res.Invalidate()
	c = dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	if !strings.Contains(w.logs.String(), "client listed by dnsbl") {
		t.Error("no log line for the listed client")
	}
}

func TestPregreetTalkerIsRefused(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{PregreetWait: 300 * time.Millisecond}, nil)
	// A bot that does not wait for the greeting.
	c := dial(t, r.addrs[smtpd.MX])
	c.write("EHLO bot.test\r\n")
	rep := c.expect("554 5.5.0 ")
	if !strings.HasPrefix(rep, "220-"+testHost) {
		t.Errorf("reply %q; want the first banner line, then 554", rep)
	}
	c.expectClosed()
	// A client that waits is served; the banner is one reply in two lines.
	c = dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	id := queueID(t, send(c, "someone@foreign.test", alice, msgBody, "250 "))
	if id == "" {
		t.Fatal("no queue id")
	}
	// Submission has no pregreet wait.
	start := time.Now()
	dialGreeted(t, r.addrs[smtpd.Submission])
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("submission greeting took %v", d)
	}
}

// clock is an injected clock for greylisting.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestGreylistingTimeline(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.st.PutDomainPolicy(ctx, store.DomainPolicy{Domain: "example.test", Greylisting: true, Active: true}); err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}
	g := greylist.New(w.st, greylist.Options{Delay: 5 * time.Minute, RetryWindow: 4 * time.Hour, Now: clk.Now})
	r := w.start(smtpd.Options{MXAuth: true}, func(d *smtpd.Deps) { d.Greylist = g })

	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	rep := c.cmd("RCPT TO:<"+alice+">", "451 4.7.1 ")
	if !strings.Contains(rep, "Greylisted") || !strings.Contains(rep, "300 seconds") {
		t.Errorf("first attempt: %q", rep)
	}
	clk.add(time.Minute)
	if rep := c.cmd("RCPT TO:<"+alice+">", "451 4.7.1 "); !strings.Contains(rep, "240 seconds") {
		t.Errorf("early retry: %q", rep)
	}
	c.cmd("QUIT", "221 ")

	clk.add(5 * time.Minute)
	c = dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	queueID(t, send(c, "someone@foreign.test", alice, msgBody, "250 "))
	// Known from now on; a new triplet is greylisted again.
	clk.add(time.Hour)
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	c.cmd("RCPT TO:<"+alice+">", "250 ")
	c.cmd("RCPT TO:<"+bob+">", "451 4.7.1 ")
	c.cmd("RSET", "250 ")

	// Authenticated clients are exempt.
	a := dialGreeted(t, r.addrs[smtpd.MX])
	a.ehlo()
	a.starttls()
	a.ehlo()
	a.authPlain(alice, alicePass, "235 ")
	a.cmd("MAIL FROM:<"+alice+">", "250 ")
	a.cmd("RCPT TO:<"+bob+">", "250 ")
	// So are permit_relay networks.
	w.permitRelay("127.0.0.0/8")
	w.res.Invalidate()
	c = dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<other@foreign.test>", "250 ")
	c.cmd("RCPT TO:<"+bob+">", "250 ")
}

func TestClientMessageRate(t *testing.T) {
	w := newWorld(t)
	anvil := ratelimit.NewAnvil(ratelimit.AnvilOptions{MessageRate: 2, Window: time.Hour})
	r := w.start(smtpd.Options{}, func(d *smtpd.Deps) { d.Messages = anvil })
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	for range 2 {
		c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
		c.cmd("RSET", "250 ")
	}
	c.cmd("MAIL FROM:<someone@foreign.test>", "450 4.7.1 ")
	// Another connection from the same address is over the rate too.
	c = dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<someone@foreign.test>", "450 4.7.1 ")
}

func TestOutboundLimits(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	one := 1
	if _, err := w.st.PutMailboxPolicy(ctx, store.MailboxPolicy{Mailbox: alice, SendLimits: store.SendLimits{MessagesPerHour: &one}, Active: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.st.PutMailboxPolicy(ctx, store.MailboxPolicy{Mailbox: bob, SendLimits: store.SendLimits{RecipientsPerMessage: &one}, Active: true}); err != nil {
		t.Fatal(err)
	}
	out := ratelimit.NewOutbound(w.st, ratelimit.OutboundOptions{})
	r := w.start(smtpd.Options{}, func(d *smtpd.Deps) { d.Outbound = out })

	c := login(t, r.addrs[smtpd.Submission], alice, alicePass)
	queueID(t, send(c, alice, "someone@foreign.test", message(alice, ""), "250 "))
	rep := c.cmd("MAIL FROM:<"+alice+">", "450 4.7.1 ")
	if !strings.Contains(rep, "1 messages per hour") {
		t.Errorf("reply %q", rep)
	}

	b := login(t, r.addrs[smtpd.Submission], bob, "bob's password")
	b.cmd("MAIL FROM:<"+bob+">", "250 ")
	b.cmd("RCPT TO:<one@foreign.test>", "250 ")
	b.cmd("RCPT TO:<two@foreign.test>", "450 4.7.1 ")
	b.cmd("DATA", "354 ")
	b.write(message(bob, "") + ".\r\n")
	b.expect("250 ")
	var msgs, rcpts int
	if err := w.db.Pool.QueryRow(ctx, `SELECT coalesce(sum(messages), 0), coalesce(sum(recipients), 0) FROM send_counter
		WHERE scope = 'mailbox' AND subject = $1`, bob).Scan(&msgs, &rcpts); err != nil {
		t.Fatal(err)
	}
	if msgs != 1 || rcpts != 1 {
		t.Errorf("bob's counters: %d messages, %d recipients; want 1 and 1", msgs, rcpts)
	}
}

// --- DKIM signing on submission ------------------------------------------------

var (
	keysOnce      sync.Once
	rsaKey, edKey dkimsign.Key
	keysErr       error
)

func testKeys(t *testing.T) (rsa, ed dkimsign.Key) {
	t.Helper()
	keysOnce.Do(func() {
		if rsaKey, keysErr = dkimsign.Generate("rsa"); keysErr == nil {
			edKey, keysErr = dkimsign.Generate("ed25519")
		}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return rsaKey, edKey
}

// twoCustomers gives customer A (example.test: alice, bob) an RSA key and
// customer B (b.test: dave) an Ed25519 key, and returns the DNS that
// publishes both.
func (w *world) twoCustomers() *mockdns.Resolver {
	w.t.Helper()
	ctx := context.Background()
	if _, err := w.st.CreateDomain(ctx, store.Domain{Name: "b.test", Active: true}); err != nil {
		w.t.Fatal(err)
	}
	w.mailbox("dave@b.test", "dave's password", true)
	rk, ek := testKeys(w.t)
	for _, k := range []store.DKIMKey{
		{Domain: "example.test", Selector: "a1", Algorithm: rk.Algorithm, PrivateKey: rk.PrivatePEM, PublicKey: rk.PublicKey, Active: true},
		{Domain: "b.test", Selector: "b1", Algorithm: ek.Algorithm, PrivateKey: ek.PrivatePEM, PublicKey: ek.PublicKey, Active: true},
	} {
		if _, err := w.st.CreateDKIMKey(ctx, k); err != nil {
			w.t.Fatal(err)
		}
	}
	return fakeDNS(map[string]mockdns.Zone{
		"a1._domainkey.example.test": {TXT: []string{rk.DNSRecord}},
		"b1._domainkey.b.test":       {TXT: []string{ek.DNSRecord}},
	})
}

// verifyDKIM verifies every signature of msg with msgauth's verifier.
func verifyDKIM(t *testing.T, dns *mockdns.Resolver, msg string) []msgauth.DKIMResult {
	t.Helper()
	return msgauth.New(msgauth.Options{Resolver: dns, Timeout: 5 * time.Second}).VerifyDKIM(context.Background(), strings.NewReader(msg))
}

func TestSubmissionIsSignedOnlyWithTheSendersOwnKey(t *testing.T) {
	w := newWorld(t)
	dns := w.twoCustomers()
	signer := dkimsign.New(w.st, dkimsign.Options{})
	r := w.start(smtpd.Options{}, func(d *smtpd.Deps) { d.Signer = signer })

	// Customer A's own domain: signed with A's key, verifiable.
	a := login(t, r.addrs[smtpd.Submission], alice, alicePass)
	body := "From: Alice <alice@example.test>\r\nTo: someone@foreign.test\r\nSubject: signed\r\n\r\nHello.\r\n"
	id := queueID(t, send(a, alice, "someone@foreign.test", body, "250 "))
	msg := w.delivered(id)
	if !strings.HasPrefix(msg, "DKIM-Signature: ") {
		t.Fatalf("not signed:\n%s", msg)
	}
	res := verifyDKIM(t, dns, msg)
	if len(res) != 1 || res[0].Result != msgauth.ResultPass || res[0].Domain != "example.test" {
		t.Fatalf("verification: %+v\n%s", res, msg)
	}
	// The signature covers cleanup's header fixes: Message-ID: and Date:
	// were added after the client sent the message, and are oversigned,
	// so it would not verify had it been made before them.
	if !strings.Contains(msg, "\r\nMessage-ID: <"+id+"@"+testHost+">\r\n") || !strings.Contains(msg, "\r\nDate: ") {
		t.Errorf("no Message-ID: or Date: added:\n%s", msg)
	}
	pythonVerify(t, "a1._domainkey.example.test", testKeysRecord(t), msg)

	// Customer A cannot get customer B's signature: From: b.test is
	// refused, whatever the envelope.
	a.cmd("MAIL FROM:<"+alice+">", "250 ")
	a.cmd("RCPT TO:<someone@foreign.test>", "250 ")
	a.cmd("DATA", "354 ")
	a.write("From: Dave <dave@b.test>\r\nSubject: forged\r\n\r\nHi.\r\n.\r\n")
	if rep := a.expect("553 5.7.1 "); !strings.Contains(rep, "dave@b.test") {
		t.Errorf("reply %q does not name the From: address", rep)
	}
	// Nor an address of its own domain that is not alice's.
	a.cmd("MAIL FROM:<"+alice+">", "250 ")
	a.cmd("RCPT TO:<someone@foreign.test>", "250 ")
	a.cmd("DATA", "354 ")
	a.write("From: bob@example.test\r\nSubject: forged\r\n\r\nHi.\r\n.\r\n")
	a.expect("553 5.7.1 ")
	if n := w.queued(); n != 1 {
		t.Fatalf("%d messages queued; want only the first", n)
	}

	// Customer B signs with B's key.
	d := login(t, r.addrs[smtpd.Submission], "dave@b.test", "dave's password")
	id = queueID(t, send(d, "dave@b.test", "someone@foreign.test",
		"From: dave@b.test\r\nTo: someone@foreign.test\r\nSubject: b\r\n\r\nHello from B.\r\n", "250 "))
	res = verifyDKIM(t, dns, w.delivered(id))
	if len(res) != 1 || res[0].Result != msgauth.ResultPass || res[0].Domain != "b.test" {
		t.Fatalf("customer B: %+v", res)
	}
}

func TestUnauthorizedFromCanGoUnsigned(t *testing.T) {
	w := newWorld(t)
	w.twoCustomers()
	signer := dkimsign.New(w.st, dkimsign.Options{Unauthorized: dkimsign.SendUnsigned})
	r := w.start(smtpd.Options{}, func(d *smtpd.Deps) { d.Signer = signer })
	a := login(t, r.addrs[smtpd.Submission], alice, alicePass)
	id := queueID(t, send(a, alice, "someone@foreign.test", "From: dave@b.test\r\nSubject: x\r\n\r\nHi.\r\n", "250 "))
	if msg := w.delivered(id); strings.Contains(msg, "DKIM-Signature") {
		t.Fatalf("signed with a key the user may not use:\n%s", msg)
	}
}

// testKeysRecord is customer A's published record.
func testKeysRecord(t *testing.T) string {
	rk, _ := testKeys(t)
	return rk.DNSRecord
}

// pythonVerify verifies msg with python3-dkim (dkimpy), an implementation
// independent of facteur's, through mta/dkimsign's helper script.
func pythonVerify(t *testing.T, name, record, msg string) {
	t.Helper()
	py := ""
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import dkim").Run() == nil {
			py = p
			break
		}
	}
	if py == "" {
		why := "python3-dkim is not installed (apt-get install -y python3-dkim): the independent DKIM verifier is missing"
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatal(why)
		}
		t.Log(why)
		return
	}
	f := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(f, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "../dkimsign/testdata/dkimverify.py", name, record, f).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "pass" {
		t.Fatalf("python3-dkim: %v %s\n%s", err, out, msg)
	}
}
