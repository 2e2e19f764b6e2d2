package abuse

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/mta/deliver/pipe"
	"github.com/facteur/facteur/mta/queue"
	"github.com/facteur/facteur/test/harness"
)

// TestPipeTransportSenderWithShellMetacharacters delivers, through smtpd,
// cleanup, the queue manager and the pipe agent, messages whose envelope
// sender is full of shell syntax to a pipe transport that passes ${sender}
// to a command. The command must receive the sender as one argument,
// byte for byte, and no shell may ever interpret it: none of the marker
// files the payloads would create exists. A sender that looks like an
// option ("-oQ…") is refused rather than passed.
func TestPipeTransportSenderWithShellMetacharacters(t *testing.T) {
	t.Parallel()
	agent, err := pipe.New(pipe.Options{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// A directory the command's unprivileged user (nobody, as root) can
	// write in.
	dir, err := os.MkdirTemp("", "abuse-pipe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "record")
	// Writes each argument on its own line; "$@" is quoted, so the script
	// itself interprets nothing.
	if err := os.WriteFile(script, []byte("#!/bin/sh\nout=$1\nshift\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$out\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := harness.NewStack(t, harness.StackOptions{Agents: map[string]deliver.Agent{queue.TransportPipe: agent}})
	s.Exec(`INSERT INTO client_access (network, action) VALUES ('127.0.0.0/8', 'permit_relay')`)
	s.Exec(`INSERT INTO transport (key, nexthop) VALUES ('pipe.test', $1)`,
		"pipe:argv="+script+" "+dir+"/out.${queue_id} ${sender} ${recipient}")

	marker := func(n int) string { return filepath.Join(dir, fmt.Sprintf("pwned%d", n)) }
	senders := []string{
		`"$(touch ` + marker(1) + `)"@foreign.test`,
		"`touch${IFS}" + marker(2) + "`@foreign.test",
		`"a;touch ` + marker(3) + `;"@foreign.test`,
		"a|touch${IFS}" + marker(4) + "@foreign.test",
		"a&&touch${IFS}" + marker(5) + "@foreign.test",
		`"a > ` + marker(6) + `"@foreign.test`,
		"$HOME'$PATH'@foreign.test",
		`"a\"b'c\\d"@foreign.test`,
	}
	ctx := context.Background()
	for i, snd := range senders {
		t.Run(snd, func(t *testing.T) {
			countCase(t)
			c := s.Greeted(t, s.MX)
			c.MustCmd(t, "EHLO client.test", "250 ")
			id := fmt.Sprintf("<pipe%d@client.test>", i)
			if out, _, err := c.Send(snd, []string{"user@pipe.test"}, harness.Message("x@foreign.test", "user@pipe.test", id, "pipe")); out != harness.Accepted {
				t.Fatalf("send from %s: %v", snd, err)
			}
			var qid, stored string
			// accepted_log: the message may be delivered and gone from the
			// queue tables already.
			if err := s.DB.Pool.QueryRow(ctx, `SELECT queue_id, sender FROM accepted_log WHERE message_id = $1`, id).Scan(&qid, &stored); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out."+qid)
			harness.WaitFor(t, "the pipe delivery", 20*time.Second, func() bool {
				_, err := os.Stat(out)
				return err == nil
			})
			var args []string
			harness.WaitFor(t, "the command's output", 5*time.Second, func() bool {
				b, _ := os.ReadFile(out)
				args = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
				return len(args) == 2
			})
			if args[0] != stored || args[1] != "user@pipe.test" {
				t.Errorf("argv %q, want [%q %q]", args, stored, "user@pipe.test")
			}
		})
	}
	t.Run("option-like sender", func(t *testing.T) {
		countCase(t)
		c := s.Greeted(t, s.MX)
		c.MustCmd(t, "EHLO client.test", "250 ")
		id := "<pipe-option@client.test>"
		code, text, err := c.Cmd("MAIL FROM:<-oQ" + dir + "/x@foreign.test>")
		if err != nil {
			t.Fatal(err)
		}
		if code != 250 {
			t.Logf("MAIL refused: %q", text)
			return
		}
		c.MustCmd(t, "RCPT TO:<user@pipe.test>", "250 ")
		c.MustCmd(t, "DATA", "354 ")
		c.Write(harness.Message("x@foreign.test", "user@pipe.test", id, "pipe") + ".\r\n")
		c.Expect(t, "250 ")
		var qid string
		if err := s.DB.Pool.QueryRow(ctx, `SELECT queue_id FROM accepted_log WHERE message_id = $1`, id).Scan(&qid); err != nil {
			t.Fatal(err)
		}
		harness.WaitFor(t, "the recipient bounced", 20*time.Second, func() bool {
			return s.Count(`SELECT count(*) FROM delivery_log WHERE queue_id = $1 AND status = 'bounced'`, qid) > 0
		})
		if _, err := os.Stat(filepath.Join(dir, "out."+qid)); err == nil {
			t.Errorf("the command ran with an option-like sender")
		}
	})
	for n := 1; n <= 6; n++ {
		if _, err := os.Stat(marker(n)); err == nil {
			t.Errorf("%s exists: a shell interpreted a sender", marker(n))
		}
	}
}
