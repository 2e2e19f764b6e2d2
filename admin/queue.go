package admin

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"

	"github.com/facteur/facteur/store"
)

// The queue of the admin's domains. A domain admin sees the messages with
// at least one recipient in its domains, and of those only the recipients
// in its domains (store.ListQueueIn and friends, scoped in SQL). Actions
// are row updates in the store (queueadmin.go's, audited) followed by
// NOTIFY facteur_queue to the nodes concerned: the admin service never
// talks to a queue manager, which may run on another host. A deleted
// message's body is removed by its node's reconciler (a spool file that no
// row refers to).

// queueIDRE is the queue_message id CHECK.
var queueIDRE = regexp.MustCompile(`^[0-9A-Za-z]{8,32}$`)

// queueActions are the actions on queued messages.
var queueActions = []string{"hold", "release", "flush", "delete"}

// maxQueueAction bounds the messages of one action request.
const maxQueueAction = 1000

// queueActionSummary is what an action did.
type queueActionSummary struct {
	Action   string
	Messages int // messages acted on
	Changed  int // messages (hold, release) or recipients (flush, delete) changed
	Busy     int // recipients left alone because an attempt was in flight
}

// queueAction runs action on the messages ids for p. A domain admin may act
// only on messages it can see (any other id makes the whole request "not
// found", and nothing is done); hold, release and delete act on whole
// messages, so a domain admin may use them only on messages whose every
// recipient is in its domains, while flush makes only its own domains'
// recipients due. A superadmin acts on every message named that is still
// in the queue.
func (h *Handler) queueAction(ctx context.Context, p *principal, action string, ids []string) (queueActionSummary, error) {
	sum := queueActionSummary{Action: action}
	if !slices.Contains(queueActions, action) {
		return sum, errInvalid("action", "the action is hold, release, flush or delete")
	}
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	if len(ids) == 0 {
		return sum, errInvalid("id", "choose at least one message")
	}
	if len(ids) > maxQueueAction {
		return sum, errInvalid("id", "at most %d messages at once", maxQueueAction)
	}
	for _, id := range ids {
		if !queueIDRE.MatchString(id) {
			return sum, errNotFound("id")
		}
	}
	msgs, err := h.st.QueueMessagesInScope(ctx, ids, p.scope())
	if err != nil {
		return sum, err
	}
	if !p.isSuper() {
		if len(msgs) != len(ids) {
			return sum, errNotFound("id")
		}
		if action != "flush" {
			for _, m := range msgs {
				if m.Foreign {
					return sum, errForbidden("id", "message %s also has recipients outside your domains: ask a superadmin to %s it", m.ID, action)
				}
			}
		}
	}
	if len(msgs) == 0 {
		return sum, errNotFound("id")
	}
	found := make([]string, len(msgs))
	for i, m := range msgs {
		found[i] = m.ID
	}
	actx := store.WithActor(ctx, p.actor())
	var results []store.QueueActionResult
	switch action {
	case "hold":
		results, err = h.st.HoldMessages(actx, found, "")
	case "release":
		results, err = h.st.ReleaseMessages(actx, found)
	case "delete":
		results, err = h.st.DeleteMessages(actx, found)
	case "flush":
		if p.isSuper() {
			results, err = h.st.FlushMessages(actx, found, "")
			break
		}
		// Only the recipients of the admin's domains, domain by domain.
		byDomain := map[string][]string{}
		for _, m := range msgs {
			for _, d := range m.Domains {
				byDomain[d] = append(byDomain[d], m.ID)
			}
		}
		for _, d := range slices.Sorted(maps.Keys(byDomain)) {
			var rs []store.QueueActionResult
			rs, err = h.st.FlushMessages(actx, byDomain[d], d)
			results = append(results, rs...)
			if err != nil {
				break
			}
		}
	}
	if err != nil {
		return sum, fmt.Errorf("queue %s: %w", action, err)
	}
	nodes := map[string]bool{}
	seen := map[string]bool{}
	for _, r := range results {
		if !r.Found {
			continue
		}
		if !seen[r.ID] {
			seen[r.ID] = true
			sum.Messages++
		}
		sum.Changed += r.Changed
		sum.Busy += r.Busy
		if r.Changed > 0 && action != "hold" {
			nodes[r.Node] = true
		}
	}
	// Wake the queue managers of the nodes concerned: a hint (they poll
	// too), sent after the transactions.
	for node := range nodes {
		if err := h.st.NotifyQueue(ctx, node); err != nil {
			h.log.WarnContext(ctx, "notify queue", "node", node, "err", err)
		}
	}
	return sum, nil
}
