package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/foxcpp/go-mockdns"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// The credentials come from a relay_credential row in a real database,
// through the store method the queue wires in.
func TestAuthWithCredentialsFromTheDatabase(t *testing.T) {
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	port, lns := listenSamePort(t, 3)
	ca := newCA(t)
	cert := ca.issue(t, "relay.test", "login.test")
	tlsOn := func(s *gosmtp.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.AllowInsecureAuth = false
	}
	plainSrv := newServer(t, "relay.test", lns[0], script{authUser: "acct@provider.test", authPass: "s3cret pass"}, tlsOn)
	loginSrv := newServer(t, "login.test", lns[1], script{authUser: "acct@provider.test", authPass: "s3cret pass", authMechs: []string{sasl.Login}}, tlsOn)
	noTLS := newServer(t, "notls.test", lns[2], script{authUser: "acct@provider.test", authPass: "s3cret pass"}, nil)
	res := zones(map[string]mockdns.Zone{
		"relay.test": {A: []string{"127.0.0.1"}},
		"login.test": {A: []string{"127.0.0.2"}},
		"notls.test": {A: []string{"127.0.0.3"}},
	})
	hop := func(h string) string { return "[" + h + "]:" + itoa(port) }
	for _, h := range []string{"Relay.Test", "login.test", "notls.test"} {
		if _, err := st.CreateRelayCredential(ctx, store.RelayCredential{
			Nexthop: hop(h), Username: "acct@provider.test", Password: "s3cret pass", Active: true}); err != nil {
			t.Fatal(err)
		}
	}
	a := newAgent(t, port, res, func(o *Options) {
		o.Credentials = st
		o.TLSConfig = &tls.Config{RootCAs: ca.pool}
		o.CacheMax = -1
	})

	// PLAIN over TLS; the next hop is matched whatever its case.
	r := deliverOK(t, a, hop("RELAY.test"), newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if m := plainSrv.messages(); len(m) != 1 || m[0].authUser != "acct@provider.test" || !m[0].tls {
		t.Fatalf("relay got %+v", m)
	}
	// LOGIN when PLAIN is not offered.
	r = deliverOK(t, a, hop("login.test"), newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	if m := loginSrv.messages(); len(m) != 1 || m[0].authUser != "acct@provider.test" {
		t.Fatalf("LOGIN relay got %+v", m)
	}
	// Never a password in plaintext.
	r = deliverOK(t, a, hop("notls.test"), newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Deferred, 454, "4.7.0")
	if !strings.Contains(r[0].Reply.Text, "TLS is not established") || len(noTLS.messages()) != 0 {
		t.Fatalf("reply %q", r[0].Reply.Text)
	}
	// ... unless allowed.
	p := newAgent(t, port, res, func(o *Options) { o.Credentials = st; o.AllowPlaintextAuth = true })
	r = deliverOK(t, p, hop("notls.test"), newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")

	// A wrong password defers (soft bounce), with the server's words.
	if _, err := st.UpdateRelayCredential(ctx, hop("relay.test"), store.RelayCredentialPatch{Password: ptr("wrong")}); err != nil {
		t.Fatal(err)
	}
	r = deliverOK(t, a, hop("relay.test"), newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Deferred, 435, "4.7.8")
	if !strings.Contains(r[0].Reply.Text, "SASL authentication failed; server relay.test[127.0.0.1]:"+itoa(port)+" said: 535 5.7.8") {
		t.Fatalf("reply %q", r[0].Reply.Text)
	}
	// No active credential: no AUTH, and this relay refuses the mail.
	if _, err := st.UpdateRelayCredential(ctx, hop("relay.test"), store.RelayCredentialPatch{Active: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	r = deliverOK(t, a, hop("relay.test"), newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Bounced, 530, "5.7.0")
	if len(plainSrv.messages()) != 1 {
		t.Fatal("delivered without authentication")
	}
}

func ptr[T any](v T) *T { return &v }

type failingCredentials struct{}

func (failingCredentials) RelayCredentials(context.Context, string) (string, string, bool, error) {
	return "", "", false, errors.New("connection refused")
}

func TestCredentialLookupErrorDefers(t *testing.T) {
	port, lns := listenSamePort(t, 1)
	srv := newServer(t, "relay.test", lns[0], script{}, nil)
	a := newAgent(t, port, zones(nil), func(o *Options) { o.Credentials = failingCredentials{} })
	r := deliverOK(t, a, "[127.0.0.1]:"+itoa(port), newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Deferred, 451, "4.3.0")
	if srv.accepts.Load() != 0 {
		t.Fatal("connected without knowing the credentials")
	}
	// MX delivery never asks for credentials.
	res := zones(map[string]mockdns.Zone{"example.test": {A: []string{"127.0.0.1"}}})
	b := newAgent(t, port, res, func(o *Options) { o.Credentials = failingCredentials{} })
	r = deliverOK(t, b, "", newMessage(t, testBody), rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
}
