package smtp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/foxcpp/go-mockdns"

	"github.com/facteur/facteur/mta/deliver"
)

// The test servers are go-smtp servers on loopback addresses (127.0.0.1,
// 127.0.0.2, …) that all listen on one port, because the agent connects to
// every MX host on Options.Port, as it would on port 25.

// script says how a test server answers.
type script struct {
	mail       *gosmtp.SMTPError            // reply to MAIL FROM (nil: 250)
	rcpt       map[string]*gosmtp.SMTPError // reply per recipient (absent: 250)
	data       *gosmtp.SMTPError            // reply after the final dot (nil: 250)
	dropAtRcpt string                       // close the connection on RCPT TO this address
	dropAtDot  bool                         // read the message, then close without a reply
	stallData  time.Duration                // wait this long before reading the message

	authUser, authPass string
	authMechs          []string // offered mechanisms; nil: PLAIN
}

// received is one message as a test server got it.
type received struct {
	helo     string
	tls      bool
	authUser string
	from     string
	mailOpts gosmtp.MailOptions
	rcpts    []string
	rcptOpts []gosmtp.RcptOptions
	body     []byte
}

type testServer struct {
	t       *testing.T
	name    string
	addr    netip.AddrPort
	srv     *gosmtp.Server
	accepts atomic.Int32
	resets  atomic.Int32
	helos   atomic.Int32

	mu     sync.Mutex
	script script
	msgs   []received
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// listenSamePort listens on 127.0.0.1 … 127.0.0.n, all on one port.
func listenSamePort(t *testing.T, n int) (int, []net.Listener) {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for i := 2; i <= n; i++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", i, port))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == n {
			return port, lns
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatal("no port free on every loopback address")
	return 0, nil
}

// newServer serves SMTP on ln; configure adjusts the go-smtp server
// (extensions, TLS, limits) before it starts.
func newServer(t *testing.T, name string, ln net.Listener, sc script, configure func(*gosmtp.Server)) *testServer {
	t.Helper()
	ts := &testServer{t: t, name: name, script: sc, addr: netip.MustParseAddrPort(ln.Addr().String())}
	s := gosmtp.NewServer(ts)
	s.Domain = name
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	s.MaxRecipients = 100
	s.AllowInsecureAuth = true
	if configure != nil {
		configure(s)
	}
	ts.srv = s
	go s.Serve(countingListener{Listener: ln, n: &ts.accepts})
	t.Cleanup(func() { s.Close() })
	return ts
}

func (ts *testServer) messages() []received {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]received(nil), ts.msgs...)
}

func (ts *testServer) setScript(sc script) {
	ts.mu.Lock()
	ts.script = sc
	ts.mu.Unlock()
}

func (ts *testServer) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	ts.helos.Add(1)
	ts.mu.Lock()
	sc := ts.script
	ts.mu.Unlock()
	_, isTLS := c.TLSConnectionState()
	return &testSession{ts: ts, c: c, sc: sc, cur: received{helo: c.Hostname(), tls: isTLS}}, nil
}

type testSession struct {
	ts   *testServer
	c    *gosmtp.Conn
	sc   script
	cur  received
	user string
}

func (s *testSession) AuthMechanisms() []string {
	if s.sc.authUser == "" {
		return nil
	}
	if s.sc.authMechs != nil {
		return s.sc.authMechs
	}
	return []string{sasl.Plain}
}

func (s *testSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if user != s.sc.authUser || pass != s.sc.authPass {
			return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.user = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return errors.New("identity mismatch")
			}
			return check(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

// loginServer is the server side of AUTH LOGIN (go-sasl has only the
// client): "Username:", then "Password:".
type loginServer struct {
	check func(user, pass string) error
	user  string
	step  int
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if resp != nil {
			l.user = string(resp)
			l.step = 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(resp)
		l.step = 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

func (s *testSession) Mail(from string, opts *gosmtp.MailOptions) error {
	if s.sc.authUser != "" && s.user == "" {
		return &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	if s.sc.mail != nil {
		return s.sc.mail
	}
	s.cur.from = from
	if opts != nil {
		s.cur.mailOpts = *opts
	}
	return nil
}

func (s *testSession) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	if to == s.sc.dropAtRcpt {
		s.c.Conn().Close()
		return errors.New("dropped")
	}
	if e := s.sc.rcpt[to]; e != nil {
		return e
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	if opts != nil {
		s.cur.rcptOpts = append(s.cur.rcptOpts, *opts)
	} else {
		s.cur.rcptOpts = append(s.cur.rcptOpts, gosmtp.RcptOptions{})
	}
	return nil
}

func (s *testSession) Data(r io.Reader) error {
	if s.sc.stallData > 0 {
		time.Sleep(s.sc.stallData)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.sc.dropAtDot {
		s.c.Conn().Close()
		return errors.New("dropped")
	}
	if s.sc.data != nil {
		return s.sc.data
	}
	s.cur.body = body
	s.cur.authUser = s.user
	s.ts.mu.Lock()
	s.ts.msgs = append(s.ts.msgs, s.cur)
	n := len(s.ts.msgs)
	s.ts.mu.Unlock()
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as Q" + fmt.Sprint(n)}
}

func (s *testSession) Reset() {
	s.ts.resets.Add(1)
	_, isTLS := s.c.TLSConnectionState()
	s.cur = received{helo: s.c.Hostname(), tls: isTLS}
}

func (s *testSession) Logout() error { return nil }

// zones makes a fake DNS of FQDN → zone (keys without the final dot are
// completed).
func zones(m map[string]mockdns.Zone) *mockdns.Resolver {
	z := map[string]mockdns.Zone{}
	for k, v := range m {
		if !strings.HasSuffix(k, ".") {
			k += "."
		}
		z[k] = v
	}
	return &mockdns.Resolver{Zones: z}
}

// testLogger writes the agent's log lines to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// newAgent builds an agent for port with short timeouts; mod changes
// options.
func newAgent(t *testing.T, port int, res Resolver, mod func(*Options)) *Agent {
	t.Helper()
	o := Options{
		Hostname:        "client.test",
		Resolver:        res,
		Port:            port,
		ConnectTimeout:  5 * time.Second,
		HeloTimeout:     5 * time.Second,
		StartTLSTimeout: 5 * time.Second,
		CommandTimeout:  5 * time.Second,
		DataInitTimeout: 5 * time.Second,
		DataXferTimeout: 5 * time.Second,
		DataDoneTimeout: 5 * time.Second,
		QuitTimeout:     time.Second,
	}
	if mod != nil {
		mod(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

const testBody = "Received: from origin.test by client.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"From: Alice <alice@origin.test>\r\nTo: bob@example.test\r\nSubject: test\r\n\r\nHello,\r\n.dot line\r\nbye\r\n"

// newMessage returns a message from alice@origin.test with body.
func newMessage(t *testing.T, body string) *deliver.Message {
	b := []byte(body)
	return &deliver.Message{
		QueueID:   "4XtestQ1",
		Sender:    "alice@origin.test",
		Size:      int64(len(b)),
		ArrivedAt: time.Now(),
		BodyType:  "7BIT",
		Kind:      "mail",
		Open:      func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		Log:       testLogger(t).With("queue_id", "4XtestQ1"),
	}
}

func rcptsOf(addrs ...string) []deliver.Recipient {
	out := make([]deliver.Recipient, len(addrs))
	for i, a := range addrs {
		out[i] = deliver.Recipient{ID: int64(i + 1), Address: a}
	}
	return out
}

func deliverOK(t *testing.T, a *Agent, nexthop string, msg *deliver.Message, rcpts []deliver.Recipient) []deliver.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := a.Deliver(ctx, nexthop, msg, rcpts)
	if len(res) != len(rcpts) {
		t.Fatalf("%d results for %d recipients", len(res), len(rcpts))
	}
	return res
}

func wantStatus(t *testing.T, r deliver.Result, st deliver.Status, code int, enhanced string) {
	t.Helper()
	if r.Status != st || r.Reply.Code != code || r.Reply.Enhanced.String() != enhanced {
		t.Fatalf("result %v %q (relay %s), want %v %d %s", r.Status, r.Reply.String(), r.Relay, st, code, enhanced)
	}
}

// testCA is a certificate authority for test server certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "facteur test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a server certificate for names, signed by the CA.
func (ca *testCA) issue(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
