package abuse

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/test/harness"
)

// TestSmugglingEndingsQueueNothingSmuggled sends, for each false end of data
// of the SMTP smuggling family (CVE-2023-51764 and kin), a message ending
// with it and a whole second transaction behind it. The second transaction
// must never be queued: facteur either refuses the bare CR or LF (550 5.5.2,
// connection closed, nothing queued) or, for an ending without one, reads
// it all as the first message's body.
func TestSmugglingEndingsQueueNothingSmuggled(t *testing.T) {
	t.Parallel()
	s := harness.NewStack(t, harness.StackOptions{})
	endings := []struct {
		name, end string
		bare      bool // has a bare CR or LF: 550 5.5.2 and close
	}{
		{`\n.\n`, "\n.\n", true},
		{`\r.\r`, "\r.\r", true},
		{`\r.\n`, "\r.\n", true},
		{`\n.\r`, "\n.\r", true},
		{`\n.\r\n`, "\n.\r\n", true},
		{`\r\n.\n`, "\r\n.\n", true},
		{`\r.\r\n`, "\r.\r\n", true},
		{`\r\n.\r`, "\r\n.\r", true},
		{`\r\n\x00.\r\n`, "\r\n\x00.\r\n", false},
	}
	for i, e := range endings {
		t.Run(e.name, func(t *testing.T) {
			countCase(t)
			c := s.Greeted(t, s.MX)
			sender := fmt.Sprintf("case%d@foreign.test", i)
			smuggler := fmt.Sprintf("smuggled%d@foreign.test", i)
			c.Write("EHLO client.test\r\nMAIL FROM:<" + sender + ">\r\nRCPT TO:<" + harness.Alice + ">\r\nDATA\r\n")
			c.Write("Subject: first\r\n\r\nbody" + e.end +
				"MAIL FROM:<" + smuggler + ">\r\nRCPT TO:<" + harness.Bob + ">\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
			got, closed := replies(c, 700*time.Millisecond)
			if e.bare {
				if !hasPrefix(got, "550 5.5.2 ") || !closed {
					t.Errorf("replies %q (closed %v), want 550 5.5.2 and the connection closed", got, closed)
				}
				if n := s.Count(`SELECT count(*) FROM queue_message WHERE sender = $1`, sender); n != 0 {
					t.Errorf("the message with a bare line end was queued")
				}
			} else {
				// One message, to alice only, with the rest as its body.
				if strings.Count(strings.Join(got, "\n"), "250 2.0.0 Ok: queued") > 1 {
					t.Errorf("replies %q: more than one message queued", got)
				}
				c.Write("QUIT\r\n")
				t.Logf("replies: %q", got)
			}
			if n := s.Count(`SELECT count(*) FROM queue_message WHERE sender = $1`, smuggler); n != 0 {
				t.Errorf("the smuggled transaction was queued")
			}
			if n := s.Count(`SELECT count(*) FROM queue_recipient WHERE address = $1`, harness.Bob); n != 0 {
				t.Errorf("the smuggled recipient was queued")
			}
		})
	}
	if s.SpoolFiles() != s.Queued() {
		t.Errorf("%d spool files for %d queued messages", s.SpoolFiles(), s.Queued())
	}
}

// TestSTARTTLSWithInjectedCommand sends STARTTLS and RSET in one write: the
// plaintext RSET must be thrown away (CVE-2011-0411), so the first reply
// inside TLS is the one to the client's EHLO, and no reply to the injected
// command ever comes.
func TestSTARTTLSWithInjectedCommand(t *testing.T) {
	t.Parallel()
	s := harness.NewStack(t, harness.StackOptions{})
	for _, injected := range []string{"RSET\r\n", "RSET\r\nNOOP\r\n", "MAIL FROM:<injected@foreign.test>\r\n"} {
		t.Run(strings.TrimSpace(strings.ReplaceAll(injected, "\r\n", " ")), func(t *testing.T) {
			countCase(t)
			c := s.Greeted(t, s.MX)
			c.MustCmd(t, "EHLO client.test", "250 ")
			c.Write("STARTTLS\r\n" + injected)
			c.Expect(t, "220 ")
			c.Handshake(t)
			ehlo := c.MustCmd(t, "EHLO client.test", "250 ")
			if !strings.Contains(ehlo, "250-"+harness.Host) && !strings.HasPrefix(ehlo, "250-") {
				t.Fatalf("first reply inside TLS is not the EHLO's: %q", ehlo)
			}
			c.MustCmd(t, "NOOP", "250 ")
			// A MAIL injected before TLS is forgotten: RCPT needs a MAIL.
			c.MustCmd(t, "RCPT TO:<"+harness.Alice+">", "503 ")
			if got, _ := replies(c, 500*time.Millisecond); len(got) != 0 {
				t.Errorf("extra replies inside TLS: %q", got)
			}
		})
	}
}
