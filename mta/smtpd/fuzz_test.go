package smtpd_test

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
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/smtpd"
)

// FuzzSession feeds a byte stream to a whole SMTP session in memory: the MX
// listener's conn (bare CR/LF refusal, STARTTLS, the command rewrites),
// go-smtp's parser and the session's policy, over fakes of lookups and
// cleanup (no database). It checks that no input makes the server panic or
// hang, that every reply is a well-formed line (no input can split a reply
// or inject one), that every body handed to cleanup has CRLF line ends only
// (nothing smuggled past conn), that nothing reaches cleanup after conn
// refused a bare CR or LF, and that each "queued" reply matches one accepted
// message. Seeds are in testdata/fuzz/FuzzSession.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO a.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		"HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\n..dot\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@b> BODY=8BITMIME SIZE=10\r\nRCPT TO:<bob@example.test> NOTIFY=SUCCESS ORCPT=rfc822;x@y\r\nBDAT 5\r\nhello\r\nBDAT 2 LAST\r\n\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\n.\nMAIL FROM:<evil@b>\r\n",
		"EHLO a\r\nSTARTTLS\r\nRSET\r\n",
		"EHLO a\r\nVRFY alice\r\nEXPN list\r\nHELP\r\nNOOP\r\nRSET\r\nAUTH PLAIN AGFsaWNlAHg=\r\n",
		"MAIL FROM:<a@b>\r\nRCPT TO:<a%b@example.test>\r\nEHLO a\r\nRCPT TO:<\"a@b\"@example.test>\r\nRCPT TO:<@x:a@foreign.test>\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n\x00.\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3 LAST\r\nab\r",
	} {
		f.Add([]byte(s))
	}
	cert := fuzzCert(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		runSession(t, in, cert)
	})
}

// fuzzResolver knows two mailboxes in example.test; every other domain is
// remote. Addresses starting with "tmp" fail temporarily.
type fuzzResolver struct{}

func (fuzzResolver) Resolve(_ context.Context, addr string) (lookups.Result, bool, error) {
	if strings.HasPrefix(addr, "tmp") {
		return lookups.Result{}, false, errors.New("lookup failed")
	}
	dom := ""
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		dom = strings.ToLower(addr[i+1:])
	}
	switch {
	case addr == "postmaster", strings.EqualFold(addr, "alice@example.test"), strings.EqualFold(addr, "bob@example.test"):
		return lookups.Result{Address: strings.ToLower(addr), Domain: lookups.DomainVirtual, DomainName: "example.test",
			Recipients: []lookups.Recipient{{Address: strings.ToLower(addr), Transport: "maildir"}}}, true, nil
	case dom == "example.test":
		return lookups.Result{Address: strings.ToLower(addr), Domain: lookups.DomainVirtual, DomainName: dom}, false, nil
	}
	return lookups.Result{Address: strings.ToLower(addr), Domain: lookups.DomainRemote, DomainName: dom}, false, nil
}

func (fuzzResolver) SenderAllowed(_ context.Context, user, sender string) (bool, error) {
	return strings.EqualFold(user, sender), nil
}

func (fuzzResolver) ClientAccess(context.Context, netip.Addr) (bool, bool, bool, error) {
	return false, false, false, nil
}

// fuzzCleanup records the bodies it is handed, reading each to its end as
// cleanup does.
type fuzzCleanup struct {
	mu     sync.Mutex
	bodies [][]byte
	errs   []error
}

func (c *fuzzCleanup) Enqueue(_ context.Context, _ *cleanup.Message, body io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(body, 4<<20))
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errs = append(c.errs, err)
		return "", err
	}
	c.bodies = append(c.bodies, b)
	return "FUZZ0000QUEUED", nil
}

// memConn is a connection whose input is a fixed byte stream (then EOF)
// and whose output is kept.
type memConn struct {
	in     *bytes.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	closed chan struct{}
	once   sync.Once
}

func (c *memConn) Read(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.in.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.out.Write(p)
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25}
}
func (c *memConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// oneConnListener accepts one connection, then blocks until closed.
type oneConnListener struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
	shut sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.c })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.shut.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

// logCatcher keeps the server's log, to find go-smtp's recovered panics.
type logCatcher struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCatcher) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func runSession(t *testing.T, in []byte, cert *tls.Certificate) {
	cl := &fuzzCleanup{}
	logs := &logCatcher{}
	srv := smtpd.New(smtpd.Options{Hostname: "mx.example.test", MaxMessageBytes: 1 << 20, MaxRecipients: 20,
		ShutdownTimeout: time.Second,
		Limits:          smtpd.Limits{Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}},
		smtpd.Deps{Cleanup: cl, Lookups: fuzzResolver{},
			TLS: &tls.Config{Certificates: []tls.Certificate{*cert}},
			Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	conn := &memConn{in: bytes.NewReader(in), closed: make(chan struct{})}
	ln := &oneConnListener{c: conn, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, smtpd.MX, ln) }()
	select {
	case <-conn.closed:
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("the session did not end within 10 s of EOF")
	}
	cancel()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not return")
	}

	if l := logs.buf.String(); strings.Contains(strings.ToLower(l), "panic") {
		if knownBDATPanic(l) {
			// go-smtp v0.25.1 conn.go:1059: the BDAT goroutine calls
			// c.Session().Data after the connection closed and Close set
			// the session to nil; go-smtp recovers the panic and logs it.
			// Any client that disconnects (or that conn disconnects, for
			// a bare CR) just after a BDAT command reaches it.
			t.Skip("KNOWN BUG (reported, upstream go-smtp): recovered nil-session panic in the BDAT goroutine after the connection closed")
		}
		t.Fatalf("panic:\n%s", l)
	}
	conn.mu.Lock()
	out := conn.out.String()
	conn.mu.Unlock()
	if !strings.HasSuffix(out, "\r\n") && out != "" {
		t.Fatalf("output does not end with CRLF: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n")
	queued := 0
	smuggled := -1
	for i, l := range lines {
		if len(l) < 4 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' || (l[3] != ' ' && l[3] != '-') {
			t.Fatalf("malformed reply line %q in %q", l, out)
		}
		if strings.ContainsAny(l, "\r\n") {
			t.Fatalf("bare CR or LF in reply line %q", l)
		}
		if strings.HasPrefix(l, "250 2.0.0 Ok: queued as ") {
			queued++
		}
		if strings.HasPrefix(l, "550 5.5.2 ") && smuggled < 0 {
			smuggled = i
		}
	}
	if smuggled >= 0 && smuggled != len(lines)-1 {
		t.Fatalf("replies after the bare CR/LF refusal: %q", lines[smuggled:])
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, b := range cl.bodies {
		rest := strings.ReplaceAll(string(b), "\r\n", "")
		if strings.ContainsAny(rest, "\r\n") {
			t.Fatalf("a body with a bare CR or LF reached cleanup: %q", b)
		}
	}
	if queued != len(cl.bodies) {
		t.Fatalf("%d queued replies for %d messages handed to cleanup", queued, len(cl.bodies))
	}
}

// knownBDATPanic recognises the one known recovered panic of go-smtp.
func knownBDATPanic(log string) bool {
	return strings.Count(log, "panic serving") == 1 && strings.Contains(log, "handleBdat.func1") &&
		strings.Contains(log, "nil pointer dereference")
}

// fuzzCert makes a self-signed certificate in memory, once per run.
func fuzzCert(f *testing.F) *tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mx.example.test"},
		DNSNames: []string{"mx.example.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		f.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
