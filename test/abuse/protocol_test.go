package abuse

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/test/harness"
)

// TestPipelining sends whole sessions in one write: pipelined transactions
// (RFC 2920) and "unsynchronised" ones, whose message comes before the 354.
// Every transaction is answered in order and queued exactly once; nothing
// is lost or merged.
func TestPipelining(t *testing.T) {
	t.Parallel()
	s := harness.NewStack(t, harness.StackOptions{})
	tx := func(n int) string {
		return fmt.Sprintf("MAIL FROM:<pipe%d@foreign.test>\r\nRCPT TO:<%s>\r\nDATA\r\nSubject: %d\r\n\r\nbody %d\r\n.\r\n", n, harness.Alice, n, n)
	}
	cases := []struct {
		name, send string
		queued     int
	}{
		{"one transaction, body before 354", "EHLO client.test\r\n" + tx(1) + "QUIT\r\n", 1},
		{"two transactions in one write", "EHLO client.test\r\n" + tx(2) + tx(3) + "QUIT\r\n", 2},
		{"RSET between", "EHLO client.test\r\n" + tx(4) + "RSET\r\n" + tx(5) + "QUIT\r\n", 2},
		{"bad command in the middle", "EHLO client.test\r\n" + tx(6) + "XYZZY\r\n" + tx(7) + "QUIT\r\n", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			countCase(t)
			before := s.Queued()
			c := harness.MustDial(t, s.MX, harness.NextIP())
			c.Expect(t, "220 ")
			c.Write(tc.send)
			got, closed := replies(c, 2*time.Second)
			if !closed || !strings.HasPrefix(got[len(got)-1], "221 ") {
				t.Errorf("replies %q: the session did not end with 221", got)
			}
			if n := strings.Count(strings.Join(got, "\n"), "Ok: queued as"); n != tc.queued {
				t.Errorf("%d queued replies, want %d: %q", n, tc.queued, got)
			}
			if n := s.Queued() - before; n != tc.queued {
				t.Errorf("%d messages queued, want %d", n, tc.queued)
			}
		})
	}
}

// TestPregreet: a client that talks before the greeting. With the MX
// listener's pregreet wait on (postscreen's greet test), it is refused and
// disconnected, and nothing it sent is queued; with it off (the default),
// its early commands are served in order like pipelined ones.
func TestPregreet(t *testing.T) {
	t.Parallel()
	session := "EHLO client.test\r\nMAIL FROM:<early@foreign.test>\r\nRCPT TO:<" + harness.Alice + ">\r\nDATA\r\nSubject: early\r\n\r\nx\r\n.\r\nQUIT\r\n"
	t.Run("pregreet wait on", func(t *testing.T) {
		countCase(t)
		s := harness.NewStack(t, harness.StackOptions{Smtpd: smtpd.Options{PregreetWait: 300 * time.Millisecond}})
		c := harness.MustDial(t, s.MX, harness.NextIP())
		c.Write(session)
		got, closed := replies(c, 3*time.Second)
		if !closed || hasPrefix(got, "250 ") {
			t.Errorf("replies %q (closed %v): want a refusal and the connection closed", got, closed)
		}
		if !hasPrefix(got, "5") && !hasPrefix(got, "421 ") {
			t.Errorf("replies %q: no refusal", got)
		}
		if n := s.Queued(); n != 0 {
			t.Errorf("%d messages queued from a pregreeting client", n)
		}
		// A client that waits is served.
		w := harness.MustDial(t, s.MX, harness.NextIP())
		w.Expect(t, "220 ")
		w.MustCmd(t, "EHLO client.test", "250 ")
	})
	t.Run("pregreet wait off", func(t *testing.T) {
		countCase(t)
		s := harness.NewStack(t, harness.StackOptions{})
		c := harness.MustDial(t, s.MX, harness.NextIP())
		c.Write(session)
		got, _ := replies(c, 2*time.Second)
		if len(got) == 0 || !strings.HasPrefix(got[0], "220 ") {
			t.Fatalf("replies %q: the greeting does not come first", got)
		}
		if n := strings.Count(strings.Join(got, "\n"), "Ok: queued as"); n != s.Queued() || n > 1 {
			t.Errorf("replies %q, %d messages queued", got, s.Queued())
		}
	})
}

// TestOverlongInput: a command line, a local part, a path and body lines
// beyond the RFC 5321 limits (4.5.3.1).
func TestOverlongInput(t *testing.T) {
	t.Parallel()
	s := harness.NewStack(t, harness.StackOptions{})
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		name  string
		lines []string // after EHLO
		want  string   // prefix of the last reply
		close bool     // the server closes the connection
	}{
		{"command of 3000 octets", []string{"NOOP " + long(3000)}, "500 5.4.0", true},
		{"command of 20000 octets", []string{"NOOP " + long(20000)}, "500 5.4.0", true},
		{"sender local part of 65", []string{"MAIL FROM:<" + long(65) + "@foreign.test>"}, "5", false},
		{"recipient local part of 65", []string{"MAIL FROM:<a@foreign.test>", "RCPT TO:<" + long(65) + "@example.test>"}, "5", false},
		{"sender path of 300", []string{"MAIL FROM:<a@" + strings.Repeat("b.", 148) + "test>"}, "5", false},
		{"recipient path of 300", []string{"MAIL FROM:<a@foreign.test>", "RCPT TO:<alice@" + strings.Repeat("b.", 148) + "example.test>"}, "5", false},
		{"domain label of 64", []string{"MAIL FROM:<a@" + long(64) + ".test>"}, "5", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			countCase(t)
			c := s.Greeted(t, s.MX)
			c.MustCmd(t, "EHLO client.test", "250 ")
			for i, l := range tc.lines {
				if i < len(tc.lines)-1 {
					c.MustCmd(t, l, "250 ")
					continue
				}
				c.MustCmd(t, l, tc.want)
			}
			if tc.close {
				c.ExpectClosed(t)
				return
			}
			c.MustCmd(t, "RSET", "250 ")
		})
	}
	// Body lines: up to the line limit (2000 octets with the CRLF) they are
	// stored as they are; beyond it the whole message is read, refused for
	// good (552 5.3.4), nothing is queued, and the session goes on.
	for _, n := range []int{998, 1500, 5000, 100000} {
		t.Run(fmt.Sprintf("body line of %d", n), func(t *testing.T) {
			countCase(t)
			before := s.Queued()
			c := s.Greeted(t, s.MX)
			c.MustCmd(t, "EHLO client.test", "250 ")
			msg := harness.Message("a@foreign.test", harness.Alice, fmt.Sprintf("<line%d@client.test>", n), "long line") + long(n) + "\r\n"
			out, codes, err := c.Send("a@foreign.test", []string{harness.Alice}, msg)
			t.Logf("%d octets: outcome %d, replies %v, %v", n, out, codes, err)
			switch {
			case n+2 <= 2000:
				if out != harness.Accepted {
					t.Fatalf("a body line of %d octets: outcome %d, %v; want 250", n, out, err)
				}
				if s.Queued() != before+1 {
					t.Errorf("250 but %d messages queued", s.Queued()-before)
				}
			case out != harness.Rejected || !strings.Contains(err.Error(), ": 552 5.3.4 "):
				t.Fatalf("a body line of %d octets (over the 2000 line limit): outcome %d, replies %v, %v; want 552 5.3.4", n, out, codes, err)
			case s.Queued() != before:
				t.Errorf("refused, yet queued")
			}
			c.MustCmd(t, "NOOP", "250 ") // the session goes on
		})
	}
}

// TestRecipientAndSizeLimits: the 1,001st recipient, SIZE= far over the
// limit, and a body over the limit without SIZE= (read to its end, then
// 552, and the session goes on).
func TestRecipientAndSizeLimits(t *testing.T) {
	t.Parallel()
	const max = 64 << 10
	s := harness.NewStack(t, harness.StackOptions{Smtpd: smtpd.Options{MaxMessageBytes: max}})
	t.Run("1001 recipients", func(t *testing.T) {
		countCase(t)
		c := s.Greeted(t, s.MX)
		c.MustCmd(t, "EHLO client.test", "250 ")
		c.MustCmd(t, "MAIL FROM:<many@foreign.test>", "250 ")
		var b strings.Builder
		for i := 0; i < 1001; i++ {
			fmt.Fprintf(&b, "RCPT TO:<alice+%d@example.test>\r\n", i)
		}
		c.Write(b.String())
		for i := 0; i < 1000; i++ {
			c.Expect(t, "250 ")
		}
		c.Expect(t, "452 4.5.3 ")
		c.MustCmd(t, "DATA", "354 ")
		c.Write(harness.Message("many@foreign.test", harness.Alice, "<many@client.test>", "many") + ".\r\n")
		c.Expect(t, "250 2.0.0 ")
		if n := s.Count(`SELECT count(*) FROM queue_recipient r JOIN queue_message m ON m.id = r.queue_id WHERE m.sender = 'many@foreign.test'`); n != 1000 {
			t.Errorf("%d recipients queued, want 1000", n)
		}
	})
	for _, size := range []string{"4000000000", "99999999999999999999", fmt.Sprint(max + 1)} {
		t.Run("SIZE="+size, func(t *testing.T) {
			countCase(t)
			c := s.Greeted(t, s.MX)
			c.MustCmd(t, "EHLO client.test", "250 ")
			_, text, err := c.Cmd("MAIL FROM:<big@foreign.test> SIZE=" + size)
			if err != nil || !(strings.HasPrefix(text, "552 5.3.4") || strings.HasPrefix(text, "501 ")) {
				t.Fatalf("MAIL with SIZE=%s: %q, %v; want 552 5.3.4 (or 501 for a size that is no number)", size, text, err)
			}
			c.MustCmd(t, "RSET", "250 ")
			c.MustCmd(t, "MAIL FROM:<small@foreign.test> SIZE=100", "250 ")
		})
	}
	t.Run("body over the limit", func(t *testing.T) {
		countCase(t)
		before := s.Queued()
		c := s.Greeted(t, s.MX)
		c.MustCmd(t, "EHLO client.test", "250 ")
		c.MustCmd(t, "MAIL FROM:<big@foreign.test>", "250 ")
		c.MustCmd(t, "RCPT TO:<"+harness.Alice+">", "250 ")
		c.MustCmd(t, "DATA", "354 ")
		// 4 × the limit, then the end: the reply comes only after the end.
		body := harness.Message("big@foreign.test", harness.Alice, "<big@client.test>", "big") + strings.Repeat(strings.Repeat("y", 78)+"\r\n", 4*max/80)
		c.Write(body)
		c.Conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, text, err := c.Reply(); err == nil {
			t.Fatalf("a reply before the end of the data: %q", text)
		}
		c.Conn.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write(".\r\n")
		c.Expect(t, "552 5.3.4 ")
		c.MustCmd(t, "RSET", "250 ")
		if out, _, err := c.Send("small@foreign.test", []string{harness.Alice}, harness.Message("small@foreign.test", harness.Alice, "<small@client.test>", "small")); out != harness.Accepted {
			t.Fatalf("a small message after the refused one: %v", err)
		}
		if n := s.Queued() - before; n != 1 {
			t.Errorf("%d messages queued, want 1 (the small one)", n)
		}
	})
}

// TestNULBytes: NUL in commands is refused (and the session goes on); NUL
// in the body never reaches a database row.
func TestNULBytes(t *testing.T) {
	t.Parallel()
	s := harness.NewStack(t, harness.StackOptions{})
	cmds := []string{
		"MAIL FROM:<a\x00b@foreign.test>",
		"MAIL FROM:<ab@foreign.test\x00>",
		"MAIL FROM:<\"a\x00b\"@foreign.test>",
		"MAIL FROM:<ab@foreign.test> ENVID=x\x00y",
	}
	for i, cmd := range cmds {
		t.Run(fmt.Sprintf("command %d", i), func(t *testing.T) {
			countCase(t)
			c := s.Greeted(t, s.MX)
			c.MustCmd(t, "EHLO client.test", "250 ")
			code, text, err := c.Cmd(cmd)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%q: %q", cmd, text)
			if code == 250 {
				// Accepted: the message must still be queued (PostgreSQL
				// refuses NUL in text: a 451 here would be a bug).
				c.MustCmd(t, "RCPT TO:<"+harness.Alice+">", "250 ")
				c.MustCmd(t, "DATA", "354 ")
				c.Write(harness.Message("x@foreign.test", harness.Alice, fmt.Sprintf("<nul%d@client.test>", i), "nul") + ".\r\n")
				c.Expect(t, "250 ")
			} else if code < 500 {
				t.Errorf("%q: %q, want a 5xx or an accepted command", cmd, text)
			}
			c.MustCmd(t, "RSET", "250 ")
		})
	}
	t.Run("EHLO with NUL", func(t *testing.T) {
		countCase(t)
		c := s.Greeted(t, s.MX)
		code, text, err := c.Cmd("EHLO cli\x00ent.test")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("EHLO with NUL: %q", text)
		if code == 250 {
			if out, _, err := c.Send("nulhelo@foreign.test", []string{harness.Alice}, harness.Message("nulhelo@foreign.test", harness.Alice, "<nulhelo@client.test>", "nul helo")); out != harness.Accepted {
				t.Fatalf("send after EHLO with NUL: %v", err)
			}
			for _, b := range s.StoredBodies() {
				if strings.Contains(b, "<nulhelo@client.test>") && strings.Contains(headerBlock(b), "\x00") {
					t.Errorf("a NUL reached the stored header:\n%q", headerBlock(b))
				}
			}
		}
		// smtpd's SECURITY note: it never writes a client's text into a
		// reply (go-smtp's EHLO reply "250-Hello <argument>" did).
		if strings.Contains(text, "\x00") || strings.Contains(text, "cli") {
			t.Errorf("the EHLO reply echoes the client's argument: %q", strings.SplitN(text, "\n", 2)[0])
		}
	})
	t.Run("body with NUL", func(t *testing.T) {
		countCase(t)
		c := s.Greeted(t, s.MX)
		c.MustCmd(t, "EHLO client.test", "250 ")
		msg := "Subject: nul\x00here\r\nMessage-ID: <nul\x00body@client.test>\r\n\r\nbody \x00 with NUL\r\n"
		out, codes, err := c.Send("nulbody@foreign.test", []string{harness.Alice}, msg)
		t.Logf("body with NUL: outcome %d, replies %v, %v", out, codes, err)
		if out != harness.Accepted && out != harness.Rejected {
			t.Fatalf("no reply: %v", err)
		}
		if out == harness.Rejected && codes[len(codes)-1] == 451 {
			t.Errorf("a NUL in the body gives 451 (a database error?): %v", err)
		}
	})
}

// headerBlock returns a message's header, up to the empty line.
func headerBlock(msg string) string {
	if i := strings.Index(msg, "\r\n\r\n"); i >= 0 {
		return msg[:i+2]
	}
	return msg
}
