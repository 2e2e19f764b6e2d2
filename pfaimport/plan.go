package pfaimport

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/facteur/facteur/lookups/address"
)

// The facteur rows an import writes, computed from PostfixAdmin's.
type (
	domainRow struct {
		Name, Description string
		Active, BackupMX  bool
		Transport         *string
		MaxMailboxes      *int32
		MaxAliases        *int32
		MaxQuotaBytes     *int64
		TotalQuotaBytes   *int64
		Created           *time.Time
	}
	aliasDomainRow struct {
		AliasDomain, TargetDomain string
		Active                    bool
		Created                   *time.Time
	}
	mailboxRow struct {
		Address, Name, Password, Maildir string
		QuotaBytes                       *int64
		Active                           bool
		Created                          *time.Time
	}
	aliasRow struct {
		Address      string
		Destinations []string
		Active       bool
		Created      *time.Time
	}
	adminRow struct {
		Username, Password string
		Superadmin, Active bool
		Created            *time.Time
	}
	domainAdminRow struct {
		Username, Domain string
		Active           bool
	}
	vacationRow struct {
		Mailbox, Subject, Body  string
		ActiveFrom, ActiveUntil *time.Time
		IntervalSeconds         int32
		Active                  bool
		Created                 *time.Time
	}
	notifiedRow struct {
		Mailbox, Sender string
		NotifiedAt      time.Time
	}
	usageRow struct {
		Username        string
		Bytes, Messages int64
	}
)

// plan is what an import means to write, with the rows it cannot import.
type plan struct {
	Domains       []domainRow
	AliasDomains  []aliasDomainRow
	Mailboxes     []mailboxRow
	Aliases       []aliasRow
	Admins        []adminRow
	DomainAdmins  []domainAdminRow
	Vacations     []vacationRow
	Notified      []notifiedRow
	Usage         []usageRow
	SelfAliases   int // mailbox self-aliases recognised and left out
	VacationGotos int // vacation-domain destinations turned into vacation rows
	Source        map[string]int
	report        *Report
}

// PostfixAdmin's vacation defaults, which mean "no bound".
var (
	pfaNoFrom  = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	pfaNoUntil = time.Date(2038, 1, 18, 0, 0, 0, 0, time.UTC)
)

const mib = 1 << 20

// limitCount maps PostfixAdmin's domain count limits: -1 disabled (none
// allowed), 0 unlimited (NULL), n at most n.
func limitCount(n int64) *int32 {
	switch {
	case n < 0:
		z := int32(0)
		return &z
	case n == 0:
		return nil
	case n > math.MaxInt32:
		return nil
	}
	v := int32(n)
	return &v
}

// limitMB maps a domain quota in MB: 0 unlimited; -1 ("disabled", which
// facteur cannot express: a quota of 0 would refuse everything) unlimited too,
// with a warning by the caller.
func limitMB(n int64) *int64 {
	if n <= 0 || n > math.MaxInt64/mib {
		return nil
	}
	v := n * mib
	return &v
}

// buildPlan maps the PostfixAdmin rows to facteur's, recording in r every
// row that cannot be imported and why.
func buildPlan(src *source, opts Options, r *Report) *plan {
	p := &plan{report: r}

	// Alias domains are domains in PostfixAdmin too; in facteur they are
	// only alias domains.
	aliasDomains := map[string]string{} // normalised alias domain → target
	for _, ad := range src.AliasDomains {
		a, err1 := address.Domain(ad.AliasDomain)
		t, err2 := address.Domain(ad.TargetDomain)
		if err1 != nil || err2 != nil {
			r.notImported("alias_domain", ad.AliasDomain, "not a valid domain name")
			continue
		}
		aliasDomains[a] = t
		p.AliasDomains = append(p.AliasDomains, aliasDomainRow{AliasDomain: a, TargetDomain: t, Active: ad.Active, Created: ad.Created})
	}

	domains := map[string]bool{}
	for _, d := range src.Domains {
		if d.Domain == "ALL" {
			continue // superadmins' pseudo-domain
		}
		name, err := address.Domain(d.Domain)
		if err != nil {
			r.notImported("domain", d.Domain, "not a valid domain name: "+err.Error())
			continue
		}
		if _, ok := aliasDomains[name]; ok {
			continue // imported as an alias domain
		}
		row := domainRow{Name: name, Description: d.Description, Active: d.Active, BackupMX: d.BackupMX,
			MaxMailboxes: limitCount(d.Mailboxes), MaxAliases: limitCount(d.Aliases),
			MaxQuotaBytes: limitMB(d.MaxQuota), TotalQuotaBytes: limitMB(d.Quota), Created: d.Created}
		if d.MaxQuota < 0 || d.Quota < 0 {
			r.warn("domain", name, "quota -1 (disabled) imported as unlimited: facteur has no quota of 0")
		}
		if d.Transport != nil {
			t, warn := mapTransport(*d.Transport)
			row.Transport = t
			if warn != "" {
				r.warn("domain", name, warn)
			}
		}
		domains[name] = true
		p.Domains = append(p.Domains, row)
	}
	for _, ad := range p.AliasDomains {
		if !domains[ad.TargetDomain] {
			r.notImported("alias_domain", ad.AliasDomain, "its target "+ad.TargetDomain+" is not imported as a domain")
		}
	}
	p.AliasDomains = slices.DeleteFunc(p.AliasDomains, func(ad aliasDomainRow) bool { return !domains[ad.TargetDomain] })

	// Mailboxes.
	mailboxes := map[string]bool{}    // imported
	srcMailboxes := map[string]bool{} // in PostfixAdmin
	for _, m := range src.Mailboxes {
		if a, err := address.Normalize(m.Username); err == nil {
			srcMailboxes[a] = true
		}
	}
	for _, m := range src.Mailboxes {
		addr, err := address.Normalize(m.Username)
		if err != nil {
			r.notImported("mailbox", m.Username, "not a valid address: "+err.Error())
			continue
		}
		dom := addr[strings.LastIndexByte(addr, '@')+1:]
		if _, ok := aliasDomains[dom]; ok {
			r.notImported("mailbox", addr, "its domain is an alias domain: facteur maps every address of "+dom+" to "+aliasDomains[dom])
			continue
		}
		if !domains[dom] {
			r.notImported("mailbox", addr, "its domain "+dom+" is not imported")
			continue
		}
		md, err := cleanMaildir(m.Maildir)
		if err != nil {
			r.notImported("mailbox", addr, err.Error())
			continue
		}
		if md == "" { // facteur's default, which the database would write
			md = dom + "/" + addr[:strings.LastIndexByte(addr, '@')] + "/"
		}
		hash, warn := convertHash(m.Password, opts.BareScheme)
		if warn != "" {
			r.warn("mailbox", addr, "password: "+warn)
		}
		var quota *int64
		if m.Quota > 0 {
			quota = &m.Quota
		}
		mailboxes[addr] = true
		p.Mailboxes = append(p.Mailboxes, mailboxRow{Address: addr, Name: m.Name, Password: hash, Maildir: md,
			QuotaBytes: quota, Active: m.Active, Created: m.Created})
	}

	// Aliases: the comma-separated goto, without the vacation-domain
	// destinations (user#domain@autoreply.example) and without the
	// self-alias PostfixAdmin writes for every mailbox.
	onVacation := map[string]bool{}
	for _, a := range src.Aliases {
		key, err := address.NormalizeDomainOrAddress(a.Address)
		if err != nil || !strings.Contains(key, "@") {
			r.notImported("alias", a.Address, "not an address or @domain")
			continue
		}
		dom := key[strings.LastIndexByte(key, '@')+1:]
		if _, ok := aliasDomains[dom]; ok {
			r.notImported("alias", key, "its domain is an alias domain: facteur maps every address of "+dom+" to "+aliasDomains[dom]+" and keeps no aliases of its own there")
			continue
		}
		if !domains[dom] {
			r.notImported("alias", key, "its domain "+dom+" is not imported")
			continue
		}
		var dests []string
		bad := ""
		for _, g := range strings.Split(a.Goto, ",") {
			g = strings.TrimSpace(g)
			if g == "" {
				continue
			}
			if isVacationGoto(g, key) {
				onVacation[key] = true
				p.VacationGotos++
				continue
			}
			n, err := address.Normalize(g)
			if err != nil {
				bad = g
				break
			}
			if !slices.Contains(dests, n) {
				dests = append(dests, n)
			}
		}
		switch {
		case srcMailboxes[key] && !mailboxes[key]:
			r.notImported("alias", key, "its mailbox is not imported")
			continue
		case bad != "":
			r.notImported("alias", key, fmt.Sprintf("destination %q is not an address", bad))
			continue
		case len(dests) == 0:
			r.notImported("alias", key, "no destination left (only vacation replies)")
			continue
		case mailboxes[key] && len(dests) == 1 && dests[0] == key:
			p.SelfAliases++ // facteur delivers to a mailbox without an alias
			continue
		case mailboxes[key] && !slices.Contains(dests, key):
			r.notImported("alias", key, "forwards without keeping a copy, which facteur does not allow for a mailbox's own address: "+
				"add the mailbox to the destinations to keep a copy, or remove the mailbox")
			continue
		case !mailboxes[key] && slices.Contains(dests, key):
			r.notImported("alias", key, "lists itself but is no mailbox: mail to it would loop")
			continue
		}
		p.Aliases = append(p.Aliases, aliasRow{Address: key, Destinations: dests, Active: a.Active, Created: a.Created})
	}

	// Vacations: PostfixAdmin's reply is on when the row is active and the
	// alias carries the vacation destination.
	vacations := map[string]bool{}
	for _, v := range src.Vacations {
		addr, err := address.Normalize(v.Email)
		if err != nil || !mailboxes[addr] {
			r.notImported("vacation", v.Email, "no imported mailbox of that address")
			continue
		}
		row := vacationRow{Mailbox: addr, Subject: v.Subject, Body: v.Body, Active: v.Active && onVacation[addr], Created: v.Created}
		if v.Active && !onVacation[addr] {
			r.warn("vacation", addr, "active, but no alias sends mail to the vacation domain: imported inactive, as PostfixAdmin sent no reply")
		}
		if v.ActiveFrom != nil && v.ActiveFrom.After(pfaNoFrom) {
			row.ActiveFrom = v.ActiveFrom
		}
		if v.ActiveUntil != nil && v.ActiveUntil.Before(pfaNoUntil) {
			row.ActiveUntil = v.ActiveUntil
		}
		if row.ActiveFrom != nil && row.ActiveUntil != nil && !row.ActiveUntil.After(*row.ActiveFrom) {
			r.warn("vacation", addr, "ends before it starts: imported without an end")
			row.ActiveUntil = nil
		}
		switch {
		case v.IntervalTime <= 0:
			// PostfixAdmin's "reply once": once per sender, for good.
			row.IntervalSeconds = math.MaxInt32
		case v.IntervalTime > math.MaxInt32:
			row.IntervalSeconds = math.MaxInt32
		default:
			row.IntervalSeconds = int32(v.IntervalTime)
		}
		vacations[addr] = true
		p.Vacations = append(p.Vacations, row)
	}
	for addr := range onVacation {
		if !vacations[addr] && mailboxes[addr] {
			r.warn("vacation", addr, "the alias sends mail to the vacation domain but there is no vacation row: no reply imported")
		}
	}
	for _, n := range src.Notifications {
		addr, err1 := address.Normalize(n.OnVacation)
		sender := strings.ToLower(strings.TrimSpace(n.Notified))
		if err1 != nil || !vacations[addr] || sender == "" {
			continue // the vacation itself is reported
		}
		p.Notified = append(p.Notified, notifiedRow{Mailbox: addr, Sender: sender, NotifiedAt: n.NotifiedAt})
	}
	for _, q := range src.Quotas {
		addr, err := address.Normalize(q.Username)
		if err != nil || !mailboxes[addr] {
			r.notImported("quota_usage", q.Username, "no imported mailbox of that address")
			continue
		}
		p.Usage = append(p.Usage, usageRow{Username: addr, Bytes: max(q.Bytes, 0), Messages: max(q.Messages, 0)})
	}

	// Admins: superadmins are admin.superadmin or hold the domain 'ALL'.
	super := map[string]bool{}
	for _, da := range src.DomainAdmins {
		if da.Domain == "ALL" && da.Active {
			super[strings.ToLower(strings.TrimSpace(da.Username))] = true
		}
	}
	admins := map[string]bool{}
	for _, a := range src.Admins {
		u := strings.ToLower(strings.TrimSpace(a.Username))
		if u == "" || strings.ContainsFunc(u, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
			r.notImported("admin", a.Username, "user name empty or with spaces")
			continue
		}
		hash, warn := convertHash(a.Password, opts.BareScheme)
		if warn != "" {
			r.warn("admin", u, "password: "+warn)
		}
		admins[u] = true
		p.Admins = append(p.Admins, adminRow{Username: u, Password: hash, Superadmin: a.Superadmin || super[u],
			Active: a.Active, Created: a.Created})
	}
	for _, da := range src.DomainAdmins {
		u := strings.ToLower(strings.TrimSpace(da.Username))
		if da.Domain == "ALL" || !admins[u] || super[u] {
			continue // superadmins need no grants; unknown admins are PostfixAdmin's own leftovers
		}
		d, err := address.Domain(da.Domain)
		if err != nil || !domains[d] {
			r.notImported("domain_admin", u+" "+da.Domain, "the domain is not imported")
			continue
		}
		p.DomainAdmins = append(p.DomainAdmins, domainAdminRow{Username: u, Domain: d, Active: da.Active})
	}

	p.Source = map[string]int{
		"domain": len(src.Domains), "alias_domain": len(src.AliasDomains), "mailbox": len(src.Mailboxes),
		"alias": len(src.Aliases), "admin": len(src.Admins), "domain_admin": len(src.DomainAdmins),
		"vacation": len(src.Vacations), "vacation_notified": len(src.Notifications), "quota_usage": len(src.Quotas),
	}
	for t, n := range src.Ignored {
		r.Notes = append(r.Notes, fmt.Sprintf("table %s (%d rows) is not imported", t, n))
	}
	slices.Sort(r.Notes)
	return p
}

// isVacationGoto reports whether g is PostfixAdmin's vacation destination
// for the alias key: "user#domain@<vacation domain>" for key user@domain.
func isVacationGoto(g, key string) bool {
	at := strings.LastIndexByte(g, '@')
	if at <= 0 {
		return false
	}
	local := g[:at]
	hash := strings.LastIndexByte(local, '#')
	if hash <= 0 {
		return false
	}
	return strings.EqualFold(local[:hash]+"@"+local[hash+1:], key)
}

// cleanMaildir checks a PostfixAdmin maildir (relative to
// virtual_mailbox_base) as facteur's schema does: relative, no "..", no
// control characters.
func cleanMaildir(md string) (string, error) {
	if strings.HasPrefix(md, "/") {
		return "", fmt.Errorf("maildir %q is absolute: facteur's maildirs are relative to the mail root", md)
	}
	for _, part := range strings.Split(md, "/") {
		if part == ".." {
			return "", fmt.Errorf("maildir %q leaves the mail root", md)
		}
	}
	if strings.ContainsFunc(md, func(c rune) bool { return c < ' ' || c == 0x7f }) {
		return "", fmt.Errorf("maildir %q holds control characters", md)
	}
	if path.Clean(md) == "." {
		return "", nil
	}
	return md, nil
}

// mapTransport maps PostfixAdmin's domain.transport (a Postfix transport(5)
// value) to facteur's: Postfix's virtual(8) is facteur's default delivery;
// smtp:, lmtp: and relay: next hops are kept; anything naming a Postfix
// master.cf service or a path relative to Postfix's queue directory has no
// facteur meaning and is dropped with a warning.
func mapTransport(t string) (*string, string) {
	t = strings.TrimSpace(t)
	kind, rest, _ := strings.Cut(t, ":")
	switch strings.ToLower(kind) {
	case "", "virtual":
		return nil, ""
	case "lmtp":
		if strings.HasPrefix(rest, "unix:") && !strings.HasPrefix(strings.TrimPrefix(rest, "unix:"), "/") {
			return nil, fmt.Sprintf("transport %q is relative to Postfix's queue directory: not imported; point the domain at Dovecot's LMTP socket (docs/dovecot)", t)
		}
		return &t, ""
	case "smtp", "relay":
		if rest == "" {
			return nil, ""
		}
		return &t, ""
	}
	return nil, fmt.Sprintf("transport %q names a Postfix master.cf service: not imported (facteur delivers to Maildir, or set an lmtp: or smtp: transport)", t)
}
