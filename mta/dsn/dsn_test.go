package dsn

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/envelope"
)

const original = "Received: from client (client [192.0.2.9])\r\n\tby mx.example.net (facteur) id ABCDEF123456\r\n" +
	"From: Alice <alice@example.org>\r\nTo: bob@example.com, carol@example.com\r\nSubject: lunch\r\n" +
	"Message-ID: <m1@example.org>\r\n\r\nBody line one\r\n--not-our-boundary\r\nlast line\r\n"

func failureReport() *Report {
	at := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	return &Report{
		ReportingMTA:      "mx.example.net",
		To:                "alice@example.org",
		QueueID:           "ABCDEF123456",
		EnvelopeID:        "env id+1",
		OriginalSender:    "alice@example.org",
		OriginalMessageID: "<m1@example.org>",
		ArrivalDate:       at,
		Date:              at.Add(time.Hour),
		Recipients: []Recipient{
			{FinalRecipient: "bob@example.com", OriginalRecipient: "rfc822;Team@Example.com", Action: ActionFailed,
				Status: envelope.Status{5, 1, 1}, RemoteMTA: "mx.example.com",
				Diagnostic: "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown", LastAttempt: at.Add(time.Minute)},
			{FinalRecipient: "carol@example.com", Action: ActionFailed, Status: envelope.Status{5, 4, 7},
				Reason: "delivery time expired"},
		},
	}
}

func write(t *testing.T, r *Report, orig string) []byte {
	t.Helper()
	var buf bytes.Buffer
	var rd *strings.Reader
	if orig != "" {
		rd = strings.NewReader(orig)
	}
	var err error
	if rd == nil {
		err = Write(&buf, r, nil)
	} else {
		err = Write(&buf, r, rd)
	}
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	checkLines(t, buf.Bytes())
	return buf.Bytes()
}

// checkLines checks that every line ends in CRLF and has at most 998 octets
// (RFC 5322 2.1.1), and that the report's own parts are 7-bit.
func checkLines(t *testing.T, b []byte) {
	t.Helper()
	for i, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if !bytes.HasSuffix(line, []byte("\r\n")) || bytes.Count(line, []byte("\r")) != 1 {
			t.Fatalf("line %d does not end in CRLF or has a bare CR: %q", i+1, line)
		}
		if len(line) > 1000 {
			t.Fatalf("line %d has %d octets", i+1, len(line)-2)
		}
	}
}

func TestFailureReportRoundTrips(t *testing.T) {
	b := write(t, failureReport(), original)
	p, err := ParseReport(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("ParseReport: %v\n%s", err, b)
	}
	if got := p.Header.Get("Subject"); got != "Undelivered Mail Returned to Sender" {
		t.Errorf("Subject = %q", got)
	}
	if p.Header.Get("Auto-Submitted") != "auto-replied" || p.Header.Get("To") != "<alice@example.org>" ||
		p.Header.Get("From") != "Mail Delivery System <MAILER-DAEMON@mx.example.net>" ||
		p.Header.Get("References") != "<m1@example.org>" {
		t.Errorf("header = %v", p.Header)
	}
	if p.Kind() != KindFailure || p.ReportingMTA != "mx.example.net" || p.QueueID != "ABCDEF123456" || p.EnvelopeID != "env id+1" ||
		!p.ArrivalDate.Equal(failureReport().ArrivalDate) {
		t.Errorf("per-message fields: %+v", p)
	}
	if len(p.Recipients) != 2 {
		t.Fatalf("recipients: %+v", p.Recipients)
	}
	bob, carol := p.Recipients[0], p.Recipients[1]
	if bob.FinalRecipient != "bob@example.com" || bob.OriginalRecipient != "rfc822;Team@Example.com" || bob.Action != ActionFailed ||
		bob.Status != (envelope.Status{5, 1, 1}) || bob.RemoteMTA != "mx.example.com" ||
		bob.Diagnostic != "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown" ||
		!bob.LastAttempt.Equal(failureReport().Recipients[0].LastAttempt) {
		t.Errorf("bob = %+v", bob)
	}
	if carol.FinalRecipient != "carol@example.com" || carol.Status != (envelope.Status{5, 4, 7}) || carol.Reason != "delivery time expired" ||
		carol.OriginalRecipient != "" {
		t.Errorf("carol = %+v", carol)
	}
	for _, want := range []string{"could not be delivered", "<bob@example.com> (expanded from <Team@Example.com>): host mx.example.com said: 550 5.1.1",
		"<carol@example.com>: delivery time expired", "Queue id: ABCDEF123456"} {
		if !strings.Contains(strings.Join(strings.Fields(p.Text), " "), want) {
			t.Errorf("text lacks %q:\n%s", want, p.Text)
		}
	}
	// RET not given: headers only.
	if p.OriginalType != "text/rfc822-headers" || !strings.Contains(string(p.Original), "Subject: lunch") ||
		strings.Contains(string(p.Original), "Body line one") {
		t.Errorf("original part %s: %q", p.OriginalType, p.Original)
	}
}

func TestReturnFullEnclosesTheMessage(t *testing.T) {
	r := failureReport()
	r.Return = ReturnFull
	r.EightBit = true
	orig := original + "--" // no final line end
	b := write(t, r, orig)
	p, err := ParseReport(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if p.OriginalType != "message/rfc822" || !strings.Contains(string(p.Original), "Body line one\r\n--not-our-boundary\r\nlast line\r\n--") {
		t.Errorf("original part %s: %q", p.OriginalType, p.Original)
	}
	if !bytes.Contains(b, []byte("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n")) {
		t.Errorf("8-bit original not marked:\n%s", b)
	}
}

func TestDelayAndSuccessReports(t *testing.T) {
	until := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	r := failureReport()
	r.Recipients = []Recipient{{FinalRecipient: "bob@example.com", Action: ActionDelayed, Status: envelope.Status{4, 4, 1},
		Diagnostic: "421 4.4.1 connection refused", WillRetryUntil: until}}
	p, err := ParseReport(bytes.NewReader(write(t, r, original)))
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind() != KindDelay || p.Header.Get("Subject") != "Delayed Mail (still being retried)" ||
		!p.Recipients[0].WillRetryUntil.Equal(until) || !strings.Contains(p.Text, "THIS IS A WARNING ONLY") {
		t.Errorf("delay report: %+v %v", p.Recipients, p.Header)
	}

	r.Recipients = []Recipient{{FinalRecipient: "bob@example.com", Action: ActionRelayed},
		{FinalRecipient: "carol@example.com", Action: ActionDelivered, Status: envelope.Status{2, 0, 0}, Diagnostic: "250 2.0.0 Ok"}}
	p, err = ParseReport(bytes.NewReader(write(t, r, original)))
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind() != KindSuccess || p.Header.Get("Subject") != "Successful Mail Delivery Report" ||
		p.Recipients[0].Action != ActionRelayed || p.Recipients[0].Status != (envelope.Status{2, 0, 0}) {
		t.Errorf("success report: %+v", p.Recipients)
	}
}

func TestUntrustedTextCannotAddFieldsOrGroups(t *testing.T) {
	r := failureReport()
	r.Recipients = []Recipient{{
		FinalRecipient: "bob@example.com\r\nBcc: victim@example.net",
		Action:         ActionFailed,
		RemoteMTA:      "evil\r\n\r\nFinal-Recipient: rfc822; injected@example.net",
		Diagnostic:     "550 no\r\n\r\nFinal-Recipient: rfc822; injected2@example.net\r\nAction: delivered" + strings.Repeat(" long", 400),
	}}
	r.Subject = "x\r\nBcc: victim@example.net"
	r.EnvelopeID = "id\r\nX: y"
	b := write(t, r, original)
	p, err := ParseReport(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Recipients) != 1 || p.Recipients[0].Action != ActionFailed {
		t.Fatalf("injected a recipient group: %+v", p.Recipients)
	}
	if p.Header.Get("Bcc") != "" || len(p.Header["Bcc"]) != 0 {
		t.Fatalf("injected a header field: %v", p.Header)
	}
	if p.EnvelopeID != "id\r\nX: y" {
		t.Errorf("ENVID = %q, want it back exactly (xtext)", p.EnvelopeID)
	}
	// The address is escaped inside its field and reads back exactly.
	if p.Recipients[0].FinalRecipient != r.Recipients[0].FinalRecipient {
		t.Errorf("Final-Recipient %q", p.Recipients[0].FinalRecipient)
	}
	for _, line := range strings.Split(string(b), "\r\n") {
		if strings.HasPrefix(line, "Bcc:") || strings.HasPrefix(line, "X: y") || strings.HasPrefix(line, "Final-Recipient: rfc822; injected") {
			t.Errorf("injected line %q", line)
		}
	}
}

func TestInternationalAddressRoundTrips(t *testing.T) {
	r := failureReport()
	r.Recipients = []Recipient{{FinalRecipient: "jöran@bücher.example", OriginalRecipient: "utf-8;Jöran@bücher.example", Action: ActionFailed}}
	b := write(t, r, original)
	if !bytes.Contains(b, []byte(`Final-Recipient: utf-8; j\x{F6}ran@b\x{FC}cher.example`)) {
		t.Errorf("report:\n%s", b)
	}
	p, err := ParseReport(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Recipients[0]; got.FinalRecipient != "jöran@bücher.example" || got.OriginalRecipient != "utf-8;Jöran@bücher.example" {
		t.Errorf("recipient %+v", got)
	}
}

func TestWriteRefusesNoRecipientAndTheNullSender(t *testing.T) {
	r := failureReport()
	r.To = ""
	if err := Write(&bytes.Buffer{}, r, strings.NewReader(original)); err == nil {
		t.Error("a report to the null sender was written")
	}
	r = failureReport()
	r.Recipients = nil
	if err := Write(&bytes.Buffer{}, r, strings.NewReader(original)); err == nil {
		t.Error("a report without recipients was written")
	}
}

func TestMissingOriginal(t *testing.T) {
	p, err := ParseReport(bytes.NewReader(write(t, failureReport(), "")))
	if err != nil {
		t.Fatal(err)
	}
	if p.OriginalType != "" || len(p.Recipients) != 2 {
		t.Errorf("parsed %+v", p)
	}
}

func TestParseRejectsOtherMessages(t *testing.T) {
	for _, m := range []string{
		"Subject: hi\r\n\r\nbody\r\n",
		"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n",
		"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n",
	} {
		if _, err := ParseReport(strings.NewReader(m)); err == nil {
			t.Errorf("ParseReport(%q) succeeded", m)
		}
	}
}

// ParseReport reads untrusted bounces: it must not panic or hang on any input.
func FuzzParseReport(f *testing.F) {
	var buf bytes.Buffer
	_ = Write(&buf, failureReport(), strings.NewReader(original))
	f.Add(buf.Bytes())
	f.Add([]byte("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a\\x{41}@b\r\nAction: failed\r\nStatus: 5.0.0\r\n--b--\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseReport(bytes.NewReader(b))
		if err == nil && p == nil {
			t.Fatal("nil report without error")
		}
	})
}
