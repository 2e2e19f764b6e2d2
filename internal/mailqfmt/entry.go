package mailqfmt

import "github.com/facteur/facteur/store"

// FromQueueEntry turns a queue entry (store.ListQueue) into a listing
// entry: the recipients shown are those not delivered that are still
// waiting or still owe a DSN (Postfix lists the recipients not yet done).
// ok is false when none is left (the message is about to leave the queue).
// `facteur queue list` and the pickup's SHOWQ (mailq) both list through it,
// so that they print the same.
func FromQueueEntry(e *store.QueueEntry) (m Message, ok bool) {
	m = Message{ID: e.ID, Node: e.Node, Size: e.Size, ArrivedAt: e.ArrivedAt, Sender: e.Sender, Kind: e.Kind,
		Held: e.Held, HoldReason: e.HoldReason}
	for i := range e.Recipients {
		r := &e.Recipients[i]
		if r.Status == store.RcptDelivering {
			m.Active = true
		}
		if r.Status == store.RcptDelivered || (r.Final() && !r.DSNPending) {
			continue
		}
		if r.Status == store.RcptExpired {
			m.ForcedExpire = true
		}
		reason := r.LastReply
		if r.Attempts == 0 && r.Status == store.RcptQueued {
			reason = ""
		}
		m.Recipients = append(m.Recipients, Recipient{Address: r.Address, Reason: reason, Status: r.Status,
			Attempts: r.Attempts, NextAttemptAt: r.NextAttemptAt, Transport: r.Transport})
	}
	return m, len(m.Recipients) > 0
}
