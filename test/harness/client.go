package harness

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Client is a raw SMTP client: it writes exactly the bytes it is given and
// reads replies line by line, so that tests can send what no well-behaved
// client would.
type Client struct {
	Conn net.Conn
	R    *bufio.Reader
}

// Dial connects to addr from the local address from ("" or an IP such as
// 127.0.0.7; the port is chosen by the kernel) within 5 s. The read and
// write deadline is 30 s from now.
func Dial(addr, from string) (*Client, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &Client{Conn: c, R: bufio.NewReader(c)}, nil
}

// MustDial is Dial that fails t, and closes the connection at cleanup.
func MustDial(t testing.TB, addr, from string) *Client {
	t.Helper()
	c, err := Dial(addr, from)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }

// Write sends raw bytes.
func (c *Client) Write(s string) error {
	_, err := io.WriteString(c.Conn, s)
	return err
}

// Reply reads one reply, all its lines, and returns them joined by "\n"
// without line ends; code is the code of its last line.
func (c *Client) Reply() (code int, text string, err error) {
	var lines []string
	for {
		l, err := c.R.ReadString('\n')
		if err != nil {
			return 0, strings.Join(append(lines, l), "\n"), err
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			if len(l) < 3 {
				return 0, strings.Join(lines, "\n"), fmt.Errorf("malformed reply line %q", l)
			}
			fmt.Sscanf(l[:3], "%d", &code)
			return code, strings.Join(lines, "\n"), nil
		}
	}
}

// Cmd sends one line (CRLF added) and reads the reply.
func (c *Client) Cmd(line string) (int, string, error) {
	if err := c.Write(line + "\r\n"); err != nil {
		return 0, "", err
	}
	return c.Reply()
}

// Expect reads one reply and fails t unless its last line starts with
// prefix ("250 ", "451 4.3.0").
func (c *Client) Expect(t testing.TB, prefix string) string {
	t.Helper()
	_, text, err := c.Reply()
	if err != nil {
		t.Fatalf("reading reply (want %q): got %q, %v", prefix, text, err)
	}
	last := text[strings.LastIndex(text, "\n")+1:]
	if !strings.HasPrefix(last, prefix) {
		t.Fatalf("reply %q, want %q", text, prefix)
	}
	return text
}

// MustCmd sends a line and checks the reply's prefix.
func (c *Client) MustCmd(t testing.TB, line, want string) string {
	t.Helper()
	if err := c.Write(line + "\r\n"); err != nil {
		t.Fatalf("write %q: %v", line, err)
	}
	return c.Expect(t, want)
}

// ExpectClosed checks that the server closes the connection within 5 s
// without saying anything more.
func (c *Client) ExpectClosed(t testing.TB) {
	t.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := c.R.ReadString('\n')
	if err == nil || l != "" {
		t.Fatalf("waiting for the server to close: got %q, %v", l, err)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("waiting for the server to close: %v", err)
	}
}

// StartTLS runs STARTTLS and the handshake (the certificate is not checked).
func (c *Client) StartTLS(t testing.TB) {
	t.Helper()
	c.MustCmd(t, "STARTTLS", "220 ")
	c.Handshake(t)
}

// Handshake makes the connection a TLS client connection (after a 220 to
// STARTTLS).
func (c *Client) Handshake(t testing.TB) {
	t.Helper()
	tc := tls.Client(c.Conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("tls handshake: %v", err)
	}
	c.Conn, c.R = tc, bufio.NewReader(tc)
}

// AuthPlain returns the AUTH PLAIN command line for authzid, authcid and
// password.
func AuthPlain(authzid, authcid, password string) string {
	return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte(authzid+"\x00"+authcid+"\x00"+password))
}

// Message returns a small message with the given Message-ID (with angle
// brackets) and subject, CRLF line ends, ending with CRLF (without the
// final dot).
func Message(from, to, msgID, subject string) string {
	return fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: %s\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\n\r\nbody of %s\r\n",
		from, to, subject, msgID, msgID)
}

// Outcome is what a client learnt about one message.
type Outcome int

// Outcomes of Send.
const (
	// NotSent: the transaction failed before the end of the data was sent.
	NotSent Outcome = iota
	// Rejected: the server answered the end of data with a 4xx or 5xx.
	Rejected
	// Unacknowledged: the end of data was sent but no reply came back (the
	// server died): the message may or may not be queued.
	Unacknowledged
	// Accepted: 250 after the end of data.
	Accepted
)

// Send runs one transaction on a greeted session: MAIL, RCPT for each
// recipient, DATA, the message and the final dot. It returns the outcome
// and every reply code it saw, for the callers that check codes.
func (c *Client) Send(from string, to []string, msg string) (Outcome, []int, error) {
	var codes []int
	step := func(line string, want int) error {
		code, text, err := c.Cmd(line)
		if err != nil {
			return err
		}
		codes = append(codes, code)
		if code != want {
			return fmt.Errorf("%s: %s", line, text)
		}
		return nil
	}
	if err := step("MAIL FROM:<"+from+">", 250); err != nil {
		return NotSent, codes, err
	}
	for _, r := range to {
		if err := step("RCPT TO:<"+r+">", 250); err != nil {
			return NotSent, codes, err
		}
	}
	if err := step("DATA", 354); err != nil {
		return NotSent, codes, err
	}
	if err := c.Write(msg + ".\r\n"); err != nil {
		// Some of it may have gone out: count it as unacknowledged.
		return Unacknowledged, codes, err
	}
	code, text, err := c.Reply()
	if err != nil {
		return Unacknowledged, codes, err
	}
	codes = append(codes, code)
	if code != 250 {
		return Rejected, codes, fmt.Errorf("end of data: %s", text)
	}
	return Accepted, codes, nil
}
