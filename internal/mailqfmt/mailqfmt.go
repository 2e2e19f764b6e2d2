// Package mailqfmt writes queue listings in the formats Postfix's tools
// print, so that the scripts and monitoring plugins written for them read
// facteur's: mailq (postqueue -p, showq_compat.c with long queue ids),
// postqueue -j (one JSON object per message), and qshape.
//
// It runs no query: callers hand it Messages (FromQueueEntry converts the
// store's queue entries) and shape rows. cmd/facteur uses it for `facteur
// queue list` and `facteur queue shape`, the pickup's SHOWQ (mailq through
// sendmail) for its listing.
package mailqfmt

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Message is one message of a listing.
type Message struct {
	ID        string
	Node      string
	Size      int64
	ArrivedAt time.Time
	Sender    string // "" is the null sender, shown as MAILER-DAEMON
	Kind      string
	// Active: a recipient is being delivered (Postfix's active queue, "*").
	Active bool
	// Held: the message is on hold ("!").
	Held       bool
	HoldReason string
	// ForcedExpire: recipients were expired and their DSN is not sent yet
	// (postsuper -e, "#").
	ForcedExpire bool
	Recipients   []Recipient
}

// Recipient is one recipient of a listed message.
type Recipient struct {
	Address string
	// Reason is why it is still here (the last reply), "" if never tried.
	Reason string
	// The fields below appear in JSON only.
	Status        string
	Attempts      int
	NextAttemptAt time.Time
	Transport     string
}

// QueueName is the Postfix queue a message would be in: hold, active,
// deferred (tried before) or incoming.
func (m *Message) QueueName() string {
	switch {
	case m.Held:
		return "hold"
	case m.Active:
		return "active"
	}
	for _, r := range m.Recipients {
		if r.Attempts > 0 || r.Status == "deferred" {
			return "deferred"
		}
	}
	return "incoming"
}

// The mailq layout of Postfix with long queue ids (postqueue's
// showq_compat.c, L_STRING_FORMAT and L_SENDER_FORMAT).
const (
	headingFormat = "%-17s %8s %-19s %s\n"
	senderFormat  = "%-17s %8d %19.19s %s\n"
	// asctime(3) as %19.19s cuts it: no year, no newline.
	arrivalLayout = "Mon Jan _2 15:04:05"
)

// Mailq writes a listing in mailq's format: call Add for each message, then
// Close for the summary line ("-- N Kbytes in M Requests." or "Mail queue
// is empty"). The summary counts exactly the messages added.
type Mailq struct {
	w        io.Writer
	loc      *time.Location
	count    int64
	size     int64
	err      error
	headDone bool
}

// NewMailq returns a mailq writer showing times in loc (nil: local time).
func NewMailq(w io.Writer, loc *time.Location) *Mailq {
	if loc == nil {
		loc = time.Local
	}
	return &Mailq{w: w, loc: loc}
}

func (q *Mailq) printf(format string, args ...any) {
	if q.err != nil {
		return
	}
	_, q.err = fmt.Fprintf(q.w, format, args...)
}

// Add writes one message: the heading before the first, a blank line
// between messages, the queue id with its status mark, size, arrival time
// and sender, then each recipient, preceded by "(reason)" whenever the
// reason differs from the previous recipient's (as postqueue does).
func (q *Mailq) Add(m *Message) error {
	if q.count == 0 {
		q.printf(headingFormat, "----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------")
	} else {
		q.printf("\n")
	}
	q.count++
	q.size += m.Size
	id := m.ID
	switch {
	case m.Active:
		id += "*"
	case m.Held:
		id += "!"
	}
	if m.ForcedExpire {
		id += "#"
	}
	sender := m.Sender
	if sender == "" {
		sender = "MAILER-DAEMON"
	}
	q.printf(senderFormat, id, m.Size, m.ArrivedAt.In(q.loc).Format(arrivalLayout), SafeText(sender))
	saved := ""
	for _, r := range m.Recipients {
		why := SafeText(r.Reason)
		if why != saved {
			saved = why
			show := why
			if show == "" {
				show = "reason unavailable"
			}
			q.printf("%*s(%s)\n", max(0, 76-len(show)), "", show)
		}
		q.printf(headingFormat, "", "", "", SafeText(r.Address))
	}
	return q.err
}

// Close writes the summary line.
func (q *Mailq) Close() error {
	if q.count == 0 {
		q.printf("Mail queue is empty\n")
	} else {
		q.printf("\n-- %d Kbytes in %d Request%s.\n", q.size/1024, q.count, plural(q.count))
	}
	return q.err
}

// Count returns the number of messages added and their total size.
func (q *Mailq) Count() (messages, bytes int64) { return q.count, q.size }

func plural(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// jsonMessage is postqueue -j's object, with facteur's fields after
// Postfix's (readers of postqueue -j ignore fields they do not know).
type jsonMessage struct {
	QueueName    string          `json:"queue_name"`
	QueueID      string          `json:"queue_id"`
	ArrivalTime  int64           `json:"arrival_time"`
	MessageSize  int64           `json:"message_size"`
	ForcedExpire bool            `json:"forced_expire"`
	Sender       string          `json:"sender"`
	Recipients   []jsonRecipient `json:"recipients"`
	Node         string          `json:"node"`
	Kind         string          `json:"kind,omitempty"`
	Held         bool            `json:"held"`
	HoldReason   string          `json:"hold_reason,omitempty"`
}

type jsonRecipient struct {
	Address     string `json:"address"`
	DelayReason string `json:"delay_reason,omitempty"`
	Status      string `json:"status,omitempty"`
	Attempts    int    `json:"attempts"`
	NextAttempt int64  `json:"next_attempt_time,omitempty"`
	Transport   string `json:"transport,omitempty"`
}

// WriteJSON writes m as one line of postqueue -j output.
func WriteJSON(w io.Writer, m *Message) error {
	j := jsonMessage{
		QueueName: m.QueueName(), QueueID: m.ID, ArrivalTime: m.ArrivedAt.Unix(), MessageSize: m.Size,
		ForcedExpire: m.ForcedExpire, Sender: m.Sender, Recipients: make([]jsonRecipient, 0, len(m.Recipients)),
		Node: m.Node, Kind: m.Kind, Held: m.Held, HoldReason: m.HoldReason,
	}
	for _, r := range m.Recipients {
		jr := jsonRecipient{Address: r.Address, DelayReason: r.Reason, Status: r.Status, Attempts: r.Attempts, Transport: r.Transport}
		if !r.NextAttemptAt.IsZero() {
			jr.NextAttempt = r.NextAttemptAt.Unix()
		}
		j.Recipients = append(j.Recipients, jr)
	}
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// ShapeRow is one line of qshape: a domain (TOTAL first) and its counts per
// age bucket.
type ShapeRow struct {
	Domain string
	Total  int64
	Counts []int64
}

// ShapeHeads returns qshape's column heads for the bucket upper bounds
// (minutes): "T", each bound, and the last bound with "+".
func ShapeHeads(bounds []float64) []string {
	heads := []string{"T"}
	for _, b := range bounds {
		heads = append(heads, strconv.FormatFloat(b, 'f', -1, 64))
	}
	if len(bounds) > 0 {
		heads = append(heads, heads[len(heads)-1]+"+")
	}
	return heads
}

// WriteShape writes rows in qshape's layout for a terminal of width
// columns (80 when 0): each column as wide as its head or the TOTAL count
// plus one (at least 3), and the domain column taking what is left (at
// least 18), long domains cut on the left with "+". rows[0] must be TOTAL.
func WriteShape(w io.Writer, heads []string, rows []ShapeRow, width int) error {
	if width < 80 {
		width = 80
	}
	const minDomain = 18
	widths := make([]int, len(heads))
	dw := width
	for i, h := range heads {
		l := len(h)
		if len(rows) > 0 {
			var n int64
			if i == 0 {
				n = rows[0].Total
			} else if i-1 < len(rows[0].Counts) {
				n = rows[0].Counts[i-1]
			}
			l = max(l, len(strconv.FormatInt(n, 10)))
		}
		if l > 2 {
			l++
		} else {
			l = 3
		}
		widths[i] = l
		dw -= l
	}
	dw = max(dw, minDomain)
	var sb strings.Builder
	line := func(d string, cells []string) {
		if len(d) > dw {
			sb.WriteString("+" + d[len(d)-dw+1:])
		} else {
			sb.WriteString(strings.Repeat(" ", dw-len(d)) + d)
		}
		for i, c := range cells {
			fmt.Fprintf(&sb, "%*s", widths[i], c)
		}
		sb.WriteByte('\n')
	}
	line("", heads)
	for _, r := range rows {
		cells := make([]string, len(heads))
		cells[0] = strconv.FormatInt(r.Total, 10)
		for i := 1; i < len(heads); i++ {
			var n int64
			if i-1 < len(r.Counts) {
				n = r.Counts[i-1]
			}
			cells[i] = strconv.FormatInt(n, 10)
		}
		line(SafeText(r.Domain), cells)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// SafeText replaces control characters and invalid UTF-8, so that nothing in
// the queue can act on the terminal of whoever lists it.
func SafeText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}
