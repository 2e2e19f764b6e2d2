package smtpd_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/facteur/facteur/mta/milter"
	"github.com/facteur/facteur/mta/smtpd"
)

// The milters of a listener, end to end: a real smtpd listener, a real
// database, spool and cleanup, and real milters — OpenDKIM (which skips
// when it is not installed, and fails then under FACTEUR_REQUIRE_PEERS=1)
// and an in-process go-milter server that can do every modification.

// withMilters sets the milters of one listener kind.
func withMilters(t *testing.T, kind smtpd.Kind, cfgs ...milter.Config) func(*smtpd.Deps) {
	t.Helper()
	c, err := milter.New(milter.Options{Milters: cfgs, Hostname: testHost, DaemonName: kind.String(),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return func(d *smtpd.Deps) { d.Milters = map[smtpd.Kind]*milter.Client{kind: c} }
}

// queueRow is what a test checks of a queued message's row.
type queueRow struct {
	sender, prepend, holdReason string
	held                        bool
	rcpts                       []string
}

func (w *world) queueRow(id string) queueRow {
	w.t.Helper()
	ctx := context.Background()
	var r queueRow
	if err := w.db.Pool.QueryRow(ctx, `SELECT sender, prepend, held, coalesce(hold_reason, '') FROM queue_message WHERE id = $1`,
		id).Scan(&r.sender, &r.prepend, &r.held, &r.holdReason); err != nil {
		w.t.Fatalf("queue row of %s: %v", id, err)
	}
	rows, err := w.db.Pool.Query(ctx, `SELECT address FROM queue_recipient WHERE queue_id = $1 ORDER BY address`, id)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			w.t.Fatal(err)
		}
		r.rcpts = append(r.rcpts, a)
	}
	return r
}

// spooled returns a queued message's spool file.
func (w *world) spooled(id string) string {
	w.t.Helper()
	f, err := w.sp.Open(id)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		w.t.Fatal(err)
	}
	return string(b)
}

// --- OpenDKIM ---------------------------------------------------------------

// needOpenDKIM returns the paths of opendkim and opendkim-genkey.
func needOpenDKIM(t *testing.T) (opendkim, genkey string) {
	t.Helper()
	find := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		if _, err := os.Stat("/usr/sbin/" + name); err == nil {
			return "/usr/sbin/" + name
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

// shortDir makes a directory under /tmp, short enough for a unix socket
// path (t.TempDir can be too long).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "fsmd")
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
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(zone), -1) {
		txt += m[1]
	}
	if !strings.Contains(txt, "p=") {
		t.Fatalf("no public key in %s", zone)
	}
	return filepath.Join(dir, selector+".private"), strings.ReplaceAll(txt, " ", "")
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

// startOpenDKIM runs opendkim in the foreground with conf (plus the socket
// settings) until the test ends, and returns its milter address.
func startOpenDKIM(t *testing.T, opendkim, dir, conf string) string {
	t.Helper()
	sock := filepath.Join(dir, "s.sock")
	conf += fmt.Sprintf("Socket local:%s\nBackground no\nSyslog no\nRequireSafeKeys no\nUMask 007\n", sock)
	confFile := filepath.Join(dir, "opendkim.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(opendkim, "-f", "-x", confFile)
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
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

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func lookupTXT(name, txt string) func(string) ([]string, error) {
	return func(domain string) ([]string, error) {
		if strings.EqualFold(strings.TrimSuffix(domain, "."), name) {
			return []string{txt}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: domain, IsNotFound: true}
	}
}

const milterMessage = "From: Alice <alice@example.test>\r\n" +
	"To: Bob <bob@example.test>\r\n" +
	"Subject: milter round trip\r\n" +
	"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n" +
	"Message-ID: <round-trip@example.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	"\r\n" +
	"this message goes through a milter.  Two spaces,\ta tab,   trailing space   \r\n"

// Submitted mail goes through OpenDKIM in sign mode: its DKIM-Signature is
// queued beside the spool file (prepend: the file is written once, and
// starts with facteur's Received:), and the message as delivery agents read
// it verifies with the published key (simple/simple: byte for byte).
func TestMilterOpenDKIMSignsSubmittedMail(t *testing.T) {
	opendkim, genkey := needOpenDKIM(t)
	dir := shortDir(t)
	keyFile, txt := genKey(t, genkey, dir, localDomain, "sel1")
	os.WriteFile(filepath.Join(dir, "keytable"), []byte("sel1._domainkey."+localDomain+" "+localDomain+":sel1:"+keyFile+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "signingtable"), []byte("*@"+localDomain+" sel1._domainkey."+localDomain+"\n"), 0o600)
	addr := startOpenDKIM(t, opendkim, dir, fmt.Sprintf("Mode s\nCanonicalization simple/simple\n"+
		"KeyTable refile:%s/keytable\nSigningTable refile:%s/signingtable\n", dir, dir))

	w := newWorld(t)
	r := w.start(smtpd.Options{}, withMilters(t, smtpd.Submission,
		milter.Config{Name: "opendkim", Addr: addr, CommandTimeout: 10 * time.Second}))
	c := login(t, r.addrs[smtpd.Submission], alice, alicePass)
	id := queueID(t, send(c, alice, bob, milterMessage, "250 "))

	row := w.queueRow(id)
	if !strings.HasPrefix(row.prepend, "DKIM-Signature:") || strings.Count(row.prepend, "\r\n") == 0 {
		t.Fatalf("prepend %q: want OpenDKIM's DKIM-Signature", row.prepend)
	}
	spooled := w.spooled(id)
	if !strings.HasPrefix(spooled, "Received: ") || strings.Contains(spooled, "DKIM-Signature") {
		t.Errorf("the spool file was rewritten:\n%s", spooled)
	}
	msg := w.delivered(id)
	verifs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: lookupTXT("sel1._domainkey."+localDomain, txt),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(verifs) != 1 || verifs[0].Err != nil || verifs[0].Domain != localDomain {
		for _, v := range verifs {
			t.Errorf("verification: domain %s: %v", v.Domain, v.Err)
		}
		t.Fatalf("the queued message does not verify:\n%s", msg)
	}
	if !strings.Contains(w.logs.String(), "add-header DKIM-Signature (opendkim)") &&
		!strings.Contains(w.logs.String(), "insert-header DKIM-Signature (opendkim)") {
		t.Errorf("the change is not logged:\n%s", w.logs)
	}
}

// Inbound mail goes through OpenDKIM in verify mode with On-BadSignature
// reject: a good signature is queued with OpenDKIM's
// Authentication-Results; the same message with its body changed gets
// OpenDKIM's 550 5.7.x at the end of DATA, and nothing is queued.
func TestMilterOpenDKIMRejectsBadSignature(t *testing.T) {
	opendkim, genkey := needOpenDKIM(t)
	dir := shortDir(t)
	keyFile, txt := genKey(t, genkey, dir, "sender.test", "sel1")
	os.WriteFile(filepath.Join(dir, "dns"), []byte("sel1._domainkey.sender.test "+txt+"\n"), 0o600)
	// The test client is 127.0.0.1, OpenDKIM's default internal host,
	// whose mail it would sign, not verify.
	addr := startOpenDKIM(t, opendkim, dir, fmt.Sprintf("Mode v\nOn-BadSignature reject\nInternalHosts 192.0.2.99\n"+
		"AuthservID opendkim.example.test\nTestDNSData file:%s/dns\n", dir))

	msg := strings.ReplaceAll(milterMessage, "alice@example.test", "someone@sender.test")
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, strings.NewReader(msg), &dkim.SignOptions{
		Domain: "sender.test", Selector: "sel1", Signer: readKey(t, keyFile),
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
	}); err != nil {
		t.Fatal(err)
	}

	w := newWorld(t)
	r := w.start(smtpd.Options{}, withMilters(t, smtpd.MX,
		milter.Config{Name: "opendkim", Addr: addr, CommandTimeout: 10 * time.Second}))
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	id := queueID(t, send(c, "someone@sender.test", bob, signed.String(), "250 "))
	if got := w.delivered(id); !strings.Contains(strings.ReplaceAll(got, "\r\n\t", " "), "opendkim.example.test; dkim=pass") {
		t.Errorf("good signature: no dkim=pass from OpenDKIM:\n%s", got)
	}

	queued, files := w.queued(), w.spoolFiles()
	tampered := strings.Replace(signed.String(), "Hello Bob,", "Hello Eve,", 1)
	reply := send(c, "someone@sender.test", bob, tampered, "550 5.7.")
	t.Logf("OpenDKIM's reply: %s", reply)
	if w.queued() != queued || w.spoolFiles() != files {
		t.Errorf("the rejected message left rows or files: %d→%d rows, %d→%d files", queued, w.queued(), files, w.spoolFiles())
	}
	// The session goes on.
	queueID(t, send(c, "someone@sender.test", bob, signed.String(), "250 "))
}

// --- an in-process milter ---------------------------------------------------

// scripted is a go-milter server milter whose answers the test chooses; it
// records what it saw.
type scripted struct {
	gomilter.NoOpMilter
	rec  *record
	rcpt func(to string) gomilter.Response
	eom  func(m *gomilter.Modifier) (gomilter.Response, error)
}

type record struct {
	mu     sync.Mutex
	events []string
	macros map[string]string
	body   []byte
}

func (r *record) add(ev string, m *gomilter.Modifier) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if r.macros == nil {
		r.macros = map[string]string{}
	}
	for k, v := range m.Macros {
		r.macros[k] = v
	}
}

func (r *record) snapshot() ([]string, map[string]string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events), maps.Clone(r.macros), string(r.body)
}

func (s *scripted) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("connect "+addr.String(), m)
	return gomilter.RespContinue, nil
}

func (s *scripted) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("helo "+name, m)
	return gomilter.RespContinue, nil
}

func (s *scripted) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("mail "+from, m)
	return gomilter.RespContinue, nil
}

func (s *scripted) RcptTo(to string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("rcpt "+to, m)
	if s.rcpt != nil {
		return s.rcpt(to), nil
	}
	return gomilter.RespContinue, nil
}

func (s *scripted) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.mu.Lock()
	s.rec.body = append(s.rec.body, chunk...)
	s.rec.mu.Unlock()
	return gomilter.RespContinue, nil
}

func (s *scripted) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("eom", m)
	if s.eom != nil {
		return s.eom(m)
	}
	return gomilter.RespAccept, nil
}

func (s *scripted) Abort(m *gomilter.Modifier) error {
	s.rec.add("abort", m)
	return nil
}

// serveMilter starts a go-milter server on a loopback port and returns its
// address.
func serveMilter(t *testing.T, proto scripted) (string, *record) {
	t.Helper()
	rec := &record{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter {
			m := proto
			m.rec = rec
			return &m
		},
		Actions: gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt | gomilter.OptRemoveRcpt |
			gomilter.OptChangeHeader | gomilter.OptQuarantine | gomilter.OptChangeFrom,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "inet:" + ln.Addr().String(), rec
}

// A milter that changes a header field, adds one, replaces the body,
// deletes a recipient and quarantines: the message is rewritten (the header
// as the milter left it, the new body), queued held with the milter's
// reason, for the recipient left; the milter saw the envelope, the header
// with facteur's Received:, the body and the queue id.
func TestMilterModifiesAndQuarantines(t *testing.T) {
	addr, rec := serveMilter(t, scripted{eom: func(m *gomilter.Modifier) (gomilter.Response, error) {
		for _, err := range []error{
			m.ChangeHeader(1, "Subject", "[checked] milter round trip"),
			m.AddHeader("X-Milter", "seen"),
			m.ReplaceBody([]byte("The body, replaced.\n")),
			m.DeleteRecipient(bob),
			m.Quarantine("virus found: EICAR"),
		} {
			if err != nil {
				return nil, err
			}
		}
		return gomilter.RespAccept, nil
	}})
	w := newWorld(t)
	r := w.start(smtpd.Options{}, withMilters(t, smtpd.MX, milter.Config{Name: "scripted", Addr: addr}))
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	c.cmd("MAIL FROM:<someone@sender.test> BODY=8BITMIME", "250 ")
	c.cmd("RCPT TO:<"+alice+">", "250 ")
	c.cmd("RCPT TO:<"+bob+"> NOTIFY=FAILURE", "250 ")
	c.cmd("DATA", "354 ")
	c.write(milterMessage + ".\r\n")
	id := queueID(t, c.expect("250 "))

	row := w.queueRow(id)
	if !row.held || row.holdReason != "virus found: EICAR" || row.prepend != "" || !slices.Equal(row.rcpts, []string{alice}) {
		t.Errorf("queue row %+v: want held for the virus, no prepend, alice only", row)
	}
	msg := w.spooled(id)
	hdr, body, _ := strings.Cut(msg, "\r\n\r\n")
	if !strings.HasPrefix(hdr, "Received: ") || !strings.Contains(hdr, "\r\nSubject: [checked] milter round trip\r\n") ||
		strings.Contains(hdr, "Subject: milter round trip") || !strings.HasSuffix(hdr, "\r\nX-Milter: seen") {
		t.Errorf("header:\n%s", hdr)
	}
	if body != "The body, replaced.\r\n" {
		t.Errorf("body %q", body)
	}
	if files := w.spoolFiles(); files != 1 {
		t.Errorf("%d spool files, want the rewritten one only", files)
	}

	events, macros, seenBody := rec.snapshot()
	want := []string{"connect 127.0.0.1", "helo client.test", "mail someone@sender.test", "rcpt " + alice, "rcpt " + bob, "eom"}
	if !slices.Equal(events, want) {
		t.Errorf("the milter saw %q, want %q", events, want)
	}
	if macros["i"] != id || macros["{daemon_name}"] != "smtp" || macros["j"] != testHost || macros["{client_addr}"] != "127.0.0.1" {
		t.Errorf("macros %v", macros)
	}
	if !strings.HasPrefix(seenBody, "Hello Bob,\r\n") {
		t.Errorf("the milter saw the body %q", seenBody)
	}
}

// Fields a milter only adds are queued in the prepend, the spool file as
// written first; an added recipient is expanded and queued.
func TestMilterAddsAreQueuedWithoutRewrite(t *testing.T) {
	addr, _ := serveMilter(t, scripted{eom: func(m *gomilter.Modifier) (gomilter.Response, error) {
		if err := m.AddHeader("X-Spam-Score", "1.5"); err != nil {
			return nil, err
		}
		if err := m.InsertHeader(0, "X-Top", "first"); err != nil {
			return nil, err
		}
		if err := m.AddRecipient(bob); err != nil {
			return nil, err
		}
		return gomilter.RespAccept, nil
	}})
	w := newWorld(t)
	r := w.start(smtpd.Options{}, withMilters(t, smtpd.MX, milter.Config{Name: "scripted", Addr: addr}))
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()
	id := queueID(t, send(c, "someone@sender.test", alice, milterMessage, "250 "))
	row := w.queueRow(id)
	if row.prepend != "X-Top: first\r\nX-Spam-Score: 1.5\r\n" || row.held || !slices.Equal(row.rcpts, []string{alice, bob}) {
		t.Errorf("queue row %+v", row)
	}
	if spooled := w.spooled(id); !strings.HasPrefix(spooled, "Received: ") || !strings.HasSuffix(spooled, milterMessage) {
		t.Errorf("the spool file is not the message as received:\n%s", spooled)
	}

	// The same with BDAT, whose Data runs in a goroutine of its own.
	c.cmd("MAIL FROM:<someone@sender.test>", "250 ")
	c.cmd("RCPT TO:<"+alice+">", "250 ")
	half := len(milterMessage) / 2
	c.write(fmt.Sprintf("BDAT %d\r\n%s", half, milterMessage[:half]))
	c.expect("250 ")
	c.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(milterMessage)-half, milterMessage[half:]))
	id = queueID(t, c.expect("250 "))
	if row := w.queueRow(id); row.prepend != "X-Top: first\r\nX-Spam-Score: 1.5\r\n" || !slices.Equal(row.rcpts, []string{alice, bob}) {
		t.Errorf("BDAT: queue row %+v", row)
	}
}

// A milter's verdicts are the replies: a rejected recipient (550 at RCPT)
// while the others go on, a tempfail at the end of DATA (451, nothing
// queued), a discard (250, nothing queued).
func TestMilterVerdicts(t *testing.T) {
	var mu sync.Mutex
	eom := gomilter.Response(gomilter.RespAccept)
	addr, _ := serveMilter(t, scripted{
		rcpt: func(to string) gomilter.Response {
			if strings.Trim(to, "<>") == bob {
				return gomilter.RespReject
			}
			return gomilter.RespContinue
		},
		eom: func(m *gomilter.Modifier) (gomilter.Response, error) {
			mu.Lock()
			defer mu.Unlock()
			return eom, nil
		},
	})
	setEOM := func(r gomilter.Response) {
		mu.Lock()
		eom = r
		mu.Unlock()
	}
	w := newWorld(t)
	r := w.start(smtpd.Options{}, withMilters(t, smtpd.MX, milter.Config{Name: "scripted", Addr: addr}))
	c := dialGreeted(t, r.addrs[smtpd.MX])
	c.ehlo()

	c.cmd("MAIL FROM:<someone@sender.test>", "250 ")
	c.cmd("RCPT TO:<"+bob+">", "550 5.7.1 ")
	c.cmd("RCPT TO:<"+alice+">", "250 ")
	c.cmd("DATA", "354 ")
	c.write(milterMessage + ".\r\n")
	id := queueID(t, c.expect("250 "))
	if row := w.queueRow(id); !slices.Equal(row.rcpts, []string{alice}) {
		t.Errorf("recipients %v", row.rcpts)
	}

	setEOM(gomilter.RespTempFail)
	send(c, "someone@sender.test", alice, milterMessage, "451 4.7.1 ")
	setEOM(gomilter.RespDiscard)
	queueID(t, send(c, "someone@sender.test", alice, milterMessage, "250 "))
	setEOM(gomilter.NewResponseStr(byte(gomilter.ActReplyCode), "554 5.7.0 Spam, go away"))
	send(c, "someone@sender.test", alice, milterMessage, "554 5.7.0 Spam, go away")
	if n, files := w.queued(), w.spoolFiles(); n != 1 || files != 1 {
		t.Errorf("%d messages and %d spool files queued, want the first only", n, files)
	}
}

// A milter that is down gets its default action, from the first HELO on:
// tempfail (451 4.7.1) and reject (554 5.7.1) refuse every HELO; accept
// carries on without it. A milter too slow at the end of a message gets it
// too. The milters are per listener: submission, without any, is not
// affected.
func TestMilterDownDefaultAction(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "inet:" + ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		action milter.DefaultAction
		helo   string
	}{
		{milter.ActionTempFail, "451 4.7.1 "},
		{milter.ActionReject, "554 5.7.1 "},
		{milter.ActionAccept, "250 "},
	} {
		t.Run(string(c.action), func(t *testing.T) {
			w := newWorld(t)
			r := w.start(smtpd.Options{}, withMilters(t, smtpd.MX,
				milter.Config{Name: "down", Addr: down, ConnectTimeout: time.Second, DefaultAction: c.action}))
			cl := dialGreeted(t, r.addrs[smtpd.MX])
			cl.cmd("EHLO client.test", c.helo)
			if c.action != milter.ActionAccept {
				cl.cmd("HELO client.test", c.helo)
				cl.cmd("MAIL FROM:<someone@sender.test>", "503 ")
				if w.queued() != 0 {
					t.Error("queued with the milter down")
				}
				sub := login(t, r.addrs[smtpd.Submission], alice, alicePass)
				queueID(t, send(sub, alice, bob, milterMessage, "250 "))
				return
			}
			queueID(t, send(cl, "someone@sender.test", alice, milterMessage, "250 "))
			if !strings.Contains(w.logs.String(), "milter failed, applying default action") {
				t.Errorf("the failure is not logged:\n%s", w.logs)
			}
		})
	}

	t.Run("timeout", func(t *testing.T) {
		addr, _ := serveMilter(t, scripted{eom: func(m *gomilter.Modifier) (gomilter.Response, error) {
			time.Sleep(2 * time.Second)
			return gomilter.RespAccept, nil
		}})
		w := newWorld(t)
		r := w.start(smtpd.Options{}, withMilters(t, smtpd.MX,
			milter.Config{Name: "slow", Addr: addr, CommandTimeout: 300 * time.Millisecond}))
		cl := dialGreeted(t, r.addrs[smtpd.MX])
		cl.ehlo()
		start := time.Now()
		send(cl, "someone@sender.test", alice, milterMessage, "451 4.7.1 ")
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("the reply took %v with a 300ms command timeout", d)
		}
		if w.queued() != 0 || w.spoolFiles() != 0 {
			t.Error("queued after the milter timed out")
		}
	})
}
