package store

import (
	"context"
	"fmt"
	"time"
)

// VacationTarget is what the vacation responder (mta/vacation) needs to know
// about the mailbox that a delivered message reached, read by LookupVacation
// in one statement.
type VacationTarget struct {
	// Mailbox is the mailbox's address; "" when no mailbox has the address
	// looked up (then every other field is zero, except RecipientDelimiter).
	Mailbox string
	// Name is the mailbox's display name.
	Name string
	// MailboxActive reports that the mailbox and its domain are active.
	MailboxActive bool
	// Vacation is the mailbox's vacation row; nil when it has none.
	Vacation *Vacation
	// Addresses are the mailbox's own addresses, in order, filled only when
	// Vacation is set and active: the mailbox address; the active aliases
	// (not catch-alls) of active domains whose destinations name it,
	// directly or through other such aliases; and each of these in every
	// active alias domain of its domain (local@alias-domain).
	Addresses []string
	// RecipientDelimiter is the recipient_delimiter setting; nil when it is
	// not set (the node's configured delimiter applies).
	RecipientDelimiter *string
}

// lookupVacationSQL: $1 the mailbox address (canonical).
//
// names is recursive: an alias whose destinations name the mailbox, or
// another alias already found, is one of its addresses (sales@ → info@ →
// john@). UNION keeps each address once, so alias cycles end.
const lookupVacationSQL = `
WITH RECURSIVE mb AS (
    SELECT m.address, m.name, m.active AND d.active AS active
    FROM mailbox m JOIN domain d ON d.name = m.domain
    WHERE m.address = $1::text
), vac AS (
    SELECT v.subject, v.body, v.active_from, v.active_until, v.interval_seconds, v.domain, v.active,
           v.created_at, v.updated_at
    FROM vacation v JOIN mb ON v.mailbox = mb.address
), names (address) AS (
    SELECT mb.address FROM mb WHERE EXISTS (SELECT 1 FROM vac WHERE vac.active)
    UNION
    SELECT a.address
    FROM names n
    JOIN alias a ON a.destinations @> ARRAY[n.address]
    JOIN domain d ON d.name = a.domain
    WHERE a.active AND d.active AND a.local_part <> ''
), own (address) AS (
    SELECT address FROM names
    UNION
    SELECT split_part(n.address, '@', 1) || '@' || ad.alias_domain
    FROM names n JOIN alias_domain ad ON ad.target_domain = split_part(n.address, '@', 2)
    WHERE ad.active
)
SELECT mb.address, mb.name, mb.active,
       vac.subject, vac.body, vac.active_from, vac.active_until, vac.interval_seconds, vac.domain, vac.active,
       vac.created_at, vac.updated_at,
       ARRAY(SELECT address FROM own ORDER BY address <> $1::text, address),
       (SELECT value FROM setting WHERE key = 'recipient_delimiter')
FROM (SELECT 1) one LEFT JOIN mb ON true LEFT JOIN vac ON true`

// LookupVacation reads the vacation of the mailbox with the canonical
// address mailbox, with the mailbox's own addresses and the recipient
// delimiter setting (see VacationTarget), in one round trip. It never returns
// ErrNotFound: a missing mailbox is an empty Mailbox, a missing vacation a
// nil Vacation.
func (s *Store) LookupVacation(ctx context.Context, mailbox string) (VacationTarget, error) {
	var (
		t                    VacationTarget
		addr, name           *string
		mbActive             *bool
		subject, body, dom   *string
		from, until          *time.Time
		interval             *int32
		vActive              *bool
		createdAt, updatedAt *time.Time
	)
	err := s.pool.QueryRow(ctx, lookupVacationSQL, mailbox).Scan(&addr, &name, &mbActive,
		&subject, &body, &from, &until, &interval, &dom, &vActive, &createdAt, &updatedAt,
		&t.Addresses, &t.RecipientDelimiter)
	if err != nil {
		return VacationTarget{}, fmt.Errorf("look up vacation of %s: %w", mailbox, err)
	}
	if addr == nil {
		return VacationTarget{RecipientDelimiter: t.RecipientDelimiter}, nil
	}
	t.Mailbox, t.Name, t.MailboxActive = *addr, orZero(name), orZero(mbActive)
	if vActive != nil {
		t.Vacation = &Vacation{
			Mailbox: *addr, Subject: orZero(subject), Body: orZero(body), ActiveFrom: from, ActiveUntil: until,
			IntervalSeconds: orZero(interval), Domain: orZero(dom), Active: *vActive,
			CreatedAt: orZero(createdAt), UpdatedAt: orZero(updatedAt),
		}
	}
	return t, nil
}

// ForgetVacationReply undoes NoteVacationReply(ctx, mailbox, sender, at, …)
// when the reply it allowed could not be queued: it deletes the record if it
// still says at (a later reply's record is kept), so that the sender's next
// message is answered. at is compared at the database's precision
// (microseconds).
func (s *Store) ForgetVacationReply(ctx context.Context, mailbox, sender string, at time.Time) error {
	_, err := s.pool.Exec(ctx, `
		DELETE FROM vacation_notified WHERE mailbox = $1 AND sender = lower($2) AND notified_at = $3`,
		mailbox, sender, at)
	if err != nil {
		return fmt.Errorf("forget vacation reply of %s to %s: %w", mailbox, sender, err)
	}
	return nil
}
