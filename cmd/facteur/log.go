package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/facteur/facteur/internal/mailqfmt"
	"github.com/facteur/facteur/store"
)

// `facteur log` reads delivery_log and accepted_log, the tables that take
// the place of Postfix's mail log, and prints them in the mail log's line
// format (or as JSON), so that "what happened to the mail from X to Y
// yesterday" needs no grep.
//
// --follow polls. A NOTIFY per delivery_log row would put a NOTIFY (and its
// commit-time lock) in the hot path of every settlement, and facteur_queue
// announces new mail, not deliveries; so follow asks for the rows newer than
// the last it printed, once a second, through the (at) index. A row's `at`
// is its transaction's start, so a settlement that commits late can appear
// with a time before rows already printed: each poll looks back
// followOverlap and skips what it has printed, which covers every
// settlement (a single short statement) and every enqueue.

// followInterval and followOverlap are the polling of --follow.
const (
	followInterval = time.Second
	followOverlap  = 10 * time.Second
)

// logEvent is one line of `facteur log`: an accepted message, a delivery
// attempt, or a message leaving the queue.
type logEvent struct {
	At       time.Time
	kind     int // order of events at the same time: accepted, delivery, removed
	accepted *store.AcceptedLogEntry
	delivery *store.DeliveryLogEntry
}

const (
	evAccepted = iota
	evDelivery
	evRemoved
)

// key identifies an event for de-duplication while following.
func (e *logEvent) key() string {
	switch e.kind {
	case evDelivery:
		return "d" + strconv.FormatInt(e.delivery.ID, 10)
	case evAccepted:
		return "a" + e.accepted.QueueID + e.accepted.At.String()
	default:
		return "r" + e.accepted.QueueID + e.accepted.At.String()
	}
}

// logMerge orders accepted, delivery and removal events by time.
func logMerge(acc []store.AcceptedLogEntry, del []store.DeliveryLogEntry) []*logEvent {
	var evs []*logEvent
	for i := range acc {
		a := &acc[i]
		evs = append(evs, &logEvent{At: a.At, kind: evAccepted, accepted: a})
		if a.FinishedAt != nil {
			evs = append(evs, &logEvent{At: *a.FinishedAt, kind: evRemoved, accepted: a})
		}
	}
	for i := range del {
		evs = append(evs, &logEvent{At: del[i].At, kind: evDelivery, delivery: &del[i]})
	}
	slices.SortStableFunc(evs, func(a, b *logEvent) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return cmp.Compare(a.kind, b.kind)
	})
	return evs
}

// logTime is the time stamp of a log line (ISO 8601 with milliseconds: the
// mail log's "Jan  2 15:04:05" has no year and no zone).
const logTime = "2006-01-02T15:04:05.000Z07:00"

// line formats an event as Postfix logs it:
//
//	… mx1 facteur/cleanup: 4XbC9dQk2mZ: client=192.0.2.1, protocol=ESMTPS, message-id=<…>
//	… mx1 facteur/qmgr: 4XbC9dQk2mZ: from=<a@example.org>, size=1234, nrcpt=2 (queue active)
//	… mx1 facteur/smtp: 4XbC9dQk2mZ: to=<b@example.com>, relay=mx.example.com[192.0.2.2]:25, delay=1.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)
//	… mx1 facteur/qmgr: 4XbC9dQk2mZ: removed
func (e *logEvent) line(loc *time.Location) string {
	t := e.At.In(loc).Format(logTime)
	switch e.kind {
	case evAccepted:
		a := e.accepted
		var f []string
		if a.ClientAddr != "" {
			f = append(f, "client="+a.ClientAddr)
		}
		if a.Protocol != "" {
			f = append(f, "protocol="+a.Protocol)
		}
		if a.TLS != "" {
			f = append(f, "tls="+a.TLS)
		}
		if a.AuthUser != "" {
			f = append(f, "sasl_username="+a.AuthUser)
		}
		if a.LocalUser != "" {
			f = append(f, "uid="+a.LocalUser)
		}
		if a.MessageID != "" {
			f = append(f, "message-id="+a.MessageID)
		}
		f = append(f, fmt.Sprintf("from=<%s>, size=%d, nrcpt=%d (queue active)", a.Sender, a.Size, a.Recipients))
		return mailqfmt.SafeText(fmt.Sprintf("%s %s facteur/cleanup: %s: %s", t, a.Node, a.QueueID, strings.Join(f, ", ")))
	case evRemoved:
		return mailqfmt.SafeText(fmt.Sprintf("%s %s facteur/qmgr: %s: removed", t, e.accepted.Node, e.accepted.QueueID))
	}
	d := e.delivery
	agent := d.Transport
	if i := strings.IndexByte(agent, ':'); i >= 0 {
		agent = agent[:i]
	}
	if agent == "" {
		agent = "qmgr"
	}
	s := fmt.Sprintf("%s %s facteur/%s: %s: to=<%s>", t, d.Node, agent, d.QueueID, d.Recipient)
	if d.OrigRecipient != "" && !strings.EqualFold(d.OrigRecipient, d.Recipient) {
		s += ", orig_to=<" + d.OrigRecipient + ">"
	}
	relay := d.Relay
	if relay == "" {
		relay = "none"
	}
	s += fmt.Sprintf(", relay=%s, delay=%s, dsn=%s, status=%s", relay, logDelay(d.DelaySeconds), d.DSN, d.Status)
	if d.Status == "expired" {
		s += ", returned to sender"
	}
	if d.Reply != "" {
		s += " (" + d.Reply + ")"
	}
	return mailqfmt.SafeText(s)
}

// logDelay formats a delay as Postfix does: at most two decimals below one
// second, one below ten, whole seconds above, without trailing zeros.
func logDelay(s float64) string {
	var v string
	switch {
	case s < 1:
		v = strconv.FormatFloat(s, 'f', 2, 64)
	case s < 10:
		v = strconv.FormatFloat(s, 'f', 1, 64)
	default:
		return strconv.FormatFloat(s, 'f', 0, 64)
	}
	v = strings.TrimRight(v, "0")
	return strings.TrimSuffix(v, ".")
}

// jsonObject is an event as `facteur log --json` prints it.
func (e *logEvent) jsonObject() map[string]any {
	switch e.kind {
	case evAccepted:
		a := e.accepted
		return map[string]any{"time": a.At, "event": "accepted", "queue_id": a.QueueID, "node": a.Node, "sender": a.Sender,
			"size": a.Size, "nrcpt": a.Recipients, "message_id": a.MessageID, "client_addr": a.ClientAddr,
			"protocol": a.Protocol, "auth_user": a.AuthUser, "local_user": a.LocalUser, "tls": a.TLS}
	case evRemoved:
		return map[string]any{"time": e.At, "event": "removed", "queue_id": e.accepted.QueueID, "node": e.accepted.Node}
	}
	d := e.delivery
	return map[string]any{"time": d.At, "event": "delivery", "id": d.ID, "queue_id": d.QueueID, "node": d.Node,
		"sender": d.Sender, "recipient": d.Recipient, "orig_recipient": d.OrigRecipient, "domain": d.Domain,
		"transport": d.Transport, "relay": d.Relay, "delay": d.DelaySeconds, "dsn": d.DSN, "status": d.Status,
		"reply": d.Reply}
}

type logOptions struct {
	id, address, domain, since, until, status string
	follow, utc                               bool
	limit                                     int
}

func addLogCommands(root *cobra.Command, a *app) {
	var o logOptions
	cmd := &cobra.Command{
		Use:   "log",
		Short: "read the delivery and accepted-message logs in the mail log's format",
		Long: `log prints what delivery_log and accepted_log recorded, as the mail log's
lines: accepted messages (client, message-id, sender, size), every delivery
attempt (recipient, relay, delay, DSN status, reply) and messages leaving
the queue, in time order. --address matches senders and recipients (an
address, a domain, or <>), --domain recipient domains, --status a delivery
status (sent, deferred, bounced, expired). --since and --until take a
time (2026-11-21, "2026-11-21 14:00", RFC 3339), a duration ago (2h, 3d),
today or yesterday. --follow keeps printing new lines, polling once a
second.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.logRun(cmd, o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.id, "id", "", "one message's queue id")
	fl.StringVar(&o.address, "address", "", "sender or recipient: an address, a domain, or <>")
	fl.StringVar(&o.domain, "domain", "", "recipient domain")
	fl.StringVar(&o.since, "since", "", "from this time (2026-11-21, \"2026-11-21 14:00\", RFC 3339, 2h, 3d, today, yesterday)")
	fl.StringVar(&o.until, "until", "", "before this time (same forms as --since)")
	fl.StringVar(&o.status, "status", "", "delivery status: sent, deferred, bounced or expired")
	fl.BoolVarP(&o.follow, "follow", "f", false, "keep printing new lines")
	fl.BoolVar(&o.utc, "utc", false, "show times in UTC")
	fl.IntVar(&o.limit, "limit", 0, "print at most this many delivery lines (0: all)")
	root.AddCommand(cmd)
}

// logParseTime reads --since and --until relative to now.
func logParseTime(s string, now time.Time, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	day := time.Date(now.In(loc).Year(), now.In(loc).Month(), now.In(loc).Day(), 0, 0, 0, 0, loc)
	switch strings.ToLower(s) {
	case "today":
		return day, nil
	case "yesterday":
		return day.AddDate(0, 0, -1), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	if d, err := queueParseAge(s); err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time (2026-11-21, \"2026-11-21 14:00\", RFC 3339, 2h, 3d, today, yesterday)", s)
}

func (a *app) logRun(cmd *cobra.Command, o logOptions) error {
	ctx := cmd.Context()
	loc := queueTimeLocation(o.utc)
	f := store.LogFilter{Address: o.address, Status: strings.ToLower(o.status), Limit: o.limit}
	if o.status == "delivered" {
		f.Status = "sent"
	}
	if o.id != "" {
		id, err := queueID(o.id)
		if err != nil {
			return err
		}
		f.QueueID = id
	}
	if o.domain != "" {
		d, err := dataNormDomain(o.domain)
		if err != nil {
			return dataBadInput("--domain: %v", err)
		}
		f.Domain = d
	}
	if f.Status != "" && !slices.Contains(store.LogStatuses, f.Status) {
		return dataBadInput("--status: %q is not one of %s", o.status, strings.Join(store.LogStatuses, ", "))
	}
	st, err := a.store(ctx)
	if err != nil {
		return err
	}
	now, err := st.DatabaseNow(ctx)
	if err != nil {
		return err
	}
	if o.since != "" {
		if f.Since, err = logParseTime(o.since, now, loc); err != nil {
			return dataBadInput("--since: %v", err)
		}
	}
	if o.follow && o.since == "" && f.QueueID == "" {
		// Like tail -f: the recent lines, then the new ones.
		f.Since = now.Add(-followOverlap)
	}
	if o.until != "" {
		if f.Until, err = logParseTime(o.until, now, loc); err != nil {
			return dataBadInput("--until: %v", err)
		}
		if o.follow {
			return dataBadInput("--until and --follow do not go together")
		}
	}
	out := bufio.NewWriter(cmd.OutOrStdout())
	defer out.Flush()
	emit := func(evs []*logEvent) error {
		for _, e := range evs {
			if a.jsonOut {
				b, err := json.Marshal(e.jsonObject())
				if err != nil {
					return err
				}
				out.Write(b)
				out.WriteByte('\n')
			} else {
				out.WriteString(e.line(loc))
				out.WriteByte('\n')
			}
		}
		return out.Flush()
	}
	evs, err := logRead(cmd, st, f)
	if err != nil {
		return dataError(err)
	}
	if err := emit(evs); err != nil {
		return err
	}
	if !o.follow {
		return nil
	}
	return logFollow(cmd, st, f, now, evs, emit)
}

func logRead(cmd *cobra.Command, st *store.Store, f store.LogFilter) ([]*logEvent, error) {
	del, err := st.DeliveryLog(cmd.Context(), f)
	if err != nil {
		return nil, err
	}
	f.Limit = 0
	acc, err := st.AcceptedLog(cmd.Context(), f)
	if err != nil {
		return nil, err
	}
	// An accepted row is selected when its message was accepted or left
	// the queue in the window: keep only the events inside it.
	evs := logMerge(acc, del)
	return slices.DeleteFunc(evs, func(e *logEvent) bool {
		return (!f.Since.IsZero() && e.At.Before(f.Since)) || (!f.Until.IsZero() && !e.At.Before(f.Until))
	}), nil
}

// logFollow polls for new events every followInterval, looking back
// followOverlap and skipping the events already printed, until the
// command's context ends.
func logFollow(cmd *cobra.Command, st *store.Store, f store.LogFilter, now time.Time, printed []*logEvent, emit func([]*logEvent) error) error {
	ctx := cmd.Context()
	seen := map[string]time.Time{}
	for _, e := range printed {
		seen[e.key()] = e.At
	}
	f.Limit = 0
	t := time.NewTicker(followInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		f.Since = now.Add(-followOverlap)
		dbNow, err := st.DatabaseNow(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		evs, err := logRead(cmd, st, f)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var fresh []*logEvent
		for _, e := range evs {
			k := e.key()
			if _, ok := seen[k]; ok {
				continue
			}
			seen[k] = e.At
			fresh = append(fresh, e)
		}
		if err := emit(fresh); err != nil {
			return err
		}
		now = dbNow
		for k, at := range seen {
			if at.Before(now.Add(-2 * followOverlap)) {
				delete(seen, k)
			}
		}
	}
}
