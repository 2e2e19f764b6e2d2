package store

// The read queries of the address resolver (lookups/): the hot path of every
// RCPT TO, so each answers in one statement and one round trip, through
// primary keys only. They return rows as they are, active or not; what the
// rows mean (search order, precedence, permission) is decided by lookups.

import (
	"context"
	"fmt"
	"net/netip"
)

// SettingRecipientDelimiter is the setting that, when present, overrides the
// resolver's recipient delimiter on every node ("" turns extensions off).
const SettingRecipientDelimiter = "recipient_delimiter"

// RouteKey names one address for LookupRoute: Local is the whole local part
// (lower case, with its extension), User the local part without the
// extension (equal to Local when there is none), Domain the domain as asked
// (lower-case A-labels).
type RouteKey struct {
	Local  string
	User   string
	Domain string
}

// Route is everything the resolver needs about one address, read in one
// statement. The domain is rewritten through alias_domain first: Name is
// AliasTarget when the alias domain row is active and its target domain
// exists and is active, otherwise Domain as asked; every other field is about
// Name.
type Route struct {
	Asked string // RouteKey.Domain
	// AliasTarget is the target of the alias_domain row for Asked ("" when
	// Asked is no alias domain); AliasActive is that row's active flag.
	AliasTarget string
	AliasActive bool
	Name        string // the domain every field below is about

	// Domain is the domain row of Name; nil when there is none.
	Domain *RouteDomain

	// Alias rows: ExtAlias at Local@Name (only when Local != User), Alias at
	// User@Name, CatchAll at @Name; nil when there is no row.
	ExtAlias *RouteAlias
	Alias    *RouteAlias
	CatchAll *RouteAlias

	// Mailbox rows: ExtMailbox at Local@Name (only when Local != User),
	// Mailbox at User@Name; nil when there is no row.
	ExtMailbox *RouteMailbox
	Mailbox    *RouteMailbox

	// Transport rows: ExtTransport for Local@Name (only when Local != User),
	// Transport for User@Name, DomainTransport for Name; nil when there is no
	// row.
	ExtTransport    *RouteTransport
	Transport       *RouteTransport
	DomainTransport *RouteTransport
}

// RouteDomain is the part of a domain row that routing needs.
type RouteDomain struct {
	Name            string
	Active          bool
	BackupMX        bool
	Local           bool
	Transport       string // "" when unset
	MaxMessageBytes int64  // 0 when unset
}

// RouteAlias is an alias row as routing needs it.
type RouteAlias struct {
	Address      string
	Active       bool
	Destinations []string
}

// RouteMailbox is a mailbox row as routing needs it.
type RouteMailbox struct {
	Address    string
	Active     bool
	QuotaBytes int64 // 0 when unlimited (the database stores NULL; 0 is not allowed)
	Maildir    string
	Transport  string // "" when unset
}

// RouteTransport is a transport row.
type RouteTransport struct {
	Key     string
	Nexthop string
	Active  bool
}

// RouteSQL is the statement LookupRoute runs: it reads a Route in one
// statement. $1 local, $2 user, $3 domain (RouteKey). The alias-domain
// rewrite is computed once (the MATERIALIZED CTE), then each slot is one
// probe of a primary key (domain, alias, mailbox, transport). Exported for
// `facteur lookup`, which shows the SQL behind an answer.
const RouteSQL = `
WITH q AS MATERIALIZED (
    SELECT ad.target_domain AS ad_target, ad.active AS ad_active,
           CASE WHEN ad.active AND EXISTS (
                    SELECT 1 FROM domain t WHERE t.name = ad.target_domain AND t.active)
                THEN ad.target_domain ELSE $3::text END AS name,
           $1::text AS local, $2::text AS usr
    FROM (SELECT 1) one
    LEFT JOIN alias_domain ad ON ad.alias_domain = $3::text
)
SELECT
    q.ad_target, q.ad_active, q.name,
    d.name, d.active, d.backup_mx, d.local, d.transport, d.max_message_bytes,
    ea.address, ea.active, ea.destinations,
    ua.address, ua.active, ua.destinations,
    ca.address, ca.active, ca.destinations,
    em.address, em.active, em.quota_bytes, em.maildir, em.transport,
    um.address, um.active, um.quota_bytes, um.maildir, um.transport,
    et.key, et.nexthop, et.active,
    ut.key, ut.nexthop, ut.active,
    dt.key, dt.nexthop, dt.active
FROM q
LEFT JOIN LATERAL (SELECT name, active, backup_mx, local, transport, max_message_bytes
                   FROM domain WHERE name = q.name) d ON true
LEFT JOIN LATERAL (SELECT address, active, destinations FROM alias
                   WHERE q.local <> q.usr AND address = q.local || '@' || q.name) ea ON true
LEFT JOIN LATERAL (SELECT address, active, destinations FROM alias
                   WHERE address = q.usr || '@' || q.name) ua ON true
LEFT JOIN LATERAL (SELECT address, active, destinations FROM alias
                   WHERE address = '@' || q.name) ca ON true
LEFT JOIN LATERAL (SELECT address, active, quota_bytes, maildir, transport FROM mailbox
                   WHERE q.local <> q.usr AND address = q.local || '@' || q.name) em ON true
LEFT JOIN LATERAL (SELECT address, active, quota_bytes, maildir, transport FROM mailbox
                   WHERE address = q.usr || '@' || q.name) um ON true
LEFT JOIN LATERAL (SELECT key, nexthop, active FROM transport
                   WHERE q.local <> q.usr AND key = q.local || '@' || q.name) et ON true
LEFT JOIN LATERAL (SELECT key, nexthop, active FROM transport
                   WHERE key = q.usr || '@' || q.name) ut ON true
LEFT JOIN LATERAL (SELECT key, nexthop, active FROM transport WHERE key = q.name) dt ON true`

// LookupRoute reads the route of one address (see Route) in one round trip.
// It never returns ErrNotFound: missing rows are nil fields.
func (s *Store) LookupRoute(ctx context.Context, k RouteKey) (Route, error) {
	var (
		r                           Route
		adTarget                    *string
		adActive                    *bool
		dName, dTransport           *string
		dActive, dBackup, dLocal    *bool
		dMax                        *int64
		aAddr                       [3]*string
		aActive                     [3]*bool
		aDest                       [3][]string
		mAddr, mMaildir, mTransport [2]*string
		mActive                     [2]*bool
		mQuota                      [2]*int64
		tKey, tNexthop              [3]*string
		tActive                     [3]*bool
	)
	err := s.pool.QueryRow(ctx, RouteSQL, k.Local, k.User, k.Domain).Scan(
		&adTarget, &adActive, &r.Name,
		&dName, &dActive, &dBackup, &dLocal, &dTransport, &dMax,
		&aAddr[0], &aActive[0], &aDest[0],
		&aAddr[1], &aActive[1], &aDest[1],
		&aAddr[2], &aActive[2], &aDest[2],
		&mAddr[0], &mActive[0], &mQuota[0], &mMaildir[0], &mTransport[0],
		&mAddr[1], &mActive[1], &mQuota[1], &mMaildir[1], &mTransport[1],
		&tKey[0], &tNexthop[0], &tActive[0],
		&tKey[1], &tNexthop[1], &tActive[1],
		&tKey[2], &tNexthop[2], &tActive[2],
	)
	if err != nil {
		return Route{}, fmt.Errorf("look up route of %s@%s: %w", k.Local, k.Domain, err)
	}
	r.Asked = k.Domain
	if adTarget != nil {
		r.AliasTarget, r.AliasActive = *adTarget, *adActive
	}
	if dName != nil {
		r.Domain = &RouteDomain{Name: *dName, Active: *dActive, BackupMX: *dBackup, Local: *dLocal,
			Transport: orZero(dTransport), MaxMessageBytes: orZero(dMax)}
	}
	aliases := [3]**RouteAlias{&r.ExtAlias, &r.Alias, &r.CatchAll}
	for i, p := range aliases {
		if aAddr[i] != nil {
			*p = &RouteAlias{Address: *aAddr[i], Active: *aActive[i], Destinations: aDest[i]}
		}
	}
	mailboxes := [2]**RouteMailbox{&r.ExtMailbox, &r.Mailbox}
	for i, p := range mailboxes {
		if mAddr[i] != nil {
			*p = &RouteMailbox{Address: *mAddr[i], Active: *mActive[i], QuotaBytes: orZero(mQuota[i]),
				Maildir: orZero(mMaildir[i]), Transport: orZero(mTransport[i])}
		}
	}
	transports := [3]**RouteTransport{&r.ExtTransport, &r.Transport, &r.DomainTransport}
	for i, p := range transports {
		if tKey[i] != nil {
			*p = &RouteTransport{Key: *tKey[i], Nexthop: *tNexthop[i], Active: *tActive[i]}
		}
	}
	return r, nil
}

// SenderFacts is what the sender-permission check needs about an
// authenticated mailbox and an envelope sender, read in one statement.
type SenderFacts struct {
	// MailboxFound reports that the user's mailbox exists; MailboxActive that
	// it and its domain are both active.
	MailboxFound  bool
	MailboxActive bool
	// Domains are the sender's domain and, when it is an active alias
	// domain, its target.
	Domains []string
	// Keys are the sender addresses considered: local@d and user@d for every
	// d in Domains.
	Keys []string
	// Aliases are the alias rows at Keys that list the user among their
	// destinations.
	Aliases []SenderAlias
	// Grants are the user's sender_grant rows whose sender is one of Keys or
	// "@" + one of Domains.
	Grants []SenderGrantMatch
}

// SenderAlias is an alias row that names the user as a destination.
type SenderAlias struct {
	Address      string
	Active       bool
	DomainActive bool
	Destinations int // how many destinations the alias has
}

// SenderGrantMatch is a sender_grant row that matches the sender.
type SenderGrantMatch struct {
	Sender string
	Active bool
}

// SenderSQL is the statement LookupSender runs: $1 user (mailbox address),
// $2 sender local, $3 sender user (without extension), $4 sender domain.
const SenderSQL = `
WITH sd AS (
    SELECT $4::text AS domain
    UNION
    SELECT target_domain FROM alias_domain WHERE alias_domain = $4 AND active
), keys AS (
    SELECT DISTINCT v.k FROM sd, LATERAL (VALUES ($2::text || '@' || sd.domain), ($3::text || '@' || sd.domain)) v(k)
), al AS (
    SELECT a.address, a.active, d.active AS domain_active, cardinality(a.destinations) AS n
    FROM alias a JOIN domain d ON d.name = a.domain
    WHERE a.address IN (SELECT k FROM keys) AND $1::text = ANY (a.destinations)
), gr AS (
    SELECT g.sender, g.active FROM sender_grant g
    WHERE g.mailbox = $1::text
      AND (g.sender IN (SELECT k FROM keys) OR g.sender IN (SELECT '@' || domain FROM sd))
)
SELECT
    (SELECT m.active AND d.active FROM mailbox m JOIN domain d ON d.name = m.domain WHERE m.address = $1::text),
    ARRAY(SELECT domain FROM sd ORDER BY domain),
    ARRAY(SELECT k FROM keys ORDER BY k),
    ARRAY(SELECT address FROM al ORDER BY address),
    ARRAY(SELECT active FROM al ORDER BY address),
    ARRAY(SELECT domain_active FROM al ORDER BY address),
    ARRAY(SELECT n FROM al ORDER BY address),
    ARRAY(SELECT sender FROM gr ORDER BY sender),
    ARRAY(SELECT active FROM gr ORDER BY sender)`

// LookupSender reads the facts of the sender-permission check for the
// mailbox user and the sender senderLocal@senderDomain, whose local part
// without extension is senderUser. All names are canonical (lower case).
func (s *Store) LookupSender(ctx context.Context, user, senderLocal, senderUser, senderDomain string) (SenderFacts, error) {
	var (
		f          SenderFacts
		active     *bool
		aAddr      []string
		aActive    []bool
		aDomActive []bool
		aN         []int32
		gSender    []string
		gActive    []bool
	)
	err := s.pool.QueryRow(ctx, SenderSQL, user, senderLocal, senderUser, senderDomain).Scan(
		&active, &f.Domains, &f.Keys, &aAddr, &aActive, &aDomActive, &aN, &gSender, &gActive)
	if err != nil {
		return SenderFacts{}, fmt.Errorf("look up sender %s@%s for %s: %w", senderLocal, senderDomain, user, err)
	}
	f.MailboxFound = active != nil
	f.MailboxActive = active != nil && *active
	for i := range aAddr {
		f.Aliases = append(f.Aliases, SenderAlias{Address: aAddr[i], Active: aActive[i],
			DomainActive: aDomActive[i], Destinations: int(aN[i])})
	}
	for i := range gSender {
		f.Grants = append(f.Grants, SenderGrantMatch{Sender: gSender[i], Active: gActive[i]})
	}
	return f, nil
}

// ClientAccessMatch is an active client_access row whose network holds an
// address.
type ClientAccessMatch struct {
	Network netip.Prefix
	Action  string // ActionPermitRelay, ActionPermitQMQP or ActionReject
}

// LookupClientAccess returns the active client_access rows whose network
// contains ip, most specific network first.
func (s *Store) LookupClientAccess(ctx context.Context, ip netip.Addr) ([]ClientAccessMatch, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT network, action FROM client_access
		WHERE active AND network >>= $1::inet
		ORDER BY masklen(network) DESC, action`, ip)
	if err != nil {
		return nil, fmt.Errorf("look up client access of %s: %w", ip, err)
	}
	defer rows.Close()
	var out []ClientAccessMatch
	for rows.Next() {
		var m ClientAccessMatch
		if err := rows.Scan(&m.Network, &m.Action); err != nil {
			return nil, fmt.Errorf("look up client access of %s: %w", ip, err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up client access of %s: %w", ip, err)
	}
	return out, nil
}

// SettingsSQL is the statement LookupSettings runs.
const SettingsSQL = `SELECT key, value FROM setting`

// LookupSettings returns every setting as a map from key to value.
func (s *Store) LookupSettings(ctx context.Context) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, SettingsSQL)
	if err != nil {
		return nil, fmt.Errorf("look up settings: %w", err)
	}
	defer rows.Close()
	m := make(map[string]string)
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("look up settings: %w", err)
		}
		m[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up settings: %w", err)
	}
	return m, nil
}

func orZero[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
