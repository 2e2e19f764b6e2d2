package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds the tables of mail authentication and abuse defence
// (migrations/00008_msgauth.sql): DKIM keys, DNSBL sites, domain and mailbox
// policy, greylisting state and the outbound counters.

// DKIM key algorithms (the a= tag of the signature).
const (
	DKIMRSASHA256     = "rsa-sha256"
	DKIMEd25519SHA256 = "ed25519-sha256"
)

// DKIMKey is a row of dkim_key. PrivateKey is a secret: it is never
// serialised to JSON and never written to audit_log.
type DKIMKey struct {
	Domain    string `json:"domain"`
	Selector  string `json:"selector"`
	Algorithm string `json:"algorithm"` // DKIMRSASHA256 or DKIMEd25519SHA256
	// PrivateKey is the PEM private key (PKCS#8, or PKCS#1 for RSA).
	PrivateKey string `json:"-"`
	// PublicKey is the p= value of the DNS record (base64).
	PublicKey string `json:"public_key"`
	// DNSName and DNSRecord say what to publish: a TXT record DNSRecord at
	// DNSName ("<selector>._domainkey.<domain>"). Computed by the database.
	DNSName   string    `json:"dns_name"`
	DNSRecord string    `json:"dns_record"`
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

const dkimKeyColumns = `domain, selector, algorithm, private_key, public_key, dns_name, dns_record, active, created_at, updated_at`

func scanDKIMKey(r pgx.Row) (DKIMKey, error) {
	var k DKIMKey
	err := r.Scan(&k.Domain, &k.Selector, &k.Algorithm, &k.PrivateKey, &k.PublicKey, &k.DNSName, &k.DNSRecord,
		&k.Active, &k.CreatedAt, &k.UpdatedAt)
	return k, err
}

// CreateDKIMKey inserts k (Domain, Selector, Algorithm, PrivateKey,
// PublicKey, Active as given). The caller (mta/dkimsign.Generate) makes the
// private and public keys a pair; the database cannot check that. An unknown
// domain is ErrNotFound, an existing selector of the domain ErrConflict.
func (s *Store) CreateDKIMKey(ctx context.Context, k DKIMKey) (DKIMKey, error) {
	var out DKIMKey
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanDKIMKey(tx.QueryRow(ctx, `
			INSERT INTO dkim_key (domain, selector, algorithm, private_key, public_key, active)
			VALUES ($1, $2, $3, $4, $5, $6)
			RETURNING `+dkimKeyColumns, k.Domain, k.Selector, k.Algorithm, k.PrivateKey, k.PublicKey, k.Active))
		return err
	})
	if err != nil {
		return DKIMKey{}, fmt.Errorf("create dkim key %s._domainkey.%s: %w", k.Selector, k.Domain, err)
	}
	return out, nil
}

// GetDKIMKey returns the key of domain under selector, active or not.
func (s *Store) GetDKIMKey(ctx context.Context, domain, selector string) (DKIMKey, error) {
	k, err := scanDKIMKey(s.pool.QueryRow(ctx, `SELECT `+dkimKeyColumns+` FROM dkim_key
		WHERE domain = $1 AND selector = $2`, normName(domain), normName(selector)))
	if err != nil {
		return DKIMKey{}, fmt.Errorf("get dkim key %s._domainkey.%s: %w", selector, domain, MapError(err))
	}
	return k, nil
}

// ListDKIMKeys returns keys ordered by domain, then newest first. Search
// matches the domain or the selector; Domain and Scope restrict the domain.
func (s *Store) ListDKIMKeys(ctx context.Context, o ListOptions) ([]DKIMKey, error) {
	out, err := collect(ctx, s.pool, scanDKIMKey, `
		SELECT `+dkimKeyColumns+`
		FROM dkim_key
		WHERE (domain ILIKE $1 OR selector ILIKE $1)
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))
		ORDER BY domain, created_at DESC, selector DESC
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), normName(o.Domain), o.scope(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list dkim keys: %w", err)
	}
	return out, nil
}

// SetDKIMKeyActive activates or deactivates a key. Activating a key makes it
// the domain's signing key when it is the newest active one.
func (s *Store) SetDKIMKeyActive(ctx context.Context, domain, selector string, active bool) (DKIMKey, error) {
	var out DKIMKey
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanDKIMKey(tx.QueryRow(ctx, `UPDATE dkim_key SET active = $3
			WHERE domain = $1 AND selector = $2 RETURNING `+dkimKeyColumns, normName(domain), normName(selector), active))
		return err
	})
	if err != nil {
		return DKIMKey{}, fmt.Errorf("update dkim key %s._domainkey.%s: %w", selector, domain, err)
	}
	return out, nil
}

// DeleteDKIMKey deletes the key of domain under selector.
func (s *Store) DeleteDKIMKey(ctx context.Context, domain, selector string) error {
	return s.deleteRow(ctx, "dkim key "+selector+"._domainkey."+domain,
		`DELETE FROM dkim_key WHERE domain = $1 AND selector = $2`, normName(domain), normName(selector))
}

// ActiveDKIMKey returns the key that domain signs with: its newest active
// key (by creation time, then selector), on an active domain. found is false
// when there is none; err is set only when the database could not answer.
func (s *Store) ActiveDKIMKey(ctx context.Context, domain string) (k DKIMKey, found bool, err error) {
	k, err = scanDKIMKey(s.pool.QueryRow(ctx, `
		SELECT `+prefixColumns("k.", dkimKeyColumns)+`
		FROM dkim_key k JOIN domain d ON d.name = k.domain
		WHERE k.domain = $1 AND k.active AND d.active
		ORDER BY k.created_at DESC, k.selector DESC
		LIMIT 1`, normName(domain)))
	if errors.Is(err, pgx.ErrNoRows) {
		return DKIMKey{}, false, nil
	}
	if err != nil {
		return DKIMKey{}, false, fmt.Errorf("look up dkim key of %s: %w", domain, MapError(err))
	}
	return k, true, nil
}

// DNSBLSite is a row of dnsbl: a DNS block list (positive Weight) or allow
// list (negative Weight) queried with the client's IP address.
type DNSBLSite struct {
	ID   int64  `json:"id"`
	Zone string `json:"zone"`
	// ReplyFilter keeps only matching answers ("" keeps any), one pattern
	// per octet: a number, "*", or "[2..11]", "[1;3;5..7]".
	ReplyFilter string `json:"reply_filter"`
	Weight      int    `json:"weight"`
	// ReplyName is shown in the reject reply instead of Zone ("" shows Zone).
	ReplyName   string    `json:"reply_name"`
	Description string    `json:"description"`
	Active      bool      `json:"active"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

const dnsblColumns = `id, zone, reply_filter, weight, reply_name, description, active, created_at, updated_at`

func scanDNSBLSite(r pgx.Row) (DNSBLSite, error) {
	var d DNSBLSite
	err := r.Scan(&d.ID, &d.Zone, &d.ReplyFilter, &d.Weight, &d.ReplyName, &d.Description, &d.Active,
		&d.CreatedAt, &d.UpdatedAt)
	return d, err
}

// CreateDNSBLSite inserts d (every field but ID and times as given) and
// returns the stored row. A malformed zone or filter, or a zero weight, is
// ErrInvalid; the same zone and filter twice ErrConflict.
func (s *Store) CreateDNSBLSite(ctx context.Context, d DNSBLSite) (DNSBLSite, error) {
	var out DNSBLSite
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanDNSBLSite(tx.QueryRow(ctx, `
			INSERT INTO dnsbl (zone, reply_filter, weight, reply_name, description, active)
			VALUES ($1, $2, $3, $4, $5, $6)
			RETURNING `+dnsblColumns, d.Zone, d.ReplyFilter, d.Weight, d.ReplyName, d.Description, d.Active))
		return err
	})
	if err != nil {
		return DNSBLSite{}, fmt.Errorf("create dnsbl site %s: %w", d.Zone, err)
	}
	return out, nil
}

// ListDNSBLSites returns the sites ordered by zone and filter. Search
// matches the zone or the description.
func (s *Store) ListDNSBLSites(ctx context.Context, o ListOptions) ([]DNSBLSite, error) {
	out, err := collect(ctx, s.pool, scanDNSBLSite, `
		SELECT `+dnsblColumns+`
		FROM dnsbl
		WHERE (zone ILIKE $1 OR description ILIKE $1)
		ORDER BY zone, reply_filter
		LIMIT $2 OFFSET $3`,
		o.searchPattern(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list dnsbl sites: %w", err)
	}
	return out, nil
}

// ActiveDNSBLSites returns the active sites, for mta/dnsbl.
func (s *Store) ActiveDNSBLSites(ctx context.Context) ([]DNSBLSite, error) {
	out, err := collect(ctx, s.pool, scanDNSBLSite,
		`SELECT `+dnsblColumns+` FROM dnsbl WHERE active ORDER BY zone, reply_filter`)
	if err != nil {
		return nil, fmt.Errorf("load dnsbl sites: %w", err)
	}
	return out, nil
}

// DNSBLSitePatch lists the columns an update changes.
type DNSBLSitePatch struct {
	ReplyFilter *string
	Weight      *int
	ReplyName   *string
	Description *string
	Active      *bool
}

// UpdateDNSBLSite applies p to the site id.
func (s *Store) UpdateDNSBLSite(ctx context.Context, id int64, p DNSBLSitePatch) (DNSBLSite, error) {
	var sl setList
	setIf(&sl, "reply_filter", p.ReplyFilter)
	setIf(&sl, "weight", p.Weight)
	setIf(&sl, "reply_name", p.ReplyName)
	setIf(&sl, "description", p.Description)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		d, err := scanDNSBLSite(s.pool.QueryRow(ctx, `SELECT `+dnsblColumns+` FROM dnsbl WHERE id = $1`, id))
		if err != nil {
			return DNSBLSite{}, fmt.Errorf("get dnsbl site %d: %w", id, MapError(err))
		}
		return d, nil
	}
	var out DNSBLSite
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "dnsbl", "id = %s", []any{id}, dnsblColumns, func(r pgx.Row) error {
			var err error
			out, err = scanDNSBLSite(r)
			return err
		})
	})
	if err != nil {
		return DNSBLSite{}, fmt.Errorf("update dnsbl site %d: %w", id, err)
	}
	return out, nil
}

// DeleteDNSBLSite deletes the site id.
func (s *Store) DeleteDNSBLSite(ctx context.Context, id int64) error {
	return s.deleteRow(ctx, fmt.Sprintf("dnsbl site %d", id), `DELETE FROM dnsbl WHERE id = $1`, id)
}

// DMARC failure dispositions of a domain (domain_policy.dmarc_failure).
const (
	DMARCHonour     = "honour"     // do what the sender's DMARC policy asks
	DMARCQuarantine = "quarantine" // quarantine where the policy asks to reject
	DMARCRecord     = "record"     // only record the result
)

// SendLimits are outbound limits; nil is unlimited.
type SendLimits struct {
	MessagesPerHour      *int `json:"max_messages_per_hour"`
	MessagesPerDay       *int `json:"max_messages_per_day"`
	RecipientsPerMessage *int `json:"max_recipients_per_message"`
}

// DomainPolicy is a row of domain_policy.
type DomainPolicy struct {
	Domain       string `json:"domain"`
	Greylisting  bool   `json:"greylisting"`
	DMARCFailure string `json:"dmarc_failure"` // DMARCHonour, DMARCQuarantine or DMARCRecord
	SendLimits
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

const domainPolicyColumns = `domain, greylisting, dmarc_failure, max_messages_per_hour, max_messages_per_day,
	max_recipients_per_message, active, created_at, updated_at`

func scanDomainPolicy(r pgx.Row) (DomainPolicy, error) {
	var p DomainPolicy
	err := r.Scan(&p.Domain, &p.Greylisting, &p.DMARCFailure, &p.MessagesPerHour, &p.MessagesPerDay,
		&p.RecipientsPerMessage, &p.Active, &p.CreatedAt, &p.UpdatedAt)
	return p, err
}

// DefaultDomainPolicy is the policy of a domain without an active row.
func DefaultDomainPolicy(domain string) DomainPolicy {
	return DomainPolicy{Domain: domain, DMARCFailure: DMARCHonour}
}

// PutDomainPolicy inserts or replaces the policy of p.Domain (every field
// but the times as given; an empty DMARCFailure is DMARCHonour). An unknown
// domain is ErrNotFound.
func (s *Store) PutDomainPolicy(ctx context.Context, p DomainPolicy) (DomainPolicy, error) {
	if p.DMARCFailure == "" {
		p.DMARCFailure = DMARCHonour
	}
	var out DomainPolicy
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanDomainPolicy(tx.QueryRow(ctx, `
			INSERT INTO domain_policy (domain, greylisting, dmarc_failure, max_messages_per_hour,
				max_messages_per_day, max_recipients_per_message, active)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (domain) DO UPDATE SET greylisting = EXCLUDED.greylisting,
				dmarc_failure = EXCLUDED.dmarc_failure,
				max_messages_per_hour = EXCLUDED.max_messages_per_hour,
				max_messages_per_day = EXCLUDED.max_messages_per_day,
				max_recipients_per_message = EXCLUDED.max_recipients_per_message,
				active = EXCLUDED.active
			RETURNING `+domainPolicyColumns,
			p.Domain, p.Greylisting, p.DMARCFailure, p.MessagesPerHour, p.MessagesPerDay,
			p.RecipientsPerMessage, p.Active))
		return err
	})
	if err != nil {
		return DomainPolicy{}, fmt.Errorf("set policy of domain %s: %w", p.Domain, err)
	}
	return out, nil
}

// GetDomainPolicy returns the policy row of domain (ErrNotFound without one).
func (s *Store) GetDomainPolicy(ctx context.Context, domain string) (DomainPolicy, error) {
	p, err := scanDomainPolicy(s.pool.QueryRow(ctx,
		`SELECT `+domainPolicyColumns+` FROM domain_policy WHERE domain = $1`, normName(domain)))
	if err != nil {
		return DomainPolicy{}, fmt.Errorf("get policy of domain %s: %w", domain, MapError(err))
	}
	return p, nil
}

// ListDomainPolicies returns policy rows ordered by domain; Search, Domain
// and Scope restrict the domain.
func (s *Store) ListDomainPolicies(ctx context.Context, o ListOptions) ([]DomainPolicy, error) {
	out, err := collect(ctx, s.pool, scanDomainPolicy, `
		SELECT `+domainPolicyColumns+`
		FROM domain_policy
		WHERE domain ILIKE $1
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))
		ORDER BY domain
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), normName(o.Domain), o.scope(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list domain policies: %w", err)
	}
	return out, nil
}

// DeleteDomainPolicy deletes the policy row of domain (its defaults apply).
func (s *Store) DeleteDomainPolicy(ctx context.Context, domain string) error {
	return s.deleteRow(ctx, "policy of domain "+domain, `DELETE FROM domain_policy WHERE domain = $1`, normName(domain))
}

// EffectiveDomainPolicy returns the policy that applies to mail for domain:
// an alias domain has its target's, and a domain without an active policy
// row has DefaultDomainPolicy (Domain is then the domain asked, or the
// alias's target). err is set only when the database could not answer.
func (s *Store) EffectiveDomainPolicy(ctx context.Context, domain string) (DomainPolicy, error) {
	var (
		name      string
		found     bool
		grey      *bool
		dmarc     *string
		createdAt *time.Time
		updatedAt *time.Time
		p         DomainPolicy
	)
	err := s.pool.QueryRow(ctx, `
		WITH t AS (
			SELECT coalesce((SELECT target_domain FROM alias_domain WHERE alias_domain = $1 AND active), $1) AS name)
		SELECT t.name, p.domain IS NOT NULL, p.greylisting, p.dmarc_failure, p.max_messages_per_hour,
		       p.max_messages_per_day, p.max_recipients_per_message, p.created_at, p.updated_at
		FROM t LEFT JOIN domain_policy p ON p.domain = t.name AND p.active`, normName(domain)).Scan(
		&name, &found, &grey, &dmarc, &p.MessagesPerHour, &p.MessagesPerDay, &p.RecipientsPerMessage,
		&createdAt, &updatedAt)
	if err != nil {
		return DomainPolicy{}, fmt.Errorf("look up policy of domain %s: %w", domain, MapError(err))
	}
	if !found {
		return DefaultDomainPolicy(name), nil
	}
	p.Domain, p.Greylisting, p.DMARCFailure, p.Active = name, *grey, *dmarc, true
	p.CreatedAt, p.UpdatedAt = *createdAt, *updatedAt
	return p, nil
}

// MailboxPolicy is a row of mailbox_policy: outbound limits of one mailbox.
type MailboxPolicy struct {
	Mailbox string `json:"mailbox"`
	Domain  string `json:"domain"`
	SendLimits
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

const mailboxPolicyColumns = `mailbox, domain, max_messages_per_hour, max_messages_per_day,
	max_recipients_per_message, active, created_at, updated_at`

func scanMailboxPolicy(r pgx.Row) (MailboxPolicy, error) {
	var p MailboxPolicy
	err := r.Scan(&p.Mailbox, &p.Domain, &p.MessagesPerHour, &p.MessagesPerDay, &p.RecipientsPerMessage,
		&p.Active, &p.CreatedAt, &p.UpdatedAt)
	return p, err
}

// PutMailboxPolicy inserts or replaces the limits of p.Mailbox. An unknown
// mailbox is ErrNotFound.
func (s *Store) PutMailboxPolicy(ctx context.Context, p MailboxPolicy) (MailboxPolicy, error) {
	var out MailboxPolicy
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanMailboxPolicy(tx.QueryRow(ctx, `
			INSERT INTO mailbox_policy (mailbox, max_messages_per_hour, max_messages_per_day,
				max_recipients_per_message, active)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (mailbox) DO UPDATE SET max_messages_per_hour = EXCLUDED.max_messages_per_hour,
				max_messages_per_day = EXCLUDED.max_messages_per_day,
				max_recipients_per_message = EXCLUDED.max_recipients_per_message,
				active = EXCLUDED.active
			RETURNING `+mailboxPolicyColumns,
			p.Mailbox, p.MessagesPerHour, p.MessagesPerDay, p.RecipientsPerMessage, p.Active))
		return err
	})
	if err != nil {
		return MailboxPolicy{}, fmt.Errorf("set policy of mailbox %s: %w", p.Mailbox, err)
	}
	return out, nil
}

// GetMailboxPolicy returns the policy row of mailbox (ErrNotFound without one).
func (s *Store) GetMailboxPolicy(ctx context.Context, mailbox string) (MailboxPolicy, error) {
	p, err := scanMailboxPolicy(s.pool.QueryRow(ctx,
		`SELECT `+mailboxPolicyColumns+` FROM mailbox_policy WHERE mailbox = $1`, normName(mailbox)))
	if err != nil {
		return MailboxPolicy{}, fmt.Errorf("get policy of mailbox %s: %w", mailbox, MapError(err))
	}
	return p, nil
}

// DeleteMailboxPolicy deletes the policy row of mailbox.
func (s *Store) DeleteMailboxPolicy(ctx context.Context, mailbox string) error {
	return s.deleteRow(ctx, "policy of mailbox "+mailbox, `DELETE FROM mailbox_policy WHERE mailbox = $1`, normName(mailbox))
}

// Greylisting --------------------------------------------------------------

// GreylistKey names a greylisting triplet: the client's network, the
// envelope sender ("" for <>) and the recipient, in the form the caller
// normalised them to (mta/greylist lower-cases them).
type GreylistKey struct {
	Client    netip.Prefix
	Sender    string
	Recipient string
}

// GreylistEntry is the state of one triplet.
type GreylistEntry struct {
	GreylistKey
	FirstSeen time.Time
	LastSeen  time.Time
	PassedAt  *time.Time // when a retry first came after the delay; nil while greylisted
	Count     int        // attempts seen
}

// GreylistClient is the auto-allowlisting state of a client network.
type GreylistClient struct {
	Client    netip.Prefix
	Passes    int // triplets this network passed by retrying
	FirstPass time.Time
	LastSeen  time.Time
}

// GreylistDecision is what a greylisting policy decides about one attempt,
// for GreylistUpdate to store.
type GreylistDecision struct {
	// Entry is the triplet's new state.
	Entry GreylistEntry
	// ClientPassed counts one more pass for the client's network (the
	// triplet has just passed its first retry).
	ClientPassed bool
}

// GreylistUpdate runs one greylisting decision atomically: in a transaction
// it creates the triplet's row if absent (with the times of now) and locks
// it, gives decide the current state (isNew when the row was just created),
// and stores the decision. Concurrent attempts for the same triplet are
// serialised, on every node. The policy is decide's (mta/greylist); this
// method only keeps state.
func (s *Store) GreylistUpdate(ctx context.Context, key GreylistKey, now time.Time,
	decide func(cur GreylistEntry, isNew bool) GreylistDecision) (GreylistDecision, error) {
	var d GreylistDecision
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			INSERT INTO greylist (client, sender, recipient, first_seen, last_seen, count)
			VALUES ($1, $2, $3, $4, $4, 1) ON CONFLICT DO NOTHING`,
			key.Client, key.Sender, key.Recipient, now)
		if err != nil {
			return err
		}
		isNew := tag.RowsAffected() == 1
		cur := GreylistEntry{GreylistKey: key}
		if err := tx.QueryRow(ctx, `
			SELECT first_seen, last_seen, passed_at, count FROM greylist
			WHERE client = $1 AND sender = $2 AND recipient = $3 FOR UPDATE`,
			key.Client, key.Sender, key.Recipient).Scan(&cur.FirstSeen, &cur.LastSeen, &cur.PassedAt, &cur.Count); err != nil {
			return err
		}
		d = decide(cur, isNew)
		e := d.Entry
		if _, err := tx.Exec(ctx, `
			UPDATE greylist SET first_seen = $4, last_seen = $5, passed_at = $6, count = $7
			WHERE client = $1 AND sender = $2 AND recipient = $3`,
			key.Client, key.Sender, key.Recipient, e.FirstSeen, e.LastSeen, e.PassedAt, max(e.Count, 1)); err != nil {
			return err
		}
		if d.ClientPassed {
			if _, err := tx.Exec(ctx, `
				INSERT INTO greylist_client (client, passes, first_pass, last_seen) VALUES ($1, 1, $2, $2)
				ON CONFLICT (client) DO UPDATE SET passes = greylist_client.passes + 1,
					last_seen = greatest(greylist_client.last_seen, EXCLUDED.last_seen)`,
				key.Client, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return GreylistDecision{}, fmt.Errorf("greylist %s %q %q: %w", key.Client, key.Sender, key.Recipient, err)
	}
	return d, nil
}

// GreylistClientState returns the auto-allowlisting state of a client
// network; found is false when it never passed.
func (s *Store) GreylistClientState(ctx context.Context, client netip.Prefix) (c GreylistClient, found bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT client, passes, first_pass, last_seen FROM greylist_client WHERE client = $1`,
		client).Scan(&c.Client, &c.Passes, &c.FirstPass, &c.LastSeen)
	if errors.Is(err, pgx.ErrNoRows) {
		return GreylistClient{}, false, nil
	}
	if err != nil {
		return GreylistClient{}, false, fmt.Errorf("greylist client %s: %w", client, MapError(err))
	}
	return c, true, nil
}

// TouchGreylistClient records that an allowlisted client network was seen
// at now (its allowlisting expires counted from the last time).
func (s *Store) TouchGreylistClient(ctx context.Context, client netip.Prefix, now time.Time) error {
	if _, err := s.pool.Exec(ctx, `UPDATE greylist_client SET last_seen = greatest(last_seen, $2) WHERE client = $1`,
		client, now); err != nil {
		return fmt.Errorf("greylist client %s: %w", client, MapError(err))
	}
	return nil
}

// ExpireGreylist deletes triplets and client networks last seen before
// before, and returns how many rows went.
func (s *Store) ExpireGreylist(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		t1, err := tx.Exec(ctx, `DELETE FROM greylist WHERE last_seen < $1`, before)
		if err != nil {
			return err
		}
		t2, err := tx.Exec(ctx, `DELETE FROM greylist_client WHERE last_seen < $1`, before)
		if err != nil {
			return err
		}
		n = t1.RowsAffected() + t2.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire greylist: %w", err)
	}
	return n, nil
}

// Outbound counters -----------------------------------------------------------

// SendBucket is the width of the outbound counters' time buckets. Windows
// are counted in whole buckets, rounded outwards: a limit per hour counts
// the messages of the last hour and up to one bucket more, never fewer.
const SendBucket = 5 * time.Minute

// SendCounts are the messages submitted in the last hour and day.
type SendCounts struct {
	LastHour int `json:"last_hour"`
	LastDay  int `json:"last_day"`
}

// SendStatus is what an outbound limit check needs about a mailbox: the
// limits of the mailbox and of its domain, and what each has sent.
type SendStatus struct {
	Mailbox       string     `json:"mailbox"`
	Domain        string     `json:"domain"`
	MailboxLimits SendLimits `json:"mailbox_limits"`
	DomainLimits  SendLimits `json:"domain_limits"`
	MailboxSent   SendCounts `json:"mailbox_sent"`
	DomainSent    SendCounts `json:"domain_sent"`
}

// SendStatus returns the outbound limits and counts of mailbox and its
// domain at now, in one round trip. Inactive policy rows are no limits.
func (s *Store) SendStatus(ctx context.Context, mailbox string, now time.Time) (SendStatus, error) {
	mb := normName(mailbox)
	st := SendStatus{Mailbox: mb, Domain: domainPart(mb)}
	hour := now.Add(-time.Hour).Truncate(SendBucket)
	day := now.Add(-24 * time.Hour).Truncate(SendBucket)
	err := s.pool.QueryRow(ctx, `
		SELECT mp.max_messages_per_hour, mp.max_messages_per_day, mp.max_recipients_per_message,
		       dp.max_messages_per_hour, dp.max_messages_per_day, dp.max_recipients_per_message,
		       coalesce(c.mh, 0), coalesce(c.md, 0), coalesce(c.dh, 0), coalesce(c.dd, 0)
		FROM (SELECT 1) one
		LEFT JOIN mailbox_policy mp ON mp.mailbox = $1 AND mp.active
		LEFT JOIN domain_policy dp ON dp.domain = $2 AND dp.active
		CROSS JOIN (
			SELECT sum(messages) FILTER (WHERE scope = 'mailbox' AND bucket >= $3)::int AS mh,
			       sum(messages) FILTER (WHERE scope = 'mailbox')::int AS md,
			       sum(messages) FILTER (WHERE scope = 'domain' AND bucket >= $3)::int AS dh,
			       sum(messages) FILTER (WHERE scope = 'domain')::int AS dd
			FROM send_counter
			WHERE ((scope = 'mailbox' AND subject = $1) OR (scope = 'domain' AND subject = $2))
			  AND bucket >= $4) c`,
		st.Mailbox, st.Domain, hour, day).Scan(
		&st.MailboxLimits.MessagesPerHour, &st.MailboxLimits.MessagesPerDay, &st.MailboxLimits.RecipientsPerMessage,
		&st.DomainLimits.MessagesPerHour, &st.DomainLimits.MessagesPerDay, &st.DomainLimits.RecipientsPerMessage,
		&st.MailboxSent.LastHour, &st.MailboxSent.LastDay, &st.DomainSent.LastHour, &st.DomainSent.LastDay)
	if err != nil {
		return SendStatus{}, fmt.Errorf("send status of %s: %w", mailbox, MapError(err))
	}
	return st, nil
}

// CountSend adds one message with recipients recipients, submitted by
// mailbox at now, to the counters of the mailbox and of its domain. q is the
// pool (s.Pool()) or the enqueue transaction; outside the transaction is
// better for throughput (the domain's row is shared by its mailboxes).
func CountSend(ctx context.Context, q Querier, mailbox string, recipients int, now time.Time) error {
	mb := normName(mailbox)
	b := now.Truncate(SendBucket)
	if _, err := q.Exec(ctx, `
		INSERT INTO send_counter (scope, subject, bucket, messages, recipients)
		VALUES ('mailbox', $1, $3, 1, $4), ('domain', $2, $3, 1, $4)
		ON CONFLICT (scope, subject, bucket) DO UPDATE
		SET messages = send_counter.messages + 1, recipients = send_counter.recipients + EXCLUDED.recipients`,
		mb, domainPart(mb), b, max(recipients, 0)); err != nil {
		return fmt.Errorf("count message of %s: %w", mailbox, MapError(err))
	}
	return nil
}

// CountSend is the package function CountSend on the pool.
func (s *Store) CountSend(ctx context.Context, mailbox string, recipients int, now time.Time) error {
	return CountSend(ctx, s.pool, mailbox, recipients, now)
}

// PruneSendCounters deletes counter buckets older than before.
func (s *Store) PruneSendCounters(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM send_counter WHERE bucket < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("prune send counters: %w", MapError(err))
	}
	return tag.RowsAffected(), nil
}

// normName folds a domain or address as the msgauth triggers do.
func normName(s string) string {
	return strings.TrimRight(strings.ToLower(strings.TrimSpace(s)), ".")
}

// domainPart returns what follows the last '@' of addr.
func domainPart(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

// prefixColumns qualifies a column list: prefixColumns("k.", "a, b") is "k.a, k.b".
func prefixColumns(prefix, cols string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = prefix + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}
