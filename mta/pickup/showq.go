package pickup

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"strings"

	"github.com/facteur/facteur/internal/mailqfmt"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
)

// replyListing introduces the listing.
var replyListing = envelope.Reply{Code: 250, Enhanced: envelope.Status{2, 0, 0}, Text: "Queue listing follows"}

// showq answers a SHOWQ request with the queue in Postfix's mailq format:
// root and the trusted users see every message of this node, other users
// the messages they submitted. It lists as `facteur queue list --node`
// does (store.ListQueue, mailqfmt), so that both print the same. The
// listing ends with a "." line; a connection that ends without it means
// the listing was cut short.
func (s *Server) showq(ctx context.Context, log *slog.Logger, u *localUser, w io.Writer) {
	f := store.QueueFilter{Node: s.opts.Node}
	if !u.privileged {
		f.LocalUser = u.name
	}
	if s.deps.Store == nil {
		_ = writeReply(w, envelope.LookupFailed())
		return
	}
	bw := bufio.NewWriter(w)
	mq := mailqfmt.NewMailq(&dotWriter{w: bw}, nil)
	started := false
	err := s.deps.Store.ListQueue(ctx, f, func(e *store.QueueEntry) error {
		m, ok := mailqfmt.FromQueueEntry(e)
		if !ok {
			return nil
		}
		if !started {
			started = true
			if err := writeReply(bw, replyListing); err != nil {
				return err
			}
		}
		return mq.Add(&m)
	})
	if err != nil {
		log.Warn("queue listing failed", "err", err)
		if !started {
			_ = writeReply(w, envelope.LookupFailed())
			return
		}
		_ = bw.Flush()
		return // no "." line: the client reports a cut listing
	}
	if !started {
		_ = writeReply(bw, replyListing)
	}
	_ = mq.Close()
	_, _ = io.WriteString(bw, ".\n")
	if err := bw.Flush(); err != nil {
		log.Info("queue listing not sent", "err", err)
		return
	}
	count, _ := mq.Count()
	log.Info("queue listed", "messages", count, "all", f.LocalUser == "")
}

// dotWriter writes listing lines, doubling a leading "." (as SMTP's DATA
// does, RFC 5321 4.5.2) so that no line reads as the end mark. Every write
// holds whole lines.
type dotWriter struct{ w io.Writer }

func (d *dotWriter) Write(p []byte) (int, error) {
	s := string(p)
	var b strings.Builder
	for line := range strings.SplitAfterSeq(s, "\n") {
		if strings.HasPrefix(line, ".") {
			b.WriteByte('.')
		}
		b.WriteString(line)
	}
	if _, err := io.WriteString(d.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}
