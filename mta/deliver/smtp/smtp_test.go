package smtp

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/foxcpp/go-mockdns"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/srs"
)

func mx(host string, pref uint16) net.MX { return net.MX{Host: host + ".", Pref: pref} }

func smtpErr(code int, e1, e2, e3 int, msg string) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: code, EnhancedCode: gosmtp.EnhancedCode{e1, e2, e3}, Message: msg}
}

func TestPerRecipientRepliesAreRecorded(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	srv := newServer(t, "mx1.example.test", lns[0], script{rcpt: map[string]*gosmtp.SMTPError{
		"temp@example.test": smtpErr(451, 4, 2, 0, "Mailbox busy, try later"),
		"gone@example.test": smtpErr(550, 5, 1, 1, "<gone@example.test>: Recipient address rejected: User unknown"),
	}}, nil)
	res := zones(map[string]mockdns.Zone{
		"example.test":     {MX: []net.MX{mx("mx1.example.test", 10)}},
		"mx1.example.test": {A: []string{"127.0.0.1"}},
	})
	a := newAgent(t, port, res, nil)
	msg := newMessage(t, testBody)
	r := deliverOK(t, a, "", msg, rcptsOf("bob@example.test", "temp@example.test", "gone@example.test", "carol@example.test"))

	relay := "mx1.example.test[127.0.0.1]:" + itoa(port)
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if r[0].Relay != relay || r[0].RemoteMTA != "mx1.example.test" || !strings.Contains(r[0].Reply.Text, "queued as Q1") {
		t.Fatalf("delivered result %+v", r[0])
	}
	wantStatus(t, r[1], deliver.Deferred, 451, "4.2.0")
	if r[1].Reply.Text != "Mailbox busy, try later" || r[1].Relay != relay {
		t.Fatalf("deferred result %+v", r[1])
	}
	wantStatus(t, r[2], deliver.Bounced, 550, "5.1.1")
	if !strings.Contains(r[2].Reply.Text, "User unknown") {
		t.Fatalf("bounced result %+v", r[2])
	}
	wantStatus(t, r[3], deliver.Delivered, 250, "2.0.0")

	msgs := srv.messages()
	if len(msgs) != 1 {
		t.Fatalf("server got %d messages", len(msgs))
	}
	m := msgs[0]
	if m.from != "alice@origin.test" || strings.Join(m.rcpts, " ") != "bob@example.test carol@example.test" {
		t.Fatalf("envelope %q %v", m.from, m.rcpts)
	}
	if string(m.body) != testBody {
		t.Fatalf("body:\n%q\nwant\n%q", m.body, testBody)
	}
	if m.helo != "client.test" || m.mailOpts.Size != int64(len(testBody)) {
		t.Fatalf("EHLO %q, SIZE %d", m.helo, m.mailOpts.Size)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func newSRS(t *testing.T) *srs.SRS {
	t.Helper()
	rw, err := srs.New(srs.Options{Secrets: []string{"test secret"}})
	if err != nil {
		t.Fatal(err)
	}
	return rw
}

func TestMXPreferenceOrder(t *testing.T) {
	port, lns := listenSamePort(t, 2)
	low := newServer(t, "mx-low.example.test", lns[0], script{}, nil)
	high := newServer(t, "mx-high.example.test", lns[1], script{}, nil)
	res := zones(map[string]mockdns.Zone{
		// Listed worst first: the agent sorts.
		"example.test":         {MX: []net.MX{mx("mx-low.example.test", 20), mx("mx-high.example.test", 5)}},
		"mx-low.example.test":  {A: []string{"127.0.0.1"}},
		"mx-high.example.test": {A: []string{"127.0.0.2"}},
	})
	a := newAgent(t, port, res, nil)
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if !strings.HasPrefix(r[0].Relay, "mx-high.example.test[127.0.0.2]") {
		t.Fatalf("relay %s", r[0].Relay)
	}
	if len(high.messages()) != 1 || low.accepts.Load() != 0 {
		t.Fatalf("preferred MX got %d messages, the other %d connections", len(high.messages()), low.accepts.Load())
	}
}

func TestEqualPreferenceIsShuffled(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200 && len(seen) < 3; i++ {
		mxs := []*net.MX{{Host: "a.", Pref: 10}, {Host: "b.", Pref: 10}, {Host: "c.", Pref: 10}, {Host: "z.", Pref: 1}}
		sortMX(mxs)
		if mxs[0].Host != "z." {
			t.Fatalf("preference 1 not first: %v", mxs[0].Host)
		}
		seen[mxs[1].Host] = true
	}
	if len(seen) != 3 {
		t.Fatalf("equal preferences not shuffled: only %v came second in 200 sorts", seen)
	}
}

func TestRefusedConnectionMovesToNextMX(t *testing.T) {
	port, lns := listenSamePort(t, 2)
	lns[0].Close() // 127.0.0.1: nothing listens, the connection is refused
	second := newServer(t, "mx2.example.test", lns[1], script{}, nil)
	res := zones(map[string]mockdns.Zone{
		"example.test":     {MX: []net.MX{mx("mx1.example.test", 10), mx("mx2.example.test", 20)}},
		"mx1.example.test": {A: []string{"127.0.0.1"}},
		"mx2.example.test": {A: []string{"127.0.0.2"}},
	})
	a := newAgent(t, port, res, nil)
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if len(second.messages()) != 1 {
		t.Fatal("second MX did not get the message")
	}

	// With every host refusing, the result is the last connect failure.
	second.srv.Close()
	r = deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.4.1")
	if r[0].Relay != "none" || !strings.Contains(r[0].Reply.Text, "connect to mx2.example.test[127.0.0.2]:"+itoa(port)) {
		t.Fatalf("result %+v", r[0])
	}
}

func TestTemporaryRecipientIsOfferedToNextMX(t *testing.T) {
	port, lns := listenSamePort(t, 2)
	first := newServer(t, "mx1.example.test", lns[0], script{rcpt: map[string]*gosmtp.SMTPError{
		"busy@example.test": smtpErr(452, 4, 2, 2, "Mailbox full for now"),
		"gone@example.test": smtpErr(550, 5, 1, 1, "User unknown"),
	}}, nil)
	second := newServer(t, "mx2.example.test", lns[1], script{}, nil)
	res := zones(map[string]mockdns.Zone{
		"example.test":     {MX: []net.MX{mx("mx1.example.test", 10), mx("mx2.example.test", 20)}},
		"mx1.example.test": {A: []string{"127.0.0.1"}},
		"mx2.example.test": {A: []string{"127.0.0.2"}},
	})
	a := newAgent(t, port, res, nil)
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test", "busy@example.test", "gone@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	wantStatus(t, r[1], deliver.Delivered, 250, "2.0.0")
	wantStatus(t, r[2], deliver.Bounced, 550, "5.1.1")
	if !strings.HasPrefix(r[0].Relay, "mx1.") || !strings.HasPrefix(r[1].Relay, "mx2.") {
		t.Fatalf("relays %s and %s", r[0].Relay, r[1].Relay)
	}
	if m := second.messages(); len(m) != 1 || strings.Join(m[0].rcpts, ",") != "busy@example.test" {
		t.Fatalf("second MX got %+v", m)
	}
	if len(first.messages()) != 1 {
		t.Fatal("first MX did not get bob's copy")
	}
}

func TestMailFromReplies(t *testing.T) {
	port, lns := listenSamePort(t, 2)
	first := newServer(t, "mx1.example.test", lns[0], script{mail: smtpErr(451, 4, 7, 0, "Try again later")}, nil)
	second := newServer(t, "mx2.example.test", lns[1], script{}, nil)
	res := zones(map[string]mockdns.Zone{
		"example.test":     {MX: []net.MX{mx("mx1.example.test", 10), mx("mx2.example.test", 20)}},
		"mx1.example.test": {A: []string{"127.0.0.1"}},
		"mx2.example.test": {A: []string{"127.0.0.2"}},
	})
	// No reuse: the second delivery must go through MX selection again.
	a := newAgent(t, port, res, func(o *Options) { o.CacheMax = -1 })
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if len(second.messages()) != 1 {
		t.Fatal("a 4yz to MAIL did not move on to the next MX")
	}

	// A 5yz is final: the next MX is not tried.
	first.setScript(script{mail: smtpErr(553, 5, 7, 1, "Sender address rejected")})
	second.setScript(script{})
	before := second.accepts.Load()
	r = deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test", "carol@example.test"))
	wantStatus(t, r[0], deliver.Bounced, 553, "5.7.1")
	wantStatus(t, r[1], deliver.Bounced, 553, "5.7.1")
	if second.accepts.Load() != before {
		t.Fatal("a 5yz to MAIL moved on to the next MX")
	}
}

func TestDataReplyAppliesToEveryAcceptedRecipient(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	srv := newServer(t, "mx1.example.test", lns[0], script{
		data: smtpErr(554, 5, 6, 0, "Message content rejected"),
		rcpt: map[string]*gosmtp.SMTPError{"gone@example.test": smtpErr(550, 5, 1, 1, "User unknown")},
	}, nil)
	res := zones(map[string]mockdns.Zone{"example.test": {A: []string{"127.0.0.1"}}})
	a := newAgent(t, port, res, nil)
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test", "gone@example.test", "carol@example.test"))
	wantStatus(t, r[0], deliver.Bounced, 554, "5.6.0")
	wantStatus(t, r[1], deliver.Bounced, 550, "5.1.1")
	wantStatus(t, r[2], deliver.Bounced, 554, "5.6.0")

	srv.setScript(script{data: smtpErr(451, 4, 3, 0, "Local error in processing")})
	r = deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test", "carol@example.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.3.0")
	wantStatus(t, r[1], deliver.Deferred, 451, "4.3.0")
	if len(srv.messages()) != 0 {
		t.Fatal("the server recorded a rejected message")
	}
}

func TestNoMXRecordsFallsBackToAddress(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	srv := newServer(t, "example.test", lns[0], script{}, nil)
	res := zones(map[string]mockdns.Zone{"example.test": {A: []string{"127.0.0.1"}}})
	a := newAgent(t, port, res, nil)
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@Example.TEST"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if r[0].Relay != "example.test[127.0.0.1]:"+itoa(port) || len(srv.messages()) != 1 {
		t.Fatalf("relay %s, %d messages", r[0].Relay, len(srv.messages()))
	}
}

func TestDNSFailures(t *testing.T) {
	servfail := &net.DNSError{Err: "server misbehaving", Name: "broken.test", IsTemporary: true}
	res := zones(map[string]mockdns.Zone{
		"broken.test":       {Err: servfail},
		"nullmx.test":       {MX: []net.MX{{Host: ".", Pref: 0}}},
		"lame.test":         {MX: []net.MX{mx("nowhere.lame.test", 10)}},
		"halflame.test":     {MX: []net.MX{mx("nowhere.lame.test", 10), mx("broken.test", 20)}},
		"relay.example.net": {A: []string{"127.0.0.1"}},
	})
	a := newAgent(t, 1, res, nil)
	for _, tc := range []struct {
		name, nexthop, rcpt string
		status              deliver.Status
		code                int
		enhanced, text      string
	}{
		{"NXDOMAIN bounces", "", "bob@nxdomain.test", deliver.Bounced, 550, "5.1.2", "Host or domain name not found. Name service error for name=nxdomain.test type=A: Host not found"},
		{"SERVFAIL defers", "", "bob@broken.test", deliver.Deferred, 451, "4.4.3", "name=broken.test type=MX: Host not found, try again"},
		{"null MX bounces", "", "bob@nullmx.test", deliver.Bounced, 556, "5.1.10", "nullmx.test does not accept mail"},
		{"MX host missing bounces", "", "bob@lame.test", deliver.Bounced, 550, "5.4.4", "name=nowhere.lame.test type=A"},
		{"MX host missing and another failing defers", "", "bob@halflame.test", deliver.Deferred, 451, "4.4.3", "name=broken.test"},
		{"a configured next hop that does not exist defers", "[relay.nowhere.test]:587", "bob@example.test", deliver.Deferred, 451, "4.4.4", "name=relay.nowhere.test"},
		{"a configured MX next hop that does not exist defers", "nowhere.test", "bob@example.test", deliver.Deferred, 451, "4.4.4", "name=nowhere.test"},
		{"a malformed next hop defers", "[relay.example.net", "bob@example.test", deliver.Deferred, 451, "4.3.5", "missing ]"},
		{"a bad port defers", "[relay.example.net]:99999", "bob@example.test", deliver.Deferred, 451, "4.3.5", "bad port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := deliverOK(t, a, tc.nexthop, newMessage(t, testBody), rcptsOf(tc.rcpt, strings.Replace(tc.rcpt, "bob", "carol", 1)))
			for _, x := range r {
				wantStatus(t, x, tc.status, tc.code, tc.enhanced)
				if !strings.Contains(x.Reply.Text, tc.text) || x.Relay != "none" {
					t.Fatalf("reply %q relay %q, want text with %q", x.Reply.Text, x.Relay, tc.text)
				}
			}
		})
	}
}

func TestMXThatIsThisNodeLoopsBack(t *testing.T) {
	port, lns := listenSamePort(t, 2)
	other := newServer(t, "mx-backup.example.test", lns[1], script{}, nil)
	res := zones(map[string]mockdns.Zone{
		"loop.test":              {MX: []net.MX{mx("mx.loop.test", 10)}},
		"mx.loop.test":           {A: []string{"127.0.0.1"}},
		"named.test":             {MX: []net.MX{mx("client.test", 10)}},
		"client.test":            {A: []string{"127.0.0.7"}},
		"secondary.test":         {MX: []net.MX{mx("mx-backup.example.test", 5), mx("mx.loop.test", 10), mx("mx-worse.test", 20)}},
		"mx-backup.example.test": {A: []string{"127.0.0.2"}},
		"mx-worse.test":          {A: []string{"127.0.0.3"}},
		"primary.test":           {MX: []net.MX{mx("mx.loop.test", 5), mx("mx-backup.example.test", 10)}},
	})
	a := newAgent(t, port, res, func(o *Options) { o.LocalAddrs = []netip.Addr{netip.MustParseAddr("127.0.0.1")} })
	for _, tc := range []struct{ nexthop, rcpt, what string }{
		{"", "bob@loop.test", "loop.test"},
		{"", "bob@named.test", "named.test"}, // by host name
		{"", "bob@primary.test", "primary.test"},
		{"[127.0.0.1]:25", "bob@example.test", "[127.0.0.1]:25"},
		{"", "bob@[127.0.0.1]", "[127.0.0.1]"},
	} {
		r := deliverOK(t, a, tc.nexthop, newMessage(t, testBody), rcptsOf(tc.rcpt))
		wantStatus(t, r[0], deliver.Bounced, 554, "5.4.6")
		if r[0].Reply.Text != "mail for "+tc.what+" loops back to myself" {
			t.Fatalf("%s: %q", tc.rcpt, r[0].Reply.Text)
		}
	}
	// An explicit next hop on this node but another port than the one it
	// receives on (a content filter, another MTA) is no loop.
	r0 := deliverOK(t, a, "[127.0.0.1]:"+strconv.Itoa(port), newMessage(t, testBody), rcptsOf("bob@example.test"))
	if r0[0].Reply.Enhanced.String() == "5.4.6" {
		t.Fatalf("[127.0.0.1]:%d treated as a loop: %v", port, r0[0].Reply)
	}
	// This node is a secondary MX: only the better MX is tried, never the
	// worse one (Postfix smtp_truncate_self).
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@secondary.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if len(other.messages()) != 1 {
		t.Fatal("the better MX did not get the message")
	}
	other.srv.Close()
	r = deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@secondary.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.4.1")
	if !strings.Contains(r[0].Reply.Text, "mx-backup.example.test") {
		t.Fatalf("tried a worse MX than this node: %q", r[0].Reply.Text)
	}
}

func TestConnectionDroppedBeforeDataDefers(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	srv := newServer(t, "mx1.example.test", lns[0], script{dropAtRcpt: "carol@example.test"}, nil)
	res := zones(map[string]mockdns.Zone{
		"example.test":     {MX: []net.MX{mx("mx1.example.test", 10)}},
		"mx1.example.test": {A: []string{"127.0.0.1"}},
	})
	a := newAgent(t, port, res, nil)
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test", "carol@example.test", "dave@example.test"))
	for _, x := range r {
		wantStatus(t, x, deliver.Deferred, 451, "4.4.2")
		if !strings.Contains(x.Reply.Text, "lost connection with mx1.example.test[127.0.0.1]:"+itoa(port)+" while sending RCPT TO") {
			t.Fatalf("reply %q", x.Reply.Text)
		}
	}
	if len(srv.messages()) != 0 {
		t.Fatal("a message was recorded")
	}
}

func TestConnectionDroppedBeforeDataGoesToNextMX(t *testing.T) {
	port, lns := listenSamePort(t, 2)
	newServer(t, "mx1.example.test", lns[0], script{dropAtRcpt: "carol@example.test"}, nil)
	second := newServer(t, "mx2.example.test", lns[1], script{}, nil)
	res := zones(map[string]mockdns.Zone{
		"example.test":     {MX: []net.MX{mx("mx1.example.test", 10), mx("mx2.example.test", 20)}},
		"mx1.example.test": {A: []string{"127.0.0.1"}},
		"mx2.example.test": {A: []string{"127.0.0.2"}},
	})
	a := newAgent(t, port, res, nil)
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test", "carol@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	wantStatus(t, r[1], deliver.Delivered, 250, "2.0.0")
	if m := second.messages(); len(m) != 1 || len(m[0].rcpts) != 2 {
		t.Fatalf("second MX got %+v", m)
	}
}

func TestConnectionDroppedAfterDotIsDeferredNotRetriedElsewhere(t *testing.T) {
	port, lns := listenSamePort(t, 2)
	newServer(t, "mx1.example.test", lns[0], script{dropAtDot: true}, nil)
	second := newServer(t, "mx2.example.test", lns[1], script{}, nil)
	res := zones(map[string]mockdns.Zone{
		"example.test":     {MX: []net.MX{mx("mx1.example.test", 10), mx("mx2.example.test", 20)}},
		"mx1.example.test": {A: []string{"127.0.0.1"}},
		"mx2.example.test": {A: []string{"127.0.0.2"}},
	})
	a := newAgent(t, port, res, nil)
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test", "carol@example.test"))
	for _, x := range r {
		wantStatus(t, x, deliver.Deferred, 451, "4.4.2")
		if !strings.Contains(x.Reply.Text, "may be sent more than once") {
			t.Fatalf("reply %q", x.Reply.Text)
		}
	}
	if second.accepts.Load() != 0 {
		t.Fatal("a message of unknown outcome was offered to another MX in the same attempt")
	}
}

func TestMessageLargerThanSIZEBounces(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	srv := newServer(t, "mx1.example.test", lns[0], script{}, func(s *gosmtp.Server) { s.MaxMessageBytes = 100 })
	res := zones(map[string]mockdns.Zone{"example.test": {A: []string{"127.0.0.1"}}})
	a := newAgent(t, port, res, nil)
	big := testBody + strings.Repeat("x", 200) + "\r\n"
	r := deliverOK(t, a, "", newMessage(t, big), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Bounced, 552, "5.3.4")
	if !strings.Contains(r[0].Reply.Text, "exceeds size limit 100 of server example.test[127.0.0.1]") {
		t.Fatalf("reply %q", r[0].Reply.Text)
	}
	if srv.accepts.Load() != 1 || len(srv.messages()) != 0 {
		t.Fatal("unexpected traffic")
	}
}

func TestSMTPUTF8(t *testing.T) {
	port, lns := listenSamePort(t, 2)
	plain := newServer(t, "plain.test", lns[0], script{}, nil)
	utf8 := newServer(t, "utf8.test", lns[1], script{}, func(s *gosmtp.Server) { s.EnableSMTPUTF8 = true })
	res := zones(map[string]mockdns.Zone{
		"plain.test": {A: []string{"127.0.0.1"}},
		"utf8.test":  {A: []string{"127.0.0.2"}},
	})
	a := newAgent(t, port, res, nil)

	// A UTF-8 envelope cannot go to a server without SMTPUTF8 (RFC 6531).
	msg := newMessage(t, testBody)
	msg.SMTPUTF8 = true
	r := deliverOK(t, a, "", msg, rcptsOf("jörg@plain.test"))
	wantStatus(t, r[0], deliver.Bounced, 553, "5.6.7")
	if !strings.Contains(r[0].Reply.Text, "SMTPUTF8 is required, but was not offered by host plain.test[127.0.0.1]") {
		t.Fatalf("reply %q", r[0].Reply.Text)
	}
	msg.Sender = "jörg@origin.test"
	r = deliverOK(t, a, "", msg, rcptsOf("bob@plain.test"))
	wantStatus(t, r[0], deliver.Bounced, 553, "5.6.7")
	// Nor a UTF-8 header.
	msg = newMessage(t, "Subject: Grüße\r\nFrom: a@origin.test\r\n\r\nbody\r\n")
	msg.SMTPUTF8 = true
	r = deliverOK(t, a, "", msg, rcptsOf("bob@plain.test"))
	wantStatus(t, r[0], deliver.Bounced, 553, "5.6.7")

	// Asked for but not needed: sent without SMTPUTF8 (8-bit body text is
	// 8BITMIME's business).
	msg = newMessage(t, "Subject: hi\r\nFrom: a@origin.test\r\n\r\nGrüße\r\n")
	msg.SMTPUTF8 = true
	r = deliverOK(t, a, "", msg, rcptsOf("bob@plain.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if m := plain.messages(); len(m) != 1 || m[0].mailOpts.UTF8 {
		t.Fatalf("plain server got %+v", m)
	}

	// To a server that offers it, with the parameter.
	msg = newMessage(t, testBody)
	msg.SMTPUTF8 = true
	r = deliverOK(t, a, "", msg, rcptsOf("jörg@utf8.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if m := utf8.messages(); len(m) != 1 || !m[0].mailOpts.UTF8 || m[0].rcpts[0] != "jörg@utf8.test" {
		t.Fatalf("UTF-8 server got %+v", m)
	}
}

func TestDSNParameters(t *testing.T) {
	port, lns := listenSamePort(t, 2)
	withDSN := newServer(t, "dsn.test", lns[0], script{}, func(s *gosmtp.Server) { s.EnableDSN = true })
	without := newServer(t, "nodsn.test", lns[1], script{}, nil)
	res := zones(map[string]mockdns.Zone{
		"dsn.test":   {A: []string{"127.0.0.1"}},
		"nodsn.test": {A: []string{"127.0.0.2"}},
	})
	a := newAgent(t, port, res, nil)
	msg := newMessage(t, testBody)
	msg.DSNRet, msg.DSNEnvID = "HDRS", "env+id=42"
	rcpts := []deliver.Recipient{
		{Address: "bob@dsn.test", Orig: "robert@alias.test", DSNNotify: "SUCCESS,FAILURE", DSNORcpt: "rfc822;Robert@Alias.test"},
		{Address: "carol@dsn.test", Orig: "carol@alias.test", DSNNotify: "NEVER"},
		{Address: "dave@dsn.test", DSNNotify: "NEVER,SUCCESS"}, // invalid: left out
	}
	r := deliverOK(t, a, "", msg, rcpts)
	for _, x := range r {
		wantStatus(t, x, deliver.Delivered, 250, "2.0.0")
		if x.Relayed {
			t.Fatal("relayed set for a server that speaks DSN")
		}
	}
	m := withDSN.messages()
	if len(m) != 1 {
		t.Fatalf("%d messages", len(m))
	}
	if m[0].mailOpts.Return != gosmtp.DSNReturnHeaders || m[0].mailOpts.EnvelopeID != "env+id=42" {
		t.Fatalf("MAIL parameters %+v", m[0].mailOpts)
	}
	o := m[0].rcptOpts
	if len(o) != 3 || len(o[0].Notify) != 2 || o[0].Notify[0] != gosmtp.DSNNotifySuccess ||
		o[0].OriginalRecipientType != gosmtp.DSNAddressTypeRFC822 || o[0].OriginalRecipient != "Robert@Alias.test" {
		t.Fatalf("first RCPT parameters %+v", o)
	}
	if len(o[1].Notify) != 1 || o[1].Notify[0] != gosmtp.DSNNotifyNever || o[1].OriginalRecipient != "carol@alias.test" {
		t.Fatalf("second RCPT parameters %+v", o[1])
	}
	if o[2].Notify != nil || o[2].OriginalRecipient != "" {
		t.Fatalf("third RCPT parameters %+v", o[2])
	}

	// Without DSN at the next hop, a requested success notice says
	// "relayed" (RFC 3461 5.2.2).
	rcpts = []deliver.Recipient{
		{Address: "bob@nodsn.test", DSNNotify: "SUCCESS"},
		{Address: "carol@nodsn.test", DSNNotify: "FAILURE,DELAY"},
		{Address: "dave@nodsn.test"},
	}
	r = deliverOK(t, a, "", msg, rcpts)
	if !r[0].Relayed || r[1].Relayed || r[2].Relayed {
		t.Fatalf("relayed flags %v %v %v", r[0].Relayed, r[1].Relayed, r[2].Relayed)
	}
	if m := without.messages(); len(m) != 1 || m[0].mailOpts.Return != "" || m[0].mailOpts.EnvelopeID != "" {
		t.Fatalf("server without DSN got %+v", m)
	}
}

func TestGreetingTimeoutDefers(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	// A server that accepts and never speaks.
	go func() {
		for {
			c, err := lns[0].Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	t.Cleanup(func() { lns[0].Close() })
	res := zones(map[string]mockdns.Zone{"example.test": {A: []string{"127.0.0.1"}}})
	a := newAgent(t, port, res, func(o *Options) { o.HeloTimeout = 200 * time.Millisecond })
	start := time.Now()
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.4.2")
	if !strings.Contains(r[0].Reply.Text, "timed out while receiving the initial server greeting") {
		t.Fatalf("reply %q", r[0].Reply.Text)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestContextDeadlineStopsADelivery(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	newServer(t, "mx1.example.test", lns[0], script{stallData: 5 * time.Second}, nil)
	res := zones(map[string]mockdns.Zone{"example.test": {A: []string{"127.0.0.1"}}})
	a := newAgent(t, port, res, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	// A body larger than the socket buffers, so that the stall blocks the
	// writes.
	r := a.Deliver(ctx, "", newMessage(t, testBody+strings.Repeat("0123456789abcdef\r\n", 1<<17)), rcptsOf("bob@example.test"))
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Deliver took %v under a 300ms context", d)
	}
	if r[0].Status != deliver.Deferred {
		t.Fatalf("result %v %q", r[0].Status, r[0].Reply.String())
	}
	if a.pool.idleCount() != 0 {
		t.Fatal("a connection of a cancelled delivery was kept")
	}
	// A context that is already done delivers nothing.
	r = a.Deliver(ctx, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.4.2")
}

func TestSenderRewrittenWithSRSWhenForwarded(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	srv := newServer(t, "mx1.example.test", lns[0], script{}, nil)
	res := zones(map[string]mockdns.Zone{"example.test": {A: []string{"127.0.0.1"}}})
	rw := newSRS(t)
	forwarded := true
	var gotRcpts int
	a := newAgent(t, port, res, func(o *Options) {
		o.SRS, o.SRSDomain = rw, "fwd.test"
		o.Forwarded = func(_ context.Context, msg *deliver.Message, rcpts []deliver.Recipient) (bool, error) {
			gotRcpts = len(rcpts)
			if msg.QueueID == "fail" {
				return false, errors.New("database down")
			}
			return forwarded, nil
		}
	})
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	from := srv.messages()[0].from
	if !strings.HasPrefix(from, "SRS0=") || !strings.HasSuffix(from, "@fwd.test") || gotRcpts != 1 {
		t.Fatalf("sender %q", from)
	}
	if back, err := rw.Reverse(from); err != nil || back != "alice@origin.test" {
		t.Fatalf("reversed %q to %q, %v", from, back, err)
	}

	forwarded = false
	deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	if from := srv.messages()[1].from; from != "alice@origin.test" {
		t.Fatalf("not forwarded, sender %q", from)
	}
	forwarded = true
	bounce := newMessage(t, testBody)
	bounce.Sender = ""
	deliverOK(t, a, "", bounce, rcptsOf("bob@example.test"))
	if from := srv.messages()[2].from; from != "" {
		t.Fatalf("null sender became %q", from)
	}
	failing := newMessage(t, testBody)
	failing.QueueID = "fail"
	r = deliverOK(t, a, "", failing, rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.3.0")
}

func TestSpoolReadErrorDefersWithoutSendingTheDot(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	srv := newServer(t, "mx1.example.test", lns[0], script{}, nil)
	res := zones(map[string]mockdns.Zone{"example.test": {A: []string{"127.0.0.1"}}})
	a := newAgent(t, port, res, nil)
	msg := newMessage(t, testBody)
	msg.Open = func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(strings.NewReader("Subject: half\r\n\r\nfirst half\r\n"), errReaderOf(errors.New("disk on fire")))), nil
	}
	r := deliverOK(t, a, "", msg, rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.3.0")
	msg.Open = func() (io.ReadCloser, error) { return nil, errors.New("no such file") }
	r = deliverOK(t, a, "", msg, rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.3.0")
	if len(srv.messages()) != 0 {
		t.Fatal("a truncated message was delivered")
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

func errReaderOf(err error) io.Reader { return failingReader{err} }

func TestDeliverGroupsRecipientsByDomain(t *testing.T) {
	port, lns := listenSamePort(t, 2)
	one := newServer(t, "one.test", lns[0], script{}, nil)
	two := newServer(t, "two.test", lns[1], script{}, nil)
	res := zones(map[string]mockdns.Zone{
		"one.test": {A: []string{"127.0.0.1"}},
		"two.test": {A: []string{"127.0.0.2"}},
	})
	a := newAgent(t, port, res, nil)
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("a@one.test", "b@two.test", "c@one.test"))
	for _, x := range r {
		wantStatus(t, x, deliver.Delivered, 250, "2.0.0")
	}
	if len(one.messages()) != 1 || len(one.messages()[0].rcpts) != 2 || len(two.messages()) != 1 {
		t.Fatal("recipients not grouped by domain")
	}
}

func TestParseDest(t *testing.T) {
	for _, tc := range []struct {
		nexthop, domain string
		want            dest
		bad             bool
	}{
		{"", "Example.COM", dest{key: "Example.COM", host: "example.com", port: 25, mx: true}, false},
		{"", "[192.0.2.1]", dest{key: "[192.0.2.1]", host: "[192.0.2.1]", ip: netip.MustParseAddr("192.0.2.1"), port: 25}, false},
		{"", "[IPv6:2001:db8::1]", dest{key: "[IPv6:2001:db8::1]", host: "[IPv6:2001:db8::1]", ip: netip.MustParseAddr("2001:db8::1"), port: 25}, false},
		{"[Relay.Example.NET]:587", "", dest{key: "[relay.example.net]:587", nexthop: "[Relay.Example.NET]:587", host: "relay.example.net", port: 587}, false},
		{"[relay.example.net]", "", dest{key: "[relay.example.net]", nexthop: "[relay.example.net]", host: "relay.example.net", port: 25}, false},
		{"relay.example.net:submission", "", dest{key: "relay.example.net:submission", nexthop: "relay.example.net:submission", host: "relay.example.net", port: 587, mx: true}, false},
		{"relay.example.net", "", dest{key: "relay.example.net", nexthop: "relay.example.net", host: "relay.example.net", port: 25, mx: true}, false},
		{"[192.0.2.7]:2525", "", dest{key: "[192.0.2.7]:2525", nexthop: "[192.0.2.7]:2525", host: "192.0.2.7", ip: netip.MustParseAddr("192.0.2.7"), port: 2525}, false},
		{"[ipv6:2001:db8::7]:25", "", dest{key: "[ipv6:2001:db8::7]:25", nexthop: "[ipv6:2001:db8::7]:25", host: "ipv6:2001:db8::7", ip: netip.MustParseAddr("2001:db8::7"), port: 25}, false},
		{"[relay.example.net", "", dest{}, true},
		{"[relay.example.net]x", "", dest{}, true},
		{"relay.example.net:0", "", dest{}, true},
		{":25", "", dest{}, true},
		{"bad host:25", "", dest{}, true},
		{"", "[not an ip]", dest{}, true},
	} {
		got, err := parseDest(tc.nexthop, tc.domain, 25)
		if tc.bad {
			if err == nil {
				t.Errorf("parseDest(%q, %q) = %+v, want an error", tc.nexthop, tc.domain, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseDest(%q, %q) = %+v, %v; want %+v", tc.nexthop, tc.domain, got, err, tc.want)
		}
	}
}

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
		text string
		bad  bool
	}{
		{"220 Ready to start TLS\r\n", 220, "Ready to start TLS", false},
		{"454-4.7.0 TLS not\r\n454 4.7.0 available\r\n", 454, "4.7.0 TLS not\n4.7.0 available", false},
		{"220\r\n", 220, "", false},
		{"22\r\n", 0, "", true},
		{"abc ok\r\n", 0, "", true},
		{"220 half", 0, "", true},
		{"220x\r\n", 0, "", true},
		{strings.Repeat("220-", 2000) + "\r\n", 0, "", true},
	} {
		code, text, err := readReply(strings.NewReader(tc.in))
		if tc.bad != (err != nil) || code != tc.code || text != tc.text {
			t.Errorf("readReply(%q) = %d %q %v", tc.in, code, text, err)
		}
	}
}

func TestNewChecksOptions(t *testing.T) {
	res := zones(nil)
	for _, o := range []Options{
		{Resolver: res},
		{Hostname: "a b", Resolver: res},
		{Hostname: "client.test"},
		{Hostname: "client.test", Resolver: res, TLSPolicy: "sometimes"},
		{Hostname: "client.test", Resolver: res, TLSPolicies: map[string]TLSPolicy{"x.test": "dane"}},
		{Hostname: "client.test", Resolver: res, SRSDomain: "fwd.test"},
		{Hostname: "client.test", Resolver: res, Port: 70000},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
