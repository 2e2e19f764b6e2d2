package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/foxcpp/go-mockdns"
	"github.com/spf13/cobra"

	"github.com/facteur/facteur/store/storetest"
)

// checkPub is a DKIM public key as dkim_key stores it.
const checkPub = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEabc"

// checkEnv is a database with domains, directories, a certificate and a
// fake DNS, and runs `facteur check` with the fake resolver.
type checkEnv struct {
	t     *testing.T
	db    *storetest.DB
	cfg   *Config
	zones map[string]mockdns.Zone
	now   time.Time
}

func newCheckEnv(t *testing.T) *checkEnv {
	t.Helper()
	db := storetest.New(t)
	dir := t.TempDir()
	cfg := &Config{DatabaseURL: db.URL, Hostname: "mx1.example.test", SpoolDir: filepath.Join(dir, "spool"),
		MailRoot: filepath.Join(dir, "mail"), Listen: ListenConfig{SMTP: "127.0.0.1:2525"}}
	for _, d := range []string{cfg.SpoolDir, cfg.MailRoot} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg.TLS.CertFile, cfg.TLS.KeyFile = checkCert(t, dir, "mx1.example.test", time.Now().Add(90*24*time.Hour))
	cfg.applyDefaults()
	if _, err := db.Pool.Exec(context.Background(), `
INSERT INTO domain (name) VALUES ('example.test'), ('missing.test'), ('elsewhere.test'), ('byaddr.test'), ('badkey.test');
INSERT INTO domain (name, backup_mx) VALUES ('relay.test', true);
INSERT INTO domain (name, active) VALUES ('off.test', false);
INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('alias.test', 'example.test');
INSERT INTO dkim_key (domain, selector, algorithm, private_key, public_key) VALUES
  ('example.test', 's2026', 'ed25519-sha256', '-----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY-----', '`+checkPub+`'),
  ('missing.test', 's2026', 'ed25519-sha256', '-----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY-----', '`+checkPub+`'),
  ('badkey.test', 'sel', 'ed25519-sha256', '-----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY-----', '`+checkPub+`');
`); err != nil {
		t.Fatal(err)
	}
	good := func(mx string) mockdns.Zone {
		return mockdns.Zone{MX: []net.MX{{Host: mx, Pref: 10}}, TXT: []string{"v=spf1 mx -all", "google-site-verification=x"}}
	}
	zones := map[string]mockdns.Zone{
		"mx1.example.test.":              {A: []string{"192.0.2.10"}},
		"example.test.":                  good("mx1.example.test."),
		"s2026._domainkey.example.test.": {TXT: []string{"v=DKIM1; k=ed25519; p=" + checkPub[:20] + " " + checkPub[20:]}},
		"_dmarc.example.test.":           {TXT: []string{"v=DMARC1; p=reject; rua=mailto:dmarc@example.test"}},
		"alias.test.":                    good("mx1.example.test."),
		"_dmarc.alias.test.":             {TXT: []string{"v=DMARC1; p=none"}},
		"relay.test.":                    {MX: []net.MX{{Host: "mx.relay.test.", Pref: 10}, {Host: "mx1.example.test.", Pref: 20}}},
		"elsewhere.test.":                {MX: []net.MX{{Host: "mx.other.test.", Pref: 10}}, TXT: []string{"v=spf1 -all"}},
		"mx.other.test.":                 {A: []string{"198.51.100.1"}},
		"_dmarc.elsewhere.test.":         {TXT: []string{"v=DMARC1; p=none", "v=DMARC1; p=reject"}},
		"byaddr.test.":                   {MX: []net.MX{{Host: "mail.byaddr.test.", Pref: 5}}, TXT: []string{"v=spf1 ip4:192.0.2.0/24 ~all"}},
		"mail.byaddr.test.":              {A: []string{"192.0.2.10"}},
		"_dmarc.byaddr.test.":            {TXT: []string{"v=DMARC1; p=quarantine"}},
		"badkey.test.":                   good("mx1.example.test."),
		"sel._domainkey.badkey.test.":    {TXT: []string{"v=DKIM1; k=ed25519; p=AAAAotherkey"}},
		"_dmarc.badkey.test.":            {TXT: []string{"v=DMARC1; p=none"}},
		"missing.test.":                  {A: []string{"192.0.2.99"}},
	}
	return &checkEnv{t: t, db: db, cfg: cfg, zones: zones, now: time.Now()}
}

// checkCert writes a self-signed certificate for host, valid until notAfter.
func checkCert(t *testing.T, dir, host string, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// run runs `facteur check ARGS` with the fake resolver.
func (c *checkEnv) run(args ...string) (string, int) {
	c.t.Helper()
	cfg := *c.cfg
	a := &app{cfg: &cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer a.close()
	root := &cobra.Command{Use: "facteur", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().BoolVar(&a.jsonOut, "json", false, "")
	addCheckCommand(root, a, checkDeps{resolver: &mockdns.Resolver{Zones: c.zones}, now: func() time.Time { return c.now }})
	var out bytes.Buffer
	root.SetArgs(append([]string{"check"}, args...))
	root.SetOut(&out)
	root.SetErr(&out)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := root.ExecuteContext(ctx)
	code := 0
	if err != nil {
		code = exitFailure
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
	}
	return out.String(), code
}

// results runs check --json and returns its results by check name.
func (c *checkEnv) results(args ...string) (map[string]checkResult, int) {
	c.t.Helper()
	out, code := c.run(append([]string{"--json"}, args...)...)
	var rs []checkResult
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		c.t.Fatalf("%v\n%s", err, out)
	}
	m := map[string]checkResult{}
	for _, r := range rs {
		if _, dup := m[r.Check]; dup && r.Status == checkWarn {
			continue // a second line of the same check (a warning beside an ok)
		}
		m[r.Check] = r
	}
	return m, code
}

func (c *checkEnv) want(m map[string]checkResult, name, status, detail string, publish ...string) {
	c.t.Helper()
	r, ok := m[name]
	if !ok {
		c.t.Errorf("no check %q", name)
		return
	}
	if r.Status != status || !strings.Contains(r.Detail, detail) || strings.Join(r.Publish, "\n") != strings.Join(publish, "\n") {
		c.t.Errorf("%s = %s %q publish %q\nwant %s …%q… publish %q", name, r.Status, r.Detail, r.Publish, status, detail, publish)
	}
}

func TestCheckPassesWhenEverythingIsPublished(t *testing.T) {
	c := newCheckEnv(t)
	out, code := c.run("--min-free", "1M", "--domain", "example.test", "--domain", "alias.test", "--domain", "relay.test")
	if code != 0 {
		t.Fatalf("check: status %d\n%s", code, out)
	}
	for _, want := range []string{
		"ok    config ", "ok    database ", "ok    migrations ", "ok    spool ", "ok    mail root ", "ok    tls ",
		"ok    dns example.test MX          mx1.example.test (10) is this host",
		"ok    dns example.test SPF         v=spf1 mx -all passes for 192.0.2.10",
		"ok    dns example.test DKIM s2026  s2026._domainkey.example.test publishes the key",
		"ok    dns example.test DMARC       v=DMARC1; p=reject",
		"ok    dns relay.test MX            mx1.example.test (20) is this host",
		"skip  dns relay.test SPF           backup MX (relay) domain",
		"ok    dns alias.test MX ", "ok    dns alias.test DMARC ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckReportsMissingRecordsWithWhatToPublish(t *testing.T) {
	c := newCheckEnv(t)
	m, code := c.results("--min-free", "1M")
	if code != exitFailure {
		t.Errorf("status %d, want 1", code)
	}
	// Everything missing.
	c.want(m, "dns missing.test MX", checkFail, "no MX record", "missing.test. IN MX 10 mx1.example.test.")
	c.want(m, "dns missing.test SPF", checkFail, "no SPF record", `missing.test. IN TXT "v=spf1 mx a:mx1.example.test -all"`)
	c.want(m, "dns missing.test DKIM s2026", checkFail, "no DKIM record at s2026._domainkey.missing.test",
		`s2026._domainkey.missing.test. IN TXT "v=DKIM1; k=ed25519; p=`+checkPub+`"`)
	c.want(m, "dns missing.test DMARC", checkFail, "no DMARC record at _dmarc.missing.test",
		`_dmarc.missing.test. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@missing.test"`)
	// Present but wrong.
	c.want(m, "dns elsewhere.test MX", checkFail, "no MX points at this host: mx.other.test (10)", "elsewhere.test. IN MX 10 mx1.example.test.")
	c.want(m, "dns elsewhere.test SPF", checkFail, "v=spf1 -all gives fail for this host's address 192.0.2.10",
		`elsewhere.test. IN TXT "v=spf1 -all" (add a:mx1.example.test or ip4:192.0.2.10 before the all)`)
	c.want(m, "dns elsewhere.test DKIM", checkSkip, "no active signing key")
	c.want(m, "dns elsewhere.test DMARC", checkFail, "2 DMARC records")
	c.want(m, "dns badkey.test DKIM sel", checkFail, "publishes another key", `sel._domainkey.badkey.test. IN TXT "v=DKIM1; k=ed25519; p=`+checkPub+`"`)
	// An MX under another name with this host's address counts; SPF by
	// address passes.
	c.want(m, "dns byaddr.test MX", checkOK, "mail.byaddr.test (5) has this host's address 192.0.2.10")
	c.want(m, "dns byaddr.test SPF", checkOK, "passes for 192.0.2.10")
	c.want(m, "dns example.test DKIM s2026", checkOK, "publishes the key")
	if _, ok := m["dns off.test MX"]; ok {
		t.Error("an inactive domain was checked")
	}

	// The text output prints the records to publish under the failures.
	out, _ := c.run("--min-free", "1M", "--domain", "missing.test")
	for _, want := range []string{
		"FAIL  dns missing.test MX          no MX record\n", "publish: missing.test. IN MX 10 mx1.example.test.\n",
		"publish: _dmarc.missing.test. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@missing.test\"\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
	if _, code := c.run("--domain", "nosuch.test", "--min-free", "1M"); code != exitFailure {
		t.Error("an unknown --domain passed")
	}
}

func TestCheckWithoutTheDKIMTable(t *testing.T) {
	c := newCheckEnv(t)
	if _, err := c.db.Pool.Exec(context.Background(), "DROP TABLE dkim_key CASCADE"); err != nil {
		t.Fatal(err)
	}
	m, _ := c.results("--min-free", "1M", "--domain", "example.test")
	c.want(m, "dns example.test DKIM", checkSkip, "no dkim_key table")
	// The schema is now behind what this build expects? No: a dropped
	// table does not change the recorded version.
	c.want(m, "migrations", checkOK, "current")
}

func TestCheckFilesystemAndCertificate(t *testing.T) {
	c := newCheckEnv(t)
	// Near expiry: a warning, still a pass.
	c.now = time.Now().Add(80 * 24 * time.Hour)
	m, _ := c.results("--no-dns", "--min-free", "1M")
	c.want(m, "tls", checkWarn, "(in 9 days): renew it")
	c.want(m, "dns", checkSkip, "--no-dns")
	// Expired.
	c.now = time.Now().Add(100 * 24 * time.Hour)
	m, code := c.results("--no-dns", "--min-free", "1M")
	c.want(m, "tls", checkFail, "expired on")
	if code != exitFailure {
		t.Errorf("status %d with an expired certificate", code)
	}
	c.now = time.Now()
	// A certificate for another name; a key that does not match.
	dir := t.TempDir()
	c.cfg.TLS.CertFile, c.cfg.TLS.KeyFile = checkCert(t, dir, "other.example", time.Now().Add(90*24*time.Hour))
	m, _ = c.results("--no-dns", "--min-free", "1M")
	c.want(m, "tls", checkFail, "certificate is valid for other.example, not mx1.example.test")
	_, otherKey := checkCert(t, t.TempDir(), "mx1.example.test", time.Now().Add(time.Hour))
	c.cfg.TLS.KeyFile = otherKey
	m, _ = c.results("--no-dns", "--min-free", "1M")
	c.want(m, "tls", checkFail, "private key does not match public key")

	// Spool: missing, world-writable, readable by others, not enough room.
	spool := c.cfg.SpoolDir
	c.cfg.SpoolDir = filepath.Join(dir, "nosuch")
	m, _ = c.results("--no-dns", "--min-free", "1M")
	c.want(m, "spool", checkFail, "no such file or directory")
	c.cfg.SpoolDir = spool
	if err := os.Chmod(spool, 0o777); err != nil {
		t.Fatal(err)
	}
	m, _ = c.results("--no-dns", "--min-free", "1M")
	c.want(m, "spool", checkFail, "writable by every user")
	if err := os.Chmod(spool, 0o750); err != nil {
		t.Fatal(err)
	}
	m, _ = c.results("--no-dns", "--min-free", "1M")
	c.want(m, "spool", checkWarn, "readable by others than its owner")
	c.want(m, "mail root", checkOK, "writable, mode 0700")
	m, _ = c.results("--no-dns", "--min-free", "1000000T")
	c.want(m, "spool free", checkFail, "below the minimum")

	// Configuration and database.
	c.cfg.Hostname = "localhost"
	c.cfg.Listen.Submission = "587"
	m, _ = c.results("--no-dns", "--min-free", "1M")
	c.want(m, "config", checkFail, `hostname "localhost" is not a fully qualified domain name`)
	if !strings.Contains(m["config"].Detail, `listen.submission "587"`) {
		t.Errorf("config: %s", m["config"].Detail)
	}
	c.cfg.DatabaseURL = "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"
	m, _ = c.results("--min-free", "1M")
	c.want(m, "database", checkFail, "cannot connect")
	c.want(m, "dns", checkSkip, "no database")
}
