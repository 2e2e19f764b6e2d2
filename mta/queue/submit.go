package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/facteur/facteur/lookups"
	"github.com/facteur/facteur/mta/deliver"
	"github.com/facteur/facteur/store"
	"github.com/facteur/facteur/store/spool"
)

// Submission is the envelope of a message the queue manager generates (a
// DSN, a double bounce).
type Submission struct {
	Sender     string   // "" for notifications (RFC 3461 6.2, RFC 5321 4.5.5)
	Recipients []string // addresses, resolved like any recipient
	Kind       string   // KindDSN, KindDoubleBounce, KindAutoReply
	BodyType   string   // "" (7BIT) or 8BITMIME
	SMTPUTF8   bool
}

// Submitter queues a new message, as cleanup does for received mail: the
// body is durable in the spool before the rows are committed. inTx, when
// set, runs inside the transaction that inserts the rows, before COMMIT; if
// it fails nothing is queued. The queue manager clears the recipients' DSN
// debt there, so that a DSN is queued if and only if the debt is cleared.
//
// An error means nothing was queued, except one wrapping
// store.ErrCommitUnknown: then the message may or may not be queued, and
// whatever inTx did with it (the reconciler settles the spool file).
type Submitter interface {
	Submit(ctx context.Context, sub Submission, body io.Reader, inTx func(ctx context.Context, tx pgx.Tx) error) (queueID string, err error)
}

// RecipientResolver resolves an address into its final recipients and next
// hops; *lookups.Resolver is one.
type RecipientResolver interface {
	Resolve(ctx context.Context, addr string) (res lookups.Result, found bool, err error)
}

// StoreSubmitter is the Submitter the queue manager uses: the durable enqueue
// of cleanup, done with the same building blocks (store/spool for the body,
// store.EnqueueWith for the rows), because cleanup's Enqueue offers no step
// inside its transaction. Notifications need none of cleanup's header
// editing: the DSN writer makes the whole message.
type StoreSubmitter struct {
	Store    *store.Store
	Spool    *spool.Spool
	Resolver RecipientResolver
	// Node names this node's spool on the rows; Hostname goes in Received:.
	Node     string
	Hostname string
	// NewQueueID makes queue ids (cleanup's Cleanup.NewQueueID); nil uses
	// a random 16-character id.
	NewQueueID func() string
	// Wake is called after a commit (the manager's Wake); may be nil.
	Wake func()
	Log  *slog.Logger
}

// Submit implements Submitter.
func (s *StoreSubmitter) Submit(ctx context.Context, sub Submission, body io.Reader, inTx func(ctx context.Context, tx pgx.Tx) error) (string, error) {
	if len(sub.Recipients) == 0 {
		return "", errors.New("submit: no recipients")
	}
	id := ""
	if s.NewQueueID != nil {
		id = s.NewQueueID()
	} else {
		id = randomID(16)
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("queue_id", id)

	rcpts, err := s.resolve(ctx, sub.Recipients)
	if err != nil {
		return "", fmt.Errorf("submit %s: %w", id, err)
	}

	w, err := s.Spool.Create(ctx, id)
	if err != nil {
		return "", fmt.Errorf("submit %s: %w", id, err)
	}
	defer w.Abort() //nolint:errcheck // a no-op once committed
	host := s.Hostname
	if host == "" {
		host = "localhost"
	}
	// RFC 5321 4.4: every hop adds a Received: field; this is the first.
	if _, err := fmt.Fprintf(w, "Received: by %s (facteur) id %s;\r\n\t%s\r\n", host, id,
		time.Now().Format("Mon, 02 Jan 2006 15:04:05 -0700 (MST)")); err != nil {
		return "", fmt.Errorf("submit %s: write spool: %w", id, err)
	}
	if _, err := io.Copy(w, body); err != nil {
		return "", fmt.Errorf("submit %s: write spool: %w", id, err)
	}
	if err := w.Commit(); err != nil {
		return "", fmt.Errorf("submit %s: commit spool: %w", id, err)
	}

	qm := store.QueueMessage{ID: id, Node: s.Node, SpoolKey: id, Sender: sub.Sender, Size: w.Size(),
		Protocol: "local", Kind: sub.Kind, BodyType: strings.ToUpper(sub.BodyType), SMTPUTF8: sub.SMTPUTF8}
	if err := s.Store.EnqueueWith(ctx, qm, rcpts, store.AcceptedLog{}, inTx); err != nil {
		if errors.Is(err, store.ErrCommitUnknown) {
			log.Error("submit: commit outcome unknown; spool file kept for the reconciler", "err", err)
			return "", fmt.Errorf("submit %s: %w", id, err)
		}
		if rerr := s.Spool.Remove(id); rerr != nil {
			log.Error("submit: remove spool file", "err", rerr)
		}
		return "", fmt.Errorf("submit %s: %w", id, err)
	}
	if s.Wake != nil {
		s.Wake()
	}
	// The accepted-message line, as cleanup writes it for received mail.
	log.Info(fmt.Sprintf("%s: from=<%s>, size=%d, nrcpt=%d", id, sub.Sender, qm.Size, len(rcpts)),
		"from", sub.Sender, "size", qm.Size, "nrcpt", len(rcpts), "client", "local", "protocol", "local", "kind", sub.Kind)
	return id, nil
}

// Error transports for recipients that cannot be resolved for good: the
// notification then bounces, and a failed DSN goes to the postmaster.
const (
	transportBadAddress = "error:5.1.3 bad recipient address syntax"
	transportUnknown    = "error:5.1.1 user unknown"
	transportLoop       = "error:5.4.6 mail forwarding loop"
)

func (s *StoreSubmitter) resolve(ctx context.Context, addrs []string) ([]store.QueueRecipient, error) {
	var out []store.QueueRecipient
	seen := map[string]bool{}
	add := func(addr, orig, domain, transport string) {
		k := addr + "\x00" + transport
		if seen[k] {
			return
		}
		seen[k] = true
		out = append(out, store.QueueRecipient{Address: addr, OrigAddress: orig, Domain: domain, Transport: transport})
	}
	for _, a := range addrs {
		if s.Resolver == nil {
			add(a, a, domainOf(a), TransportSMTP)
			continue
		}
		res, found, err := s.Resolver.Resolve(ctx, a)
		if err != nil {
			if !lookups.Permanent(err) {
				return nil, fmt.Errorf("resolve %s: %w", a, err)
			}
			t := transportLoop
			if errors.Is(err, lookups.ErrBadAddress) {
				t = transportBadAddress
			}
			add(strings.ToLower(a), a, domainOf(a), t)
			continue
		}
		if !found && res.Domain != lookups.DomainRemote {
			add(strings.ToLower(a), a, domainOf(a), transportUnknown)
			continue
		}
		for _, fr := range res.Recipients {
			d := domainOf(fr.Address)
			if d == "" {
				d = res.DomainName
			}
			add(fr.Address, a, d, fr.Transport)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no recipient left after resolving %v", addrs)
	}
	return out, nil
}

// domainOf returns the lower-cased domain of an address, "" if none.
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 || strings.HasPrefix(addr, "|") || strings.HasPrefix(addr, "/") {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(addr[i+1:]), ".")
}

// MailboxFinder returns the virtual mailbox a maildir recipient is delivered
// into (found is false if there is none any more: the recipient bounces).
type MailboxFinder interface {
	Mailbox(ctx context.Context, address string) (mb *deliver.Mailbox, found bool, err error)
}

// ResolverMailboxes finds mailboxes through the lookups resolver (its cache
// included).
type ResolverMailboxes struct {
	Resolver RecipientResolver
}

// Mailbox implements MailboxFinder.
func (r ResolverMailboxes) Mailbox(ctx context.Context, address string) (*deliver.Mailbox, bool, error) {
	res, _, err := r.Resolver.Resolve(ctx, address)
	if err != nil {
		return nil, false, err
	}
	for _, fr := range res.Recipients {
		if fr.Class == lookups.ClassMailbox && strings.EqualFold(fr.Address, address) {
			mb := &deliver.Mailbox{Maildir: fr.Maildir}
			if fr.QuotaBytes > 0 {
				q := fr.QuotaBytes
				mb.QuotaBytes = &q
			}
			return mb, true, nil
		}
	}
	return nil, false, nil
}
