package cleanup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
)

// ErrDiscarded is returned by Enqueue, with the queue id the message had,
// when its Message.Filter discarded it: nothing is queued, and the SMTP
// client is told 250 as if it were (a milter's SMFIR_DISCARD; Postfix does
// the same).
var ErrDiscarded = errors.New("cleanup: message discarded by a content filter")

// Spooled is a received message in its spool temp file, complete but not
// yet committed, as a Message.Filter sees it.
type Spooled struct {
	// QueueID is the message's queue id.
	QueueID string
	// Prepend is the header fields that Message.Check returned ("" for
	// none): the message as it will be delivered is Prepend, then Message.
	Prepend string
	// Message reads the spooled message: facteur's Received: first, the
	// header edits done, CRLF line ends. It is valid until the Filter
	// returns, and may be read more than once (it reads the file with
	// pread; nothing is held in memory).
	Message *io.SectionReader
}

// Filtered is what a Message.Filter decided; a nil *Filtered changes
// nothing.
type Filtered struct {
	// Discard drops the message: Enqueue queues nothing and returns
	// ErrDiscarded.
	Discard bool
	// Hold, when not empty, queues the message held (queue_message.held)
	// with this reason, until an operator releases it: a milter's
	// quarantine, Postfix's hold queue.
	Hold string
	// Prepend replaces Spooled.Prepend (return it unchanged to keep it):
	// header fields added by the filter go there, so that the spool file
	// is still written once. Ignored with Rewrite.
	Prepend string
	// Rewrite, when set, writes the whole message anew, header block and
	// body with CRLF line ends, in place of Spooled.Prepend and
	// Spooled.Message: for changes that Prepend cannot express (a header
	// field changed or deleted, the body replaced). It is written to a
	// second temp file, which is committed instead of the first: only the
	// messages a filter changes that way pay for a second write. Rewrite
	// may read Spooled.Message.
	Rewrite func(w io.Writer) error
	// SenderChanged replaces the envelope sender with Sender ("" is the
	// null sender).
	SenderChanged bool
	Sender        string
	// Recipients, when not nil, replace the envelope recipients; they are
	// expanded again (aliases, transports) before the rows are written. An
	// empty, non-nil list discards the message.
	Recipients []envelope.Recipient
}

// filterOutcome is what runFilter leaves for the rest of Enqueue.
type filterOutcome struct {
	w       *spool.Writer          // the rewritten message's temp file; nil when not rewritten
	m       *Message               // the message with its envelope changes
	rcpts   []store.QueueRecipient // the new envelope's rows; nil when unchanged
	prepend string
	hold    string
}

// runFilter runs m.Filter over the spooled message in w and applies its
// decision: a new envelope (expanded again), a new prepend, or a rewritten
// temp file (its Writer in the outcome, for the caller to commit or abort).
// Errors carry a Reply, or are ErrDiscarded; they are logged.
func (c *Cleanup) runFilter(ctx context.Context, log *slog.Logger, id string, m *Message, w *spool.Writer, prepend string) (filterOutcome, error) {
	out := filterOutcome{m: m, prepend: prepend}
	msg, err := w.Contents()
	if err != nil {
		log.Error("read spool file", "err", err)
		return out, fmt.Errorf("%w: %w", envelope.StorageFull(), err)
	}
	f, err := m.Filter(ctx, &Spooled{QueueID: id, Prepend: prepend, Message: msg})
	if err != nil {
		var rep envelope.Reply
		if errors.As(err, &rep) {
			log.Info("message rejected by content filter", "reply", rep.String(), "client", m.Client.Addr)
			return out, err
		}
		log.Error("content filter failed", "err", err)
		return out, fmt.Errorf("%w: %w", envelope.InternalError(id), err)
	}
	if f == nil {
		return out, nil
	}
	if f.Discard || (f.Recipients != nil && len(f.Recipients) == 0) {
		log.Info("message discarded by content filter", "client", m.Client.Addr, "from", m.Envelope.Sender)
		return out, ErrDiscarded
	}
	if f.SenderChanged || f.Recipients != nil {
		mm := *m
		if f.SenderChanged {
			mm.Envelope.Sender = f.Sender
		}
		if f.Recipients != nil {
			mm.Envelope.Recipients = f.Recipients
			rcpts, _, err := c.expand(ctx, log, &mm)
			if err != nil {
				return out, err
			}
			out.rcpts = rcpts
		}
		out.m = &mm
	}
	out.hold = f.Hold
	if f.Rewrite == nil {
		if err := validPrepend(f.Prepend); err != nil {
			log.Error("content filter result", "err", err)
			return out, fmt.Errorf("%w: %w", envelope.InternalError(id), err)
		}
		out.prepend = f.Prepend
		return out, nil
	}
	nw, err := c.sp.Create(ctx, id)
	if err != nil {
		log.Error("create spool file", "err", err)
		return out, fmt.Errorf("%w: %w", envelope.StorageFull(), err)
	}
	rw := &rewriteWriter{w: nw}
	if err := f.Rewrite(rw); err != nil {
		_ = nw.Abort()
		if rw.err != nil {
			log.Error("write spool file", "err", err)
			return out, fmt.Errorf("%w: %w", envelope.StorageFull(), err)
		}
		log.Error("content filter rewrite failed", "err", err)
		return out, fmt.Errorf("%w: %w", envelope.InternalError(id), err)
	}
	if rw.bad || rw.scan.cr {
		_ = nw.Abort()
		log.Error("content filter rewrite has a bare CR or LF")
		return out, fmt.Errorf("%w: rewritten message has a bare CR or LF", envelope.InternalError(id))
	}
	log.Info("message rewritten by content filter", "size", nw.Size())
	out.w, out.prepend = nw, ""
	return out, nil
}

// rewriteWriter writes a rewritten message to its temp file, remembers the
// spool's error and checks line ends: a filter's rewrite is as untrusted as
// the client's message (RFC 5321 2.3.8).
type rewriteWriter struct {
	w    *spool.Writer
	err  error
	scan lineEndScan
	bad  bool
}

func (r *rewriteWriter) Write(p []byte) (int, error) {
	if !r.scan.ok(p) {
		r.bad = true
	}
	n, err := r.w.Write(p)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}

// lineEndScan finds a bare CR or LF in a byte stream; cr carries a CR that
// ended the previous piece.
type lineEndScan struct{ cr bool }

func (s *lineEndScan) ok(b []byte) bool {
	for _, c := range b {
		switch {
		case s.cr:
			s.cr = false
			if c != '\n' {
				return false
			}
		case c == '\r':
			s.cr = true
		case c == '\n':
			return false
		}
	}
	return true
}
