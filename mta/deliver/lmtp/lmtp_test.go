package lmtp

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/foxcpp/go-mockdns"

	"github.com/facteur/facteur/internal/dovecottest"
	"github.com/facteur/facteur/mta/deliver"
)

const testBody = "Received: from client.example by mx.example; Sat, 21 Nov 2026 10:00:00 +0000\r\n" +
	"From: Alice <alice@example.net>\r\n" +
	"To: John <john@example.com>\r\n" +
	"Subject: hello over LMTP\r\n" +
	"Message-ID: <1@example.net>\r\n" +
	"\r\n" +
	"Line one.\r\n" +
	".leading dot\r\n" +
	"Last line.\r\n"

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func message(t testing.TB, body string) *deliver.Message {
	return &deliver.Message{
		QueueID: "4LmTpTeSt", Sender: "alice@example.net", Size: int64(len(body)), ArrivedAt: time.Now(),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
		Log:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("queue_id", "4LmTpTeSt"),
	}
}

func rcpts(addrs ...string) []deliver.Recipient {
	var rs []deliver.Recipient
	for _, a := range addrs {
		rs = append(rs, deliver.Recipient{Address: a})
	}
	return rs
}

func want(t testing.TB, i int, r deliver.Result, st deliver.Status, code int, es string) {
	t.Helper()
	if r.Status != st || r.Reply.Code != code || r.Reply.Enhanced.String() != es {
		t.Errorf("recipient %d: %v %s; want %v %d %s", i, r.Status, r.Reply, st, code, es)
	}
}

func newAgent(t testing.TB, opts Options) *Agent {
	t.Helper()
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestDovecotLMTP delivers into a real Dovecot: a known user gets the
// message (read back over IMAP), an unknown one 550 5.1.1 and an over-quota
// one 552 5.2.2, in the same transaction.
func TestDovecotLMTP(t *testing.T) {
	srv := dovecottest.Start(t, dovecottest.Options{Users: []dovecottest.User{
		{Address: "john@example.com", Password: "secret"},
		{Address: "small@example.com", Password: "secret", QuotaBytes: 200},
	}})
	a := newAgent(t, Options{LocalName: "mx.example"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := a.Deliver(ctx, "unix:"+srv.LMTPSocket, message(t, testBody),
		rcpts("john@example.com", "nobody@example.com", "small@example.com", "john@example.com"))
	if len(res) != 4 {
		t.Fatalf("%d results", len(res))
	}
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
	want(t, 1, res[1], deliver.Bounced, 550, "5.1.1")
	want(t, 2, res[2], deliver.Bounced, 552, "5.2.2")
	want(t, 3, res[3], deliver.Delivered, 250, "2.0.0")
	if !strings.Contains(res[0].Reply.Text, "Saved") {
		t.Errorf("Dovecot's reply not recorded: %s", res[0].Reply)
	}
	if !strings.Contains(res[1].Reply.Text, "User doesn't exist") {
		t.Errorf("Dovecot's reply not recorded: %s", res[1].Reply)
	}
	if !strings.HasSuffix(res[0].Relay, "[unix:"+srv.LMTPSocket+"]") || strings.HasPrefix(res[0].Relay, "[") {
		t.Errorf("Relay = %q", res[0].Relay)
	}

	msgs, err := srv.Fetch(ctx, "john@example.com", "secret")
	if err != nil {
		t.Fatalf("%v\n%s", err, srv.Log())
	}
	if len(msgs) != 1 { // john twice in one delivery: one copy
		t.Fatalf("john has %d messages; want 1", len(msgs))
	}
	if !strings.HasSuffix(string(msgs[0]), testBody) || !strings.HasPrefix(string(msgs[0]), "Return-Path: <alice@example.net>\r\n") {
		t.Errorf("message over IMAP:\n%s", msgs[0])
	}
	if msgs, err := srv.Fetch(ctx, "small@example.com", "secret"); err != nil || len(msgs) != 0 {
		t.Errorf("small: %d messages, %v", len(msgs), err)
	}
}

// TestDovecotQuotaTempfail: with quota_full_tempfail, Dovecot answers 452
// 4.2.2, which defers.
func TestDovecotQuotaTempfail(t *testing.T) {
	srv := dovecottest.Start(t, dovecottest.Options{QuotaFullTempfail: true, Users: []dovecottest.User{
		{Address: "small@example.com", Password: "secret", QuotaBytes: 200},
	}})
	a := newAgent(t, Options{})
	res := a.Deliver(context.Background(), "unix:"+srv.LMTPSocket, message(t, testBody), rcpts("small@example.com"))
	want(t, 0, res[0], deliver.Deferred, 452, "4.2.2")
}

// scripted is an in-process go-smtp LMTP server answering scripted replies.
type scripted struct {
	mu       sync.Mutex
	rcptErr  map[string]error // RCPT TO replies
	dataErr  map[string]error // replies after the final dot
	dropData int              // >0: close the connection after this many replies
	stall    time.Duration    // wait before replying after the final dot
	dsn      bool             // offer DSN
	dropRcpt string           // close the connection at this RCPT TO
	got      []received
	conns    []*smtp.Conn
	mailOpts *smtp.MailOptions
	rcptOpts map[string]*smtp.RcptOptions
}

type received struct {
	from string
	to   []string
	body string
	tls  bool
}

type lmtpSession struct {
	s    *scripted
	c    *smtp.Conn
	from string
	to   []string
}

func (s *lmtpSession) Reset()        { s.from, s.to = "", nil }
func (s *lmtpSession) Logout() error { return nil }
func (s *lmtpSession) Mail(from string, o *smtp.MailOptions) error {
	s.from = from
	s.s.mu.Lock()
	s.s.mailOpts = o
	s.s.mu.Unlock()
	return nil
}
func (s *lmtpSession) Rcpt(to string, o *smtp.RcptOptions) error {
	s.s.mu.Lock()
	if s.s.rcptOpts == nil {
		s.s.rcptOpts = map[string]*smtp.RcptOptions{}
	}
	s.s.rcptOpts[to] = o
	err := s.s.rcptErr[to]
	if to == s.s.dropRcpt {
		s.c.Conn().Close()
	}
	s.s.mu.Unlock()
	if err == nil {
		s.to = append(s.to, to)
	}
	return err
}
func (s *lmtpSession) Data(r io.Reader) error { panic("LMTPData is used") }
func (s *lmtpSession) LMTPData(r io.Reader, st smtp.StatusCollector) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := s.c.TLSConnectionState()
	s.s.mu.Lock()
	s.s.got = append(s.s.got, received{from: s.from, to: s.to, body: string(b), tls: isTLS})
	dataErr, drop, stall := s.s.dataErr, s.s.dropData, s.s.stall
	s.s.mu.Unlock()
	time.Sleep(stall)
	for i, to := range s.to {
		if drop > 0 && i == drop {
			time.Sleep(100 * time.Millisecond) // let the earlier replies go out
			s.c.Conn().Close()
			return nil
		}
		st.SetStatus(to, dataErr[to])
	}
	return nil
}

func (s *scripted) listen(t *testing.T, network string, tlsConf *tls.Config) string {
	t.Helper()
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		return &lmtpSession{s: s, c: c}, nil
	}))
	srv.LMTP = true
	srv.Domain = "lmtp.test"
	srv.TLSConfig = tlsConf
	srv.EnableDSN = s.dsn
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	var l net.Listener
	var err error
	if network == "unix" {
		dir, derr := os.MkdirTemp("", "flm")
		if derr != nil {
			t.Fatal(derr)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		l, err = net.Listen("unix", filepath.Join(dir, "lmtp"))
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	if network == "unix" {
		return "unix:" + l.Addr().String()
	}
	return l.Addr().String()
}

func TestScriptedPerRecipientReplies(t *testing.T) {
	s := &scripted{
		rcptErr: map[string]error{
			"busy@example.com":    &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "Mailbox busy"},
			"unknown@example.com": &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"},
		},
		dataErr: map[string]error{
			"later@example.com": &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure"},
			"full@example.com":  &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "Mailbox full"},
		},
	}
	nexthop := s.listen(t, "unix", nil)
	a := newAgent(t, Options{})
	res := a.Deliver(context.Background(), nexthop, message(t, testBody),
		rcpts("ok@example.com", "busy@example.com", "unknown@example.com", "later@example.com", "full@example.com", "ok@example.com"))
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
	want(t, 1, res[1], deliver.Deferred, 450, "4.2.1")
	want(t, 2, res[2], deliver.Bounced, 550, "5.1.1")
	want(t, 3, res[3], deliver.Deferred, 451, "4.3.0")
	want(t, 4, res[4], deliver.Bounced, 552, "5.2.2")
	want(t, 5, res[5], deliver.Delivered, 250, "2.0.0")
	if !strings.Contains(res[2].Reply.Text, "No such user") || !strings.Contains(res[4].Reply.Text, "Mailbox full") {
		t.Errorf("remote texts not recorded: %s / %s", res[2].Reply, res[4].Reply)
	}
	if res[0].Relay != "lmtp.test["+nexthop+"]" || res[0].RemoteMTA != "lmtp.test" {
		t.Errorf("Relay %q RemoteMTA %q", res[0].Relay, res[0].RemoteMTA)
	}
	if len(s.got) != 1 {
		t.Fatalf("%d transactions", len(s.got))
	}
	g := s.got[0]
	if g.from != "alice@example.net" || strings.Join(g.to, ",") != "ok@example.com,later@example.com,full@example.com" {
		t.Errorf("envelope %q → %q", g.from, g.to)
	}
	if g.body != testBody {
		t.Errorf("body %q", g.body)
	}
}

func TestScriptedAllRejectedSendsNoData(t *testing.T) {
	s := &scripted{rcptErr: map[string]error{
		"a@example.com": &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No"},
		"b@example.com": &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 5}, Message: "Later"},
	}}
	nexthop := s.listen(t, "unix", nil)
	res := newAgent(t, Options{}).Deliver(context.Background(), nexthop, message(t, testBody), rcpts("a@example.com", "b@example.com"))
	want(t, 0, res[0], deliver.Bounced, 550, "5.1.1")
	want(t, 1, res[1], deliver.Deferred, 421, "4.4.5")
	if len(s.got) != 0 {
		t.Errorf("DATA sent with no accepted recipient")
	}
}

// TestDroppedConnectionAfterDataDefers: the server replies for the first
// recipient and drops the connection; the others' outcome is unknown.
func TestDroppedConnectionAfterDataDefers(t *testing.T) {
	s := &scripted{dropData: 1}
	nexthop := s.listen(t, "unix", nil)
	res := newAgent(t, Options{}).Deliver(context.Background(), nexthop, message(t, testBody),
		rcpts("a@example.com", "b@example.com", "c@example.com"))
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
	want(t, 1, res[1], deliver.Deferred, 451, "4.4.2")
	want(t, 2, res[2], deliver.Deferred, 451, "4.4.2")
	if !strings.Contains(res[1].Reply.Text, "lost connection") {
		t.Errorf("reply %s", res[1].Reply)
	}
}

// TestDroppedConnectionAtRcpt: a rejection already given stands; the
// other recipients defer.
func TestDroppedConnectionAtRcpt(t *testing.T) {
	s := &scripted{dropRcpt: "b@example.com", rcptErr: map[string]error{
		"a@example.com": &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No"},
	}}
	nexthop := s.listen(t, "unix", nil)
	res := newAgent(t, Options{}).Deliver(context.Background(), nexthop, message(t, testBody),
		rcpts("ok@example.com", "a@example.com", "b@example.com", "c@example.com"))
	want(t, 0, res[0], deliver.Deferred, 451, "4.4.2")
	want(t, 1, res[1], deliver.Bounced, 550, "5.1.1")
	want(t, 2, res[2], deliver.Deferred, 451, "4.4.2")
	want(t, 3, res[3], deliver.Deferred, 451, "4.4.2")
}

func TestConnectionRefusedDefers(t *testing.T) {
	dir := t.TempDir()
	a := newAgent(t, Options{})
	res := a.Deliver(context.Background(), "unix:"+filepath.Join(dir, "none"), message(t, testBody), rcpts("a@example.com", "b@example.com"))
	for i, r := range res {
		want(t, i, r, deliver.Deferred, 451, "4.4.1")
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	res = a.Deliver(context.Background(), addr, message(t, testBody), rcpts("a@example.com"))
	want(t, 0, res[0], deliver.Deferred, 451, "4.4.1")
	if res[0].Relay != "127.0.0.1[127.0.0.1]:"+addr[strings.LastIndex(addr, ":")+1:] {
		t.Errorf("Relay %q", res[0].Relay)
	}
}

// rawServer accepts one connection and runs fn on it.
func rawServer(t *testing.T, fn func(c net.Conn, r *bufio.Reader)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fn(c, bufio.NewReader(c))
			}()
		}
	}()
	return l.Addr().String()
}

// TestGreetingRefusal: a refused greeting defers, whatever its class
// (Postfix lmtp_skip_5xx_greeting), with the server's reply recorded.
func TestGreetingRefusal(t *testing.T) {
	for _, tt := range []struct {
		greeting string
		st       deliver.Status
		code     int
		es       string
	}{
		{"554 5.3.2 not accepting mail\r\n", deliver.Deferred, 554, "5.3.2"},
		{"421 4.3.2 shutting down\r\n", deliver.Deferred, 421, "4.3.2"},
	} {
		addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
			io.WriteString(c, tt.greeting)
			r.ReadString('\n')
		})
		res := newAgent(t, Options{TLSPolicy: TLSNone}).Deliver(context.Background(), addr, message(t, testBody), rcpts("a@example.com"))
		want(t, 0, res[0], tt.st, tt.code, tt.es)
	}
}

func TestStalledServerRespectsContext(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, "220 stall.test LMTP\r\n")
		time.Sleep(5 * time.Second) // never answers LHLO
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := newAgent(t, Options{TLSPolicy: TLSNone}).Deliver(ctx, addr, message(t, testBody), rcpts("a@example.com"))
	if time.Since(start) > 3*time.Second {
		t.Errorf("Deliver took %v past its deadline", time.Since(start))
	}
	if res[0].Status != deliver.Deferred || res[0].Reply.Code != 451 {
		t.Errorf("result %v %s", res[0].Status, res[0].Reply)
	}

	// A stall after the final dot: the outcome is unknown, so deferred.
	s := &scripted{stall: 3 * time.Second}
	nexthop := s.listen(t, "unix", nil)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	res = newAgent(t, Options{}).Deliver(ctx2, nexthop, message(t, testBody), rcpts("a@example.com"))
	want(t, 0, res[0], deliver.Deferred, 451, "4.4.7")
}

func selfSigned(t *testing.T, names ...string) (*tls.Config, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

func TestSTARTTLS(t *testing.T) {
	srvTLS, pool := selfSigned(t, "lmtp.example")
	withTLS := &scripted{}
	tlsAddr := withTLS.listen(t, "tcp", srvTLS)
	plain := &scripted{}
	plainAddr := plain.listen(t, "tcp", nil)
	_, otherPool := selfSigned(t, "other.example")
	tls13 := srvTLS.Clone()
	tls13.MinVersion = tls.VersionTLS13
	badTLS := &scripted{}
	badTLSAddr := badTLS.listen(t, "tcp", tls13)

	dns := &mockdns.Resolver{Zones: map[string]mockdns.Zone{
		"lmtp.example.": {A: []string{"127.0.0.1"}},
	}}
	port := func(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }

	for _, tt := range []struct {
		name    string
		policy  TLSPolicy
		roots   *x509.CertPool
		nexthop string
		srv     *scripted
		st      deliver.Status
		es      string
		tls     bool
		maxVer  uint16
	}{
		{"may uses TLS when offered", TLSMay, nil, tlsAddr, withTLS, deliver.Delivered, "2.0.0", true, 0},
		{"may goes plaintext when not offered", TLSMay, nil, plainAddr, plain, deliver.Delivered, "2.0.0", false, 0},
		{"none never uses TLS", TLSNone, nil, tlsAddr, withTLS, deliver.Delivered, "2.0.0", false, 0},
		{"encrypt needs STARTTLS", TLSEncrypt, nil, plainAddr, plain, deliver.Deferred, "4.7.4", false, 0},
		{"encrypt does not verify", TLSEncrypt, nil, tlsAddr, withTLS, deliver.Delivered, "2.0.0", true, 0},
		{"verify with the right root", TLSVerify, pool, "[lmtp.example]:" + port(tlsAddr), withTLS, deliver.Delivered, "2.0.0", true, 0},
		{"verify with the wrong root", TLSVerify, otherPool, "lmtp.example:" + port(tlsAddr), withTLS, deliver.Deferred, "4.7.5", false, 0},
		{"may falls back to plaintext after a failed handshake", TLSMay, nil, badTLSAddr, badTLS, deliver.Delivered, "2.0.0", false, tls.VersionTLS12},
		{"encrypt defers after a failed handshake", TLSEncrypt, nil, badTLSAddr, badTLS, deliver.Deferred, "4.7.5", false, tls.VersionTLS12},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.srv.mu.Lock()
			tt.srv.got = nil
			tt.srv.mu.Unlock()
			a := newAgent(t, Options{TLSPolicy: tt.policy, TLSConfig: &tls.Config{RootCAs: tt.roots, MaxVersion: tt.maxVer}, Resolver: dns, LocalName: "mx.example"})
			res := a.Deliver(context.Background(), tt.nexthop, message(t, testBody), rcpts("a@example.com"))
			if res[0].Status != tt.st || res[0].Reply.Enhanced.String() != tt.es {
				t.Fatalf("%v %s; want %v %s", res[0].Status, res[0].Reply, tt.st, tt.es)
			}
			tt.srv.mu.Lock()
			defer tt.srv.mu.Unlock()
			if tt.st == deliver.Delivered {
				if len(tt.srv.got) != 1 || tt.srv.got[0].tls != tt.tls || tt.srv.got[0].body != testBody {
					t.Fatalf("server got %+v; want one message, tls=%v", tt.srv.got, tt.tls)
				}
			} else if len(tt.srv.got) != 0 {
				t.Fatalf("server got a message")
			}
		})
	}

	// A host name next hop: resolved through the injected resolver, logged
	// as host[addr]:port.
	a := newAgent(t, Options{Resolver: dns})
	res := a.Deliver(context.Background(), "lmtp.example:"+port(plainAddr), message(t, testBody), rcpts("a@example.com"))
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
	if res[0].Relay != "lmtp.example[127.0.0.1]:"+port(plainAddr) {
		t.Errorf("Relay %q", res[0].Relay)
	}
	res = a.Deliver(context.Background(), "missing.example:24", message(t, testBody), rcpts("a@example.com"))
	want(t, 0, res[0], deliver.Deferred, 451, "4.4.4")
}

func TestSMTPUTF8NotOffered(t *testing.T) {
	s := &scripted{}
	nexthop := s.listen(t, "unix", nil) // go-smtp offers SMTPUTF8 only when enabled
	msg := message(t, testBody)
	msg.SMTPUTF8 = true
	msg.Sender = "élise@example.net"
	res := newAgent(t, Options{}).Deliver(context.Background(), nexthop, msg, rcpts("a@example.com"))
	want(t, 0, res[0], deliver.Bounced, 553, "5.6.7")
	// An ASCII envelope goes through without the parameter.
	msg.Sender = "elise@example.net"
	res = newAgent(t, Options{}).Deliver(context.Background(), nexthop, msg, rcpts("a@example.com"))
	want(t, 0, res[0], deliver.Delivered, 250, "2.0.0")
}

func TestParseNexthop(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want target
		bad  bool
	}{
		{in: "unix:/run/dovecot/lmtp", want: target{network: "unix", path: "/run/dovecot/lmtp"}},
		{in: "mail.example:2424", want: target{network: "tcp", host: "mail.example", port: "2424"}},
		{in: "inet:mail.example:2424", want: target{network: "tcp", host: "mail.example", port: "2424"}},
		{in: "mail.example", want: target{network: "tcp", host: "mail.example", port: "24"}},
		{in: "[mail.example]:25", want: target{network: "tcp", host: "mail.example", port: "25"}},
		{in: "[2001:db8::1]:24", want: target{network: "tcp", host: "2001:db8::1", port: "24"}},
		{in: "[2001:db8::1]", want: target{network: "tcp", host: "2001:db8::1", port: "24"}},
		{in: "127.0.0.1:24", want: target{network: "tcp", host: "127.0.0.1", port: "24"}},
		{in: "", bad: true},
		{in: "unix:", bad: true},
		{in: "host:0", bad: true},
		{in: "host:99999", bad: true},
		{in: "[host", bad: true},
		{in: "[host]x", bad: true},
		{in: ":24", bad: true},
	} {
		got, err := parseNexthop(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("parseNexthop(%q) = %+v; want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseNexthop(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	// A bad next hop defers (a configuration error), never bounces.
	res := newAgent(t, Options{}).Deliver(context.Background(), "host:0", message(t, testBody), rcpts("a@example.com"))
	want(t, 0, res[0], deliver.Deferred, 451, "4.3.5")
}

func TestDSNParametersPassedOn(t *testing.T) {
	s := &scripted{dsn: true}
	nexthop := s.listen(t, "unix", nil)
	msg := message(t, testBody)
	msg.DSNRet, msg.DSNEnvID = "HDRS", "env-42"
	rs := []deliver.Recipient{
		{Address: "a@example.com", DSNNotify: "SUCCESS,DELAY", DSNORcpt: "rfc822;Info@Example.com"},
		{Address: "b@example.com", DSNNotify: "NEVER,SUCCESS"}, // invalid: left out
		{Address: "c@example.com"},
	}
	res := newAgent(t, Options{}).Deliver(context.Background(), nexthop, msg, rs)
	for i, r := range res {
		want(t, i, r, deliver.Delivered, 250, "2.0.0")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mailOpts == nil || s.mailOpts.Return != smtp.DSNReturnHeaders || s.mailOpts.EnvelopeID != "env-42" || s.mailOpts.Size != int64(len(testBody)) {
		t.Errorf("MAIL options %+v", s.mailOpts)
	}
	a := s.rcptOpts["a@example.com"]
	if a == nil || fmt.Sprint(a.Notify) != "[SUCCESS DELAY]" || a.OriginalRecipient != "Info@Example.com" || a.OriginalRecipientType != smtp.DSNAddressTypeRFC822 {
		t.Errorf("RCPT options for a: %+v", a)
	}
	if b := s.rcptOpts["b@example.com"]; b == nil || len(b.Notify) != 0 {
		t.Errorf("RCPT options for b: %+v", b)
	}
}
