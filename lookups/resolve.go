package lookups

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
)

// walker is one resolution: the recipients found so far, what has been
// expanded, and the trace.
type walker struct {
	r       *Resolver
	ctx     context.Context
	delim   string
	routes  map[store.RouteKey]store.Route
	recips  []Recipient
	seen    map[string]bool // final recipients, by class and address
	done    map[string]bool // addresses completely resolved
	visits  int
	explain []string
}

// frame is an address being expanded; keeps reports that its alias lists
// the address itself, so that a cycle back to it only repeats a delivery
// that is already made.
type frame struct {
	addr  string
	keeps bool
}

// outcome is what the top level of a resolution found.
type outcome struct {
	class    DomainClass
	domain   string
	maxBytes int64
	rule     string
	found    bool
}

// resolve runs one uncached resolution.
func (r *Resolver) resolve(ctx context.Context, local, domain string, bare bool) (Result, bool, error) {
	delim, err := r.delimiter(ctx)
	if err != nil {
		return Result{}, false, err
	}
	w := &walker{r: r, ctx: ctx, delim: delim, routes: map[store.RouteKey]store.Route{},
		seen: map[string]bool{}, done: map[string]bool{}}
	if bare {
		return w.barePostmaster()
	}
	out, err := w.resolve(local, domain, nil, nil, true)
	if err == nil && len(w.recips) > r.opts.MaxFanout {
		err = fmt.Errorf("%w: more than %d recipients", ErrTooMany, r.opts.MaxFanout)
	}
	if err != nil {
		return Result{Address: local + "@" + domain, Explain: w.explain}, false,
			fmt.Errorf("resolve %s@%s: %w", local, domain, err)
	}
	res := Result{
		Address:         local + "@" + domain,
		Domain:          out.class,
		DomainName:      out.domain,
		MaxMessageBytes: out.maxBytes,
		Rule:            out.rule,
		Recipients:      w.recips,
		Explain:         w.explain,
	}
	return res, out.found, nil
}

// barePostmaster resolves "postmaster" without a domain (RFC 5321 4.5.1:
// it must be accepted): Options.Postmaster.
func (w *walker) barePostmaster() (Result, bool, error) {
	res := Result{Address: "postmaster", Domain: DomainLocal, Rule: RulePostmaster}
	pm := w.r.opts.Postmaster
	if pm == "" {
		w.note(0, "postmaster: no postmaster address is configured")
		res.Rule = ""
		res.Explain = w.explain
		return res, false, nil
	}
	w.note(0, "postmaster without a domain → %s (RFC 5321 4.5.1)", pm)
	err := w.destination(pm, "", "", "", false, nil, []frame{{addr: "postmaster"}}, []string{"postmaster"})
	if err == nil && len(w.recips) > w.r.opts.MaxFanout {
		err = fmt.Errorf("%w: more than %d recipients", ErrTooMany, w.r.opts.MaxFanout)
	}
	if err != nil {
		return Result{Address: "postmaster", Explain: w.explain}, false, fmt.Errorf("resolve postmaster: %w", err)
	}
	res.Recipients, res.Explain = w.recips, w.explain
	return res, len(res.Recipients) > 0, nil
}

func (w *walker) note(depth int, format string, args ...any) {
	w.explain = append(w.explain, strings.Repeat("  ", depth)+fmt.Sprintf(format, args...))
}

// route reads (once per resolution) the route of an address.
func (w *walker) route(k store.RouteKey) (store.Route, error) {
	if rt, ok := w.routes[k]; ok {
		return rt, nil
	}
	w.visits++
	if w.visits > maxVisitsPerFanout*w.r.opts.MaxFanout {
		return store.Route{}, fmt.Errorf("%w: more than %d addresses visited", ErrTooMany, w.visits-1)
	}
	rt, err := w.r.st.LookupRoute(w.ctx, k)
	if err != nil {
		return store.Route{}, err
	}
	w.routes[k] = rt
	return rt, nil
}

// classify says what the route's domain is to this host.
func (w *walker) classify(rt store.Route) DomainClass {
	d := rt.Domain
	switch {
	case d != nil && d.Active && d.BackupMX:
		return DomainRelay
	case d != nil && d.Active && d.Local:
		return DomainLocal
	case d != nil && d.Active:
		return DomainVirtual
	case w.r.localDomains[rt.Name]:
		return DomainLocal
	}
	return DomainRemote
}

// resolve resolves local@domain, reached through the aliases in via while
// expanding the addresses in chain, adding its final recipients.
func (w *walker) resolve(local, domain string, chain []frame, via []string, top bool) (outcome, error) {
	depth := len(chain)
	if depth > w.r.opts.MaxDepth {
		return outcome{}, fmt.Errorf("%w: %s (more than %d levels)", ErrTooDeep, chainText(chain, local+"@"+domain), w.r.opts.MaxDepth)
	}
	user, ext := address.SplitExtension(local, w.delim)
	rt, err := w.route(store.RouteKey{Local: local, User: user, Domain: domain})
	if err != nil {
		return outcome{}, err
	}
	if rt.AliasTarget != "" {
		if rt.Name != rt.Asked {
			w.note(depth, "alias domain %s → %s", rt.Asked, rt.Name)
		} else {
			w.note(depth, "alias domain %s → %s is inactive, or its target is", rt.Asked, rt.AliasTarget)
		}
	}
	dom := rt.Name
	addr := local + "@" + dom
	class := w.classify(rt)

	// Cycles and repeats, on the address after the alias-domain rewrite.
	if n := len(chain); n > 0 && chain[n-1].addr == addr {
		// The alias being expanded names its own address: deliver here too.
		return outcome{}, w.selfDelivery(rt, class, addr, user, ext, depth, via)
	}
	for _, f := range chain {
		if f.addr == addr {
			if f.keeps {
				w.note(depth, "%s: already being expanded, and keeps its copy", addr)
				return outcome{}, nil
			}
			return outcome{}, fmt.Errorf("%w: %s", ErrLoop, chainText(chain, addr))
		}
	}
	if w.done[addr] {
		w.note(depth, "%s: already expanded", addr)
		return outcome{}, nil
	}
	defer func() { w.done[addr] = true }()

	out := outcome{class: class, domain: dom}
	if rt.Domain != nil {
		out.maxBytes = rt.Domain.MaxMessageBytes
	}
	// SRS addresses of ours, before the extension is split off (their
	// fields may hold any delimiter) and before aliases.
	if w.r.opts.SRS != nil && isSRS(local) && (class != DomainRemote || dom == w.r.opts.SRSDomain) {
		orig, err := w.r.opts.SRS.Reverse(addr)
		if err == nil {
			w.note(depth, "%s: SRS address → %s", addr, orig)
			out.rule, out.found = RuleSRS, true
			if out.class == DomainRemote {
				out.class = DomainLocal // the SRS domain: ours, even without a domain row
			}
			return out, w.destination(orig, "", "", "", false, nil, append(slices.Clip(chain), frame{addr: addr}), append(slices.Clip(via), addr))
		}
		w.note(depth, "%s: not a valid SRS address of ours (%v)", addr, err)
		if class == DomainRemote {
			// The SRS domain is ours for SRS addresses only: a forged or
			// expired one is an unknown user there (550 5.1.1), not relaying.
			out.class = DomainLocal
			if !top {
				w.add(depth, Recipient{Class: ClassUnknown, Address: addr, Transport: unknownTransport, Via: via}, "unknown")
			}
			return out, nil
		}
	}
	switch {
	case class == DomainRemote && rt.Domain != nil:
		w.note(depth, "%s: domain %s is inactive: not ours", addr, dom)
	case class == DomainRemote:
		w.note(depth, "%s: domain %s is not ours", addr, dom)
	default:
		w.note(depth, "%s: %s domain %s", addr, class, dom)
	}
	if class == DomainRemote {
		out.rule = RuleRemote
		t, why := pickTransport(w.r.opts.RemoteTransport, "remote default", "",
			rt.ExtTransport, rt.Transport, rt.DomainTransport)
		w.add(depth, Recipient{Class: ClassRemote, Address: addr, Transport: t, Via: via}, why)
		return out, nil
	}

	// 1. user+ext@domain.
	if local != user {
		if a := w.activeAlias(depth, rt.ExtAlias); a != nil {
			out.rule, out.found = RuleAlias, true
			return out, w.expandAlias(a, local, "", "", dom, class, chain, via, addr)
		}
		if class != DomainRelay {
			if m := w.activeMailbox(depth, rt.ExtMailbox); m != nil {
				out.rule, out.found = RuleMailbox, true
				w.addMailbox(depth, rt, m, addr, "", via)
				return out, nil
			}
		}
	}
	// 2. user@domain; the extension is kept.
	if a := w.activeAlias(depth, rt.Alias); a != nil {
		out.rule, out.found = RuleAlias, true
		sep := local[len(user) : len(local)-len(ext)]
		return out, w.expandAlias(a, user, sep, ext, dom, class, chain, via, addr)
	}
	if class != DomainRelay {
		if m := w.activeMailbox(depth, rt.Mailbox); m != nil {
			out.rule, out.found = RuleMailbox, true
			w.addMailbox(depth, rt, m, addr, ext, via)
			return out, nil
		}
	}
	// 3. @domain.
	if a := w.activeAlias(depth, rt.CatchAll); a != nil {
		out.rule, out.found = RuleCatchAll, true
		return out, w.expandAlias(a, local, "", "", dom, class, chain, via, addr)
	}

	switch class {
	case DomainRelay:
		out.rule, out.found = RuleRelay, true
		t, why := pickTransport(w.r.opts.RelayTransport, "relay default", domTransport(rt),
			rt.ExtTransport, rt.Transport, rt.DomainTransport)
		w.add(depth, Recipient{Class: ClassRelay, Address: addr, Transport: t, Via: via}, why)
		return out, nil
	}
	// RFC 5321 4.5.1: postmaster of every domain we accept mail for.
	if pm := w.r.opts.Postmaster; user == "postmaster" && pm != "" && !strings.EqualFold(pm, addr) {
		out.rule, out.found = RulePostmaster, true
		w.note(depth, "%s: no alias or mailbox: the host postmaster %s (RFC 5321 4.5.1)", addr, pm)
		return out, w.destination(pm, "", "", "", false, nil, append(slices.Clip(chain), frame{addr: addr}), append(slices.Clip(via), addr))
	}
	if class == DomainLocal && w.r.opts.LocalUser != nil {
		ok, err := w.r.opts.LocalUser(w.ctx, user)
		if err != nil {
			return outcome{}, fmt.Errorf("look up local user %s: %w", user, err)
		}
		if ok {
			out.rule, out.found = RuleLocalUser, true
			t, why := pickTransport(w.r.opts.LocalTransport, "local default", domTransport(rt),
				rt.ExtTransport, rt.Transport, rt.DomainTransport)
			w.add(depth, Recipient{Class: ClassLocal, Address: addr, Transport: t, Extension: ext, Via: via}, why)
			return out, nil
		}
	}
	w.note(depth, "%s: no alias, mailbox or catch-all", addr)
	if !top {
		w.add(depth, Recipient{Class: ClassUnknown, Address: addr, Transport: unknownTransport, Via: via}, "unknown")
	}
	return out, nil
}

// selfDelivery delivers to the mailbox of an address whose alias names the
// address itself (forward and keep a copy), or relays it in a relay domain.
// On a local domain without such a mailbox, it delivers to the system user
// (Postfix's "root: \root", which /etc/aliases imports as "root: root").
func (w *walker) selfDelivery(rt store.Route, class DomainClass, addr, user, ext string, depth int, via []string) error {
	switch class {
	case DomainRelay:
		t, why := pickTransport(w.r.opts.RelayTransport, "relay default", domTransport(rt),
			rt.ExtTransport, rt.Transport, rt.DomainTransport)
		w.add(depth, Recipient{Class: ClassRelay, Address: addr, Transport: t, Via: via}, why)
		return nil
	case DomainRemote:
		t, why := pickTransport(w.r.opts.RemoteTransport, "remote default", "",
			rt.ExtTransport, rt.Transport, rt.DomainTransport)
		w.add(depth, Recipient{Class: ClassRemote, Address: addr, Transport: t, Via: via}, why)
		return nil
	}
	if m := w.activeMailbox(depth, rt.ExtMailbox); m != nil {
		w.addMailbox(depth, rt, m, addr, "", via)
		return nil
	}
	if m := w.activeMailbox(depth, rt.Mailbox); m != nil {
		w.addMailbox(depth, rt, m, addr, ext, via)
		return nil
	}
	if class == DomainLocal && w.r.opts.LocalUser != nil {
		ok, err := w.r.opts.LocalUser(w.ctx, user)
		if err != nil {
			return fmt.Errorf("look up local user %s: %w", user, err)
		}
		if ok {
			w.note(depth, "%s: the alias keeps a copy for the system user %s", addr, user)
			t, why := pickTransport(w.r.opts.LocalTransport, "local default", domTransport(rt),
				rt.ExtTransport, rt.Transport, rt.DomainTransport)
			w.add(depth, Recipient{Class: ClassLocal, Address: addr, Transport: t, Extension: ext, Via: via}, why)
			return nil
		}
	}
	w.note(depth, "%s: the alias keeps a copy, but there is no active mailbox or system user", addr)
	w.add(depth, Recipient{Class: ClassUnknown, Address: addr, Transport: unknownTransport, Via: via}, "unknown")
	return nil
}

// expandAlias resolves the destinations of alias a, matched for addr. When
// the alias matched the address without its extension, sep and ext are the
// delimiter and the extension, copied to address destinations (Postfix's
// propagate_unmatched_extensions); a destination "@other" means
// atLocal@other (the local part without the unmatched extension, as Postfix
// does).
func (w *walker) expandAlias(a *store.RouteAlias, atLocal, sep, ext, dom string, class DomainClass,
	chain []frame, via []string, addr string) error {
	depth := len(chain)
	kind := "alias"
	if strings.HasPrefix(a.Address, "@") {
		kind = "catch-all"
	}
	w.note(depth, "%s %s → %s", kind, a.Address, strings.Join(a.Destinations, ", "))
	chain = append(slices.Clip(chain), frame{addr: addr, keeps: slices.Contains(a.Destinations, a.Address)})
	via = append(slices.Clip(via), a.Address)
	for _, dst := range a.Destinations {
		if err := w.destination(dst, atLocal, sep, ext, class == DomainLocal, &dom, chain, via); err != nil {
			return err
		}
	}
	return nil
}

// destination resolves one alias destination.
func (w *walker) destination(dst, atLocal, sep, ext string, local bool, dom *string, chain []frame, via []string) error {
	depth := len(chain)
	lt := w.r.opts.LocalTransport
	switch {
	case dst == "":
		return nil
	case strings.HasPrefix(dst, "|"), strings.HasPrefix(dst, "/"), hasPrefixFold(dst, ":include:"):
		if !local {
			// The database refuses these outside local domains; an older row
			// or a changed flag must not run anything.
			w.note(depth, "%s: commands and files are allowed only on local domains: ignored", dst)
			return nil
		}
		c := ClassFile
		if strings.HasPrefix(dst, "|") {
			c = ClassCommand
		} else if hasPrefixFold(dst, ":include:") {
			c = ClassInclude
		}
		w.add(depth, Recipient{Class: c, Address: dst, Transport: lt, Via: via}, "local delivery")
		return nil
	case strings.HasPrefix(dst, "@"):
		d, err := address.Domain(dst[1:])
		if err != nil {
			w.note(depth, "%s: bad destination: %v", dst, err)
			return nil
		}
		return w.descend(atLocal, d, chain, via)
	case !strings.Contains(dst, "@"):
		if !local || dom == nil {
			w.note(depth, "%s: a bare user name is allowed only on local domains: ignored", dst)
			return nil
		}
		return w.descend(strings.ToLower(dst), *dom, chain, via)
	}
	a, err := address.ParseInternal(dst)
	if err != nil {
		w.note(depth, "%s: bad destination: %v", dst, err)
		w.add(depth, Recipient{Class: ClassUnknown, Address: dst, Transport: unknownTransport, Via: via}, "unknown")
		return nil
	}
	l := strings.ToLower(a.Local)
	if sep != "" {
		l += sep + ext
	}
	return w.descend(l, a.Domain, chain, via)
}

// descend resolves an alias destination address one level down.
func (w *walker) descend(local, domain string, chain []frame, via []string) error {
	if len(w.recips) > w.r.opts.MaxFanout {
		return fmt.Errorf("%w: more than %d recipients", ErrTooMany, w.r.opts.MaxFanout)
	}
	_, err := w.resolve(local, domain, chain, via, false)
	return err
}

// add adds a final recipient unless it is there already.
func (w *walker) add(depth int, rc Recipient, why string) {
	key := rc.Class.String() + "\x00" + rc.Address
	if w.seen[key] {
		w.note(depth, "→ %s %s: duplicate", rc.Class, rc.Address)
		return
	}
	w.seen[key] = true
	w.recips = append(w.recips, rc)
	w.note(depth, "→ %s %s, transport %s (%s)", rc.Class, rc.Address, rc.Transport, why)
}

func (w *walker) addMailbox(depth int, rt store.Route, m *store.RouteMailbox, addr, ext string, via []string) {
	t, why := pickTransport(w.r.opts.MailboxTransport, "mailbox default", domTransport(rt),
		rt.ExtTransport, rt.Transport, rt.DomainTransport)
	if m.Transport != "" {
		t, why = m.Transport, "mailbox transport"
	}
	w.add(depth, Recipient{Class: ClassMailbox, Address: addr, Transport: t, Mailbox: m.Address,
		Extension: ext, Maildir: m.Maildir, QuotaBytes: m.QuotaBytes, Via: via}, why)
}

// pickTransport applies the transport precedence after any mailbox
// override: the transport rows (the address with its extension, the
// address, the domain), then the domain's own transport, then def.
func pickTransport(def, defWhy, domain string, rows ...*store.RouteTransport) (string, string) {
	for _, t := range rows {
		if t != nil && t.Active {
			return t.Nexthop, "transport " + t.Key
		}
	}
	if domain != "" {
		return domain, "domain transport"
	}
	return def, defWhy
}

func domTransport(rt store.Route) string {
	if rt.Domain != nil {
		return rt.Domain.Transport
	}
	return ""
}

// active returns a if it is an active alias, noting an inactive one.
func (w *walker) activeAlias(depth int, a *store.RouteAlias) *store.RouteAlias {
	if a == nil {
		return nil
	}
	if !a.Active {
		w.note(depth, "alias %s is inactive", a.Address)
		return nil
	}
	return a
}

// activeMailbox returns m if it is an active mailbox, noting an inactive one.
func (w *walker) activeMailbox(depth int, m *store.RouteMailbox) *store.RouteMailbox {
	if m == nil {
		return nil
	}
	if !m.Active {
		w.note(depth, "mailbox %s is inactive", m.Address)
		return nil
	}
	return m
}

func chainText(chain []frame, last string) string {
	var b strings.Builder
	for _, f := range chain {
		b.WriteString(f.addr)
		b.WriteString(" → ")
	}
	b.WriteString(last)
	return b.String()
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// isSRS reports whether local is an SRS0 or SRS1 local part (the tag in any
// case, then one of the separators = + -), as mta/srs makes them.
func isSRS(local string) bool {
	if len(local) < 5 || !strings.EqualFold(local[:3], "srs") || (local[3] != '0' && local[3] != '1') {
		return false
	}
	switch local[4] {
	case '=', '+', '-':
		return true
	}
	return false
}
