package msgauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/mta/envelope"
)

// Policy is a DMARC policy (p=, sp=) and a disposition: what to do with
// a message that fails.
type Policy string

// Policies (RFC 7489 6.3).
const (
	PolicyNone       Policy = "none"
	PolicyQuarantine Policy = "quarantine"
	PolicyReject     Policy = "reject"
)

// What a recipient domain does with DMARC failures
// (domain_policy.dmarc_failure, store.DMARCHonour, …).
const (
	LocalHonour     = "honour"     // do as the sender's policy says
	LocalQuarantine = "quarantine" // quarantine where it says reject
	LocalRecord     = "record"     // only record the result
)

// DMARCResult is the outcome of a DMARC evaluation.
type DMARCResult struct {
	// Result is pass, fail, none (no policy published), temperror (the
	// policy could not be fetched) or permerror (a broken record or From:
	// domain).
	Result Result
	// From is the RFC5322.From domain (A-labels), OrgDomain its
	// organisational domain (the public suffix list plus one label).
	From      string
	OrgDomain string
	// RecordDomain is where the policy was found: From, or OrgDomain
	// (RFC 7489 6.6.3).
	RecordDomain string
	// Policy is the policy requested for From: p=, or sp= when the record
	// is the organisational domain's and From is a subdomain. "" without
	// a record.
	Policy Policy
	// Percent is pct= (100 by default).
	Percent int
	// Action is what the sender's policy asks for this message: none on
	// pass, else Policy, lowered one step when pct= sampling left the
	// message out (RFC 7489 6.6.4).
	Action Policy
	// SPFAligned and DKIMAligned report which authenticated identifier is
	// aligned with From (relaxed or strict per aspf=/adkim=).
	SPFAligned  bool
	DKIMAligned bool
	// Reason explains temperror and permerror.
	Reason string
}

// EvaluateDMARC applies the DMARC policy of fromDomain (the domain of the
// From: header field) to the SPF and DKIM results of the message (RFC 7489
// 6.6). The record is looked up at _dmarc.<fromDomain>, then at the
// organisational domain's. Identifiers align when they are equal (strict)
// or share the organisational domain (relaxed, the default); SPF's is
// Domain of spf (the MAIL FROM domain, or the HELO name for <>), DKIM's the
// d= of each passing signature.
func (c *Checker) EvaluateDMARC(ctx context.Context, fromDomain string, spf SPFResult, dkims []DKIMResult) DMARCResult {
	from, err := address.Domain(fromDomain)
	if err != nil {
		return DMARCResult{Result: ResultPermError, From: strings.ToLower(fromDomain), Action: PolicyNone,
			Reason: "From: domain: " + err.Error()}
	}
	r := DMARCResult{From: from, OrgDomain: OrganizationalDomain(from), Action: PolicyNone}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	opts := &dmarc.LookupOptions{LookupTXT: c.lookupTXT(ctx)}
	rec, err := dmarc.LookupWithOptions(from, opts)
	r.RecordDomain = from
	if errors.Is(err, dmarc.ErrNoPolicy) && r.OrgDomain != from {
		rec, err = dmarc.LookupWithOptions(r.OrgDomain, opts)
		r.RecordDomain = r.OrgDomain
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		r.Result, r.RecordDomain = ResultNone, ""
		return r
	case dmarc.IsTempFail(err):
		r.Result, r.Reason = ResultTempError, err.Error()
		return r
	case err != nil:
		r.Result, r.Reason = ResultPermError, err.Error()
		return r
	}
	r.Policy = Policy(rec.Policy)
	if r.RecordDomain != from && rec.SubdomainPolicy != "" {
		r.Policy = Policy(rec.SubdomainPolicy)
	}
	r.Percent = 100
	if rec.Percent != nil {
		r.Percent = min(max(*rec.Percent, 0), 100)
	}

	// RFC 7489 3.1: identifier alignment.
	if spf.Result == ResultPass {
		r.SPFAligned = c.aligned(spf.Domain, from, rec.SPFAlignment)
	}
	for _, d := range dkims {
		if d.Result == ResultPass && c.aligned(d.Domain, from, rec.DKIMAlignment) {
			r.DKIMAligned = true
			break
		}
	}
	if r.SPFAligned || r.DKIMAligned {
		r.Result = ResultPass
		return r
	}
	r.Result = ResultFail
	r.Action = r.Policy
	// RFC 7489 6.6.4: a message left out by pct= gets the next policy
	// down: reject becomes quarantine, quarantine becomes none.
	if r.Percent < 100 && c.opts.Rand(100) >= r.Percent {
		switch r.Action {
		case PolicyReject:
			r.Action = PolicyQuarantine
		case PolicyQuarantine:
			r.Action = PolicyNone
		}
	}
	if r.Action != PolicyReject && r.Action != PolicyQuarantine {
		r.Action = PolicyNone
	}
	return r
}

// aligned compares an authenticated domain with the From: domain, strictly
// (equal) or relaxed (same organisational domain).
func (c *Checker) aligned(authenticated, from string, mode dmarc.AlignmentMode) bool {
	a, err := address.Domain(authenticated)
	if err != nil {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return a == from
	}
	return OrganizationalDomain(a) == OrganizationalDomain(from)
}

// OrganizationalDomain returns the organisational domain of a (lower-case,
// A-label) domain: its public suffix plus one label (RFC 7489 3.2), or the
// domain itself when it is a public suffix or has no known suffix.
func OrganizationalDomain(domain string) string {
	d := strings.TrimSuffix(strings.ToLower(domain), ".")
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

// Disposition is what happens to the message for a recipient domain whose
// DMARC failure handling is local (LocalHonour, LocalQuarantine or
// LocalRecord; "" is LocalHonour): the sender's Action, reject lowered to
// quarantine under LocalQuarantine, and none under LocalRecord.
//
// With recipients in several domains, the message is rejected only when
// every recipient's disposition is reject; otherwise it is delivered,
// quarantined for the recipients whose disposition is quarantine or reject.
func (r DMARCResult) Disposition(local string) Policy {
	switch local {
	case LocalRecord:
		return PolicyNone
	case LocalQuarantine:
		if r.Action == PolicyReject {
			return PolicyQuarantine
		}
	}
	if r.Action == "" {
		return PolicyNone
	}
	return r.Action
}

// Reply returns 550 5.7.1 when the disposition under local is reject
// (RFC 7489 6.6.4, 10.3; Postfix's and OpenDMARC's wording).
func (r DMARCResult) Reply(local string) (envelope.Reply, bool) {
	if r.Disposition(local) != PolicyReject {
		return envelope.Reply{}, false
	}
	return envelope.Reply{Code: 550, Enhanced: envelope.Status{5, 7, 1},
		Text: fmt.Sprintf("Message rejected: it fails the DMARC policy of %s (p=%s)", r.From, r.Policy)}, true
}

// FromDomain returns the RFC5322.From domain of a header block (A-labels,
// lower case) for EvaluateDMARC. A header without exactly one From: field,
// or whose From: holds addresses of several domains or none, is an error
// (RFC 7489 6.6.1: such a message cannot be evaluated; rejecting it is
// the receiver's choice).
func FromDomain(header []byte) (string, error) {
	raw := header
	if !bytes.HasSuffix(raw, []byte("\n\r\n")) && !bytes.HasSuffix(raw, []byte("\n\n")) {
		raw = append(append([]byte{}, raw...), "\r\n"...)
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("parse header: %w", err)
	}
	if n := len(m.Header["From"]); n != 1 {
		return "", fmt.Errorf("%d From: fields", n)
	}
	list, err := m.Header.AddressList("From")
	if err != nil {
		return "", fmt.Errorf("From: %w", err)
	}
	domain := ""
	for _, a := range list {
		i := strings.LastIndexByte(a.Address, '@')
		if i < 0 {
			return "", errors.New("From: address without a domain")
		}
		d, err := address.Domain(a.Address[i+1:])
		if err != nil {
			return "", fmt.Errorf("From: %w", err)
		}
		if domain != "" && d != domain {
			return "", errors.New("From: addresses of several domains")
		}
		domain = d
	}
	if domain == "" {
		return "", errors.New("empty From:")
	}
	return domain, nil
}
