package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/facteur/facteur/internal/mailqfmt"
	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
)

// The queue tools: Postfix's mailq, postqueue, postsuper, postcat and qshape
// on top of the database, so that they work from any host that reaches
// PostgreSQL. Listings read the queue tables; actions are transactions on
// queue rows (store/queueadmin.go says how they stay safe while queue
// managers run) followed by NOTIFY facteur_queue, and are audited as
// "cli:<OS user>". Only `cat` needs the spool, so it runs on the node that
// holds the message.

func addQueueCommands(root *cobra.Command, a *app) {
	q := &cobra.Command{
		Use:   "queue",
		Short: "list, inspect and act on the mail queue (mailq, postqueue, postsuper, postcat, qshape)",
		Long: `queue lists and acts on the mail queue of every node that shares the database.

Actions (hold, release, flush, delete, requeue, expire) take queue ids as
arguments, "-" to read them from standard input (one per line; a trailing
*, ! or # as mailq prints them is ignored), ALL for every message, or the
filter flags (--domain, --sender, --recipient, --status, --older-than,
--node) alone or with ALL. They are transactions on the queue rows: a
recipient being delivered finishes its attempt and the action applies to
the rest (delete, expire and requeue wait up to --wait for such
recipients, then report them). Every action is written to audit_log.`,
	}
	root.AddCommand(q)
	addQueueList(q, a)
	addQueueShow(q, a)
	addQueueCat(q, a)
	addQueueShape(q, a)
	for _, act := range queueActions {
		addQueueAction(q, a, act)
	}
}

// queueFilterFlags are the selection flags of list and the actions.
type queueFilterFlags struct {
	domain, sender, recipient, status, olderThan, node string
}

func (f *queueFilterFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.domain, "domain", "", "messages with a recipient in this domain")
	fl.StringVar(&f.sender, "sender", "", "messages from this sender (an address, a domain, or <> for the null sender)")
	fl.StringVar(&f.recipient, "recipient", "", "messages with this recipient (an address or a domain)")
	fl.StringVar(&f.status, "status", "", "messages with a recipient in this state (queued, delivering, deferred, delivered, bounced, expired), or held, or active")
	fl.StringVar(&f.olderThan, "older-than", "", "messages that arrived at least this long ago (e.g. 90m, 12h, 2d)")
	fl.StringVar(&f.node, "node", "", "messages of this node's spool")
}

func (f *queueFilterFlags) set() bool {
	return f.domain != "" || f.sender != "" || f.recipient != "" || f.status != "" || f.olderThan != "" || f.node != ""
}

func (f *queueFilterFlags) filter() (store.QueueFilter, error) {
	qf := store.QueueFilter{Node: f.node, Sender: f.sender, Recipient: f.recipient, Status: strings.ToLower(f.status)}
	if f.domain != "" {
		d, err := dataNormDomain(f.domain)
		if err != nil {
			return qf, dataBadInput("--domain: %v", err)
		}
		qf.Domain = d
	}
	if f.olderThan != "" {
		d, err := queueParseAge(f.olderThan)
		if err != nil {
			return qf, dataBadInput("--older-than: %v", err)
		}
		qf.OlderThan = d
	}
	if err := qf.Validate(); err != nil {
		return qf, dataBadInput("%v", err)
	}
	return qf, nil
}

// parseAge parses a duration as Go does, plus whole days ("2d", "1d12h").
func queueParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (e.g. 90m, 12h, 2d)", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. 90m, 12h, 2d)", s)
	}
	if d < 0 || days < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return days + d, nil
}

func queueTimeLocation(utc bool) *time.Location {
	if utc {
		return time.UTC
	}
	return time.Local
}

func addQueueList(q *cobra.Command, a *app) {
	var f queueFilterFlags
	var utc bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"mailq"},
		Short:   "list the queue in mailq's format (--json: postqueue -j)",
		Long: `list prints the queue as Postfix's mailq does: the queue id (with * when a
recipient is being delivered, ! when the message is held, # when recipients
were expired and their DSN is not sent yet), size, arrival time and sender,
then each recipient still to be delivered with the last reason in
parentheses, and the summary line "-- N Kbytes in M Requests." counting
exactly the messages listed. --json prints one object per message, as
postqueue -j.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			qf, err := f.filter()
			if err != nil {
				return err
			}
			st, err := a.store(cmd.Context())
			if err != nil {
				return err
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			mq := mailqfmt.NewMailq(out, queueTimeLocation(utc))
			err = st.ListQueue(cmd.Context(), qf, func(e *store.QueueEntry) error {
				m, ok := mailqfmt.FromQueueEntry(e)
				if !ok {
					return nil
				}
				if a.jsonOut {
					return mailqfmt.WriteJSON(out, &m)
				}
				return mq.Add(&m)
			})
			if err != nil {
				return dataError(err)
			}
			if !a.jsonOut {
				if err := mq.Close(); err != nil {
					return err
				}
			}
			return out.Flush()
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&utc, "utc", false, "show times in UTC")
	q.AddCommand(cmd)
}

// queueShowReport is what `queue show --json` prints.
type queueShowReport struct {
	Message  *store.QueueEntry        `json:"message,omitempty"`
	Accepted []store.AcceptedLogEntry `json:"accepted,omitempty"`
	Log      []store.DeliveryLogEntry `json:"delivery_log"`
	InQueue  bool                     `json:"in_queue"`
}

func addQueueShow(q *cobra.Command, a *app) {
	var utc bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "show a message: envelope, DSN fields, every recipient's state, and its delivery log",
		Long: `show prints everything the database knows of a message: its envelope and
DSN parameters, each recipient with its state, attempts, next attempt, last
reply and relay, then its accepted and delivery log lines. A message that
already left the queue is shown from the logs.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := queueID(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, err := a.store(ctx)
			if err != nil {
				return err
			}
			rep := queueShowReport{}
			e, err := st.QueueEntryByID(ctx, id)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return err
			default:
				rep.Message, rep.InQueue = e, true
			}
			if rep.Accepted, err = st.AcceptedLog(ctx, store.LogFilter{QueueID: id}); err != nil {
				return err
			}
			if rep.Log, err = st.DeliveryLog(ctx, store.LogFilter{QueueID: id}); err != nil {
				return err
			}
			if !rep.InQueue && len(rep.Accepted) == 0 && len(rep.Log) == 0 {
				return &exitError{code: exitFailure, err: fmt.Errorf("%s: no such message in the queue or the logs", id)}
			}
			out := cmd.OutOrStdout()
			if a.jsonOut {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			loc := queueTimeLocation(utc)
			if rep.InQueue {
				queueShowMessage(out, rep.Message, loc)
			} else {
				fmt.Fprintf(out, "%s: not in the queue any more\n", id)
			}
			if len(rep.Accepted) > 0 || len(rep.Log) > 0 {
				fmt.Fprintln(out, "log:")
				for _, ev := range logMerge(rep.Accepted, rep.Log) {
					fmt.Fprintln(out, "  "+ev.line(loc))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&utc, "utc", false, "show times in UTC")
	q.AddCommand(cmd)
}

const queueShowTime = "2006-01-02 15:04:05 MST"

func queueShowMessage(w io.Writer, e *store.QueueEntry, loc *time.Location) {
	m, _ := mailqfmt.FromQueueEntry(e)
	state := m.QueueName()
	kv := []string{
		"queue id", fmt.Sprintf("%s (node %s, %s)", e.ID, e.Node, state),
		"arrived", e.ArrivedAt.In(loc).Format(queueShowTime),
		"sender", "<" + mailqfmt.SafeText(e.Sender) + ">",
		"size", strconv.FormatInt(e.Size, 10) + " bytes",
		"kind", e.Kind,
	}
	if e.MessageID != "" {
		kv = append(kv, "message-id", mailqfmt.SafeText(e.MessageID))
	}
	if e.ClientAddr != "" || e.Protocol != "" {
		c := e.ClientAddr
		if e.ClientHelo != "" {
			c += " (helo " + e.ClientHelo + ")"
		}
		kv = append(kv, "client", strings.TrimSpace(mailqfmt.SafeText(c+" "+e.Protocol)))
	}
	if e.AuthUser != "" {
		kv = append(kv, "auth user", e.AuthUser)
	}
	if e.LocalUser != "" {
		kv = append(kv, "local user", e.LocalUser)
	}
	var dsn []string
	if e.DSNRet != "" {
		dsn = append(dsn, "RET="+e.DSNRet)
	}
	if e.DSNEnvID != "" {
		dsn = append(dsn, "ENVID="+mailqfmt.SafeText(e.DSNEnvID))
	}
	if len(dsn) > 0 {
		kv = append(kv, "dsn", strings.Join(dsn, " "))
	}
	body := e.BodyType
	if e.SMTPUTF8 {
		body += ", SMTPUTF8"
	}
	kv = append(kv, "body", body)
	if e.Held {
		kv = append(kv, "held", "yes: "+mailqfmt.SafeText(e.HoldReason))
	}
	if e.DelayWarned {
		kv = append(kv, "delay warned", "yes")
	}
	dataFields(w, kv...)
	fmt.Fprintf(w, "recipients:\n")
	for _, r := range e.Recipients {
		line := "  " + mailqfmt.SafeText(r.Address)
		if r.OrigAddress != "" && !strings.EqualFold(r.OrigAddress, r.Address) {
			line += " (from " + mailqfmt.SafeText(r.OrigAddress) + ")"
		}
		line += ": " + r.Status
		line += fmt.Sprintf(", %d attempt%s", r.Attempts, queuePlural(r.Attempts))
		switch r.Status {
		case store.RcptQueued, store.RcptDeferred:
			line += ", next " + r.NextAttemptAt.In(loc).Format(queueShowTime)
		case store.RcptDelivering:
			line += ", lease " + r.LeaseOwner + " until " + r.LeaseExpiresAt.In(loc).Format(queueShowTime)
		}
		fmt.Fprintln(w, line)
		fmt.Fprintf(w, "      transport %s", mailqfmt.SafeText(r.Transport))
		if r.LastRelay != "" {
			fmt.Fprintf(w, ", last relay %s", mailqfmt.SafeText(r.LastRelay))
		}
		if !r.LastAttemptAt.IsZero() {
			fmt.Fprintf(w, ", last attempt %s", r.LastAttemptAt.In(loc).Format(queueShowTime))
		}
		fmt.Fprintln(w)
		if r.LastReply != "" {
			fmt.Fprintf(w, "      last reply: %s", mailqfmt.SafeText(r.LastReply))
			if r.LastDSN != "" {
				fmt.Fprintf(w, " (dsn %s)", r.LastDSN)
			}
			fmt.Fprintln(w)
		}
		var d []string
		if r.DSNNotify != "" {
			d = append(d, "NOTIFY="+r.DSNNotify)
		}
		if r.DSNOrcpt != "" {
			d = append(d, "ORCPT="+mailqfmt.SafeText(r.DSNOrcpt))
		}
		if r.DSNPending {
			d = append(d, "DSN owed: "+r.DSNAction)
		}
		if r.DelayNotified {
			d = append(d, "delay notice sent")
		}
		if len(d) > 0 {
			fmt.Fprintf(w, "      %s\n", strings.Join(d, ", "))
		}
	}
}

func queuePlural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func addQueueCat(q *cobra.Command, a *app) {
	var env, hdr, body bool
	cmd := &cobra.Command{
		Use:   "cat ID",
		Short: "print a queued message as postcat -q does (on the node that holds its spool)",
		Long: `cat prints the envelope and the message as stored in the spool, as postcat -q
does. The body lives in the spool of the node that received the message: on
another node cat says which node to run it on. --envelope, --header and
--body pick the parts (default: all).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := queueID(args[0])
			if err != nil {
				return err
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			st, err := a.store(cmd.Context())
			if err != nil {
				return err
			}
			e, err := st.QueueEntryByID(cmd.Context(), id)
			if errors.Is(err, store.ErrNotFound) {
				return &exitError{code: exitFailure, err: fmt.Errorf("%s: no such message in the queue", id)}
			}
			if err != nil {
				return err
			}
			if e.Node != cfg.Node {
				return &exitError{code: exitFailure, err: fmt.Errorf(
					"%s: the message is in the spool of node %s; this is node %s: run `facteur queue cat %s` on %s",
					id, e.Node, cfg.Node, id, e.Node)}
			}
			if !env && !hdr && !body {
				env, hdr, body = true, true, true
			}
			return queueCat(cmd.OutOrStdout(), cfg.SpoolDir, e, env, hdr, body)
		},
	}
	cmd.Flags().BoolVar(&env, "envelope", false, "print the envelope records")
	cmd.Flags().BoolVar(&hdr, "header", false, "print the message header")
	cmd.Flags().BoolVar(&body, "body", false, "print the message body")
	q.AddCommand(cmd)
}

// queueCat writes a message as postcat -q does: envelope records, then the
// message contents, between *** markers.
func queueCat(w io.Writer, spoolDir string, e *store.QueueEntry, env, hdr, body bool) error {
	if fi, err := os.Stat(spoolDir); err != nil || !fi.IsDir() {
		return &exitError{code: exitFailure, err: fmt.Errorf("%s: spool directory %s is not here: %v", e.ID, spoolDir, err)}
	}
	sp, err := spool.Open(spoolDir, spool.Options{})
	if err != nil {
		return err
	}
	defer sp.Close()
	f, err := sp.Open(e.SpoolKey)
	if errors.Is(err, fs.ErrNotExist) {
		return &exitError{code: exitFailure, err: fmt.Errorf("%s: the spool file %s is missing", e.ID, e.SpoolKey)}
	}
	if err != nil {
		return err
	}
	defer f.Close()
	m, _ := mailqfmt.FromQueueEntry(e)
	name := m.QueueName() + "/" + e.ID
	bw := bufio.NewWriter(w)
	if env {
		fmt.Fprintf(bw, "*** ENVELOPE RECORDS %s ***\n", name)
		fmt.Fprintf(bw, "message_size: %d\n", e.Size)
		fmt.Fprintf(bw, "message_arrival_time: %s\n", e.ArrivedAt.Local().Format(time.ANSIC))
		fmt.Fprintf(bw, "node: %s\n", e.Node)
		if e.DSNEnvID != "" {
			fmt.Fprintf(bw, "dsn_envid: %s\n", e.DSNEnvID)
		}
		if e.DSNRet != "" {
			fmt.Fprintf(bw, "dsn_ret: %s\n", e.DSNRet)
		}
		fmt.Fprintf(bw, "sender: %s\n", e.Sender)
		for _, r := range e.Recipients {
			if r.OrigAddress != "" && r.OrigAddress != r.Address {
				fmt.Fprintf(bw, "original_recipient: %s\n", r.OrigAddress)
			}
			if r.DSNOrcpt != "" {
				fmt.Fprintf(bw, "dsn_orig_rcpt: %s\n", r.DSNOrcpt)
			}
			if r.DSNNotify != "" {
				fmt.Fprintf(bw, "dsn_notify: %s\n", r.DSNNotify)
			}
			if r.Final() {
				fmt.Fprintf(bw, "done_recipient: %s\n", r.Address)
			} else {
				fmt.Fprintf(bw, "recipient: %s\n", r.Address)
			}
		}
	}
	if hdr || body {
		fmt.Fprintf(bw, "*** MESSAGE CONTENTS %s ***\n", name)
		// The message as agents send it: the fields kept beside the spool
		// file (Authentication-Results, DKIM-Signature), then the file.
		var msg io.Reader = f
		if e.Prepend != "" {
			msg = io.MultiReader(strings.NewReader(e.Prepend), f)
		}
		if err := queueCatParts(bw, msg, hdr, body); err != nil {
			return fmt.Errorf("%s: read spool file: %w", e.ID, err)
		}
	}
	fmt.Fprintf(bw, "*** MESSAGE FILE END %s ***\n", name)
	return bw.Flush()
}

// queueCatParts copies the header (up to and including the empty line that ends
// it) and/or the body of a message.
func queueCatParts(w io.Writer, r io.Reader, hdr, body bool) error {
	if hdr && body {
		_, err := io.Copy(w, r)
		return err
	}
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if len(line) > 0 && hdr {
			if _, werr := io.WriteString(w, line); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if line == "\n" || line == "\r\n" {
			break
		}
	}
	if !body {
		return nil
	}
	_, err := io.Copy(w, br)
	return err
}

func addQueueShape(q *cobra.Command, a *app) {
	var bySender, held bool
	var node string
	var width int
	cmd := &cobra.Command{
		Use:   "shape [incoming|active|deferred|hold ...]",
		Short: "count the queue by domain and age, as qshape does",
		Long: `shape prints qshape's table: one row per recipient domain (TOTAL first), the
number of recipients in the column T and per age bucket (minutes since
arrival: under 5, 10, 20, … 1280, and 1280+). The queue names pick the
recipients counted, as qshape's arguments do: incoming (queued), active
(delivering) and deferred recipients of messages not held, hold (every
waiting recipient of held messages); the default is incoming, active and
deferred. --sender counts messages by sender domain instead.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o := store.ShapeOptions{BySender: bySender, Node: node}
			for _, n := range args {
				n = strings.ToLower(n)
				if !slices.Contains(store.ShapeQueues, n) {
					return dataBadInput("unknown queue %q (use %s)", n, strings.Join(store.ShapeQueues, ", "))
				}
				o.Queues = append(o.Queues, n)
			}
			if held {
				if len(o.Queues) == 0 {
					o.Queues = []string{"incoming", "active", "deferred"}
				}
				o.Queues = append(o.Queues, "hold")
			}
			st, err := a.store(cmd.Context())
			if err != nil {
				return err
			}
			rows, err := st.QueueShape(cmd.Context(), o)
			if err != nil {
				return err
			}
			heads := mailqfmt.ShapeHeads(store.ShapeBoundsMinutes)
			if a.jsonOut {
				enc := json.NewEncoder(cmd.OutOrStdout())
				for _, r := range rows {
					buckets := map[string]int64{}
					for i, n := range r.Counts {
						buckets[heads[i+1]] = n
					}
					if err := enc.Encode(map[string]any{"domain": r.Domain, "total": r.Total, "buckets": buckets}); err != nil {
						return err
					}
				}
				return nil
			}
			out := make([]mailqfmt.ShapeRow, len(rows))
			for i, r := range rows {
				out[i] = mailqfmt.ShapeRow{Domain: r.Domain, Total: r.Total, Counts: r.Counts}
			}
			return mailqfmt.WriteShape(cmd.OutOrStdout(), heads, out, width)
		},
	}
	cmd.Flags().BoolVarP(&bySender, "sender", "s", false, "count messages by sender domain")
	cmd.Flags().BoolVar(&held, "held", false, "count the held messages too (as the queue name hold)")
	cmd.Flags().StringVar(&node, "node", "", "only this node's messages")
	cmd.Flags().IntVarP(&width, "width", "w", 80, "terminal width")
	q.AddCommand(cmd)
}

// queueIDPattern is a queue id (queue_message's CHECK).
var queueIDPattern = regexp.MustCompile(`^[0-9A-Za-z]{8,32}$`)

// queueID checks an id typed or piped by the operator; mailq's status marks
// (*, !, #) are dropped, so that mailq's output can be piped back.
func queueID(s string) (string, error) {
	id := strings.TrimRight(strings.TrimSpace(s), "*!#")
	if !queueIDPattern.MatchString(id) {
		return "", dataBadInput("%q is not a queue id", s)
	}
	return id, nil
}

// queueActionSpec describes one action command.
type queueActionSpec struct {
	name, short, long string
	done              string // "placed on hold", for the report
	wait              bool   // retry busy recipients until --wait runs out
	notify            bool   // wake the queue managers afterwards
	defaultAll        bool   // no argument means ALL (postqueue -f)
	run               func(ctx context.Context, a *app, st *store.Store, ids []string, o *queueActionOptions) ([]store.QueueActionResult, error)
}

type queueActionOptions struct {
	filter    queueFilterFlags
	wait      time.Duration
	reason    string
	flushOnly string // flush: the --domain restricts the recipients too
}

var queueActions = []queueActionSpec{
	{name: "flush", done: "flushed", notify: true, defaultAll: true,
		short: "make waiting recipients due now and wake the queue managers (postqueue -f, -i, -s)",
		long: `flush makes the queued and deferred recipients of the messages named due now
and wakes the queue managers (NOTIFY facteur_queue). With --domain only the
recipients of that domain are flushed (postqueue -s). Held messages are
left alone: release them first. Without arguments it flushes the whole
queue, as postqueue -f.`,
		run: func(ctx context.Context, _ *app, st *store.Store, ids []string, o *queueActionOptions) ([]store.QueueActionResult, error) {
			return st.FlushMessages(ctx, ids, o.flushOnly)
		}},
	{name: "hold", done: "placed on hold",
		short: "put messages on hold (postsuper -h)",
		long: `hold stops every further attempt for the messages named. A recipient being
delivered finishes its attempt; if the attempt defers it, it waits with the
rest of the message until release. --reason is shown in list and show.`,
		run: func(ctx context.Context, _ *app, st *store.Store, ids []string, o *queueActionOptions) ([]store.QueueActionResult, error) {
			return st.HoldMessages(ctx, ids, o.reason)
		}},
	{name: "release", done: "released", notify: true,
		short: "release held messages (postsuper -H)",
		long: `release releases held messages: their waiting recipients are tried at their
next attempt time (run flush to try them at once). A pending delete is
cancelled.`,
		run: func(ctx context.Context, _ *app, st *store.Store, ids []string, _ *queueActionOptions) ([]store.QueueActionResult, error) {
			return st.ReleaseMessages(ctx, ids)
		}},
	{name: "delete", done: "removed", wait: true,
		short: "delete messages without a DSN (postsuper -d)",
		long: `delete removes messages from the queue, with no notice to the sender. A
message none of whose recipients is being delivered leaves at once and its
body is removed (here when this node holds it, else by the reconciler of
its node). A message with recipients in delivery is held and loses its other
recipients; the delivery finishes (it cannot be called back), and delete
waits up to --wait for it, then reports the messages still pending: the
queue manager removes them when the attempt ends, or run delete again.`,
		run: func(ctx context.Context, _ *app, st *store.Store, ids []string, _ *queueActionOptions) ([]store.QueueActionResult, error) {
			return st.DeleteMessages(ctx, ids)
		}},
	{name: "expire", done: "expired", wait: true, notify: true,
		short: "bounce messages now (postsuper -e)",
		long: `expire makes the waiting recipients of the messages named expired, owing a
failure DSN to the sender (as the queue's policy says: never to the null
sender, never against NOTIFY), with their last reply as the reason. The
queue manager sends the DSNs in its next sweep (within 30 seconds) and then
removes the messages. Recipients being delivered finish their attempt;
expire waits up to --wait for them.`,
		run: func(ctx context.Context, _ *app, st *store.Store, ids []string, _ *queueActionOptions) ([]store.QueueActionResult, error) {
			return st.ExpireMessages(ctx, ids)
		}},
	{name: "requeue", done: "requeued", wait: true, notify: true,
		short: "re-resolve recipients through the lookups and retry now (postsuper -r)",
		long: `requeue resolves again, through the lookups as cleanup does, the original
recipient of every waiting recipient of the messages named: aliases that
changed give their new destinations, transports are recomputed, and the
recipients are due at once. Recipients already delivered, bounced or
expired are never added again; recipients being delivered finish their
attempt first (requeue waits up to --wait for them).`,
		run: queueRequeue},
}

func addQueueAction(q *cobra.Command, a *app, spec queueActionSpec) {
	o := &queueActionOptions{}
	cmd := &cobra.Command{
		Use:   spec.name + " [ID ... | - | ALL]",
		Short: spec.short,
		Long:  spec.long,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.queueAction(cmd, spec, o, args)
		},
	}
	o.filter.add(cmd)
	if spec.wait {
		cmd.Flags().DurationVar(&o.wait, "wait", 10*time.Second, "how long to wait for recipients being delivered")
	}
	if spec.name == "hold" {
		cmd.Flags().StringVar(&o.reason, "reason", "", "why the messages are held (default: held by cli:<user>)")
	}
	q.AddCommand(cmd)
}

// queueActionIDs returns the messages an action applies to.
// queueActionIDs returns the ids of the messages to act on, and whether they
// were selected (by ALL or filters) rather than named.
func queueActionIDs(cmd *cobra.Command, st *store.Store, spec queueActionSpec, o *queueActionOptions, args []string) ([]string, bool, error) {
	all := false
	var ids []string
	for _, arg := range args {
		switch arg {
		case "ALL":
			all = true
		case "-":
			sc := bufio.NewScanner(cmd.InOrStdin())
			for sc.Scan() {
				for _, tok := range strings.Fields(sc.Text()) {
					id, err := queueID(tok)
					if err != nil {
						return nil, false, err
					}
					ids = append(ids, id)
				}
			}
			if err := sc.Err(); err != nil {
				return nil, false, fmt.Errorf("read queue ids: %w", err)
			}
		default:
			id, err := queueID(arg)
			if err != nil {
				return nil, false, err
			}
			ids = append(ids, id)
		}
	}
	if all && len(ids) > 0 {
		return nil, false, dataBadInput("ALL and queue ids do not go together")
	}
	if len(args) == 0 && !o.filter.set() && !spec.defaultAll {
		return nil, false, dataBadInput("name the messages: queue ids, - (ids on standard input), ALL, or filter flags")
	}
	if len(args) > 0 && !all && !o.filter.set() {
		return ids, false, nil
	}
	qf, err := o.filter.filter()
	if err != nil {
		return nil, false, err
	}
	if !all && len(args) > 0 {
		qf.IDs = ids // ids and filters: the ids that match
	}
	sel, err := st.SelectQueueIDs(cmd.Context(), qf)
	return sel, true, err
}

func (a *app) queueAction(cmd *cobra.Command, spec queueActionSpec, o *queueActionOptions, args []string) error {
	st, ctx, err := a.dataStore(cmd)
	if err != nil {
		return err
	}
	cfg, err := a.config()
	if err != nil {
		return err
	}
	ids, selected, err := queueActionIDs(cmd, st, spec, o, args)
	if err != nil {
		return err
	}
	if spec.name == "flush" {
		o.flushOnly = o.filter.domain
		if o.flushOnly != "" {
			o.flushOnly, _ = dataNormDomain(o.flushOnly)
		}
	}
	final := map[string]store.QueueActionResult{}
	pending := ids
	deadline := time.Now().Add(o.wait)
	for round := 0; len(pending) > 0; round++ {
		res, err := spec.run(ctx, a, st, pending, o)
		for _, r := range res {
			prev, seen := final[r.ID]
			if seen && r.Found {
				r.Changed += prev.Changed
			}
			if seen && !r.Found && prev.Found {
				// The message left the queue while we waited (the
				// queue manager finished it): what was asked is done.
				r = prev
				r.Busy, r.Deleted, r.Note = 0, spec.name == "delete", "left the queue after its delivery attempt"
			}
			final[r.ID] = r
		}
		if err != nil {
			queueReport(cmd, a, spec, ids, selected, final)
			return err
		}
		if spec.notify {
			queueNotifyNodes(ctx, st, res)
		}
		if spec.name == "delete" {
			queueRemoveBodies(cmd, a, cfg, res)
		}
		if !spec.wait {
			break
		}
		pending = pending[:0:0]
		for _, r := range res {
			if r.Found && r.Busy > 0 && !r.Deleted {
				pending = append(pending, r.ID)
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Second, time.Until(deadline)+time.Millisecond)):
		}
	}
	return queueReport(cmd, a, spec, ids, selected, final)
}

// queueNotifyNodes wakes the queue managers of the nodes whose messages changed.
func queueNotifyNodes(ctx context.Context, st *store.Store, res []store.QueueActionResult) {
	nodes := map[string]bool{}
	for _, r := range res {
		if r.Found && r.Changed > 0 {
			nodes[r.Node] = true
		}
	}
	for n := range nodes {
		// A hint only: the queue managers also poll.
		_ = st.NotifyQueue(ctx, n)
	}
}

// queueRemoveBodies removes the bodies of deleted messages held by this node's
// spool; other nodes' reconcilers remove theirs (no row refers to them).
func queueRemoveBodies(cmd *cobra.Command, a *app, cfg *Config, res []store.QueueActionResult) {
	var sp *spool.Spool
	for _, r := range res {
		if !r.Deleted || r.SpoolKey == "" || r.Node != cfg.Node {
			continue
		}
		if sp == nil {
			if fi, err := os.Stat(cfg.SpoolDir); err != nil || !fi.IsDir() {
				return
			}
			var err error
			if sp, err = spool.Open(cfg.SpoolDir, spool.Options{}); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "facteur: spool %s: %v (bodies left for the reconciler)\n", cfg.SpoolDir, err)
				return
			}
			defer sp.Close()
		}
		if err := sp.Remove(r.SpoolKey); err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "facteur: %s: remove body: %v (left for the reconciler)\n", r.ID, err)
		}
	}
}

// queueReport prints one line per message (or one JSON object) and a
// summary, and returns the exit status: 1 if a named message was not found,
// 75 (EX_TEMPFAIL) if work is still pending behind deliveries in flight. A
// message selected by ALL or a filter that left the queue before the action
// reached it (the queue manager finished it) is no error.
func queueReport(cmd *cobra.Command, a *app, spec queueActionSpec, ids []string, selected bool, final map[string]store.QueueActionResult) error {
	out := cmd.OutOrStdout()
	var done, missing, busy int
	enc := json.NewEncoder(out)
	for _, id := range ids {
		r, ok := final[id]
		if !ok {
			continue
		}
		pending := r.Found && r.Busy > 0 && !r.Deleted
		switch {
		case !r.Found && selected:
			r.Note = "left the queue before the action reached it"
		case !r.Found:
			missing++
		case r.Changed > 0 && !pending:
			done++
		}
		if pending {
			busy++
		}
		if a.jsonOut {
			if err := enc.Encode(r); err != nil {
				return err
			}
			continue
		}
		var line string
		switch {
		case !r.Found && selected:
			line = id + ": " + r.Note
		case !r.Found:
			line = id + ": not in the queue"
		case spec.name == "delete" && pending:
			line = fmt.Sprintf("%s: delete pending (%d other recipient%s removed): %d recipient%s being delivered; the message is held and leaves the queue after the attempt",
				id, r.Changed, queuePlural(r.Changed), r.Busy, queuePlural(r.Busy))
		case r.Changed > 0:
			line = id + ": " + spec.done
			if spec.name != "hold" && spec.name != "release" && !r.Deleted {
				line += fmt.Sprintf(" (%d recipient%s)", r.Changed, queuePlural(r.Changed))
			}
			if r.Busy > 0 && !r.Deleted {
				line += fmt.Sprintf("; %d recipient%s being delivered", r.Busy, queuePlural(r.Busy))
			}
			if r.Note != "" {
				line += "; " + r.Note
			}
		default:
			line = id + ": unchanged"
			if r.Note != "" {
				line += ": " + r.Note
			}
			if r.Busy > 0 {
				line += fmt.Sprintf("; %d recipient%s being delivered", r.Busy, queuePlural(r.Busy))
			}
		}
		fmt.Fprintln(out, line)
	}
	if !a.jsonOut {
		summary := fmt.Sprintf("facteur queue %s: %s: %d message%s", spec.name, spec.done, done, queuePlural(done))
		if busy > 0 {
			summary += fmt.Sprintf(", %d waiting for a delivery in flight", busy)
		}
		fmt.Fprintln(cmd.ErrOrStderr(), summary)
	}
	switch {
	case missing > 0:
		return &exitError{code: exitFailure, err: fmt.Errorf("%d message%s not in the queue", missing, queuePlural(missing))}
	case busy > 0 && spec.wait:
		verb := "has"
		if busy > 1 {
			verb = "have"
		}
		return &exitError{code: exitTempFail, err: fmt.Errorf("%d message%s still %s recipients being delivered: the action applies to them after their attempt (run it again)", busy, queuePlural(busy), verb)}
	}
	return nil
}

// queueRequeue re-resolves recipients through a fresh, uncached lookups
// resolver, with cleanup's rules for failures: a temporary lookup error
// leaves the message as it is; a loop, a limit or a bad address becomes an
// error transport (the recipient bounces with a DSN); an address of ours
// that resolves to nothing now bounces as unknown (5.1.1) instead of
// vanishing.
func queueRequeue(ctx context.Context, a *app, st *store.Store, ids []string, _ *queueActionOptions) ([]store.QueueActionResult, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	lo := lookups.Options{Hostname: cfg.Hostname, Postmaster: cfg.Postmaster, CacheSize: -1}
	if err := cfg.lookupsSRS(&lo); err != nil {
		return nil, err
	}
	res := lookups.New(st, lo)
	return st.RequeueMessages(ctx, ids, func(ctx context.Context, orig string) ([]store.QueueRecipient, error) {
		return queueRequeueExpand(ctx, res, orig)
	})
}

// Transports of recipients whose expansion failed for good (cleanup's).
const (
	requeueLoop    = "error:5.4.6 mail forwarding loop"
	requeueTooMany = "error:5.2.4 alias expansion gives too many recipients"
	requeueBadAddr = "error:5.1.3 bad recipient address syntax"
	requeueUnknown = "error:5.1.1 user unknown"
)

func queueRequeueExpand(ctx context.Context, r *lookups.Resolver, orig string) ([]store.QueueRecipient, error) {
	in := orig
	if p, err := address.Parse(orig); err == nil {
		in = p.Local + "@" + p.Domain
	}
	res, found, err := r.Resolve(ctx, in)
	if err != nil {
		if !lookups.Permanent(err) {
			return nil, err
		}
		tr := requeueLoop
		switch {
		case errors.Is(err, lookups.ErrTooMany):
			tr = requeueTooMany
		case errors.Is(err, lookups.ErrBadAddress):
			tr = requeueBadAddr
		}
		return []store.QueueRecipient{{Address: strings.ToLower(orig), Domain: queueDomainPart(orig), Transport: tr}}, nil
	}
	if !found && res.Domain != lookups.DomainRemote {
		return []store.QueueRecipient{{Address: strings.ToLower(orig), Domain: queueDomainPart(orig), Transport: requeueUnknown}}, nil
	}
	out := make([]store.QueueRecipient, 0, len(res.Recipients))
	for _, fr := range res.Recipients {
		d := queueDomainPart(fr.Address)
		if d == "" {
			d = res.DomainName
		}
		out = append(out, store.QueueRecipient{Address: fr.Address, Domain: d, Transport: fr.Transport})
	}
	return out, nil
}

// domainPart returns the lower-cased domain of an address ("" for commands,
// files and addresses without one).
func queueDomainPart(addr string) string {
	if strings.HasPrefix(addr, "|") || strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, ":") {
		return ""
	}
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(addr[i+1:])
}
