package cleanup_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/facteur/facteur/mta/cleanup"
	"github.com/facteur/facteur/mta/envelope"
)

// prependOf returns queue_message.prepend and size of a queued message.
func (e *env) prependOf(id string) (string, int64) {
	e.t.Helper()
	var p string
	var size int64
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT prepend, size FROM queue_message WHERE id = $1`, id).Scan(&p, &size); err != nil {
		e.t.Fatal(err)
	}
	return p, size
}

// A check sees the message as it is queued (Received: first, Message-ID:
// and Date: added) and what it returns is kept in prepend, counted in the
// size, never written into the spool file.
func TestCheckSeesQueuedMessageAndItsFieldsArePrepended(t *testing.T) {
	e := newEnv(t, nil)
	var seen string
	m := &cleanup.Message{
		Envelope: envelope.Envelope{Sender: "alice@example.com", Recipients: rcpts("bob@example.com")},
		Client:   cleanup.Client{Addr: "192.0.2.10", Helo: "pc", Protocol: "ESMTPSA", AuthUser: "alice@example.com", Submission: true},
		Check: func(ctx context.Context, r io.Reader) (string, error) {
			b, err := io.ReadAll(r)
			seen = string(b)
			return "X-Checked: yes\r\n\tfolded\r\n", err
		},
	}
	id, _, err := e.enqueue(m, "From: alice@example.com\r\nSubject: hi\r\n\r\nbody\r\n")
	if err != nil {
		t.Fatal(err)
	}
	spooled := e.readSpool(id)
	if seen != spooled {
		t.Fatalf("the check saw\n%q\nthe spool holds\n%q", seen, spooled)
	}
	if !strings.HasPrefix(seen, "Received: ") || !strings.Contains(seen, "Message-ID: <"+id+"@mx.example.com>\r\n") {
		t.Errorf("the check did not see the header fixes:\n%s", seen)
	}
	p, size := e.prependOf(id)
	if p != "X-Checked: yes\r\n\tfolded\r\n" || size != int64(len(p)+len(spooled)) {
		t.Errorf("prepend %q size %d; want the check's fields and %d", p, size, len(p)+len(spooled))
	}
	if strings.Contains(spooled, "X-Checked") {
		t.Error("the prepended field went into the spool file")
	}
}

// A check that stops reading early does not stall the copy, even for a
// message larger than every buffer on the way.
func TestCheckThatStopsEarlyDoesNotStall(t *testing.T) {
	e := newEnv(t, nil)
	m := &cleanup.Message{
		Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")},
		Client:   smtpClient(),
		Check: func(ctx context.Context, r io.Reader) (string, error) {
			var b [10]byte
			_, err := io.ReadFull(r, b[:])
			return "", err
		},
	}
	if _, _, err := e.enqueue(m, simpleMessage(3<<20)); err != nil {
		t.Fatal(err)
	}
}

// A check's refusal refuses the message: nothing is queued, the reply is the
// check's; an error without a reply is 451; malformed fields are 451 too.
func TestCheckRefusalQueuesNothing(t *testing.T) {
	for _, c := range []struct {
		name     string
		prepend  string
		err      error
		code     int
		enhanced string
	}{
		{"dmarc reject", "", envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 7, 1}, Text: "DMARC"}, 550, "5.7.1"},
		{"wrapped reply", "", errors.Join(envelope.LookupFailed(), errors.New("db down")), 451, "4.3.0"},
		{"plain error", "", errors.New("boom"), 451, "4.3.0"},
		{"empty line", "X-A: 1\r\n\r\nX-B: 2\r\n", nil, 451, "4.3.0"},
		{"bare LF", "X-A: 1\nX-B: 2\r\n", nil, 451, "4.3.0"},
		{"no line end", "X-A: 1", nil, 451, "4.3.0"},
		{"continuation first", " X-A: 1\r\n", nil, 451, "4.3.0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			m := &cleanup.Message{
				Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")},
				Client:   smtpClient(),
				Check: func(ctx context.Context, r io.Reader) (string, error) {
					io.Copy(io.Discard, r)
					return c.prepend, c.err
				},
			}
			_, r, err := e.enqueue(m, simpleMessage(1000))
			wantReply(t, err, c.code, c.enhanced)
			if !r.eof {
				t.Error("the message was not read to its end before the reply")
			}
			e.wantNothingQueued()
		})
	}
}

// Authentication-Results fields that claim this host, and every
// X-Facteur-Quarantine field, are removed from every message; other hosts'
// results are kept byte for byte (RFC 8601 5).
func TestForgedAuthenticationResultsAreRemoved(t *testing.T) {
	e := newEnv(t, nil)
	long := "Authentication-Results: mx.example.com;\r\n" + strings.Repeat("\tdkim=pass header.d=bank.example\r\n", 400)
	msg := "From: a@sender.test\r\n" +
		"Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=forged@bank.example\r\n" +
		"Authentication-Results: other.example (their own);\r\n\tdkim=pass header.d=sender.test\r\n" +
		"authentication-results :\r\n (comment) \"MX.EXAMPLE.COM\";\r\n dmarc=pass header.from=bank.example\r\n" +
		long +
		"X-Facteur-Quarantine: none\r\n" +
		"Authentication-Results: mx.example.com.evil.test; none\r\n" +
		"Subject: hello\r\n" +
		"\r\n" +
		"Authentication-Results: mx.example.com; in the body, untouched\r\n"
	m := &cleanup.Message{Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")}, Client: smtpClient()}
	id, _, err := e.enqueue(m, msg)
	if err != nil {
		t.Fatal(err)
	}
	got := e.readSpool(id)
	_, rest, _ := strings.Cut(got, "\r\n\tfor <bob@example.com>; ")
	_, rest, _ = strings.Cut(rest, "\r\n")
	want := "From: a@sender.test\r\n" +
		"Authentication-Results: other.example (their own);\r\n\tdkim=pass header.d=sender.test\r\n" +
		"Authentication-Results: mx.example.com.evil.test; none\r\n" +
		"Subject: hello\r\n" +
		"\r\n" +
		"Authentication-Results: mx.example.com; in the body, untouched\r\n"
	if rest != want {
		t.Fatalf("spooled after Received:\n%q\nwant\n%q", rest, want)
	}
	if !strings.Contains(e.logs.String(), "forged Authentication-Results removed") {
		t.Error("no log line for the removed fields")
	}
}

// fakeSigner records what SignCheck asks of a Signer, and signs when
// allowed, else refuses as dkimsign does by default.
type fakeSigner struct {
	calls   int
	domain  string
	allowed bool
}

func (f *fakeSigner) Sign(ctx context.Context, fromDomain string, allowed func(string) bool, msg io.Reader) (string, error) {
	f.calls++
	f.domain, f.allowed = fromDomain, allowed(fromDomain)
	if _, err := io.Copy(io.Discard, msg); err != nil {
		return "", err
	}
	if !f.allowed {
		return "", envelope.SenderNotOwned(fromDomain)
	}
	return "DKIM-Signature: v=1; d=" + fromDomain + "\r\n", nil
}

func TestSignCheckAsksForEveryFromAddress(t *testing.T) {
	mayUse := func(ctx context.Context, addr string) (bool, error) {
		switch addr {
		case "alice@example.com", "sales@example.com", "alice@other.example":
			return true, nil
		case "down@example.com":
			return false, errors.New("database down")
		}
		return false, nil
	}
	for _, c := range []struct {
		name, from string
		signed     string // the domain signed for, "" none
		code       int
		calls      int
	}{
		{"own address", "Alice <alice@example.com>", "example.com", 0, 1},
		{"two own addresses of one domain", "alice@example.com, sales@example.com", "example.com", 0, 1},
		{"another's address", "Bob <bob@example.com>", "", 553, 1},
		{"one of two is not ours", "alice@example.com, bob@example.com", "", 553, 1},
		{"several domains, all ours: unsigned", "alice@example.com, alice@other.example", "", 0, 0},
		{"no usable From: (cron's root): unsigned", "root (Cron Daemon)", "", 0, 0},
		{"lookup failure", "down@example.com", "", 451, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			s := &fakeSigner{}
			m := &cleanup.Message{
				Envelope: envelope.Envelope{Sender: "alice@example.com", Recipients: rcpts("bob@example.com")},
				Client:   cleanup.Client{Protocol: "local", LocalUser: "alice", Submission: true},
				Check:    cleanup.SignCheck(s, mayUse),
			}
			id, _, err := e.enqueue(m, "From: "+c.from+"\r\nSubject: x\r\n\r\nhi\r\n")
			if s.calls != c.calls {
				t.Errorf("Sign called %d times, want %d", s.calls, c.calls)
			}
			if c.code != 0 {
				wantReply(t, err, c.code, map[int]string{553: "5.7.1", 451: "4.3.0"}[c.code])
				e.wantNothingQueued()
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p, _ := e.prependOf(id)
			if want := map[bool]string{true: "DKIM-Signature: v=1; d=" + c.signed + "\r\n", false: ""}[c.signed != ""]; p != want {
				t.Errorf("prepend %q, want %q", p, want)
			}
		})
	}
}
