package abuse

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/smtpd"
	"github.com/facteur/facteur/test/harness"
)

// login opens a submission session from a fresh address, up to the point
// where AUTH may be sent.
func readyForAuth(t *testing.T, s *harness.Stack, from string) *harness.Client {
	t.Helper()
	c := harness.MustDial(t, s.Submission, from)
	c.Expect(t, "220 ")
	c.MustCmd(t, "EHLO client.test", "250 ")
	c.StartTLS(t)
	c.MustCmd(t, "EHLO client.test", "250 ")
	return c
}

// TestSASLAuthzidMustBeTheAuthcid: nobody may log in as themselves and act
// as someone else (RFC 4616 authzid).
func TestSASLAuthzidMustBeTheAuthcid(t *testing.T) {
	t.Parallel()
	s := harness.NewStack(t, harness.StackOptions{})
	cases := []struct {
		name, authzid, authcid, pass, want string
	}{
		{"authzid of another user", harness.Bob, harness.Alice, harness.AlicePass, "535 "},
		{"authzid of a stranger", "postmaster@example.test", harness.Alice, harness.AlicePass, "535 "},
		{"authzid with NUL tricks", harness.Bob + "\x00", harness.Alice, harness.AlicePass, "5"},
		{"empty authzid", "", harness.Alice, harness.AlicePass, "235 "},
		{"authzid equal to authcid", harness.Alice, harness.Alice, harness.AlicePass, "235 "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			countCase(t)
			c := readyForAuth(t, s, harness.NextIP())
			c.MustCmd(t, harness.AuthPlain(tc.authzid, tc.authcid, tc.pass), tc.want)
			if tc.want == "235 " {
				// Logged in as the authcid: may send as alice, not as bob.
				c.MustCmd(t, "MAIL FROM:<"+harness.Bob+">", "553 ")
				c.MustCmd(t, "MAIL FROM:<"+harness.Alice+">", "250 ")
			} else {
				c.MustCmd(t, "MAIL FROM:<"+harness.Bob+">", "530 ")
			}
		})
	}
}

// TestWrongPasswordsInBulk: a client guessing passwords gets 535 each time,
// then a growing delay before each further command, then 421 and is
// blocked, also on new connections; a client at another address is not
// slowed at all.
func TestWrongPasswordsInBulk(t *testing.T) {
	const delay = 100 * time.Millisecond
	s := harness.NewStack(t, harness.StackOptions{Smtpd: smtpd.Options{Limits: smtpd.Limits{
		ErrorsBeforeDelay: 3, ErrorDelay: delay, MaxErrorDelay: 8 * delay, ErrorLimit: 9}}})
	attacker := harness.NextIP()
	var took []time.Duration
	blocked := false
	t.Run("535 then delays then 421", func(t *testing.T) {
		countCase(t)
		c := readyForAuth(t, s, attacker)
		for i := 0; i < 20 && !blocked; i++ {
			user := harness.Alice
			if i%2 == 1 {
				user = fmt.Sprintf("nobody%d@example.test", i) // unknown users look the same
			}
			start := time.Now()
			code, text, err := c.Cmd(harness.AuthPlain("", user, "guess"+fmt.Sprint(i)))
			switch {
			case err != nil:
				t.Fatalf("attempt %d: %v", i+1, err)
			case code == 535:
				took = append(took, time.Since(start))
			case code == 421 && strings.HasPrefix(text, "421 4.7.0"):
				blocked = true
				c.ExpectClosed(t)
			default:
				t.Fatalf("attempt %d: %q", i+1, text)
			}
		}
		if !blocked {
			t.Fatalf("never blocked after %d failures", len(took))
		}
		for i, d := range took {
			if i < 3 && d >= delay {
				t.Errorf("failure %d was delayed (%s) before the threshold", i+1, d)
			}
			if i >= 4 && d < took[i-1]/2 {
				t.Errorf("delays do not grow: %v", took)
			}
		}
		if took[len(took)-1] < 2*delay {
			t.Errorf("the last delays stay short: %v", took)
		}
		t.Logf("535 replies took %v; then 421", took)
	})
	t.Run("blocked on a new connection", func(t *testing.T) {
		countCase(t)
		c := harness.MustDial(t, s.Submission, attacker)
		c.Expect(t, "421 4.7.0 ")
	})
	t.Run("another address is unaffected", func(t *testing.T) {
		countCase(t)
		start := time.Now()
		c := readyForAuth(t, s, harness.NextIP())
		c.MustCmd(t, harness.AuthPlain("", harness.Alice, harness.AlicePass), "235 ")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the good client took %s", d)
		}
	})
}
