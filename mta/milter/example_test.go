package milter_test

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"time"

	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/mta/milter"
)

// Example shows how an SMTP session uses the milters of its listener: one
// Session per connection, a verdict at each stage, and at the end of DATA,
// once the message is spooled, the final verdict and the changes to apply
// before the message is queued.
func Example() {
	client, err := milter.New(milter.Options{
		Milters: []milter.Config{{
			Name:           "opendkim",
			Addr:           "unix:/run/opendkim/opendkim.sock",
			ConnectTimeout: 10 * time.Second,
			CommandTimeout: 30 * time.Second,
			DefaultAction:  milter.ActionTempFail,
		}},
		Hostname:   "mx.example.org",
		DaemonName: "smtp",
	})
	if err != nil {
		return
	}
	ctx := context.Background()
	s := client.NewSession(nil, map[string]string{"{daemon_addr}": "192.0.2.1"})
	defer s.Close()

	// Each stage: a Reject or TempFail verdict is the SMTP reply.
	reply := func(v milter.Verdict) error { return v.Err() } // then envelope.Funnel(err, id)
	_ = reply(s.Connect(ctx, "client.example.net", netip.MustParseAddr("198.51.100.7"), 40000))
	_ = reply(s.Helo(ctx, "client.example.net"))
	_ = reply(s.Mail(ctx, "alice@example.net", []string{"BODY=8BITMIME"}))
	rcpts := []string{"bob@example.org"}
	_ = reply(s.Rcpt(ctx, rcpts[0], nil)) // per recipient
	_ = reply(s.Data(ctx))

	// cleanup: the received message is in a spool file (Received: prepended).
	f, err := os.Open("/var/spool/facteur/incoming/4XyZ")
	if err != nil {
		s.Abort(ctx)
		return
	}
	defer f.Close()
	st, _ := f.Stat()
	hdr, body, err := milter.SplitMessage(f, st.Size(), 1<<20)
	if err != nil {
		s.Abort(ctx)
		return
	}
	s.SetMacro("i", "4XyZ")
	res, err := s.Message(ctx, hdr, body)
	switch {
	case err != nil: // reading the spool failed: 451 4.3.0
		_ = envelope.Funnel(err, "4XyZ")
	case res.Decision == milter.Discard: // answer 250, queue nothing
	case res.Decision != milter.Continue: // answer res.Reply
		_ = res.Reply.ToSMTP()
	case res.Modified():
		var out bytes.Buffer // a new spool file in real life
		rcpts, _ = res.Apply(&out, hdr, body, rcpts)
		if res.SenderChanged {
			_ = res.Sender
		}
	}
	if res != nil && res.Quarantine != "" {
		_ = res.Quarantine // queue the message held, with this reason
	}
}
