package smtpd_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/store/storetest"
)

// The test world: one hosted domain with two mailboxes, a foreign domain
// that is not ours, a real database, spool, lookups and cleanup.
const (
	testHost     = "mx.example.test"
	localDomain  = "example.test"
	foreignDom   = "foreign.test"
	alice        = "alice@example.test"
	alicePass    = "correct horse battery staple"
	bob          = "bob@example.test"
	inactiveUser = "carol@example.test"
	carolPass    = "carol's password"
)

type world struct {
	t      *testing.T
	db     *storetest.DB
	st     *store.Store
	sp     *spool.Spool
	res    *lookups.Resolver
	cl     *cleanup.Cleanup
	hasher *passwd.Hasher
	cert   *testCert
	logs   *logSink
}

// newWorld builds the database and the real collaborators of a Server.
func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	db := storetest.New(t)
	st := store.New(db.Pool)
	hasher, err := passwd.New(passwd.CheapOptions())
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, db: db, st: st, hasher: hasher, logs: newLogSink(t)}
	if _, err := st.CreateDomain(ctx, store.Domain{Name: localDomain, Active: true}); err != nil {
		t.Fatal(err)
	}
	w.mailbox(alice, alicePass, true)
	w.mailbox(bob, "bob's password", true)
	w.mailbox(inactiveUser, carolPass, false)
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	w.sp = sp
	w.res = lookups.New(st, lookups.Options{Hostname: testHost, Postmaster: alice, CacheTTL: -1})
	w.cl = cleanup.New(st, sp, w.res, cleanup.Options{Hostname: testHost, Node: "test"}, w.logs.logger())
	w.cert = newTestCert(t, t.TempDir())
	return w
}

func (w *world) mailbox(addr, password string, active bool) {
	w.t.Helper()
	h, err := w.hasher.Hash(password)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.st.CreateMailbox(context.Background(), store.Mailbox{Address: addr, Password: h, Active: active}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) permitRelay(network string) {
	w.t.Helper()
	_, err := w.st.CreateClientAccess(context.Background(), store.ClientAccess{
		Network: netip.MustParsePrefix(network), Action: store.ActionPermitRelay, Active: true})
	if err != nil {
		w.t.Fatal(err)
	}
}

// server starts a Server of the world on 127.0.0.1:0 for each kind and
// returns their addresses.
type running struct {
	srv   *smtpd.Server
	addrs map[smtpd.Kind]string
}

func (w *world) start(opts smtpd.Options, mod func(*smtpd.Deps)) *running {
	w.t.Helper()
	if opts.Hostname == "" {
		opts.Hostname = testHost
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = time.Second
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 30 * time.Second
	}
	deps := smtpd.Deps{
		Cleanup: w.cl,
		Lookups: w.res,
		Auth:    smtpd.NewMailboxAuth(w.st, w.hasher, 2, w.logs.logger()),
		TLS:     w.cert.reloader.TLSConfig(),
		Log:     w.logs.logger(),
	}
	if mod != nil {
		mod(&deps)
	}
	srv := smtpd.New(opts, deps)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{srv: srv, addrs: map[smtpd.Kind]string{}}
	var wg sync.WaitGroup
	for _, k := range []smtpd.Kind{smtpd.MX, smtpd.Submission, smtpd.Submissions} {
		if k == smtpd.Submissions && deps.TLS == nil {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			w.t.Fatal(err)
		}
		r.addrs[k] = ln.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, k, ln); err != nil {
				w.t.Errorf("serve %s: %v", k, err)
			}
		}()
	}
	w.t.Cleanup(func() {
		cancel()
		wg.Wait()
		w.logs.close()
	})
	return r
}

// queued returns the number of queue_message rows.
func (w *world) queued() int {
	w.t.Helper()
	var n int
	if err := w.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM queue_message`).Scan(&n); err != nil {
		w.t.Fatal(err)
	}
	return n
}

// spoolFiles counts the files of the spool, committed or not.
func (w *world) spoolFiles() int {
	w.t.Helper()
	n := 0
	filepath.WalkDir(w.sp.Dir(), func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// --- a raw SMTP client -----------------------------------------------------

type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// dialGreeted connects and reads the 220 greeting.
func dialGreeted(t *testing.T, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.expect("220 ")
	return c
}

func dialTLS(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("220 ")
	return c
}

// write sends raw bytes.
func (c *client) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// reply reads one reply (all its lines) and returns it, lines joined by
// "\n".
func (c *client) reply() (string, error) {
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return strings.Join(lines, "\n"), err
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n"), nil
		}
	}
}

// expect reads one reply and checks that its last line starts with prefix.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	r, err := c.reply()
	if err != nil {
		c.t.Fatalf("reading reply (want %q): got %q, %v", prefix, r, err)
	}
	last := r[strings.LastIndex(r, "\n")+1:]
	if !strings.HasPrefix(last, prefix) {
		c.t.Fatalf("reply %q, want %q", r, prefix)
	}
	return r
}

// cmd sends one command line and checks the reply.
func (c *client) cmd(line, want string) string {
	c.t.Helper()
	c.write(line + "\r\n")
	return c.expect(want)
}

// expectClosed checks that the server closed the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset") {
				return
			}
			c.t.Fatalf("waiting for close: %v", err)
		}
		c.t.Fatalf("waiting for close, got %q", l)
	}
}

// starttls runs STARTTLS and the handshake.
func (c *client) starttls() {
	c.t.Helper()
	c.cmd("STARTTLS", "220 2.0.0")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("tls handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

func (c *client) ehlo() string { c.t.Helper(); return c.cmd("EHLO client.test", "250 ") }

func (c *client) authPlain(user, pass, want string) {
	c.t.Helper()
	c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)), want)
}

// login returns a client authenticated on submission.
func login(t *testing.T, addr, user, pass string) *client {
	t.Helper()
	c := dialGreeted(t, addr)
	c.ehlo()
	c.starttls()
	c.ehlo()
	c.authPlain(user, pass, "235 ")
	return c
}

// --- a self-signed certificate ----------------------------------------------

type testCert struct {
	certFile, keyFile string
	reloader          *smtpd.CertReloader
	serial            int64
}

func newTestCert(t *testing.T, dir string) *testCert {
	t.Helper()
	c := &testCert{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	c.write(t, 1)
	r, err := smtpd.NewCertReloader(c.certFile, c.keyFile, 50*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.reloader = r
	return c
}

// write writes a fresh self-signed certificate with the given serial.
func (c *testCert) write(t *testing.T, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: testHost},
		DNSNames:     []string{testHost},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	c.serial = serial
}

// --- logs -----------------------------------------------------------------

// logSink collects the server's log lines and copies them to the test log
// until the test ends (a goroutine logging after that must not panic).
type logSink struct {
	t      *testing.T
	mu     sync.Mutex
	buf    strings.Builder
	closed bool
}

func newLogSink(t *testing.T) *logSink { return &logSink{t: t} }

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.closed && testing.Verbose() {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *logSink) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

func (l *logSink) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var _ = fmt.Sprintf

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

type tlsState = tls.ConnectionState

// tlsClient completes a handshake after a 220 to STARTTLS.
func tlsClient(t *testing.T, c *client) *tls.Conn {
	t.Helper()
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("tls handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
	return tc
}

func mustPrefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}
