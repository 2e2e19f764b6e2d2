package abuse

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/facteur/facteur/test/harness"
)

// relayForms are the ways of writing "user at destination D" behind one of
// our domains. The first eight are mta/smtpd's TestRelayTable (the 16-case
// open-relay matrix: 8 forms × a local and a foreign D), which checks the
// replies; this suite extends it with more forms and checks what a 250
// actually queues.
var relayForms = []struct {
	name string
	form func(u, d string) string
}{
	{"plain", func(u, d string) string { return u + "@" + d }},
	{"percent", func(u, d string) string { return u + "%" + d + "@" + harness.LocalDomain }},
	{"quoted", func(u, d string) string { return `"` + u + "@" + d + `"@` + harness.LocalDomain }},
	{"source-route", func(u, d string) string { return "@" + harness.LocalDomain + ":" + u + "@" + d }},
	{"double-at", func(u, d string) string { return u + "@" + d + "@" + harness.LocalDomain }},
	{"bang", func(u, d string) string { return d + "!" + u + "@" + harness.LocalDomain }},
	{"ip-literal", func(u, d string) string {
		if d == harness.LocalDomain {
			return u + "@[127.0.0.1]"
		}
		return u + "@[192.0.2.1]"
	}},
	{"percent-ip-literal", func(u, d string) string { return u + "%" + d + "@[127.0.0.1]" }},
	// Beyond the matrix.
	{"multi-hop source route", func(u, d string) string { return "@a.test,@" + harness.LocalDomain + ":" + u + "@" + d }},
	{"trailing dot", func(u, d string) string { return u + "@" + d + "." }},
	{"upper case", func(u, d string) string { return strings.ToUpper(u + "@" + d) }},
	{"IPv6 literal", func(u, d string) string { return u + "@[IPv6:::1]" }},
	{"quoted escaped at", func(u, d string) string { return `"` + u + `\@` + d + `"@` + harness.LocalDomain }},
	{"quoted percent", func(u, d string) string { return `"` + u + "%" + d + `"@` + harness.LocalDomain }},
	{"double percent", func(u, d string) string { return u + "%" + d + "%" + harness.LocalDomain + "@" + harness.LocalDomain }},
	{"bang chain", func(u, d string) string { return "a.test!" + d + "!" + u + "@" + harness.LocalDomain }},
}

// TestOpenRelayMatrixQueuesOnlyWhatItShould runs every form with a local
// and a foreign destination, unauthenticated on the MX listener and
// authenticated on submission. Unauthenticated, nothing foreign is ever
// queued; authenticated, a foreign address is queued only as itself, never
// through a routing form that facteur would forward on (user%D, D!user,
// "user@D"); a local 250 always queues the local mailbox.
func TestOpenRelayMatrixQueuesOnlyWhatItShould(t *testing.T) {
	t.Parallel()
	s := harness.NewStack(t, harness.StackOptions{})
	n := 0
	for _, auth := range []bool{false, true} {
		kind := "unauthenticated"
		if auth {
			kind = "authenticated"
		}
		for _, f := range relayForms {
			for _, dest := range []string{harness.LocalDomain, "foreign.test"} {
				user := "alice"
				if dest != harness.LocalDomain {
					user = "user"
				}
				addr := f.form(user, dest)
				n++
				id := fmt.Sprintf("<relay%d@client.test>", n)
				t.Run(kind+"/"+f.name+"/"+dest, func(t *testing.T) {
					countCase(t)
					var c *harness.Client
					sender := "someone@foreign.test"
					if auth {
						c = s.Greeted(t, s.Submission)
						c.MustCmd(t, "EHLO client.test", "250 ")
						c.StartTLS(t)
						c.MustCmd(t, "EHLO client.test", "250 ")
						c.MustCmd(t, harness.AuthPlain("", harness.Alice, harness.AlicePass), "235 ")
						sender = harness.Alice
					} else {
						c = s.Greeted(t, s.MX)
						c.MustCmd(t, "EHLO client.test", "250 ")
					}
					c.MustCmd(t, "MAIL FROM:<"+sender+">", "250 ")
					code, text, err := c.Cmd("RCPT TO:<" + addr + ">")
					if err != nil {
						t.Fatal(err)
					}
					if code != 250 {
						if code < 500 {
							t.Errorf("RCPT TO:<%s>: %q, want 250 or a permanent refusal", addr, text)
						}
						return
					}
					c.MustCmd(t, "DATA", "354 ")
					c.Write(harness.Message(sender, "x@y", id, "relay") + ".\r\n")
					c.Expect(t, "250 ")
					rows, err := s.DB.Pool.Query(context.Background(), `SELECT r.address FROM queue_recipient r
JOIN queue_message m ON m.id = r.queue_id WHERE m.message_id = $1`, id)
					if err != nil {
						t.Fatal(err)
					}
					var queued []string
					for rows.Next() {
						var a string
						rows.Scan(&a) //nolint:errcheck
						queued = append(queued, a)
					}
					rows.Close()
					for _, q := range queued {
						switch {
						case q == harness.Alice:
						case auth && q == "user@foreign.test":
						default:
							t.Errorf("RCPT TO:<%s> (%s) queued %q", addr, kind, q)
						}
					}
					if !auth && dest != harness.LocalDomain {
						t.Errorf("RCPT TO:<%s> to a foreign domain was accepted without authentication (queued %v)", addr, queued)
					}
					t.Logf("RCPT TO:<%s>: 250, queued %v", addr, queued)
				})
			}
		}
	}
}
