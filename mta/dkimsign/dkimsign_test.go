package dkimsign_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/facteur/facteur/mta/dkimsign"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/storetest"
)

// Keys are generated once per test process: 2048-bit RSA takes a while.
var (
	keysOnce sync.Once
	rsaKey   dkimsign.Key
	edKey    dkimsign.Key
	keysErr  error
)

func testKeys(t *testing.T) (rsa, ed dkimsign.Key) {
	t.Helper()
	keysOnce.Do(func() {
		rsaKey, keysErr = dkimsign.Generate("rsa")
		if keysErr == nil {
			edKey, keysErr = dkimsign.Generate("ed25519")
		}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return rsaKey, edKey
}

// setup returns a store with two customers' domains, each with its own key.
func setup(t *testing.T) (*store.Store, context.Context) {
	t.Helper()
	db := storetest.New(t)
	st := store.New(db.Pool)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if _, err := db.Pool.Exec(ctx, `INSERT INTO domain (name) VALUES ('a.example'), ('b.example'), ('nokey.example')`); err != nil {
		t.Fatal(err)
	}
	rk, ek := testKeys(t)
	for _, k := range []store.DKIMKey{
		{Domain: "a.example", Selector: "sa", Algorithm: rk.Algorithm, PrivateKey: rk.PrivatePEM, PublicKey: rk.PublicKey, Active: true},
		{Domain: "b.example", Selector: "sb", Algorithm: ek.Algorithm, PrivateKey: ek.PrivatePEM, PublicKey: ek.PublicKey, Active: true},
	} {
		if _, err := st.CreateDKIMKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	return st, ctx
}

func message(from string) string {
	return "From: Someone <" + from + ">\r\n" +
		"To: rcpt@remote.example\r\n" +
		"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a long subject that\r\n  continues on a folded line\r\n" +
		"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <1@a.example>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"X-Not-Signed: yes\r\n" +
		"\r\n" +
		"Hello,  with   spaces \t\r\n\r\nand a trailing empty line.\r\n\r\n\r\n"
}

// customerA is the permission check of an identity of customer A.
func customerA(d string) bool { return d == "a.example" }

// pythonDKIM returns a python3 interpreter that has python3-dkim, or skips
// (fails with FACTEUR_REQUIRE_PEERS=1).
func pythonDKIM(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import dkim").Run() == nil {
			return p
		}
	}
	msg := "python3-dkim is not installed (apt-get install -y python3-dkim): the independent DKIM verifier is missing"
	if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// independentVerify verifies every signature of each message with
// python3-dkim, given the published record, in one run of the interpreter.
func independentVerify(t *testing.T, name, record string, msgs ...string) []bool {
	t.Helper()
	py := pythonDKIM(t)
	args := []string{"testdata/dkimverify.py", name, record}
	dir := t.TempDir()
	for i, m := range msgs {
		f := filepath.Join(dir, fmt.Sprintf("msg%d.eml", i))
		if err := os.WriteFile(f, []byte(m), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, f)
	}
	cmd := exec.Command(py, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimverify.py: %v\n%s", err, stderr.String())
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(msgs) {
		t.Fatalf("dkimverify.py printed %q", out)
	}
	res := make([]bool, len(msgs))
	for i, l := range lines {
		res[i] = l == "pass"
	}
	return res
}

// opendkimVerify verifies each message with the OpenDKIM filter in its
// test mode (libopendkim, another independent implementation), the key
// record given as test DNS data.
func opendkimVerify(t *testing.T, name, record string, msgs ...string) []bool {
	t.Helper()
	bin, err := exec.LookPath("opendkim")
	if err != nil {
		for _, p := range []string{"/usr/sbin/opendkim", "/sbin/opendkim"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		msg := "opendkim is not installed (apt-get install -y opendkim): the OpenDKIM verifier is missing"
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	dns := filepath.Join(dir, "dns")
	conf := filepath.Join(dir, "opendkim.conf")
	if err := os.WriteFile(dns, []byte(name+" "+record+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("Mode v\nSyslog no\nTestDNSData file:"+dns+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := make([]bool, len(msgs))
	for i, m := range msgs {
		f := filepath.Join(dir, fmt.Sprintf("msg%d.eml", i))
		if err := os.WriteFile(f, []byte(m), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "-x", conf, "-t", f).CombinedOutput()
		if err != nil {
			t.Fatalf("opendkim -t: %v\n%s", err, out)
		}
		res[i] = strings.Contains(string(out), ") succeeded")
	}
	return res
}

func TestSignedMailVerifiesWithIndependentVerifiers(t *testing.T) {
	st, ctx := setup(t)
	s := dkimsign.New(st, dkimsign.Options{})
	for _, c := range []struct {
		domain, selector string
	}{{"a.example", "sa"}, {"b.example", "sb"}} {
		t.Run(c.domain, func(t *testing.T) {
			msg := message("user@" + c.domain)
			h, err := s.Sign(ctx, c.domain, func(d string) bool { return d == c.domain }, strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(h, "DKIM-Signature: ") || !strings.HasSuffix(h, "\r\n") ||
				!strings.Contains(h, "c=relaxed/relaxed") || !strings.Contains(h, "d="+c.domain) || !strings.Contains(h, "s="+c.selector) {
				t.Fatalf("signature field %q", h)
			}
			k, err := st.GetDKIMKey(ctx, c.domain, c.selector)
			if err != nil {
				t.Fatal(err)
			}
			signed := h + msg
			// A changed body must not verify (the verifier is not a
			// yes-man), nor an added From: (From: is oversigned).
			tampered := strings.Replace(signed, "Hello,", "Hullo,", 1)
			added := h + "From: evil@" + c.domain + "\r\n" + msg
			res := independentVerify(t, k.DNSName, k.DNSRecord, signed, tampered, added)
			if !res[0] {
				t.Fatalf("python3-dkim does not verify facteur's signature:\n%s", signed)
			}
			if res[1] || res[2] {
				t.Fatalf("python3-dkim verifies a tampered message (body %v, From: %v)", res[1], res[2])
			}
			res = opendkimVerify(t, k.DNSName, k.DNSRecord, signed, tampered)
			if !res[0] || res[1] {
				t.Fatalf("OpenDKIM: signed %v, tampered %v:\n%s", res[0], res[1], signed)
			}
			// And go-msgauth agrees.
			v, err := dkim.VerifyWithOptions(strings.NewReader(signed), &dkim.VerifyOptions{
				LookupTXT: func(string) ([]string, error) { return []string{k.DNSRecord}, nil }})
			if err != nil || len(v) != 1 || v[0].Err != nil {
				t.Fatalf("go-msgauth: %v %+v", err, v)
			}
		})
	}
}

func TestCustomerANeverGetsCustomerBSignature(t *testing.T) {
	st, ctx := setup(t)
	reject := dkimsign.New(st, dkimsign.Options{Unauthorized: dkimsign.Reject})
	unsigned := dkimsign.New(st, dkimsign.Options{Unauthorized: dkimsign.SendUnsigned})

	cases := []struct {
		name, fromDomain, msg string
	}{
		{"From: of B, declared B", "b.example", message("ceo@b.example")},
		{"From: of B, declared A", "a.example", message("ceo@b.example")},
		{"From: of B in upper case", "b.example", message("ceo@B.EXAMPLE")},
		{"a second From: of B", "a.example", "From: me@a.example\r\nFrom: ceo@b.example\r\n\r\nbody\r\n"},
		{"From: with both domains", "a.example", "From: me@a.example, ceo@b.example\r\n\r\nbody\r\n"},
		{"no From:", "a.example", "Subject: x\r\n\r\nbody\r\n"},
		{"unparseable From:", "a.example", "From: <<<@>>>\r\n\r\nbody\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := reject.Sign(ctx, c.fromDomain, customerA, strings.NewReader(c.msg))
			var r envelope.Reply
			if h != "" || !errors.As(err, &r) || r.Code != 553 || r.Enhanced != (envelope.Status{5, 7, 1}) {
				t.Fatalf("Reject policy: header %q, error %v", h, err)
			}
			h, err = unsigned.Sign(ctx, c.fromDomain, customerA, strings.NewReader(c.msg))
			if h != "" || err != nil {
				t.Fatalf("SendUnsigned policy: header %q, error %v", h, err)
			}
		})
	}

	// Without a permission check there is no signature at all.
	if h, err := unsigned.Sign(ctx, "b.example", nil, strings.NewReader(message("ceo@b.example"))); h != "" || !errors.Is(err, dkimsign.ErrNoPermissionCheck) {
		t.Fatalf("nil allowed: %q %v", h, err)
	}
	// A's own mail is signed with A's key only.
	h, err := reject.Sign(ctx, "A.Example", customerA, strings.NewReader(message("me@a.example")))
	if err != nil || !strings.Contains(h, "d=a.example") || !strings.Contains(h, "s=sa") {
		t.Fatalf("A's own mail: %q %v", h, err)
	}
	// A domain without a key goes unsigned.
	h, err = reject.Sign(ctx, "nokey.example", func(string) bool { return true }, strings.NewReader(message("x@nokey.example")))
	if h != "" || err != nil {
		t.Fatalf("domain without a key: %q %v", h, err)
	}
}

func TestRotationAndCacheInvalidation(t *testing.T) {
	st, ctx := setup(t)
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	s := dkimsign.New(st, dkimsign.Options{CacheTTL: time.Minute, Now: func() time.Time { return now }})
	sel := func() string {
		t.Helper()
		h, err := s.Sign(ctx, "a.example", customerA, strings.NewReader(message("me@a.example")))
		if err != nil {
			t.Fatal(err)
		}
		return h[strings.Index(h, " s=")+3 : strings.Index(h, " s=")+5]
	}
	if got := sel(); got != "sa" {
		t.Fatalf("selector %q", got)
	}
	// Rotation: a new selector, published inactive first, then activated.
	_, ek := testKeys(t)
	if _, err := st.CreateDKIMKey(ctx, store.DKIMKey{Domain: "a.example", Selector: "s2", Algorithm: ek.Algorithm,
		PrivateKey: ek.PrivatePEM, PublicKey: ek.PublicKey, Active: false}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetDKIMKeyActive(ctx, "a.example", "s2", true); err != nil {
		t.Fatal(err)
	}
	if got := sel(); got != "sa" {
		t.Fatalf("the cache was bypassed: %q", got)
	}
	s.Invalidate()
	if got := sel(); got != "s2" {
		t.Fatalf("after Invalidate: %q", got)
	}
	// The TTL ends a stale entry too.
	if _, err := st.SetDKIMKeyActive(ctx, "a.example", "s2", false); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if got := sel(); got != "sa" {
		t.Fatalf("after the TTL: %q", got)
	}
}

func TestMismatchedKeyIsAnErrorNotABadSignature(t *testing.T) {
	st, ctx := setup(t)
	_, ek := testKeys(t)
	other, err := dkimsign.Generate("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateDKIMKey(ctx, store.DKIMKey{Domain: "nokey.example", Selector: "x", Algorithm: ek.Algorithm,
		PrivateKey: other.PrivatePEM, PublicKey: ek.PublicKey, Active: true}); err != nil {
		t.Fatal(err)
	}
	s := dkimsign.New(st, dkimsign.Options{})
	h, err := s.Sign(ctx, "nokey.example", func(string) bool { return true }, strings.NewReader(message("x@nokey.example")))
	var r envelope.Reply
	if h != "" || !errors.Is(err, dkimsign.ErrKeyMismatch) || errors.As(err, &r) {
		t.Fatalf("%q %v", h, err)
	}
}

func TestGenerateAndParse(t *testing.T) {
	rk, ek := testKeys(t)
	if !strings.HasPrefix(rk.DNSRecord, "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA") {
		t.Fatalf("RSA record %q (want a 2048-bit SubjectPublicKeyInfo)", rk.DNSRecord)
	}
	if !strings.HasPrefix(ek.DNSRecord, "v=DKIM1; k=ed25519; p=") || len(ek.PublicKey) != 44 {
		t.Fatalf("Ed25519 record %q (want the raw 32-byte key)", ek.DNSRecord)
	}
	for _, k := range []dkimsign.Key{rk, ek} {
		_, p, err := dkimsign.ParsePrivateKey(k.PrivatePEM)
		if err != nil || p.PublicKey != k.PublicKey || p.Algorithm != k.Algorithm {
			t.Fatalf("parse: %+v %v", p, err)
		}
	}
	if _, err := dkimsign.Generate("dsa"); err == nil {
		t.Fatal("dsa generated")
	}
	if _, _, err := dkimsign.ParsePrivateKey("garbage"); err == nil {
		t.Fatal("garbage parsed")
	}
	z := dkimsign.ZoneRecord("sa._domainkey.a.example", rk.DNSRecord)
	if !strings.HasPrefix(z, "sa._domainkey.a.example. IN TXT ( \"v=DKIM1; k=rsa; p=") ||
		strings.Count(z, "\"") != 4 || strings.ReplaceAll(strings.ReplaceAll(z[strings.Index(z, "(")+1:len(z)-1], "\" \"", ""), "\"", "") != " "+rk.DNSRecord+" " {
		t.Fatalf("zone record %q", z)
	}
}

// A key made by opendkim-genkey (PKCS#1) signs, and the signature verifies
// with python3-dkim.
func TestOpenDKIMGeneratedKeySigns(t *testing.T) {
	gen, err := exec.LookPath("opendkim-genkey")
	if err != nil {
		msg := "opendkim-tools is not installed (apt-get install -y opendkim-tools)"
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	if out, err := exec.Command(gen, "-b", "2048", "-d", "nokey.example", "-s", "od", "-D", dir).CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v\n%s", err, out)
	}
	pemText, err := os.ReadFile(filepath.Join(dir, "od.private"))
	if err != nil {
		t.Fatal(err)
	}
	_, k, err := dkimsign.ParsePrivateKey(string(pemText))
	if err != nil {
		t.Fatal(err)
	}
	// The record opendkim-genkey wrote carries the same key.
	txt, _ := os.ReadFile(filepath.Join(dir, "od.txt"))
	if !bytes.Contains(bytes.ReplaceAll(bytes.ReplaceAll(txt, []byte("\"\n\t  \""), nil), []byte("\" \""), nil), []byte(k.PublicKey)) {
		t.Fatalf("public key %s not in\n%s", k.PublicKey, txt)
	}
	st, ctx := setup(t)
	if _, err := st.CreateDKIMKey(ctx, store.DKIMKey{Domain: "nokey.example", Selector: "od", Algorithm: k.Algorithm,
		PrivateKey: k.PrivatePEM, PublicKey: k.PublicKey, Active: true}); err != nil {
		t.Fatal(err)
	}
	msg := message("x@nokey.example")
	h, err := dkimsign.New(st, dkimsign.Options{}).Sign(ctx, "nokey.example", func(string) bool { return true }, strings.NewReader(msg))
	if err != nil || h == "" {
		t.Fatalf("%q %v", h, err)
	}
	if res := independentVerify(t, "od._domainkey.nokey.example", k.DNSRecord, h+msg); !res[0] {
		t.Fatalf("python3-dkim does not verify:\n%s", h+msg)
	}
}

func TestLongHeaderLinesAndLimit(t *testing.T) {
	st, ctx := setup(t)
	s := dkimsign.New(st, dkimsign.Options{MaxHeaderBytes: 64 << 10})
	// A header line longer than the reader's buffer, whose last fragment
	// is just CRLF, does not end the header.
	long := "From: me@a.example\r\nX-Long: " + strings.Repeat("x", 4096-len("X-Long: ")) + "\r\nSubject: after\r\n\r\nbody\r\n"
	h, err := s.Sign(ctx, "a.example", customerA, strings.NewReader(long))
	if err != nil || !strings.Contains(h, "Subject") {
		t.Fatalf("%q %v", h, err)
	}
	k, _ := st.GetDKIMKey(ctx, "a.example", "sa")
	v, err := dkim.VerifyWithOptions(strings.NewReader(h+long), &dkim.VerifyOptions{
		LookupTXT: func(string) ([]string, error) { return []string{k.DNSRecord}, nil }})
	if err != nil || len(v) != 1 || v[0].Err != nil {
		t.Fatalf("%v %+v", err, v)
	}
	huge := "From: me@a.example\r\nX-Huge: " + strings.Repeat("y", 70<<10) + "\r\n\r\nbody\r\n"
	var r envelope.Reply
	if h, err := s.Sign(ctx, "a.example", customerA, strings.NewReader(huge)); h != "" || err == nil || errors.As(err, &r) {
		t.Fatalf("a header over the limit: %q %v", h, err)
	}
}
