package smtp

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/foxcpp/go-mockdns"

	"github.com/facteur/facteur/mta/deliver"
)

// smtpSink starts Postfix's smtp-sink on 127.0.0.1 with the extra flags,
// saving each message in a file of the returned directory. It skips the test
// when smtp-sink is not installed, unless FACTEUR_REQUIRE_PEERS=1.
func smtpSink(t *testing.T, flags ...string) (port int, dumpDir string) {
	t.Helper()
	bin, err := exec.LookPath("smtp-sink")
	if err != nil {
		bin = "/usr/sbin/smtp-sink"
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("FACTEUR_REQUIRE_PEERS") == "1" {
				t.Fatal("smtp-sink (Postfix) is not installed and FACTEUR_REQUIRE_PEERS=1")
			}
			t.Skip("smtp-sink (Postfix) is not installed: apt-get install postfix")
		}
	}
	// smtp-sink drops privileges to -u when run as root; the dump directory
	// must be writable by that user and outside t.TempDir's 0700 parents.
	dumpDir, err = os.MkdirTemp("", "facteur-sink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dumpDir) })
	if err := os.Chmod(dumpDir, 0o777); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	args := []string{"-h", "sink.test", "-d", filepath.Join(dumpDir, "%Y%m%d%H%M%S.")}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	args = append(args, flags...)
	args = append(args, "127.0.0.1:"+itoa(port), "100")
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = testWriter{t}, testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+itoa(port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return port, dumpDir
}

func sinkDumps(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		files, err := filepath.Glob(filepath.Join(dir, "*"))
		if err != nil {
			t.Fatal(err)
		}
		out = out[:0]
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
		if len(out) > 0 {
			break
		}
	}
	return out
}

func sinkResolver() *mockdns.Resolver {
	return zones(map[string]mockdns.Zone{
		"example.test": {MX: []net.MX{mx("sink.test", 10)}},
		"sink.test":    {A: []string{"127.0.0.1"}},
	})
}

func TestDeliverToPostfixSmtpSink(t *testing.T) {
	port, dir := smtpSink(t)
	a := newAgent(t, port, sinkResolver(), nil)
	msg := newMessage(t, testBody)
	msg.DSNRet, msg.DSNEnvID = "FULL", "envid-1"
	rcpts := []deliver.Recipient{
		{Address: "bob@example.test", Orig: "robert@alias.test", DSNNotify: "SUCCESS"},
		{Address: "carol@example.test"},
	}
	r := deliverOK(t, a, "", msg, rcpts)
	for _, x := range r {
		wantStatus(t, x, deliver.Delivered, 250, "2.0.0")
		if x.Relay != "sink.test[127.0.0.1]:"+itoa(port) || x.RemoteMTA != "sink.test" || x.Relayed {
			t.Fatalf("result %+v", x)
		}
	}
	dumps := sinkDumps(t, dir)
	if len(dumps) != 1 {
		t.Fatalf("%d dumps", len(dumps))
	}
	d := dumps[0]
	for _, want := range []string{
		"X-Helo-Args: client.test\n",
		// smtp-sink does not announce SIZE, so none is sent.
		"X-Mail-Args: <alice@origin.test> BODY=8BITMIME RET=FULL ENVID=envid-1\n",
		"X-Rcpt-Args: <bob@example.test> NOTIFY=SUCCESS ORCPT=RFC822;robert@alias.test\n",
		"X-Rcpt-Args: <carol@example.test>\n",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("dump lacks %q:\n%s", want, d)
		}
	}
	// The message follows smtp-sink's own three-line Received header,
	// unstuffed and with LF line ends, and an empty line ends the dump.
	i := strings.Index(d, "(UTC)\n")
	if i < 0 {
		t.Fatalf("no smtp-sink Received header:\n%s", d)
	}
	if got, want := d[i+len("(UTC)\n"):], strings.ReplaceAll(testBody, "\r\n", "\n")+"\n"; got != want {
		t.Fatalf("message as received:\n%q\nwant\n%q", got, want)
	}
}

func TestPostfixSmtpSinkRejections(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flags   []string
		status  deliver.Status
		code    int
		enh     string
		inReply string
	}{
		{"hard reject at RCPT", []string{"-f", "RCPT", "-B", "550 5.1.1 No such user"}, deliver.Bounced, 550, "5.1.1", "No such user"},
		{"soft reject at RCPT", []string{"-r", "RCPT"}, deliver.Deferred, 450, "4.3.0", "Error: command failed"},
		{"hard reject at the final dot", []string{"-f", ".", "-B", "554 5.7.1 Spam"}, deliver.Bounced, 554, "5.7.1", "Spam"},
		{"disconnect after the final dot", []string{"-q", "."}, deliver.Deferred, 451, "4.4.2", "may be sent more than once"},
		{"421 at MAIL", []string{"-Q", "MAIL"}, deliver.Deferred, 421, "4.0.0", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port, _ := smtpSink(t, tc.flags...)
			a := newAgent(t, port, sinkResolver(), nil)
			r := deliverOK(t, a, "", newMessage(t, testBody), rcptsOf("bob@example.test", "carol@example.test"))
			for _, x := range r {
				wantStatus(t, x, tc.status, tc.code, tc.enh)
				if !strings.Contains(x.Reply.Text, tc.inReply) {
					t.Fatalf("reply %q, want %q in it", x.Reply.String(), tc.inReply)
				}
			}
		})
	}
}

// A message with 8-bit text goes as it is to a host that does not announce
// 8BITMIME (smtp-sink -8), without a BODY parameter.
func TestEightBitBodyToHostWithout8BITMIME(t *testing.T) {
	port, dir := smtpSink(t, "-8")
	a := newAgent(t, port, sinkResolver(), nil)
	body := "Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n"
	msg := newMessage(t, body)
	msg.BodyType = "8BITMIME"
	r := deliverOK(t, a, "", msg, rcptsOf("bob@example.test"))
	wantStatus(t, r[0], deliver.Delivered, 250, "2.0.0")
	d := sinkDumps(t, dir)
	if len(d) != 1 || !strings.Contains(d[0], "X-Mail-Args: <alice@origin.test>\n") || !strings.HasSuffix(d[0], "Grüße aus Köln\n\n") {
		t.Fatalf("dumps %q", d)
	}
}
