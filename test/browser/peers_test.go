package browser

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"html"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/facteur/facteur/internal/dovecottest"
	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/store/spool"
)

// uiClient posts the web UI's forms as a browser without script does:
// application/x-www-form-urlencoded, a cookie jar, redirects not followed.
type uiClient struct {
	t    *testing.T
	hc   *http.Client
	base string
}

func (w *world) uiClient(t *testing.T) *uiClient {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &uiClient{t: t, base: w.url, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// post sends a form and returns the status, the Location and the body.
func (c *uiClient) post(path string, form url.Values) (int, string, string) {
	c.t.Helper()
	res, err := c.hc.PostForm(c.base+path, form)
	if err != nil {
		c.t.Fatalf("POST %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("Location"), string(b)
}

// mustPost posts a form that must answer status.
func (c *uiClient) mustPost(path string, form url.Values, status int) (string, string) {
	c.t.Helper()
	st, loc, body := c.post(path, form)
	if st != status {
		c.t.Fatalf("POST %s: %d (Location %q), want %d: %s", path, st, loc, status, body)
	}
	return loc, body
}

// secretRE finds a secret shown once on a page.
var secretRE = regexp.MustCompile(`<code id="secret-value">([^<]+)</code>`)

// TestUIMailboxLogsInToSubmissionAndIMAP creates a domain, a mailbox and an
// app password through the web UI's forms, then logs in with them to a real
// submission server (mta/smtpd with MailboxAuth, AUTH PLAIN after STARTTLS)
// and to a real Dovecot configured with facteur's SQL (docs/dovecot): the
// same password works everywhere, and a wrong one nowhere.
func TestUIMailboxLogsInToSubmissionAndIMAP(t *testing.T) {
	w := startAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The web UI: the superadmin logs in, creates the domain and the mailbox.
	c := w.uiClient(t)
	if loc, _ := c.mustPost("/login", url.Values{"username": {rootUser}, "password": {rootPW}}, http.StatusSeeOther); loc != "/domains" {
		t.Fatalf("login went to %q", loc)
	}
	c.mustPost("/domains", url.Values{"name": {"Shop.Test"}, "active": {"off", "on"}}, http.StatusSeeOther)
	const password = "Correct-horse-42"
	loc, _ := c.mustPost("/mailboxes", url.Values{"local_part": {"Jane"}, "domain": {"shop.test"}, "name": {"Jane"},
		"password": {password}, "password2": {password}, "active": {"off", "on"}}, http.StatusSeeOther)
	if loc != "/mailboxes/jane@shop.test?done=created" {
		t.Fatalf("mailbox created at %q", loc)
	}
	_, body := c.mustPost("/mailboxes/jane@shop.test/app-passwords", url.Values{"ap_name": {"phone"}}, http.StatusOK)
	m := secretRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no app password on the page: %s", body)
	}
	appPassword := html.UnescapeString(m[1])

	// Submission: smtpd with the mailbox authenticator over the same tables.
	sub := startSubmission(t, w)
	auth := func(user, pass string) error {
		// STARTTLS first: submission offers AUTH only over TLS.
		cl, err := smtp.DialStartTLS(sub, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("submission STARTTLS: %v", err)
		}
		defer cl.Close()
		if err := cl.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
			return err
		}
		// Logged in as the mailbox: it may send as itself.
		if err := cl.Mail("jane@shop.test", nil); err != nil {
			t.Errorf("MAIL FROM after AUTH as %s: %v", user, err)
		}
		return cl.Quit()
	}
	for _, user := range []string{"jane@shop.test", "Jane@Shop.Test"} {
		if err := auth(user, password); err != nil {
			t.Errorf("submission AUTH as %s with the password set in the UI: %v", user, err)
		}
	}
	if err := auth("jane@shop.test#phone", appPassword); err != nil {
		t.Errorf("submission AUTH with the app password made in the UI: %v", err)
	}
	if err := auth("jane@shop.test", password+"x"); err == nil {
		t.Error("submission AUTH with a wrong password succeeded")
	}

	// IMAP: Dovecot with facteur's SQL passdb and userdb.
	dv := dovecottest.StartSQL(t, dovecottest.SQLOptions{DatabaseURL: w.db.URL})
	for _, login := range [][2]string{{"jane@shop.test", password}, {"jane@shop.test#phone", appPassword}} {
		s, err := dv.Login(ctx, login[0], login[1])
		if err != nil {
			t.Errorf("IMAP LOGIN as %s: %v", login[0], err)
			continue
		}
		if _, err := s.Cmd("SELECT INBOX"); err != nil {
			t.Errorf("IMAP SELECT INBOX as %s: %v", login[0], err)
		}
		s.Close()
	}
	if s, err := dv.Login(ctx, "jane@shop.test", "not-the-password"); err == nil {
		s.Close()
		t.Error("IMAP LOGIN with a wrong password succeeded")
	}

	// A password changed in the UI replaces the old one everywhere.
	const newPassword = "Battery-staple-43"
	c.mustPost("/mailboxes/jane@shop.test", url.Values{"password": {newPassword}, "password2": {newPassword}}, http.StatusSeeOther)
	if err := auth("jane@shop.test", newPassword); err != nil {
		t.Errorf("submission AUTH with the changed password: %v", err)
	}
	if err := auth("jane@shop.test", password); err == nil {
		t.Error("submission AUTH with the old password succeeded")
	}
	if s, err := dv.Login(ctx, "jane@shop.test", newPassword); err != nil {
		t.Errorf("IMAP LOGIN with the changed password: %v", err)
	} else {
		s.Close()
	}
}

// startSubmission runs a submission listener (STARTTLS, then AUTH) of
// mta/smtpd over w's database on 127.0.0.1:0, with a self-signed
// certificate, and returns its address.
func startSubmission(t *testing.T, w *world) string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	res := lookups.New(w.st, lookups.Options{Hostname: "mx.shop.test", CacheTTL: -1})
	cl := cleanup.New(w.st, sp, res, cleanup.Options{Hostname: "mx.shop.test", Node: "test"}, log)
	certFile, keyFile := selfSignedCert(t)
	cr, err := smtpd.NewCertReloader(certFile, keyFile, 0, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := smtpd.New(smtpd.Options{Hostname: "mx.shop.test", ShutdownTimeout: time.Second, ReadTimeout: 30 * time.Second},
		smtpd.Deps{Cleanup: cl, Lookups: res, Auth: smtpd.NewMailboxAuth(w.st, w.hasher, 2, log), TLS: cr.TLSConfig(), Log: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, smtpd.Submission, ln); err != nil {
			t.Errorf("submission: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ln.Addr().String()
}

// selfSignedCert writes a certificate and key for mx.shop.test and
// returns their paths.
func selfSignedCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.shop.test"},
		DNSNames:     []string{"mx.shop.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
