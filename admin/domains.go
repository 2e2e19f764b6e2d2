package admin

import (
	"context"
	"net/http"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
)

// domainView is a domain as the API shows it: its row, counts, usage and
// the display (U-label) form of its name.
type domainView struct {
	store.DomainSummary
	store.DomainUsage
	NameUnicode string `json:"name_unicode"`
}

type domainListItem struct {
	store.DomainSummary
	NameUnicode string `json:"name_unicode"`
}

func unicodeName(d string) string {
	u, err := address.DomainUnicode(d)
	if err != nil {
		return d
	}
	return u
}

func (h *Handler) apiListDomains(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	ds, lerr := h.st.ListDomains(ctx, o)
	items := make([]domainListItem, len(ds))
	for i, d := range ds {
		items[i] = domainListItem{DomainSummary: d, NameUnicode: unicodeName(d.Name)}
	}
	n, cerr := h.st.CountDomains(ctx, o)
	return listPage(w, o, items, lerr, n, cerr)
}

// getDomain returns the domain raw (a name in any spelling), with its
// counts and usage, if p may see it.
func (h *Handler) getDomain(ctx context.Context, p *principal, raw string) (domainView, error) {
	name, err := scopedDomain(p, raw, "")
	if err != nil {
		return domainView{}, err
	}
	d, err := h.st.GetDomainSummary(ctx, name)
	if err != nil {
		return domainView{}, storeError(err, "")
	}
	u, err := h.st.GetDomainUsage(ctx, name)
	if err != nil {
		return domainView{}, err
	}
	return domainView{DomainSummary: d, DomainUsage: u, NameUnicode: unicodeName(name)}, nil
}

func (h *Handler) apiGetDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	v, err := h.getDomain(r.Context(), p, r.PathValue("domain"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// domainInput is the body of POST and PATCH /api/v1/domains: every field
// optional on PATCH; name required on POST only.
type domainInput struct {
	Name              string      `json:"name"`
	Description       *string     `json:"description"`
	Active            *bool       `json:"active"`
	BackupMX          *bool       `json:"backup_mx"`
	Local             *bool       `json:"local"`
	Transport         opt[string] `json:"transport"`
	MaxMailboxes      opt[int32]  `json:"max_mailboxes"`
	MaxAliases        opt[int32]  `json:"max_aliases"`
	MaxQuotaBytes     opt[int64]  `json:"max_quota_bytes"`
	TotalQuotaBytes   opt[int64]  `json:"total_quota_bytes"`
	DefaultQuotaBytes opt[int64]  `json:"default_quota_bytes"`
	MaxMessageBytes   opt[int64]  `json:"max_message_bytes"`
}

func (in *domainInput) check(p *principal) error {
	if in.Transport.Set {
		if err := checkTransport(p, in.Transport.ptr(), "transport"); err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) apiCreateDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in domainInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.createDomain(r.Context(), p, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// createDomain creates a domain (a superadmin's: superOnly routes).
func (h *Handler) createDomain(ctx context.Context, p *principal, in domainInput) (store.Domain, error) {
	name, err := normDomain(in.Name)
	if err != nil {
		return store.Domain{}, errInvalid("name", "invalid domain name")
	}
	if err := in.check(p); err != nil {
		return store.Domain{}, err
	}
	d := store.Domain{
		Name:              name,
		Active:            in.Active == nil || *in.Active,
		Transport:         in.Transport.ptr(),
		MaxMailboxes:      in.MaxMailboxes.ptr(),
		MaxAliases:        in.MaxAliases.ptr(),
		MaxQuotaBytes:     in.MaxQuotaBytes.ptr(),
		TotalQuotaBytes:   in.TotalQuotaBytes.ptr(),
		DefaultQuotaBytes: in.DefaultQuotaBytes.ptr(),
		MaxMessageBytes:   in.MaxMessageBytes.ptr(),
	}
	if in.Description != nil {
		d.Description = *in.Description
	}
	if in.BackupMX != nil {
		d.BackupMX = *in.BackupMX
	}
	if in.Local != nil {
		d.Local = *in.Local
	}
	out, err := h.st.CreateDomain(store.WithActor(ctx, p.actor()), d)
	if err != nil {
		return store.Domain{}, storeError(err, "name")
	}
	return out, nil
}

func (h *Handler) apiUpdateDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	name, err := scopedDomain(p, r.PathValue("domain"), "")
	if err != nil {
		return err
	}
	var in domainInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.updateDomain(r.Context(), p, name, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// updateDomain changes the domain name (canonical, in p's scope). A
// superadmin may change everything but the name; a domain admin only the
// description and whether the domain is active: limits, flags and the
// transport are a superadmin's.
func (h *Handler) updateDomain(ctx context.Context, p *principal, name string, in domainInput) (store.Domain, error) {
	if in.Name != "" {
		return store.Domain{}, errInvalid("name", "a domain cannot be renamed")
	}
	if err := in.check(p); err != nil {
		return store.Domain{}, err
	}
	if !p.isSuper() {
		for _, f := range []struct {
			name string
			set  bool
		}{{"backup_mx", in.BackupMX != nil}, {"local", in.Local != nil},
			{"max_mailboxes", in.MaxMailboxes.Set}, {"max_aliases", in.MaxAliases.Set},
			{"max_quota_bytes", in.MaxQuotaBytes.Set}, {"total_quota_bytes", in.TotalQuotaBytes.Set},
			{"default_quota_bytes", in.DefaultQuotaBytes.Set}, {"max_message_bytes", in.MaxMessageBytes.Set}} {
			if f.set {
				return store.Domain{}, errForbidden(f.name, "only a superadmin may change a domain's limits and flags")
			}
		}
	}
	out, err := h.st.UpdateDomain(store.WithActor(ctx, p.actor()), name, store.DomainPatch{
		Description:       in.Description,
		Active:            in.Active,
		BackupMX:          in.BackupMX,
		Local:             in.Local,
		Transport:         in.Transport.nullable(),
		MaxMailboxes:      in.MaxMailboxes.nullable(),
		MaxAliases:        in.MaxAliases.nullable(),
		MaxQuotaBytes:     in.MaxQuotaBytes.nullable(),
		TotalQuotaBytes:   in.TotalQuotaBytes.nullable(),
		DefaultQuotaBytes: in.DefaultQuotaBytes.nullable(),
		MaxMessageBytes:   in.MaxMessageBytes.nullable(),
	})
	if err != nil {
		return store.Domain{}, storeError(err, in.limitField())
	}
	return out, nil
}

// limitField names the one limit a change sets, if it sets exactly one:
// the field a limit the domain already exceeds is about.
func (in *domainInput) limitField() string {
	field := ""
	for _, f := range []struct {
		name string
		set  bool
	}{{"max_mailboxes", in.MaxMailboxes.Set}, {"max_aliases", in.MaxAliases.Set},
		{"max_quota_bytes", in.MaxQuotaBytes.Set}, {"total_quota_bytes", in.TotalQuotaBytes.Set},
		{"default_quota_bytes", in.DefaultQuotaBytes.Set}, {"max_message_bytes", in.MaxMessageBytes.Set}} {
		if f.set {
			if field != "" {
				return ""
			}
			field = f.name
		}
	}
	return field
}

func (h *Handler) apiDeleteDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteDomain(r.Context(), p, r.PathValue("domain")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteDomain deletes the domain named raw (superOnly routes).
func (h *Handler) deleteDomain(ctx context.Context, p *principal, raw string) error {
	name, err := scopedDomain(p, raw, "")
	if err != nil {
		return err
	}
	if err := h.st.DeleteDomain(store.WithActor(ctx, p.actor()), name); err != nil {
		return storeError(err, "")
	}
	return nil
}

// Alias domains. Scope is the target domain: an alias domain is a domain
// admin's when it points at one of its domains, and may only be pointed at
// another of them.

func (h *Handler) apiListAliasDomains(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, lerr := h.st.ListAliasDomains(ctx, o)
	n, cerr := h.st.CountAliasDomains(ctx, o)
	return listPage(w, o, items, lerr, n, cerr)
}

// getAliasDomain returns the alias domain raw if its target is in p's
// scope: the alias domain's name says nothing about its owner, so the scope
// is part of the query, and a foreign one is the same 404 as a missing one.
func (h *Handler) getAliasDomain(ctx context.Context, p *principal, raw string) (store.AliasDomain, error) {
	name, err := normDomain(raw)
	if err != nil {
		return store.AliasDomain{}, errNotFound("")
	}
	ad, err := h.st.GetAliasDomainIn(ctx, name, p.scope())
	if err != nil {
		return store.AliasDomain{}, storeError(err, "")
	}
	return ad, nil
}

func (h *Handler) apiGetAliasDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	ad, err := h.getAliasDomain(r.Context(), p, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ad)
	return nil
}

type aliasDomainInput struct {
	AliasDomain  string  `json:"alias_domain"`
	TargetDomain *string `json:"target_domain"`
	Active       *bool   `json:"active"`
}

func (h *Handler) apiCreateAliasDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in aliasDomainInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.createAliasDomain(r.Context(), p, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// createAliasDomain creates an alias domain pointing at a domain in p's
// scope (superOnly routes: the new name is one no grant covers).
func (h *Handler) createAliasDomain(ctx context.Context, p *principal, in aliasDomainInput) (store.AliasDomain, error) {
	name, err := normDomain(in.AliasDomain)
	if err != nil {
		return store.AliasDomain{}, errInvalid("alias_domain", "invalid domain name")
	}
	if in.TargetDomain == nil {
		return store.AliasDomain{}, errInvalid("target_domain", "target_domain is required")
	}
	target, err := scopedDomain(p, *in.TargetDomain, "target_domain")
	if err != nil {
		return store.AliasDomain{}, err
	}
	out, err := h.st.CreateAliasDomain(store.WithActor(ctx, p.actor()), store.AliasDomain{
		AliasDomain: name, TargetDomain: target, Active: in.Active == nil || *in.Active})
	if err != nil {
		return store.AliasDomain{}, storeError(err, "target_domain")
	}
	return out, nil
}

func (h *Handler) apiUpdateAliasDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	ad, err := h.getAliasDomain(r.Context(), p, r.PathValue("name"))
	if err != nil {
		return err
	}
	var in aliasDomainInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.updateAliasDomain(r.Context(), p, ad, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// updateAliasDomain changes ad (read with getAliasDomain); a new target
// must be in p's scope too.
func (h *Handler) updateAliasDomain(ctx context.Context, p *principal, ad store.AliasDomain, in aliasDomainInput) (store.AliasDomain, error) {
	if in.AliasDomain != "" {
		return store.AliasDomain{}, errInvalid("alias_domain", "an alias domain cannot be renamed")
	}
	patch := store.AliasDomainPatch{Active: in.Active}
	if in.TargetDomain != nil {
		t, err := scopedDomain(p, *in.TargetDomain, "target_domain")
		if err != nil {
			return store.AliasDomain{}, err
		}
		patch.TargetDomain = &t
	}
	out, err := h.st.UpdateAliasDomain(store.WithActor(ctx, p.actor()), ad.AliasDomain, patch)
	if err != nil {
		return store.AliasDomain{}, storeError(err, "")
	}
	return out, nil
}

func (h *Handler) apiDeleteAliasDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteAliasDomain(r.Context(), p, r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteAliasDomain deletes the alias domain raw if its target is in p's
// scope.
func (h *Handler) deleteAliasDomain(ctx context.Context, p *principal, raw string) error {
	ad, err := h.getAliasDomain(ctx, p, raw)
	if err != nil {
		return err
	}
	if err := h.st.DeleteAliasDomain(store.WithActor(ctx, p.actor()), ad.AliasDomain); err != nil {
		return storeError(err, "")
	}
	return nil
}
