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

// held returns queue_message.held and hold_reason of a queued message.
func (e *env) held(id string) (bool, string) {
	e.t.Helper()
	var held bool
	var reason string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT held, coalesce(hold_reason, '') FROM queue_message WHERE id = $1`,
		id).Scan(&held, &reason); err != nil {
		e.t.Fatal(err)
	}
	return held, reason
}

// A filter sees the spooled message and the check's prepend; fields it adds
// go to the prepend and the spool file is the one written first, unchanged.
func TestFilterPrependKeepsTheSpoolFile(t *testing.T) {
	e := newEnv(t, nil)
	var seen, seenPrepend, seenID string
	m := &cleanup.Message{
		Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")},
		Client:   smtpClient(),
		Check: func(ctx context.Context, r io.Reader) (string, error) {
			_, err := io.Copy(io.Discard, r)
			return "X-Checked: yes\r\n", err
		},
		Filter: func(ctx context.Context, sp *cleanup.Spooled) (*cleanup.Filtered, error) {
			b, err := io.ReadAll(sp.Message)
			seen, seenPrepend, seenID = string(b), sp.Prepend, sp.QueueID
			return &cleanup.Filtered{Prepend: "X-Filter: 1\r\n" + sp.Prepend}, err
		},
	}
	id, _, err := e.enqueue(m, simpleMessage(200_000))
	if err != nil {
		t.Fatal(err)
	}
	spooled := e.readSpool(id)
	if seen != spooled || seenID != id || seenPrepend != "X-Checked: yes\r\n" {
		t.Errorf("the filter saw id %s, prepend %q and %d bytes; want %s and the %d spooled bytes", seenID, seenPrepend, len(seen), id, len(spooled))
	}
	p, size := e.prependOf(id)
	if p != "X-Filter: 1\r\nX-Checked: yes\r\n" || size != int64(len(p)+len(spooled)) {
		t.Errorf("prepend %q size %d", p, size)
	}
	if held, _ := e.held(id); held {
		t.Error("held without a hold")
	}
}

// A rewrite replaces the spool file (no temp file is left), a hold queues
// the message held with its reason, and a new envelope is expanded again.
func TestFilterRewriteHoldAndEnvelope(t *testing.T) {
	e := newEnv(t, nil)
	m := &cleanup.Message{
		Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com", "carol@example.com")},
		Client:   smtpClient(),
		Check: func(ctx context.Context, r io.Reader) (string, error) {
			_, err := io.Copy(io.Discard, r)
			return "X-Checked: yes\r\n", err
		},
		Filter: func(ctx context.Context, sp *cleanup.Spooled) (*cleanup.Filtered, error) {
			return &cleanup.Filtered{
				Prepend: "X-Ignored: 1\r\n",
				Hold:    "spam score 12",
				Rewrite: func(w io.Writer) error {
					_, err := io.WriteString(w, "Subject: rewritten\r\n\r\nnew body\r\n")
					return err
				},
				SenderChanged: true, Sender: "",
				Recipients: rcpts("team@example.com"),
			}, nil
		},
	}
	id, _, err := e.enqueue(m, simpleMessage(1000))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.readSpool(id); got != "Subject: rewritten\r\n\r\nnew body\r\n" {
		t.Errorf("spool file %q", got)
	}
	if p, size := e.prependOf(id); p != "" || size != int64(len("Subject: rewritten\r\n\r\nnew body\r\n")) {
		t.Errorf("prepend %q size %d after a rewrite", p, size)
	}
	if held, reason := e.held(id); !held || reason != "spam score 12" {
		t.Errorf("held %v reason %q", held, reason)
	}
	var sender string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT sender FROM queue_message WHERE id = $1`, id).Scan(&sender); err != nil || sender != "" {
		t.Errorf("sender %q %v; want the null sender", sender, err)
	}
	var addrs []string
	for _, r := range e.recipients(id) {
		addrs = append(addrs, r.Address+"<"+r.Orig)
	}
	if got := strings.Join(addrs, " "); got != "bob@example.com<team@example.com carol@example.com<team@example.com dave@remote.test<team@example.com" {
		t.Errorf("recipients %s", got)
	}
	if committed, incoming := e.spoolFiles(); len(committed) != 1 || len(incoming) != 0 {
		t.Errorf("spool: committed %v incoming %v", committed, incoming)
	}
}

// A discard queues nothing and says so with the queue id; so does an empty
// recipient list. A refusal is the filter's reply; an error is 451; a
// rewrite with a bare LF is refused; nothing is left behind.
func TestFilterRefusals(t *testing.T) {
	for _, c := range []struct {
		name     string
		f        *cleanup.Filtered
		err      error
		code     int
		enhanced string
	}{
		{"discard", &cleanup.Filtered{Discard: true}, nil, 0, ""},
		{"no recipients", &cleanup.Filtered{Recipients: []envelope.Recipient{}}, nil, 0, ""},
		{"reject", nil, envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 7, 1}, Text: "Command rejected"}, 550, "5.7.1"},
		{"tempfail", nil, envelope.Reply{Code: 451, Enhanced: envelope.Status{4, 7, 1}, Text: "try later"}, 451, "4.7.1"},
		{"error", nil, errors.New("milter read failed"), 451, "4.3.0"},
		{"bad prepend", &cleanup.Filtered{Prepend: "X-A: 1\r\n\r\n"}, nil, 451, "4.3.0"},
		{"bare LF rewrite", &cleanup.Filtered{Rewrite: func(w io.Writer) error {
			_, err := io.WriteString(w, "Subject: x\n\r\nbody\r\n")
			return err
		}}, nil, 451, "4.3.0"},
		{"failed rewrite", &cleanup.Filtered{Rewrite: func(w io.Writer) error {
			io.WriteString(w, "Subject: x\r\n")
			return errors.New("read body")
		}}, nil, 451, "4.3.0"},
		{"unknown recipient", &cleanup.Filtered{Recipients: rcpts("nobody@example.com")}, nil, 550, "5.1.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			m := &cleanup.Message{
				Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")},
				Client:   smtpClient(),
				Filter: func(ctx context.Context, sp *cleanup.Spooled) (*cleanup.Filtered, error) {
					return c.f, c.err
				},
			}
			id, _, err := e.enqueue(m, simpleMessage(1000))
			if c.code == 0 {
				if !errors.Is(err, cleanup.ErrDiscarded) || id == "" {
					t.Fatalf("Enqueue = %q, %v; want the queue id and ErrDiscarded", id, err)
				}
			} else {
				wantReply(t, err, c.code, c.enhanced)
			}
			e.wantNothingQueued()
		})
	}
}

// A filter is not asked about a message refused before it: too big.
func TestFilterNotCalledForRefusedMessage(t *testing.T) {
	e := newEnv(t, func(o *cleanup.Options) { o.MaxMessageBytes = 1000 })
	called := false
	m := &cleanup.Message{
		Envelope: envelope.Envelope{Sender: "a@sender.test", Recipients: rcpts("bob@example.com")},
		Client:   smtpClient(),
		Filter: func(ctx context.Context, sp *cleanup.Spooled) (*cleanup.Filtered, error) {
			called = true
			return nil, nil
		},
	}
	_, _, err := e.enqueue(m, simpleMessage(5000))
	wantReply(t, err, 552, "5.3.4")
	if called {
		t.Error("the filter ran on a message over the size limit")
	}
	e.wantNothingQueued()
}
