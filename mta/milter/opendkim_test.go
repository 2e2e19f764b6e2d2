package milter

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// The tests in this file run OpenDKIM (Debian's opendkim and
// opendkim-tools), a real libmilter filter: signing with a local key table,
// and verifying with On-BadSignature reject, its keys given by TestDNSData so
// that nothing leaves the machine. They skip when OpenDKIM is not installed,
// and fail then when FACTEUR_REQUIRE_PEERS=1 (CI).

// needOpenDKIM returns the paths of opendkim and opendkim-genkey.
func needOpenDKIM(t *testing.T) (opendkim, genkey string) {
	t.Helper()
	find := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		if p := "/usr/sbin/" + name; fileExists(p) {
			return p
		}
		return ""
	}
	opendkim, genkey = find("opendkim"), find("opendkim-genkey")
	if opendkim == "" || genkey == "" {
		msg := "opendkim and opendkim-genkey are needed for the real-milter tests (apt-get install -y opendkim opendkim-tools)"
		if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
			t.Fatal(msg + ", and FACTEUR_REQUIRE_PEERS=1")
		}
		t.Skip(msg)
	}
	return opendkim, genkey
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// shortDir makes a directory under /tmp, whose path is short enough for a
// unix socket (108 bytes at most; t.TempDir can be longer).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "fodk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// genKey runs opendkim-genkey and returns the private key file and the
// public key's TXT record.
func genKey(t *testing.T, genkey, dir, domain, selector string) (keyFile, txt string) {
	t.Helper()
	out, err := exec.Command(genkey, "-D", dir, "-d", domain, "-s", selector, "-b", "2048").CombinedOutput()
	if err != nil {
		t.Fatalf("opendkim-genkey: %v: %s", err, out)
	}
	zone, err := os.ReadFile(filepath.Join(dir, selector+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	// sel._domainkey IN TXT ( "v=DKIM1; h=sha256; k=rsa; " "p=..." "..." )
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(zone), -1) {
		txt += m[1]
	}
	if !strings.Contains(txt, "p=") {
		t.Fatalf("no public key in %s", zone)
	}
	return filepath.Join(dir, selector+".private"), txt
}

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startOpenDKIM writes conf (plus the socket and foreground settings) and
// runs opendkim in the foreground until the test ends. It returns the
// milter address.
func startOpenDKIM(t *testing.T, opendkim, dir, conf string) string {
	t.Helper()
	sock := filepath.Join(dir, "s.sock")
	conf += fmt.Sprintf("Socket local:%s\nBackground no\nSyslog no\nRequireSafeKeys no\nUMask 007\n", sock)
	confFile := filepath.Join(dir, "opendkim.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(opendkim, "-f", "-x", confFile)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return "unix:" + sock
		}
		select {
		case <-exited:
			t.Fatalf("opendkim exited: %s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("opendkim did not listen on %s: %s", sock, out.String())
		}
	}
}

// lookupTXT is a fake DNS with one DKIM key record.
func lookupTXT(name, txt string) func(string) ([]string, error) {
	return func(domain string) ([]string, error) {
		if strings.EqualFold(strings.TrimSuffix(domain, "."), name) {
			return []string{txt}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: domain, IsNotFound: true}
	}
}

const dkimMessage = "Received: from client.example.org ([127.0.0.1]) by mx.example.org\r\n" +
	"\twith ESMTPSA id 4XyZ; Sat, 21 Nov 2026 10:00:00 +0000\r\n" +
	"From: Alice <alice@example.org>\r\n" +
	"To: Bob <bob@example.net>\r\n" +
	"Subject: milter round trip\r\n" +
	"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n" +
	"Message-ID: <round-trip@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	"\r\n" +
	"this message goes through OpenDKIM.  Two spaces,\ta tab,   trailing space   \r\n" +
	"\r\n" +
	"\r\n"

// runMessage runs a whole SMTP transaction through the session and returns
// the result and the message with its changes applied.
func runMessage(t *testing.T, c *Client, client netip.Addr, msg string) (*Result, []byte) {
	t.Helper()
	ctx := context.Background()
	s := c.NewSession(nil, nil)
	defer s.Close()
	for _, v := range []Verdict{
		s.Connect(ctx, "client.example.org", client, 54321),
		s.Helo(ctx, "client.example.org"),
		s.Mail(ctx, "alice@example.org", nil),
		s.Rcpt(ctx, "bob@example.net", nil),
		s.Data(ctx),
	} {
		if v.Decision != Continue {
			t.Fatalf("envelope verdict %+v", v)
		}
	}
	s.SetMacro("i", "4XyZ")
	hdr, body := splitMessage(msg)
	res, err := s.Message(ctx, hdr, body)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if res.Decision == Continue {
		rcpts, err := res.Apply(&out, hdr, body, []string{"bob@example.net"})
		if err != nil {
			t.Fatal(err)
		}
		if len(rcpts) != 1 {
			t.Errorf("recipients %q", rcpts)
		}
	}
	return res, out.Bytes()
}

// TestOpenDKIMSigns runs a message from the signing domain through OpenDKIM
// in sign-only mode: the result adds a DKIM-Signature header that an
// independent verifier (go-msgauth) accepts with the published key. With
// simple/simple canonicalization the signature also proves that the header
// fields went to the milter, and came back, byte for byte.
func TestOpenDKIMSigns(t *testing.T) {
	opendkim, genkey := needOpenDKIM(t)
	for _, canon := range []string{"relaxed/relaxed", "simple/simple"} {
		t.Run(strings.ReplaceAll(canon, "/", "-"), func(t *testing.T) {
			dir := shortDir(t)
			keyFile, txt := genKey(t, genkey, dir, "example.org", "sel1")
			os.WriteFile(filepath.Join(dir, "keytable"), []byte("sel1._domainkey.example.org example.org:sel1:"+keyFile+"\n"), 0o600)
			os.WriteFile(filepath.Join(dir, "signingtable"), []byte("*@example.org sel1._domainkey.example.org\n"), 0o600)
			addr := startOpenDKIM(t, opendkim, dir, fmt.Sprintf("Mode s\nCanonicalization %s\n"+
				"KeyTable refile:%s/keytable\nSigningTable refile:%s/signingtable\n", canon, dir, dir))

			c := newClient(t, Config{Name: "opendkim", Addr: addr, CommandTimeout: 10 * time.Second})
			res, out := runMessage(t, c, netip.MustParseAddr("127.0.0.1"), dkimMessage)
			if res.Decision != Continue {
				t.Fatalf("verdict %+v", res.Verdict)
			}
			var sig *Change
			for i, ch := range res.Changes {
				if strings.EqualFold(ch.Name, "DKIM-Signature") && (ch.Kind == AddHeader || ch.Kind == InsertHeader) {
					sig = &res.Changes[i]
				}
			}
			if sig == nil || sig.Milter != "opendkim" {
				t.Fatalf("no DKIM-Signature added: %+v", res.Changes)
			}
			if !strings.HasSuffix(string(out), "\r\n\r\n"+dkimMessage[strings.Index(dkimMessage, "\r\n\r\n")+4:]) {
				t.Errorf("body changed:\n%s", out)
			}
			verifs, err := dkim.VerifyWithOptions(bytes.NewReader(out), &dkim.VerifyOptions{
				LookupTXT: lookupTXT("sel1._domainkey.example.org", txt),
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(verifs) != 1 || verifs[0].Err != nil || verifs[0].Domain != "example.org" {
				for _, v := range verifs {
					t.Errorf("verification: domain %s: %v", v.Domain, v.Err)
				}
				t.Fatalf("signed message does not verify:\n%s", out)
			}
		})
	}
}

// TestOpenDKIMRejectsBadSignature runs OpenDKIM as a verifier with
// On-BadSignature reject and its key from TestDNSData: a message signed with
// that key passes (OpenDKIM adds Authentication-Results), the same message
// with its body changed is rejected with OpenDKIM's reply.
func TestOpenDKIMRejectsBadSignature(t *testing.T) {
	opendkim, genkey := needOpenDKIM(t)
	dir := shortDir(t)
	keyFile, txt := genKey(t, genkey, dir, "example.org", "sel1")
	txt = strings.ReplaceAll(txt, " ", "")
	os.WriteFile(filepath.Join(dir, "dns"), []byte("sel1._domainkey.example.org "+txt+"\n"), 0o600)
	addr := startOpenDKIM(t, opendkim, dir, fmt.Sprintf("Mode v\nOn-BadSignature reject\n"+
		"AuthservID mx.example.net\nTestDNSData file:%s/dns\n", dir))

	key := readKey(t, keyFile)
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, strings.NewReader(dkimMessage), &dkim.SignOptions{
		Domain: "example.org", Selector: "sel1", Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
	}); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, Config{Name: "opendkim", Addr: addr, CommandTimeout: 10 * time.Second})
	remote := netip.MustParseAddr("192.0.2.10") // not an InternalHosts address: verify

	res, out := runMessage(t, c, remote, signed.String())
	if res.Decision != Continue {
		t.Fatalf("good signature: verdict %+v", res.Verdict)
	}
	if ar, _ := ParseHeader(out).Get("Authentication-Results"); !strings.Contains(ar, "dkim=pass") {
		t.Errorf("good signature: Authentication-Results %q\n%s", ar, out)
	}

	tampered := strings.Replace(signed.String(), "Hello Bob,", "Hello Eve,", 1)
	res, _ = runMessage(t, c, remote, tampered)
	if res.Decision != Reject || !res.Reply.Permanent() || res.Milter != "opendkim" || res.Modified() {
		t.Fatalf("bad signature: result %+v", res)
	}
	t.Logf("OpenDKIM rejected the tampered message: %s", res.Reply)
}

func readKey(t *testing.T, file string) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("no PEM in %s", file)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}
