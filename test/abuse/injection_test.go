package abuse

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/facteur/facteur/mta/dsn"
	"github.com/facteur/facteur/test/harness"
)

// injected matches a header line that an attacker added: a line of the
// header block that starts with the marker field.
var injected = regexp.MustCompile(`(?mi)^x-injected:`)

// TestHeaderInjectionThroughCommandArguments tries to smuggle CR LF (and a
// header field behind it) through the SMTP arguments that end up in stored
// header fields or DSNs: the EHLO argument (in Received:), MAIL's AUTH=
// xtext, ENVID= and RCPT's ORCPT= (Original-Envelope-Id and
// Original-Recipient of a DSN). Whatever is accepted, no header field of
// the attacker's reaches a stored message or a DSN built from the stored
// envelope.
func TestHeaderInjectionThroughCommandArguments(t *testing.T) {
	t.Parallel()
	s := harness.NewStack(t, harness.StackOptions{})
	const xt = "+0D+0AX-Injected:+20yes" // CR LF "X-Injected: yes" in xtext
	cases := []struct {
		name, ehlo, mail, rcpt string
	}{
		{"EHLO with xtext CRLF", "EHLO evil.test" + xt, "", ""},
		{"EHLO with a comment", "EHLO evil.test) by evil (X-Injected: yes", "", ""},
		{"EHLO address literal and junk", "EHLO [192.0.2.1]\tX-Injected:\tyes", "", ""},
		{"EHLO very long", "EHLO " + strings.Repeat("x", 1500), "", ""},
		{"AUTH= xtext CRLF", "", " AUTH=<a" + xt + "@evil.test>", ""},
		{"AUTH= raw", "", " AUTH=a@evil.test+0A", ""},
		{"ENVID= xtext CRLF", "", " ENVID=id" + xt, ""},
		{"ORCPT= xtext CRLF", "", "", " ORCPT=rfc822;a" + xt + "@example.test"},
		{"ORCPT= utf-8 CRLF", "", "", ` ORCPT=utf-8;a\x{D}\x{A}X-Injected:\x{20}yes@example.test`},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			countCase(t)
			c := s.Greeted(t, s.MX)
			ehlo := tc.ehlo
			if ehlo == "" {
				ehlo = "EHLO client.test"
			}
			if code, text, err := c.Cmd(ehlo); err != nil || code != 250 {
				t.Logf("%s: %q, %v (refused: nothing to store)", ehlo, text, err)
				return
			}
			sender := fmt.Sprintf("inj%d@foreign.test", i)
			id := fmt.Sprintf("<inj%d@client.test>", i)
			code, text, err := c.Cmd("MAIL FROM:<" + sender + ">" + tc.mail)
			if err != nil {
				t.Fatal(err)
			}
			if code != 250 {
				t.Logf("MAIL: %q (refused)", text)
				return
			}
			code, text, err = c.Cmd("RCPT TO:<" + harness.Alice + ">" + tc.rcpt)
			if err != nil {
				t.Fatal(err)
			}
			if code != 250 {
				t.Logf("RCPT: %q (refused)", text)
				return
			}
			c.MustCmd(t, "DATA", "354 ")
			c.Write(harness.Message(sender, harness.Alice, id, "injection") + ".\r\n")
			c.Expect(t, "250 ")
			var body string
			for _, b := range s.StoredBodies() {
				if strings.Contains(b, id) {
					body = b
				}
			}
			if body == "" {
				t.Fatal("the accepted message is not in the spool")
			}
			if h := headerBlock(body); injected.MatchString(h) {
				t.Errorf("an injected field reached the stored header:\n%s", h)
			}
			// The stored envelope, as the queue would hand it to a DSN.
			var envid, orcpt *string
			if err := s.DB.Pool.QueryRow(context.Background(), `SELECT m.dsn_envid, r.dsn_orcpt FROM queue_message m
JOIN queue_recipient r ON r.queue_id = m.id WHERE m.sender = $1`, sender).Scan(&envid, &orcpt); err != nil {
				t.Fatal(err)
			}
			rep := &dsn.Report{ReportingMTA: harness.Host, To: sender, OriginalSender: sender, QueueID: "X",
				Recipients: []dsn.Recipient{{FinalRecipient: harness.Alice, Action: dsn.ActionFailed, Diagnostic: "550 5.1.1 no"}}}
			if envid != nil {
				rep.EnvelopeID = *envid
			}
			if orcpt != nil {
				rep.Recipients[0].OriginalRecipient = *orcpt
			}
			var out bytes.Buffer
			if err := dsn.Write(&out, rep, strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			// Only the report's own parts: the enclosed original may carry
			// anything it carried.
			report := out.String()
			if i := strings.Index(report, "Content-Type: message/rfc822"); i >= 0 {
				report = report[:i]
			}
			if injected.MatchString(report) {
				t.Errorf("an injected field reached a DSN built from the stored envelope:\n%s", report)
			}
		})
	}
}
