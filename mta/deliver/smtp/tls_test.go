package smtp

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/foxcpp/go-mockdns"

	"github.com/facteur/facteur/mta/deliver"
)

// tlsSetup starts servers on 127.0.0.1 (mx.tls.test, with STARTTLS and a
// certificate for its name), 127.0.0.2 (mx.plain.test, without STARTTLS) and
// 127.0.0.3 (mx.wrongname.test, whose certificate names another host).
func tlsSetup(t *testing.T) (port int, ca *testCA, good, plain, wrong *testServer, res *mockdns.Resolver) {
	t.Helper()
	port, lns := listenSamePort(t, 3)
	ca = newCA(t)
	goodCert := ca.issue(t, "mx.tls.test")
	wrongCert := ca.issue(t, "someone-else.test")
	good = newServer(t, "mx.tls.test", lns[0], script{}, func(s *gosmtp.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{goodCert}}
	})
	plain = newServer(t, "mx.plain.test", lns[1], script{}, nil)
	wrong = newServer(t, "mx.wrongname.test", lns[2], script{}, func(s *gosmtp.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{wrongCert}}
	})
	res = zones(map[string]mockdns.Zone{
		"tls.test":          {MX: []net.MX{mx("mx.tls.test", 10)}},
		"mx.tls.test":       {A: []string{"127.0.0.1"}},
		"plain.test":        {MX: []net.MX{mx("mx.plain.test", 10)}},
		"mx.plain.test":     {A: []string{"127.0.0.2"}},
		"wrongname.test":    {MX: []net.MX{mx("mx.wrongname.test", 10)}},
		"mx.wrongname.test": {A: []string{"127.0.0.3"}},
	})
	return port, ca, good, plain, wrong, res
}

func TestTLSPolicies(t *testing.T) {
	port, ca, good, plain, wrong, res := tlsSetup(t)
	for _, tc := range []struct {
		policy  TLSPolicy
		rcpt    string
		server  *testServer
		status  deliver.Status
		tls     bool
		enh     string
		inReply string
	}{
		{TLSNone, "bob@tls.test", good, deliver.Delivered, false, "2.0.0", ""},
		{TLSMay, "bob@tls.test", good, deliver.Delivered, true, "2.0.0", ""},
		{TLSMay, "bob@plain.test", plain, deliver.Delivered, false, "2.0.0", ""},
		{TLSMay, "bob@wrongname.test", wrong, deliver.Delivered, true, "2.0.0", ""},
		{TLSEncrypt, "bob@wrongname.test", wrong, deliver.Delivered, true, "2.0.0", ""},
		{TLSEncrypt, "bob@plain.test", plain, deliver.Deferred, false, "4.7.4", "TLS is required, but was not offered by host mx.plain.test[127.0.0.2]"},
		{TLSVerify, "bob@tls.test", good, deliver.Delivered, true, "2.0.0", ""},
		{TLSVerify, "bob@wrongname.test", wrong, deliver.Deferred, false, "4.7.5", "Server certificate not verified"},
		{TLSVerify, "bob@plain.test", plain, deliver.Deferred, false, "4.7.4", "was not offered"},
	} {
		t.Run(string(tc.policy)+" "+tc.rcpt, func(t *testing.T) {
			a := newAgent(t, port, res, func(o *Options) {
				o.TLSPolicy = tc.policy
				o.TLSConfig = &tls.Config{RootCAs: ca.pool}
				o.CacheMax = -1
			})
			before := len(tc.server.messages())
			r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf(tc.rcpt))
			if r[0].Status != tc.status || r[0].Reply.Enhanced.String() != tc.enh || !strings.Contains(r[0].Reply.Text, tc.inReply) {
				t.Fatalf("result %v %q", r[0].Status, r[0].Reply.String())
			}
			msgs := tc.server.messages()
			if tc.status != deliver.Delivered {
				if len(msgs) != before {
					t.Fatal("the server got the message")
				}
				return
			}
			if len(msgs) != before+1 {
				t.Fatalf("server has %d messages, had %d", len(msgs), before)
			}
			m := msgs[len(msgs)-1]
			if m.tls != tc.tls || m.helo != "client.test" {
				t.Fatalf("TLS %v (want %v), EHLO %q", m.tls, tc.tls, m.helo)
			}
		})
	}
}

func TestTLSVerifyWithUntrustedRootDefers(t *testing.T) {
	port, _, good, _, _, res := tlsSetup(t)
	a := newAgent(t, port, res, func(o *Options) { o.TLSPolicy = TLSVerify }) // system roots: the test CA is unknown
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@tls.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.7.5")
	if len(good.messages()) != 0 {
		t.Fatal("delivered to an unverified server")
	}
}

func TestTLSPolicyPerDestination(t *testing.T) {
	port, ca, _, plain, _, res := tlsSetup(t)
	a := newAgent(t, port, res, func(o *Options) {
		o.TLSPolicy = TLSMay
		o.TLSPolicies = map[string]TLSPolicy{"plain.test": TLSEncrypt}
		o.TLSConfig = &tls.Config{RootCAs: ca.pool}
	})
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@plain.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.7.4")
	r = deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@tls.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if len(plain.messages()) != 0 {
		t.Fatal("plaintext delivery despite encrypt")
	}
}

// A server that offers STARTTLS but cannot complete a handshake: with may,
// Postfix connects again without TLS; with encrypt, the delivery defers.
func TestTLSHandshakeFailureFallsBackToPlaintextUnderMay(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	broken := newServer(t, "mx.broken.test", lns[0], script{}, func(s *gosmtp.Server) {
		s.TLSConfig = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return nil, errors.New("no certificate today")
		}}
	})
	res := zones(map[string]mockdns.Zone{"broken.test": {A: []string{"127.0.0.1"}}})

	a := newAgent(t, port, res, func(o *Options) { o.TLSPolicy = TLSMay })
	r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@broken.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	m := broken.messages()
	if len(m) != 1 || m[0].tls || broken.accepts.Load() != 2 {
		t.Fatalf("messages %+v after %d connections", m, broken.accepts.Load())
	}

	e := newAgent(t, port, res, func(o *Options) { o.TLSPolicy = TLSEncrypt })
	r = deliverOK(t, e, "", newMessage(t, testBody), rcptsOf("bob@broken.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.7.5")
	if !strings.Contains(r[0].Reply.Text, "Cannot start TLS: handshake failure") || broken.accepts.Load() != 3 {
		t.Fatalf("reply %q after %d connections", r[0].Reply.Text, broken.accepts.Load())
	}
}
