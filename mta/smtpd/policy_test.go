package smtpd_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/store"
)

func TestHeloRequiredBeforeMail(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.cmd("MAIL FROM:<someone@foreign.test>", "503 5.5.1 ")
	c.cmd("RCPT TO:<alice@example.test>", "503 5.5.1 ") // no MAIL yet
	c.cmd("HELO client.test", "250 ")
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
}

func TestVRFYRevealsNothing(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	a := c.cmd("VRFY alice", "252 2.0.0 ")
	b := c.cmd("VRFY nosuchuser", "252 2.0.0 ")
	if a != b {
		t.Errorf("VRFY answers differ: %q and %q", a, b)
	}
}

func TestRcptPolicyReplies(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<>", "250 ") // bounces are accepted on port 25
	c.cmd("RCPT TO:<nosuchuser@example.test>", "550 5.1.1 ")
	c.cmd("RCPT TO:<user@foreign.test>", "554 5.7.1 ")
	c.cmd("RCPT TO:<Alice@EXAMPLE.test>", "250 ")
	c.cmd("RCPT TO:<not an address>", "501 ")
}

func TestLookupFailureIs451NotUnknownUser(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	// The address tables become unreadable: a lookup error, not "no such user".
	if _, err := w.db.Pool.Exec(context.Background(), `ALTER TABLE alias RENAME TO alias_gone`); err != nil {
		t.Fatal(err)
	}
	c.cmd("RCPT TO:<alice@example.test>", "451 4.3.0 ")
	c.cmd("RCPT TO:<nosuchuser@example.test>", "451 4.3.0 ")
	if _, err := w.db.Pool.Exec(context.Background(), `ALTER TABLE alias_gone RENAME TO alias`); err != nil {
		t.Fatal(err)
	}
	c.cmd("RCPT TO:<alice@example.test>", "250 ")

	// The whole database gone: MAIL's client_access lookup fails.
	c2 := dialGreeted(t, r.addrs[smtpd.MX])
	c2.ehlo()
	w.db.Pool.Close()
	c2.cmd("MAIL FROM:<someone@foreign.test>", "451 4.3.0 ")
}

func TestBarePostmasterIsAccepted(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	for _, form := range []string{"<postmaster>", "<PostMaster>", "<POSTMASTER> NOTIFY=FAILURE", " <postmaster>"} {
		c := dialGreeted(t, r.addrs[smtpd.MX])
		c.ehlo()
		c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
		c.cmd("RCPT TO:"+form, "250 ")
		c.cmd("DATA", "354 ")
		c.write(msgBody + ".\r\n")
		id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as ")
		var addr, orig string
		err := w.db.Pool.QueryRow(context.Background(),
			`SELECT address, orig_address FROM queue_recipient WHERE queue_id = $1`, id).Scan(&addr, &orig)
		if err != nil {
			t.Fatal(err)
		}
		// lookups sends the bare postmaster to its configured Postmaster.
		if addr != alice || orig != "postmaster" {
			t.Errorf("%s: recipient %q (orig %q), want %q (orig postmaster)", form, addr, orig, alice)
		}
	}
}

// The classic relay tests: each form names a destination D, the local
// domain or a foreign one.
var relayForms = []struct {
	name string
	form func(user, dest string) string
}{
	{"plain", func(u, d string) string { return u + "@" + d }},
	{"percent", func(u, d string) string { return u + "%" + d + "@" + localDomain }},
	{"quoted", func(u, d string) string { return `"` + u + "@" + d + `"@` + localDomain }},
	{"source-route", func(u, d string) string { return "@" + localDomain + ":" + u + "@" + d }},
	{"double-at", func(u, d string) string { return u + "@" + d + "@" + localDomain }},
	{"bang", func(u, d string) string { return d + "!" + u + "@" + localDomain }},
	{"ip-literal", func(u, d string) string {
		if d == localDomain {
			return u + "@[127.0.0.1]"
		}
		return u + "@[192.0.2.1]"
	}},
	{"percent-ip-literal", func(u, d string) string { return u + "%" + d + "@[127.0.0.1]" }},
}

func TestRelayTable(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	// relaying is allowed (true) only for the plain and source-route forms,
	// whose destination is then D, and only to a foreign D for clients
	// that may relay.
	type want struct{ local, foreign string }
	unauth := map[string]want{"plain": {"250 ", "554 5.7.1 "}, "source-route": {"250 ", "554 5.7.1 "}}
	relayer := map[string]want{"plain": {"250 ", "250 "}, "source-route": {"250 ", "250 "}}

	run := func(t *testing.T, c *client, wants map[string]want) {
		n := 0
		for _, f := range relayForms {
			for _, dest := range []string{localDomain, foreignDom} {
				user := "alice"
				if dest == foreignDom {
					user = "user"
				}
				exp := "554 5.7.1 "
				if wt, ok := wants[f.name]; ok {
					exp = wt.local
					if dest == foreignDom {
						exp = wt.foreign
					}
				}
				addr := f.form(user, dest)
				t.Run(f.name+"/"+dest, func(t *testing.T) {
					c.t = t
					c.cmd("RCPT TO:<"+addr+">", exp)
				})
				n++
			}
		}
		if n != 16 {
			t.Fatalf("%d cases, want 16", n)
		}
	}
	t.Run("unauthenticated", func(t *testing.T) {
		c := dialGreeted(t, r.addrs[smtpd.MX])
		c.ehlo()
		c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
		run(t, c, unauth)
	})
	t.Run("authenticated", func(t *testing.T) {
		c := login(t, r.addrs[smtpd.Submission], alice, alicePass)
		c.cmd("MAIL FROM:<alice@example.test>", "250 ")
		run(t, c, relayer)
	})
	t.Run("permit_relay network", func(t *testing.T) {
		w.permitRelay("127.0.0.0/8")
		c := dialGreeted(t, r.addrs[smtpd.MX])
		c.ehlo()
		c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
		run(t, c, relayer)
	})
}

func TestSubmissionRequiresAuth(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.Submission])
	ehlo := c.ehlo()
	if strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO before TLS:\n%s", ehlo)
	}
	c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0 ")
	c.authPlain(alice, alicePass, "538 5.7.11 ") // never a password in clear
	c.starttls()
	c.cmd("MAIL FROM:<alice@example.test>", "503 5.5.1 ") // EHLO again after STARTTLS (RFC 3207 4.2)
	ehlo = c.ehlo()
	if !strings.Contains(ehlo, "AUTH PLAIN LOGIN") || strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO under TLS:\n%s", ehlo)
	}
	c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0 ")
}

func TestAuthPlainAndLogin(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{Limits: smtpd.Limits{ErrorsBeforeDelay: 100, ErrorLimit: 100}}, nil)
	b64 := func(s string) string { return base64Std(s) }

	t.Run("plain", func(t *testing.T) {
		c := login(t, r.addrs[smtpd.Submission], "Alice@Example.TEST", alicePass)
		c.cmd("MAIL FROM:<alice@example.test>", "250 ")
		c.cmd("RCPT TO:<user@foreign.test>", "250 ")
	})
	t.Run("plain without initial response", func(t *testing.T) {
		c := dialGreeted(t, r.addrs[smtpd.Submission])
		c.ehlo()
		c.starttls()
		c.ehlo()
		c.cmd("AUTH PLAIN", "334 ")
		c.cmd(b64("\x00"+alice+"\x00"+alicePass), "235 2.0.0 ")
	})
	t.Run("login", func(t *testing.T) {
		c := dialGreeted(t, r.addrs[smtpd.Submission])
		c.ehlo()
		c.starttls()
		c.ehlo()
		c.cmd("AUTH LOGIN", "334 "+b64("Username:"))
		c.cmd(b64(alice), "334 "+b64("Password:"))
		c.cmd(b64(alicePass), "235 2.0.0 ")
		c.cmd("MAIL FROM:<alice@example.test>", "250 ")
	})
	t.Run("login with initial response", func(t *testing.T) {
		c := dialGreeted(t, r.addrs[smtpd.Submission])
		c.ehlo()
		c.starttls()
		c.ehlo()
		c.cmd("AUTH LOGIN "+b64(alice), "334 "+b64("Password:"))
		c.cmd(b64(alicePass), "235 2.0.0 ")
	})
	t.Run("login cancelled", func(t *testing.T) {
		c := dialGreeted(t, r.addrs[smtpd.Submission])
		c.ehlo()
		c.starttls()
		c.ehlo()
		c.cmd("AUTH LOGIN", "334 ")
		c.cmd("*", "501 ")
		c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0 ")
	})
	t.Run("submissions", func(t *testing.T) {
		c := dialTLS(t, r.addrs[smtpd.Submissions])
		ehlo := c.ehlo()
		if !strings.Contains(ehlo, "AUTH PLAIN LOGIN") || strings.Contains(ehlo, "STARTTLS") {
			t.Errorf("EHLO on submissions:\n%s", ehlo)
		}
		c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0 ")
		c.authPlain(alice, alicePass, "235 ")
		c.cmd("MAIL FROM:<alice@example.test>", "250 ")
	})
	for _, tc := range []struct{ name, ir string }{
		{"wrong password", "\x00" + alice + "\x00wrong"},
		{"unknown user", "\x00nobody@example.test\x00" + alicePass},
		{"inactive mailbox", "\x00" + inactiveUser + "\x00" + carolPass},
		{"authzid of another user", bob + "\x00" + alice + "\x00" + alicePass},
		{"malformed", "no NULs here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialGreeted(t, r.addrs[smtpd.Submission])
			c.ehlo()
			c.starttls()
			c.ehlo()
			rep := c.cmd("AUTH PLAIN "+b64(tc.ir), "5")
			if !strings.HasPrefix(rep, "535 5.7.8 ") && !strings.HasPrefix(rep, "501 5.5.2 ") {
				t.Errorf("reply %q", rep)
			}
			c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0 ")
		})
	}
	t.Run("MX offers no AUTH by default", func(t *testing.T) {
		c := dialGreeted(t, r.addrs[smtpd.MX])
		c.ehlo()
		c.starttls()
		if strings.Contains(c.ehlo(), "AUTH") {
			t.Error("AUTH offered on MX")
		}
		c.authPlain(alice, alicePass, "502 ")
	})
}

func TestAuthUpgradesWeakHash(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	weak := "{PLAIN}weakpass"
	if err := w.st.SetMailboxPassword(ctx, bob, weak); err != nil {
		t.Fatal(err)
	}
	r := w.start(smtpd.Options{}, nil)
	login(t, r.addrs[smtpd.Submission], bob, "weakpass")
	hash, _, err := w.st.MailboxPassword(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	if hash == weak || !strings.HasPrefix(hash, "{ARGON2ID}") {
		t.Errorf("hash after login: %q", hash)
	}
	login(t, r.addrs[smtpd.Submission], bob, "weakpass") // the new hash verifies
}

func TestAuthenticatedSenderMustBeOwned(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := login(t, r.addrs[smtpd.Submission], alice, alicePass)
	c.cmd("MAIL FROM:<bob@example.test>", "553 5.7.1 ")
	c.cmd("MAIL FROM:<someone@foreign.test>", "553 5.7.1 ")
	c.cmd("MAIL FROM:<alice+tag@example.test>", "250 ")
	c.cmd("RSET", "250 ")
	c.cmd("MAIL FROM:<>", "250 ")
}

func TestUTF8Addresses(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<jörg@foreign.test>", "553 5.6.7 ")
	c.cmd("MAIL FROM:<someone@bücher.test>", "553 5.6.7 ")
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	c.cmd("RCPT TO:<alice@exämple.test>", "553 5.6.7 ")
	c.cmd("RSET", "250 ")

	c.cmd("MAIL FROM:<jörg@foreign.test> SMTPUTF8", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write("From: jörg@foreign.test\r\nSubject: grüße\r\n\r\nhallo\r\n.\r\n")
	id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as ")
	var sender string
	var utf8 bool
	if err := w.db.Pool.QueryRow(context.Background(), `SELECT sender, smtputf8 FROM queue_message WHERE id = $1`, id).
		Scan(&sender, &utf8); err != nil {
		t.Fatal(err)
	}
	if sender != "jörg@foreign.test" || !utf8 {
		t.Errorf("sender %q smtputf8 %v", sender, utf8)
	}
}

func TestTooManyRecipients(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{MaxRecipients: 3}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	if !strings.Contains(c.ehlo(), "LIMITS RCPTMAX=3") {
		t.Error("no RCPTMAX")
	}
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	for i := 0; i < 3; i++ {
		c.cmd("RCPT TO:<alice@example.test>", "250 ")
	}
	c.cmd("RCPT TO:<bob@example.test>", "452 4.5.3 ")
}

func TestDefaultRecipientLimitIs1000(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	if !strings.Contains(c.ehlo(), "LIMITS RCPTMAX=1000") {
		t.Error("default RCPTMAX is not 1000")
	}
}

func TestMessageSizeLimits(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{MaxMessageBytes: 2000}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	if !strings.Contains(c.ehlo(), "SIZE 2000") {
		t.Error("SIZE not advertised")
	}
	c.cmd("MAIL FROM:<someone@foreign.test> SIZE=2001", "552 5.3.4 ")
	c.cmd("MAIL FROM:<someone@foreign.test> SIZE=1500", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write("Subject: big\r\n\r\n" + strings.Repeat("0123456789012345678901234567890123456789\r\n", 60) + ".\r\n")
	c.expect("552 5.3.4 ")
	if n := w.queued(); n != 0 {
		t.Errorf("%d messages queued", n)
	}

	// A domain's own limit, checked at the end of DATA.
	limit := int64(500)
	if _, err := w.st.UpdateDomain(context.Background(), localDomain, store.DomainPatch{MaxMessageBytes: store.SetValue(limit)}); err != nil {
		t.Fatal(err)
	}
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write("Subject: medium\r\n\r\n" + strings.Repeat("0123456789012345678901234567890123456789\r\n", 15) + ".\r\n")
	c.expect("552 5.3.4 ")
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write("Subject: small\r\n\r\nsmall\r\n.\r\n")
	c.expect("250 ")
	if n := w.queued(); n != 1 {
		t.Errorf("%d messages queued, want 1", n)
	}
	if n := w.spoolFiles(); n != 1 {
		t.Errorf("%d spool files, want 1", n)
	}
}

func TestDSNParametersAreStored(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<someone@foreign.test> RET=HDRS ENVID=QQ+2B123 BODY=8BITMIME", "250 ")
	c.cmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Alice+40example.test", "250 ")
	c.cmd("RCPT TO:<bob@example.test> NOTIFY=NEVER", "250 ")
	c.cmd("DATA", "354 ")
	c.write(msgBody + ".\r\n")
	id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as ")
	var ret, envid, body string
	if err := w.db.Pool.QueryRow(context.Background(),
		`SELECT dsn_ret, dsn_envid, body_type FROM queue_message WHERE id = $1`, id).Scan(&ret, &envid, &body); err != nil {
		t.Fatal(err)
	}
	if ret != "HDRS" || envid != "QQ+123" || body != "8BITMIME" {
		t.Errorf("message: ret %q envid %q body %q", ret, envid, body)
	}
	rows, err := w.db.Pool.Query(context.Background(),
		`SELECT address, coalesce(dsn_notify, ''), coalesce(dsn_orcpt, '') FROM queue_recipient WHERE queue_id = $1 ORDER BY address`, id)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var a, n, o string
		if err := rows.Scan(&a, &n, &o); err != nil {
			t.Fatal(err)
		}
		got = append(got, a+"|"+n+"|"+o)
	}
	want := []string{"alice@example.test|SUCCESS,FAILURE|RFC822;Alice@example.test", "bob@example.test|NEVER|"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recipients %q, want %q", got, want)
	}
}

func TestPipelining(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.write("EHLO client.test\r\nMAIL FROM:<someone@foreign.test>\r\nRCPT TO:<alice@example.test>\r\n" +
		"RCPT TO:<nosuchuser@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	c.expect("250 ")
	c.expect("250 ")
	c.expect("250 ")
	c.expect("550 5.1.1 ")
	c.expect("250 ")
	c.expect("354 ")
	c.write(msgBody + ".\r\nMAIL FROM:<other@foreign.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	c.expect("250 2.0.0 Ok: queued as ")
	c.expect("250 ")
	c.expect("250 ")
	c.expect("354 ")
	c.write(msgBody + ".\r\nQUIT\r\n")
	c.expect("250 2.0.0 Ok: queued as ")
	c.expect("221 ")
	var n int
	if err := w.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM queue_recipient`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if q := w.queued(); q != 2 || n != 3 {
		t.Errorf("%d messages, %d recipients; want 2 and 3", q, n)
	}
}

func TestBDAT(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	part1 := "Subject: chunked\r\n\r\nline one\r"
	part2 := "\nline two\r\n" // the CRLF is split across the chunks
	c.write(fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1))
	c.expect("250 ")
	c.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(part2), part2))
	id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as ")
	f, err := w.sp.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 4096)
	n, _ := f.Read(b)
	if !strings.HasSuffix(string(b[:n]), "Subject: chunked\r\n\r\nline one\r\nline two\r\n") {
		t.Errorf("spooled %q", b[:n])
	}

	// Pipelined BDAT commands with a command after them.
	c.write("MAIL FROM:<someone@foreign.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT 8\r\nSubject:BDAT 6 LAST\r\n x\r\n\r\nNOOP\r\n")
	c.expect("250 ")
	c.expect("250 ")
	c.expect("250 ")
	c.expect("250 2.0.0 Ok: queued as ")
	c.expect("250 2.0.0 ")
	if q := w.queued(); q != 2 {
		t.Errorf("%d messages queued, want 2", q)
	}
}

func TestSMTPSmuggling(t *testing.T) {
	const env = "EHLO client.test\r\nMAIL FROM:<someone@foreign.test>\r\nRCPT TO:<alice@example.test>\r\n"
	const smuggled = "MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"
	cases := []struct {
		name    string
		replies []string // before 550 5.5.2
		send    string
		tls     bool
	}{
		{"bare LF in a command", []string{"250 "}, "EHLO client.test\r\nMAIL FROM:<someone@foreign.test>\n", false},
		{"bare CR in a command", []string{"250 "}, "EHLO client.test\r\nMAIL FROM:<someone@foreign.test>\rRCPT TO:<x@y>\r\n", false},
		{"bare LF after STARTTLS", []string{"250 "}, "EHLO client.test\r\nMAIL FROM:<x@y>\n", true},
		{`DATA with \n.\n`, []string{"250 ", "250 ", "250 ", "354 "}, env + "DATA\r\nSubject: a\r\n\r\nbody\n.\n" + smuggled, false},
		{`DATA with \r\n.\n`, []string{"250 ", "250 ", "250 ", "354 "}, env + "DATA\r\nSubject: a\r\n\r\nbody\r\n.\n" + smuggled, false},
		{`DATA with \n.\r\n`, []string{"250 ", "250 ", "250 ", "354 "}, env + "DATA\r\nSubject: a\r\n\r\nbody\n.\r\n" + smuggled, false},
		{"DATA with a bare CR", []string{"250 ", "250 ", "250 ", "354 "}, env + "DATA\r\nSubject: a\r\n\r\nbo\rdy\r\n.\r\n", false},
		{"BDAT with a bare LF", []string{"250 ", "250 ", "250 "}, env + "BDAT 20 LAST\r\nSubject: a\r\n\r\nb\n.\n\r\n", false},
		{"BDAT ending on a bare CR", []string{"250 ", "250 ", "250 "}, env + "BDAT 16 LAST\r\nSubject: a\r\n\r\nb\r", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			r := w.start(smtpd.Options{}, nil)
			c := dialGreeted(t, r.addrs[smtpd.MX])
			if tc.tls {
				c.ehlo()
				c.starttls()
			}
			c.write(tc.send)
			for _, want := range tc.replies {
				c.expect(want)
			}
			c.expect("550 5.5.2 ")
			c.expectClosed()
			waitFor(t, "session end", func() bool { return strings.Contains(w.logs.String(), "session end") })
			if n := w.queued(); n != 0 {
				t.Errorf("%d messages queued", n)
			}
			if n := w.spoolFiles(); n != 0 {
				t.Errorf("%d spool files", n)
			}
		})
	}
}

func TestSTARTTLSDiscardsPipelinedPlaintext(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.write("STARTTLS\r\nMAIL FROM:<injected@foreign.test>\r\n")
	c.expect("220 ")
	tc := tlsClient(t, c)
	c.cmd("EHLO client.test", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "503 5.5.1 ") // no MAIL: the injected one was dropped
	_ = tc
}

func TestPerIPConnectionCap(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{Limits: smtpd.Limits{MaxConnsPerIP: 2}}, nil)
	a := dialGreeted(t, r.addrs[smtpd.MX])
	b := dialGreeted(t, r.addrs[smtpd.Submission]) // the cap is per address, over every listener
	c := dial(t, r.addrs[smtpd.MX])
	c.expect("421 4.7.0 ")
	c.expectClosed()
	a.cmd("QUIT", "221 ")
	waitFor(t, "a slot", func() bool {
		d := dial(t, r.addrs[smtpd.MX])
		rep, _ := d.reply()
		return strings.HasPrefix(rep, "220 ")
	})
	b.cmd("NOOP", "250 ")
}

func TestExemptNetworksHaveNoCap(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{Limits: smtpd.Limits{MaxConnsPerIP: 1, Exempt: mustPrefixes("127.0.0.0/8")}}, nil)
	dialGreeted(t, r.addrs[smtpd.MX])
	dialGreeted(t, r.addrs[smtpd.MX])
	dialGreeted(t, r.addrs[smtpd.MX])
}

func TestFailedAuthIsThrottled(t *testing.T) {
	w := newWorld(t)
	const delay = 200 * time.Millisecond
	r := w.start(smtpd.Options{Limits: smtpd.Limits{ErrorsBeforeDelay: 2, ErrorDelay: delay, ErrorLimit: 4}}, nil)
	c := dialGreeted(t, r.addrs[smtpd.Submission])
	c.ehlo()
	c.starttls()
	c.ehlo()
	bad := "AUTH PLAIN " + base64Std("\x00"+alice+"\x00wrong")
	var took []time.Duration
	for i := 0; i < 4; i++ {
		start := time.Now()
		c.cmd(bad, "535 5.7.8 ")
		took = append(took, time.Since(start))
	}
	if took[0] >= delay || took[1] >= delay {
		t.Errorf("first failures were delayed: %v", took)
	}
	if took[2] < delay || took[3] < 2*delay {
		t.Errorf("later failures not delayed enough: %v", took)
	}
	// The limit is reached: the next command gets 421 and the connection ends.
	c.write("NOOP\r\n")
	c.expect("421 4.7.0 ")
	c.expectClosed()
	// ... and so does a new connection from the address.
	d := dial(t, r.addrs[smtpd.MX])
	d.expect("421 4.7.0 ")
}

func TestBadCommandsAreThrottled(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{Limits: smtpd.Limits{ErrorsBeforeDelay: 1, ErrorDelay: 10 * time.Millisecond, ErrorLimit: 3}}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.cmd("MAIL FROM:<a@b.test>", "503 ")
	c.cmd("RCPT TO:<a@b.test>", "503 ")
	c.cmd("XYZZ", "500 ")
	c.write("NOOP\r\n")
	c.expect("421 4.7.0 ")
	c.expectClosed()
}

func TestDataFailureIsTemporaryAndLeavesNothing(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	if _, err := w.db.Pool.Exec(context.Background(), `ALTER TABLE queue_recipient RENAME TO queue_recipient_gone`); err != nil {
		t.Fatal(err)
	}
	c.cmd("DATA", "354 ")
	c.write(msgBody + ".\r\n")
	rep := c.expect("451 4.3.0 ")
	if strings.Contains(rep, "queue_recipient") || strings.Contains(strings.ToLower(rep), "relation") {
		t.Errorf("reply leaks internals: %q", rep)
	}
	if n := w.spoolFiles(); n != 0 {
		t.Errorf("%d spool files left", n)
	}
	c.cmd("NOOP", "250 ") // the session goes on
}

func TestSessionLogLine(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := login(t, r.addrs[smtpd.Submission], alice, alicePass)
	c.cmd("MAIL FROM:<alice@example.test>", "250 ")
	c.cmd("RCPT TO:<user@foreign.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write(msgBody + ".\r\n")
	c.expect("250 2.0.0 Ok: queued as ")
	c.cmd("QUIT", "221 ")
	var line string
	waitFor(t, "session end", func() bool {
		for _, l := range strings.Split(w.logs.String(), "\n") {
			if strings.Contains(l, `msg="session end"`) {
				line = l
				return true
			}
		}
		return false
	})
	for _, want := range []string{"session=", "client=127.0.0.1", "helo=client.test", "auth_user=alice@example.test",
		"messages=1", "rcpts=1", "tls=\"TLSv1.3 "} {
		if !strings.Contains(line, want) {
			t.Errorf("session line lacks %s: %s", want, line)
		}
	}
	var protocol string
	if err := w.db.Pool.QueryRow(context.Background(), `SELECT protocol FROM queue_message`).Scan(&protocol); err != nil {
		t.Fatal(err)
	}
	if protocol != "ESMTPSA" {
		t.Errorf("protocol %q", protocol)
	}
}

func TestCertificateReload(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	serial := func() int64 {
		c := dialTLS(t, r.addrs[smtpd.Submissions])
		return c.conn.(interface{ ConnectionState() tlsState }).ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 1 {
		t.Fatalf("serial %d", s)
	}
	time.Sleep(20 * time.Millisecond) // a later modification time
	w.cert.write(t, 2)
	waitFor(t, "the new certificate", func() bool { return serial() == 2 })
}

func TestConnectionRateLimit(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{Limits: smtpd.Limits{ConnRate: 0.001, ConnBurst: 2}}, nil)
	dialGreeted(t, r.addrs[smtpd.MX]).cmd("QUIT", "221 ")
	dialGreeted(t, r.addrs[smtpd.MX]).cmd("QUIT", "221 ")
	c := dial(t, r.addrs[smtpd.MX])
	c.expect("421 4.7.0 ")
	c.expectClosed()
}

func TestIdleTimeout(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{ReadTimeout: 300 * time.Millisecond}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	time.Sleep(500 * time.Millisecond)
	c.expect("421 4.4.2 ")
	c.expectClosed()

	// Message data has the same idle timeout, read by read.
	c = dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	for i := 0; i < 4; i++ { // slower in total than the timeout, never idle that long
		time.Sleep(150 * time.Millisecond)
		c.write("Subject: slow\r\n")
	}
	c.write("\r\nbody\r\n.\r\n")
	c.expect("250 2.0.0 Ok: queued as ")
	c.cmd("DATA", "503 ") // the transaction is over
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	time.Sleep(500 * time.Millisecond)
	for {
		rep, err := c.reply()
		if err != nil {
			break
		}
		if !strings.HasPrefix(rep, "4") {
			t.Errorf("after an idle DATA: %q", rep)
		}
	}
	if n := w.queued(); n != 1 {
		t.Errorf("%d messages queued, want 1", n)
	}
}

func TestPasswordUpgradeOnlyReplacesTheHashItVerified(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	old, _, err := w.st.MailboxPassword(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	// The password changed since the login read the hash: no upgrade.
	if err := w.st.SetMailboxPassword(ctx, bob, "{PLAIN}changed"); err != nil {
		t.Fatal(err)
	}
	changed, err := w.st.UpgradeMailboxPassword(ctx, bob, old, "{PLAIN}upgraded")
	if err != nil || changed {
		t.Fatalf("upgrade over a changed hash: changed %v, err %v", changed, err)
	}
	if h, _, _ := w.st.MailboxPassword(ctx, bob); h != "{PLAIN}changed" {
		t.Errorf("hash %q", h)
	}
}

func TestInactiveDomainCannotLogIn(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	off := false
	if _, err := w.st.UpdateDomain(context.Background(), localDomain, store.DomainPatch{Active: &off}); err != nil {
		t.Fatal(err)
	}
	c := dialGreeted(t, r.addrs[smtpd.Submission])
	c.ehlo()
	c.starttls()
	c.ehlo()
	c.authPlain(alice, alicePass, "535 5.7.8 ")
}
