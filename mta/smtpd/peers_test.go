package smtpd_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/smtpd"
)

// Black-box tests with real SMTP clients: swaks and Python's smtplib. They
// skip when the client is not installed, except under
// FACTEUR_REQUIRE_PEERS=1 (CI), where a missing client fails the test.

func requirePeer(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatalf("%s is required (FACTEUR_REQUIRE_PEERS=1) but not installed: apt-get install %s", name, pkg)
		}
		t.Skipf("%s not installed (apt-get install %s): black-box test skipped", name, pkg)
	}
	return p
}

func runPeer(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

func TestSwaks(t *testing.T) {
	swaks := requirePeer(t, "swaks", "swaks")
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	swak := func(t *testing.T, addr string, args ...string) (string, error) {
		h, p := hostPort(t, addr)
		base := []string{"--server", h, "--port", p, "--ehlo", "client.test", "--timeout", "20s",
			"--header", "Subject: swaks test"}
		return runPeer(t, swaks, append(base, args...)...)
	}
	queued := func(t *testing.T, out string, err error) {
		t.Helper()
		if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued as ") {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
	}
	t.Run("submission STARTTLS AUTH PLAIN", func(t *testing.T) {
		out, err := swak(t, r.addrs[smtpd.Submission], "--tls", "--auth", "PLAIN", "--auth-user", alice,
			"--auth-password", alicePass, "--from", alice, "--to", "user@foreign.test")
		queued(t, out, err)
		if !strings.Contains(out, "235 2.0.0") {
			t.Errorf("no AUTH success:\n%s", out)
		}
	})
	t.Run("submission STARTTLS AUTH LOGIN pipelined", func(t *testing.T) {
		out, err := swak(t, r.addrs[smtpd.Submission], "--tls", "--auth", "LOGIN", "--auth-user", alice,
			"--auth-password", alicePass, "--pipeline", "--from", alice, "--to", bob+",user@foreign.test")
		queued(t, out, err)
	})
	t.Run("submissions implicit TLS", func(t *testing.T) {
		out, err := swak(t, r.addrs[smtpd.Submissions], "--tls-on-connect", "--auth", "PLAIN", "--auth-user", alice,
			"--auth-password", alicePass, "--from", alice, "--to", bob)
		queued(t, out, err)
	})
	t.Run("submission refuses a wrong password", func(t *testing.T) {
		out, err := swak(t, r.addrs[smtpd.Submission], "--tls", "--auth", "PLAIN", "--auth-user", alice,
			"--auth-password", "wrong", "--from", alice, "--to", bob)
		if err == nil || !strings.Contains(out, "535 5.7.8") {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
	})
	t.Run("MX to the bare postmaster", func(t *testing.T) {
		out, err := swak(t, r.addrs[smtpd.MX], "--from", "someone@foreign.test", "--to", "postmaster")
		queued(t, out, err)
	})
	t.Run("MX refuses relaying", func(t *testing.T) {
		out, err := swak(t, r.addrs[smtpd.MX], "--from", "someone@foreign.test", "--to", "user@foreign.test")
		if err == nil || !strings.Contains(out, "554 5.7.1") {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
	})
	if n := w.queued(); n != 4 {
		t.Errorf("%d messages queued, want 4", n)
	}
}

// smtplibScript sends one message with Python's smtplib. argv: host port
// mode(starttls|ssl|plain) mech(PLAIN|LOGIN|-) user password from to...
// It prints the DATA reply and exits 0 on success.
const smtplibScript = `
import smtplib, ssl, sys
host, port, mode, mech, user, password, sender = sys.argv[1:8]
rcpts = sys.argv[8:]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if mode == "ssl":
    s = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=20)
else:
    s = smtplib.SMTP(host, int(port), timeout=20)
s.ehlo("client.test")
if mode == "starttls":
    s.starttls(context=ctx)
    s.ehlo("client.test")
if mech != "-":
    s.user, s.password = user, password
    code, resp = s.auth(mech, getattr(s, "auth_" + mech.lower()), initial_response_ok=(mech == "PLAIN"))
    assert code == 235, (code, resp)
body = ("From: %s\r\nTo: %s\r\nSubject: smtplib gr\u00fc\u00dfe\r\n\r\nHello from smtplib.\r\n" % (sender, ", ".join(rcpts))).encode("utf-8")
mail_opts = ["RET=HDRS", "ENVID=smtplib-1"]
if any(ord(ch) > 127 for a in [sender] + rcpts for ch in a):
    mail_opts.append("SMTPUTF8")
s.mail(sender, mail_opts)
for r in rcpts:
    code, resp = s.rcpt(r, ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;" + r.replace("+", "+2B")])
    assert code == 250, (r, code, resp)
code, resp = s.data(body)
print(code, resp.decode())
assert code == 250, (code, resp)
s.quit()
`

func TestPythonSmtplib(t *testing.T) {
	py := requirePeer(t, "python3", "python3")
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	send := func(t *testing.T, addr, mode, mech, user, pass, from string, to ...string) string {
		t.Helper()
		h, p := hostPort(t, addr)
		out, err := runPeer(t, py, append([]string{"-c", smtplibScript, h, p, mode, mech, user, pass, from}, to...)...)
		if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued as ") {
			t.Fatalf("smtplib: %v\n%s", err, out)
		}
		out = strings.TrimSpace(out)
		return out[strings.LastIndex(out, " ")+1:]
	}
	t.Run("submission STARTTLS PLAIN with DSN", func(t *testing.T) {
		id := send(t, r.addrs[smtpd.Submission], "starttls", "PLAIN", alice, alicePass, alice, bob, "user@foreign.test")
		var ret, envid, protocol string
		if err := w.db.Pool.QueryRow(context.Background(),
			`SELECT dsn_ret, dsn_envid, protocol FROM queue_message WHERE id = $1`, id).Scan(&ret, &envid, &protocol); err != nil {
			t.Fatal(err)
		}
		if ret != "HDRS" || envid != "smtplib-1" || protocol != "ESMTPSA" {
			t.Errorf("message row: %q %q %q", ret, envid, protocol)
		}
		var notify, orcpt string
		if err := w.db.Pool.QueryRow(context.Background(),
			`SELECT dsn_notify, dsn_orcpt FROM queue_recipient WHERE queue_id = $1 AND address = $2`, id, bob).Scan(&notify, &orcpt); err != nil {
			t.Fatal(err)
		}
		if notify != "SUCCESS,DELAY" || orcpt != "RFC822;"+bob {
			t.Errorf("recipient row: %q %q", notify, orcpt)
		}
	})
	t.Run("submissions LOGIN", func(t *testing.T) {
		send(t, r.addrs[smtpd.Submissions], "ssl", "LOGIN", alice, alicePass, alice, bob)
	})
	t.Run("MX with SMTPUTF8", func(t *testing.T) {
		id := send(t, r.addrs[smtpd.MX], "plain", "-", "", "", "jörg@foreign.test", alice)
		var utf8 bool
		if err := w.db.Pool.QueryRow(context.Background(), `SELECT smtputf8 FROM queue_message WHERE id = $1`, id).Scan(&utf8); err != nil {
			t.Fatal(err)
		}
		if !utf8 {
			t.Error("smtputf8 not recorded")
		}
	})
}
