package admin

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/facteur/facteur/store"
)

// domainChoices are the domains p may pick: a domain admin's own, or for
// a superadmin the first maxChoices domains. Free means the names are only
// a hint (a superadmin with more domains, or a list filter): the page takes
// a typed name.
type domainChoices struct {
	Names []string
	Free  bool
}

const maxChoices = 200

// domainChoices returns the domains of a form's chooser.
func (h *Handler) domainChoices(ctx context.Context, p *principal) (domainChoices, error) {
	if !p.isSuper() {
		return domainChoices{Names: p.domains}, nil
	}
	ds, err := h.st.ListDomains(ctx, store.ListOptions{Limit: maxChoices + 1})
	if err != nil {
		return domainChoices{}, err
	}
	c := domainChoices{Free: len(ds) > maxChoices}
	for i, d := range ds {
		if i == maxChoices {
			break
		}
		c.Names = append(c.Names, d.Name)
	}
	return c, nil
}

// filterChoices returns the domains of a list's filter: a domain admin's
// own; a superadmin types a name (listing every domain, with its counts,
// on every page of a list would cost more than the list).
func filterChoices(p *principal) domainChoices {
	if !p.isSuper() {
		return domainChoices{Names: p.domains}
	}
	return domainChoices{Free: true}
}

// domainRow is a line of the domain list: the domain, its counts and
// what its mailboxes use.
type domainRow struct {
	store.DomainSummary
	UsedBytes   int64
	NameUnicode string
}

type domainsData struct {
	Rows   []domainRow
	Pager  pager
	Search string
}

func (h *Handler) uiDomains(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	ds, err := h.st.ListDomains(ctx, o)
	if err != nil {
		return err
	}
	n, err := h.st.CountDomains(ctx, o)
	if err != nil {
		return err
	}
	rows := make([]domainRow, len(ds))
	for i, d := range ds {
		u, err := h.st.GetDomainUsage(ctx, d.Name)
		if err != nil {
			return err
		}
		rows[i] = domainRow{DomainSummary: d, UsedBytes: u.UsedBytes, NameUnicode: unicodeName(d.Name)}
	}
	return h.render(w, r, p, http.StatusOK, "domains", uiPage{Title: "Domains", Section: "domains",
		Data: domainsData{Rows: rows, Pager: newPager(r, o, len(rows), n, false), Search: o.Search}})
}

// domainFields maps the API's domain fields to the form's.
var domainFields = map[string]string{
	"name": "name", "description": "description", "active": "active", "backup_mx": "backup_mx", "local": "local",
	"transport": "transport", "max_mailboxes": "max_mailboxes", "max_aliases": "max_aliases",
	"max_quota_bytes": "max_quota_mb", "total_quota_bytes": "total_quota_mb",
	"default_quota_bytes": "default_quota_mb", "max_message_bytes": "max_message_mb",
}

type domainData struct {
	New    bool
	Domain domainView
}

// domainForm is the form of a domain's settings, filled from d.
func domainForm(d store.Domain) *form {
	v := url.Values{}
	v.Set("name", d.Name)
	v.Set("description", d.Description)
	v.Set("active", boolField(d.Active))
	v.Set("backup_mx", boolField(d.BackupMX))
	v.Set("local", boolField(d.Local))
	if d.Transport != nil {
		v.Set("transport", *d.Transport)
	}
	i32 := func(x *int32) string {
		if x == nil {
			return ""
		}
		return strconv.Itoa(int(*x))
	}
	v.Set("max_mailboxes", i32(d.MaxMailboxes))
	v.Set("max_aliases", i32(d.MaxAliases))
	v.Set("max_quota_mb", mib(d.MaxQuotaBytes))
	v.Set("total_quota_mb", mib(d.TotalQuotaBytes))
	v.Set("default_quota_mb", mib(d.DefaultQuotaBytes))
	v.Set("max_message_mb", mib(d.MaxMessageBytes))
	return newForm(v)
}

// domainInputOf reads the fields a domain form has into the API's input;
// a field the form does not have is left unset, so that a domain admin's
// form (description and active only) changes nothing else, and one that
// adds other fields is refused by updateDomain.
func domainInputOf(f *form) (domainInput, bool) {
	in := domainInput{Description: f.strPtr("description"), Active: f.boolPtr("active"),
		BackupMX: f.boolPtr("backup_mx"), Local: f.boolPtr("local")}
	ok := true
	if f.Present("transport") {
		if t := f.Get("transport"); t == "" {
			in.Transport = opt[string]{Set: true, Null: true}
		} else {
			in.Transport = opt[string]{Set: true, Value: t}
		}
	}
	for _, x := range []struct {
		field string
		dst   *opt[int32]
	}{{"max_mailboxes", &in.MaxMailboxes}, {"max_aliases", &in.MaxAliases}} {
		if f.Present(x.field) {
			v, good := f.optInt32(x.field)
			ok = ok && good
			*x.dst = v
		}
	}
	for _, x := range []struct {
		field string
		dst   *opt[int64]
	}{{"max_quota_mb", &in.MaxQuotaBytes}, {"total_quota_mb", &in.TotalQuotaBytes},
		{"default_quota_mb", &in.DefaultQuotaBytes}, {"max_message_mb", &in.MaxMessageBytes}} {
		if f.Present(x.field) {
			v, good := f.optMiB(x.field)
			ok = ok && good
			*x.dst = v
		}
	}
	return in, ok
}

func (h *Handler) uiNewDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	f := domainForm(store.Domain{Active: true})
	f.vals.Set("name", "")
	return h.render(w, r, p, http.StatusOK, "domain", uiPage{Title: "New domain", Section: "domains", Form: f,
		Data: domainData{New: true}})
}

func (h *Handler) uiCreateDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	fail := func(status int) error {
		return h.render(w, r, p, status, "domain", uiPage{Title: "New domain", Section: "domains", Form: f,
			Data: domainData{New: true}})
	}
	in, ok := domainInputOf(f)
	if !ok {
		return fail(http.StatusUnprocessableEntity)
	}
	in.Name = f.Get("name")
	d, err := h.createDomain(r.Context(), p, in)
	if err != nil {
		status, err := f.fail(err, domainFields)
		if err != nil {
			return err
		}
		return fail(status)
	}
	return redirect(w, r, "/domains/"+url.PathEscape(d.Name), "created")
}

func (h *Handler) uiDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	v, err := h.getDomain(r.Context(), p, r.PathValue("domain"))
	if err != nil {
		return err
	}
	return h.render(w, r, p, http.StatusOK, "domain", uiPage{Title: v.NameUnicode, Section: "domains",
		Form: domainForm(v.Domain), Data: domainData{Domain: v}})
}

func (h *Handler) uiUpdateDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	name, err := scopedDomain(p, r.PathValue("domain"), "")
	if err != nil {
		return err
	}
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	fail := func(status int) error {
		v, err := h.getDomain(ctx, p, name)
		if err != nil {
			return err
		}
		return h.render(w, r, p, status, "domain", uiPage{Title: v.NameUnicode, Section: "domains", Form: f,
			Data: domainData{Domain: v}})
	}
	in, ok := domainInputOf(f)
	if !ok {
		return fail(http.StatusUnprocessableEntity)
	}
	if _, err := h.updateDomain(ctx, p, name, in); err != nil {
		status, err := f.fail(err, domainFields)
		if err != nil {
			return err
		}
		return fail(status)
	}
	return redirect(w, r, "/domains/"+url.PathEscape(name), "updated")
}

func (h *Handler) uiDeleteDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteDomain(r.Context(), p, r.PathValue("domain")); err != nil {
		return err
	}
	return redirect(w, r, "/domains", "deleted")
}

// Alias domains.

type aliasDomainsData struct {
	Items   []store.AliasDomain
	Pager   pager
	Search  string
	Domain  string
	Choices domainChoices
}

func (h *Handler) renderAliasDomains(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, err := h.st.ListAliasDomains(ctx, o)
	if err != nil {
		return err
	}
	n, err := h.st.CountAliasDomains(ctx, o)
	if err != nil {
		return err
	}
	c, err := h.domainChoices(ctx, p)
	if err != nil {
		return err
	}
	if f == nil {
		f = newForm(nil)
	}
	return h.render(w, r, p, status, "alias_domains", uiPage{Title: "Alias domains", Section: "alias-domains", Form: f,
		Data: aliasDomainsData{Items: items, Pager: newPager(r, o, len(items), n, false), Search: o.Search,
			Domain: shownDomain(p, o.Domain), Choices: c}})
}

func (h *Handler) uiAliasDomains(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderAliasDomains(w, r, p, http.StatusOK, nil)
}

func (h *Handler) uiCreateAliasDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	target := f.Get("target_domain")
	in := aliasDomainInput{AliasDomain: f.Get("alias_domain"), TargetDomain: &target, Active: f.boolPtr("active")}
	if _, err := h.createAliasDomain(r.Context(), p, in); err != nil {
		status, err := f.fail(err, same("alias_domain", "target_domain"))
		if err != nil {
			return err
		}
		return h.renderAliasDomains(w, r, p, status, f)
	}
	return redirect(w, r, "/alias-domains", "created")
}

func (h *Handler) uiUpdateAliasDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	ad, err := h.getAliasDomain(ctx, p, r.PathValue("name"))
	if err != nil {
		return err
	}
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in := aliasDomainInput{Active: f.boolPtr("active"), TargetDomain: f.strPtr("target_domain")}
	if _, err := h.updateAliasDomain(ctx, p, ad, in); err != nil {
		return err
	}
	return redirect(w, r, "/alias-domains", "updated")
}

func (h *Handler) uiDeleteAliasDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteAliasDomain(r.Context(), p, r.PathValue("name")); err != nil {
		return err
	}
	return redirect(w, r, "/alias-domains", "deleted")
}
