package abuse

import (
	"context"
	"fmt"
	"testing"

	"github.com/facteur/facteur/test/harness"
)

// TestSQLMetacharactersInAddressesAndUsernames: quotes, comments, LIKE
// wildcards (% and _) and backslashes in recipients, senders and AUTH user
// names match nothing they should not (no wildcard lookup: _lice is not
// alice), never give a temporary error (a 451 here would be a database
// error), and leave the tables as they were.
func TestSQLMetacharactersInAddressesAndUsernames(t *testing.T) {
	t.Parallel()
	s := harness.NewStack(t, harness.StackOptions{})
	rcpts := []string{
		"alice'--@example.test",
		"alice'or'1'='1@example.test",
		`"a'; DROP TABLE mailbox; --"@example.test`,
		`"alice' OR 1=1 --"@example.test`,
		"_lice@example.test",
		"al_ce@example.test",
		"____@example.test",
		"%@example.test",
		"alic%@example.test",
		"*@example.test",
		`alice\@example.test`,
		"alice@_xample.test",
		"alice@%.test",
		"alice@example.test'--",
		"alice@example.test;DELETE FROM mailbox",
	}
	for _, r := range rcpts {
		t.Run("RCPT "+r, func(t *testing.T) {
			countCase(t)
			c := s.Greeted(t, s.MX)
			c.MustCmd(t, "EHLO client.test", "250 ")
			c.MustCmd(t, "MAIL FROM:<someone@foreign.test>", "250 ")
			code, text, err := c.Cmd("RCPT TO:<" + r + ">")
			if err != nil {
				t.Fatal(err)
			}
			if code < 500 {
				t.Errorf("RCPT TO:<%s>: %q, want a permanent refusal", r, text)
			}
		})
	}
	senders := []string{"o'brien@foreign.test", "a%b_c@foreign.test", `"x'||pg_sleep(5)||'"@foreign.test`}
	for i, snd := range senders {
		t.Run("MAIL "+snd, func(t *testing.T) {
			countCase(t)
			c := s.Greeted(t, s.MX)
			c.MustCmd(t, "EHLO client.test", "250 ")
			id := fmt.Sprintf("<sql%d@client.test>", i)
			if out, _, err := c.Send(snd, []string{harness.Alice}, harness.Message(snd, harness.Alice, id, "sql")); out != harness.Accepted {
				t.Fatalf("send from %s: %v", snd, err)
			}
			var stored string
			if err := s.DB.Pool.QueryRow(context.Background(), `SELECT sender FROM queue_message WHERE message_id = $1`, id).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			if stored != snd {
				t.Errorf("stored sender %q, want %q", stored, snd)
			}
		})
	}
	users := []struct{ user, want string }{
		{"alice@example.test' OR '1'='1", "535 "},
		{"alice@example.test'--", "535 "},
		{"%@example.test", "535 "},
		{"_lice@example.test", "535 "},
		{"alice@%", "535 "},
		{"%", "535 "},
		{"ALICE@EXAMPLE.TEST", "235 "}, // the same mailbox: case-folded, not matched by a wildcard
	}
	for _, u := range users {
		t.Run("AUTH "+u.user, func(t *testing.T) {
			countCase(t)
			c := readyForAuth(t, s, harness.NextIP())
			c.MustCmd(t, harness.AuthPlain("", u.user, harness.AlicePass), u.want)
		})
	}
	if n := s.Count(`SELECT count(*) FROM mailbox`); n != 2 {
		t.Errorf("%d mailboxes, want 2", n)
	}
	if n := s.Count(`SELECT count(*) FROM domain`); n != 1 {
		t.Errorf("%d domains, want 1", n)
	}
}
