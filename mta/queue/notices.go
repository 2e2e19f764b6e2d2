package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/mta/dsn"
	"github.com/facteur/facteur/mta/envelope"
	"github.com/facteur/facteur/store"
)

// noteMessage asks the notices goroutine to look at a message: it owes a
// DSN or may be finished.
func (m *Manager) noteMessage(id string) {
	m.noticeMu.Lock()
	m.noticeIDs[id] = true
	m.noticeMu.Unlock()
	m.kickNotices()
}

// requestSweep asks the notices goroutine to look at every message.
func (m *Manager) requestSweep() {
	m.noticeMu.Lock()
	m.noticeSweep = true
	m.noticeMu.Unlock()
	m.kickNotices()
}

func (m *Manager) kickNotices() {
	select {
	case m.noticeKick <- struct{}{}:
	default:
	}
}

// notices sends owed DSNs and finishes messages, one batch after the other
// (never two passes at once, so this process never races itself for a DSN;
// other processes are kept out by ClearDSNPending).
func (m *Manager) notices(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.noticeKick:
		}
		m.noticeMu.Lock()
		ids := make([]string, 0, len(m.noticeIDs))
		for id := range m.noticeIDs {
			ids = append(ids, id)
		}
		clear(m.noticeIDs)
		sweep := m.noticeSweep
		m.noticeSweep = false
		m.noticeMu.Unlock()

		if sweep {
			m.noticePass(ctx, nil)
		}
		for len(ids) > 0 {
			n := min(len(ids), 500)
			m.noticePass(ctx, ids[:n])
			ids = ids[n:]
		}
	}
}

// noticePass sends the DSNs owed by the messages ids (nil: any message),
// then finishes those whose recipients are all final and owe nothing, and
// only then removes their spool bodies.
func (m *Manager) noticePass(ctx context.Context, ids []string) {
	const pages = 10
	for page := 0; page < pages; page++ {
		pend, err := m.st.PendingDSNs(ctx, m.opts.Node, ids, 100)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Error("list owed DSNs", "err", err)
			}
			return
		}
		sent := 0
		for i := range pend {
			if ctx.Err() != nil {
				return
			}
			if m.sendNotice(ctx, &pend[i]) {
				sent++
			}
		}
		// A page of messages whose DSNs could not be sent would come back
		// unchanged: stop there, the next sweep tries again.
		if ids != nil || len(pend) < 100 || sent == 0 {
			break
		}
	}
	for {
		done, err := m.st.FinishMessages(ctx, m.opts.Node, ids, 1000)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Error("finish messages", "err", err)
			}
			return
		}
		for _, f := range done {
			if err := m.sp.Remove(f.SpoolKey); err != nil {
				// The reconciler removes unreferenced bodies later.
				m.log.Warn("remove spool file of a finished message", "queue_id", f.ID, "err", err)
			}
			m.log.Info(f.ID+": removed", "queue_id", f.ID)
		}
		if ids != nil || len(done) < 1000 {
			return
		}
	}
}

// sendNotice queues one DSN and clears the debt of exactly the recipients it
// reports on, in one transaction. It reports whether the debt is gone.
func (m *Manager) sendNotice(ctx context.Context, p *store.PendingDSN) bool {
	msg := &p.Message
	log := m.log.With("queue_id", msg.ID)
	clearDebt := func(ctx context.Context, tx pgx.Tx) error {
		return store.ClearDSNPending(ctx, tx, p.Recipients)
	}

	to, kind := msg.Sender, KindDSN
	if msg.Sender == "" {
		if msg.Kind != KindDSN || p.Action != store.DSNFailed {
			// Nothing is ever sent to the null sender (RFC 3461 6.2);
			// the policy does not owe such notices, but settle the debt.
			if err := m.st.WithTx(ctx, func(tx pgx.Tx) error { return clearDebt(ctx, tx) }); err != nil {
				log.Warn("clear DSN owed to the null sender", "err", err)
				return false
			}
			log.Info(msg.ID+": no "+p.Action+" notice to the null sender", "action", p.Action)
			return true
		}
		// A DSN that failed: the postmaster gets it, once.
		to, kind = m.opts.Postmaster, KindDoubleBounce
	}
	if m.opts.Submitter == nil {
		log.Error("DSN owed but no submitter configured", "action", p.Action)
		return false
	}

	report := m.report(p, to, kind)
	var body bytes.Buffer
	var original io.Reader
	f, err := m.sp.Open(msg.SpoolKey)
	switch {
	case err == nil:
		defer f.Close()
		original = io.MultiReader(strings.NewReader(msg.Prepend), f)
	case errors.Is(err, fs.ErrNotExist):
		log.Warn("DSN without the original message: its spool file is missing")
	default:
		log.Error("open original for its DSN", "err", err)
		return false
	}
	if err := dsn.Write(&body, report, original); err != nil {
		log.Error("write DSN", "err", err)
		return false
	}
	bodyType := ""
	if report.EightBit {
		bodyType = "8BITMIME"
	}
	// An internationalised address needs an SMTPUTF8 envelope (RFC 6531 3.4).
	sub := Submission{Sender: "", Recipients: []string{to}, Kind: kind, BodyType: bodyType, SMTPUTF8: !ascii(to)}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	id, err := m.opts.Submitter.Submit(sctx, sub, &body, clearDebt)
	switch {
	case errors.Is(err, store.ErrLeaseLost):
		log.Info("DSN already sent or changed meanwhile; not sent twice", "action", p.Action)
		return true
	case err != nil:
		log.Error("queue DSN; it stays owed and is tried again", "action", p.Action, "err", err)
		return false
	}
	m.opts.Metrics.DSN(p.Action)
	what := map[string]string{store.DSNFailed: "non-delivery", store.DSNDelayed: "delay",
		store.DSNDelivered: "delivery"}[p.Action]
	if kind == KindDoubleBounce {
		what = "postmaster non-delivery"
	}
	rcpts := make([]string, len(p.Recipients))
	for i, r := range p.Recipients {
		rcpts[i] = r.Address
	}
	log.Info(fmt.Sprintf("%s: sender %s notification: %s", msg.ID, what, id),
		"dsn_queue_id", id, "action", p.Action, "to", to, "recipients", strings.Join(rcpts, ","))
	return true
}

// report builds the DSN of one pending notice.
func (m *Manager) report(p *store.PendingDSN, to, kind string) *dsn.Report {
	msg := &p.Message
	lifetime := m.policy.MaxQueueLifetime
	if msg.Kind == KindDSN || msg.Kind == KindDoubleBounce {
		lifetime = m.policy.BounceQueueLifetime
	}
	r := &dsn.Report{
		ReportingMTA: m.opts.Hostname, To: to, QueueID: msg.ID, EnvelopeID: msg.DSNEnvID,
		OriginalSender: msg.Sender, OriginalMessageID: msg.MessageID, ArrivalDate: msg.ArrivedAt,
		EightBit: msg.BodyType == "8BITMIME" || msg.BodyType == "BINARYMIME" || msg.SMTPUTF8,
	}
	// RFC 3461 4.3: RET=HDRS returns the header only, RET=FULL the whole
	// message; without RET failures return the whole message and other
	// notices the header (Postfix). Larger than ReturnLimit: the header.
	switch {
	case msg.DSNRet == "HDRS":
		r.Return = dsn.ReturnHeaders
	case msg.DSNRet == "FULL" || p.Action == store.DSNFailed:
		r.Return = dsn.ReturnFull
	}
	if msg.Size > m.opts.ReturnLimit {
		r.Return = dsn.ReturnHeaders
	}
	if kind == KindDoubleBounce {
		r.Subject = "Postmaster Copy: Undelivered Mail Notification"
		r.Intro = "A delivery status notification that this system sent could not be delivered to its recipient. " +
			"It is attached below, with the reason."
	}
	for _, rc := range p.Recipients {
		st, _, _ := envelope.ParseEnhanced(rc.LastDSN)
		x := dsn.Recipient{
			FinalRecipient: rc.Address, OriginalRecipient: rc.DSNOrcpt, Action: rc.Action, Status: st,
			LastAttempt: rc.LastAttemptAt,
		}
		if host := relayHost(rc.LastRelay); host != "" {
			x.RemoteMTA, x.Diagnostic = host, rc.LastReply
		} else {
			x.Reason = rc.LastReply
		}
		if p.Action == store.DSNDelayed {
			x.WillRetryUntil = msg.ArrivedAt.Add(lifetime)
		}
		r.Recipients = append(r.Recipients, x)
	}
	return r
}

// relayHost returns the host name of a relay as logged ("mx.example[192.0.2.1]:25"
// gives "mx.example"), or "" for a local delivery ("none", "maildir", ...).
func relayHost(relay string) string {
	i := strings.IndexByte(relay, '[')
	if i <= 0 {
		return ""
	}
	return relay[:i]
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
