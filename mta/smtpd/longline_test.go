package smtpd_test

import (
	"strings"
	"testing"

	"github.com/facteur/facteur/mta/smtpd"
)

// TestLongBodyLine: a message line up to MaxLineLength (2000 octets with
// its CRLF) is queued as it is; a longer one refuses the message
// permanently (552 5.3.4) once the client has sent all of it, nothing is
// queued, and the session goes on (go-smtp's own limit would answer
// 451 4.3.0 and then close the connection).
func TestLongBodyLine(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	send := func(body, want string) {
		t.Helper()
		c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
		c.cmd("RCPT TO:<alice@example.test>", "250 ")
		c.cmd("DATA", "354 ")
		c.write(body + ".\r\n")
		c.expect(want)
	}
	queued := 0
	for _, n := range []int{998, 1998} { // 1998 + CRLF: the limit
		send(msgBody+strings.Repeat("a", n)+"\r\nafter\r\n", "250 2.0.0 ")
		queued++
	}
	for _, body := range []string{
		msgBody + strings.Repeat("a", 1999) + "\r\nafter\r\n",
		msgBody + strings.Repeat("b", 100000) + "\r\nafter\r\n",
		strings.Repeat("X-Long: "+strings.Repeat("c", 3000)+"\r\n", 3) + "\r\nbody\r\n",
		msgBody + strings.Repeat("d", 5000) + "\r\n..\r\n.. x\r\nmore\r\n", // dot-stuffed lines after the long line
		msgBody + strings.Repeat("e", 30000),                               // no CRLF before the end
	} {
		if !strings.HasSuffix(body, "\r\n") {
			body += "\r\n"
		}
		send(body, "552 5.3.4 Message line too long")
		if n := w.queued(); n != queued {
			t.Fatalf("%d messages queued, want %d", n, queued)
		}
		c.cmd("NOOP", "250 ")
	}
	// The session goes on, and the next message is whole.
	send(msgBody+"last\r\n", "250 2.0.0 ")
	queued++
	if n := w.queued(); n != queued {
		t.Errorf("%d messages queued, want %d", n, queued)
	}
	if n := w.spoolFiles(); n != queued {
		t.Errorf("%d spool files, want %d", n, queued)
	}
	c.cmd("QUIT", "221 ")
}

// TestLongBodyLineThenBareLF: the dropped rest of a message is still
// checked for bare line ends (550 5.5.2, connection closed).
func TestLongBodyLineThenBareLF(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
	c.cmd("RCPT TO:<alice@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write(msgBody + strings.Repeat("a", 3000) + "\r\nsmuggled\n.\nMAIL FROM:<x@foreign.test>\r\n.\r\n")
	c.expect("550 5.5.2 ")
	c.expectClosed()
	if n := w.queued(); n != 0 {
		t.Errorf("%d messages queued", n)
	}
}

// TestGreetingDoesNotEchoClient: the reply to HELO and EHLO starts with our
// host name (RFC 5321 4.1.1.1, as Postfix's), never the client's argument.
func TestGreetingDoesNotEchoClient(t *testing.T) {
	w := newWorld(t)
	r := w.start(smtpd.Options{}, nil)
	c := dialGreeted(t, r.addrs[smtpd.MX])
	ehlo := c.cmd("EHLO cli\x00ent.evil", "250 ")
	if first := strings.SplitN(ehlo, "\n", 2)[0]; first != "250-"+testHost {
		t.Errorf("EHLO reply's first line %q, want %q", first, "250-"+testHost)
	}
	if strings.Contains(ehlo, "cli") || strings.Contains(ehlo, "\x00") {
		t.Errorf("EHLO reply echoes the client:\n%q", ehlo)
	}
	if !strings.Contains(ehlo, "250-STARTTLS\n") || !strings.Contains(ehlo, "250-PIPELINING") {
		t.Errorf("EHLO reply lost its extensions:\n%s", ehlo)
	}
	if helo := c.cmd("HELO client.evil", "250 "); helo != "250 "+testHost {
		t.Errorf("HELO reply %q, want %q", helo, "250 "+testHost)
	}
	c.cmd("MAIL FROM:<someone@foreign.test>", "250 ")
}
