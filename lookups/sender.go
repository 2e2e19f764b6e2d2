package lookups

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
)

// Permission is the answer to "may this user use that envelope sender?",
// with the rule that decided it.
type Permission struct {
	Allowed bool   `json:"allowed"`
	Reason  string `json:"reason"`
}

// SenderAllowed reports whether the authenticated mailbox user may use
// sender as its envelope sender (Postfix's reject_sender_login_mismatch; the
// reply when not is 553 5.7.1). See SenderPermission.
func (r *Resolver) SenderAllowed(ctx context.Context, user, sender string) (bool, error) {
	p, err := r.SenderPermission(ctx, user, sender)
	return p.Allowed, err
}

// SenderPermission decides whether the authenticated mailbox user (its
// address) may use sender as envelope sender. It may when user is an active
// mailbox in an active domain and sender, with or without its address
// extension and with its domain or, for an active alias domain, the target
// domain, is:
//   - the user's own address;
//   - an active alias, in an active domain, whose only destination is the
//     user (an alias with several destinations, or a catch-all, never
//     grants it: it would let every member send as the list);
//   - an active sender_grant row of the user for that address or for
//     "@" + that domain.
//
// The null sender (empty) is allowed, as Postfix allows it: it claims no
// address, and the check of the From: header's domain for signing still
// applies. The answer is not cached.
func (r *Resolver) SenderPermission(ctx context.Context, user, sender string) (Permission, error) {
	ua, err := address.ParseInternal(user)
	if err != nil {
		return Permission{}, fmt.Errorf("sender permission: user: %w: %w", ErrBadAddress, err)
	}
	u := strings.ToLower(ua.Local) + "@" + ua.Domain
	if sender == "" {
		return Permission{Allowed: true, Reason: "the null sender claims no address"}, nil
	}
	sa, err := address.ParseInternal(sender)
	if err != nil {
		return Permission{}, fmt.Errorf("sender permission: sender: %w: %w", ErrBadAddress, err)
	}
	delim, err := r.delimiter(ctx)
	if err != nil {
		return Permission{}, fmt.Errorf("sender permission: %w", err)
	}
	local := strings.ToLower(sa.Local)
	suser, _ := address.SplitExtension(local, delim)
	f, err := r.st.LookupSender(ctx, u, local, suser, sa.Domain)
	if err != nil {
		return Permission{}, fmt.Errorf("sender permission: %w", err)
	}
	if !f.MailboxFound {
		return Permission{Reason: fmt.Sprintf("%s is not a mailbox", u)}, nil
	}
	if !f.MailboxActive {
		return Permission{Reason: fmt.Sprintf("mailbox %s or its domain is inactive", u)}, nil
	}
	if slices.Contains(f.Keys, u) {
		return Permission{Allowed: true, Reason: fmt.Sprintf("%s is the user's own address", sender)}, nil
	}
	var why []string
	for _, a := range f.Aliases {
		switch {
		case !a.Active:
			why = append(why, fmt.Sprintf("alias %s is inactive", a.Address))
		case !a.DomainActive:
			why = append(why, fmt.Sprintf("the domain of alias %s is inactive", a.Address))
		case a.Destinations != 1:
			why = append(why, fmt.Sprintf("alias %s has %d destinations", a.Address, a.Destinations))
		default:
			return Permission{Allowed: true, Reason: fmt.Sprintf("alias %s delivers only to %s", a.Address, u)}, nil
		}
	}
	for _, g := range f.Grants {
		if g.Active {
			return Permission{Allowed: true, Reason: fmt.Sprintf("sender grant %s for %s", g.Sender, u)}, nil
		}
		why = append(why, fmt.Sprintf("sender grant %s is inactive", g.Sender))
	}
	reason := fmt.Sprintf("%s does not own %s", u, sender)
	if len(why) > 0 {
		reason += " (" + strings.Join(why, "; ") + ")"
	}
	return Permission{Reason: reason}, nil
}

// Access is what client_access says about a client address.
type Access struct {
	PermitRelay bool
	PermitQMQP  bool
	Reject      bool
	// Network is the most specific matching network (invalid when none
	// matched).
	Network netip.Prefix
}

// ClientAccess reports what the client_access table says about ip. Only the
// most specific matching network counts (a /32 inside a permitted /8 may
// reject, a /16 inside a rejected /8 may be permitted); when that network
// has both a reject and a permit row, reject wins and the permits are
// cleared. IPv4-mapped IPv6 addresses are looked up as IPv4. Answers are
// cached with the results.
func (r *Resolver) ClientAccess(ctx context.Context, ip netip.Addr) (permitRelay, permitQMQP, reject bool, err error) {
	a, err := r.ClientAccessOf(ctx, ip)
	return a.PermitRelay, a.PermitQMQP, a.Reject, err
}

// ClientAccessOf is ClientAccess with the matching network.
func (r *Resolver) ClientAccessOf(ctx context.Context, ip netip.Addr) (Access, error) {
	if !ip.IsValid() {
		return Access{}, fmt.Errorf("client access: invalid address")
	}
	ip = ip.Unmap().WithZone("")
	key := ip.String()
	if e, ok := r.access.get(key); ok {
		r.hits.Add(1)
		return e, nil
	}
	r.misses.Add(1)
	gen := r.access.generation()
	usable := r.cacheUsable()
	rows, err := r.st.LookupClientAccess(ctx, ip)
	if err != nil {
		return Access{}, fmt.Errorf("client access: %w", err)
	}
	var a Access
	for _, m := range rows {
		if a.Network.IsValid() && m.Network.Bits() != a.Network.Bits() {
			break // rows come most specific first
		}
		a.Network = m.Network
		switch m.Action {
		case store.ActionPermitRelay:
			a.PermitRelay = true
		case store.ActionPermitQMQP:
			a.PermitQMQP = true
		case store.ActionReject:
			a.Reject = true
		}
	}
	if a.Reject {
		a.PermitRelay, a.PermitQMQP = false, false
	}
	if usable {
		r.access.put(key, a, gen)
	}
	return a, nil
}
