package admin

import (
	"net/http"
	"net/url"

	"github.com/facteur/facteur/store"
)

// Admins and their domains (superOnly routes).

type adminsData struct {
	Items  []store.Admin
	Pager  pager
	Search string
}

func (h *Handler) uiAdmins(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, err := h.st.ListAdmins(ctx, o)
	if err != nil {
		return err
	}
	n, err := h.st.CountAdmins(ctx, o)
	if err != nil {
		return err
	}
	return h.render(w, r, p, http.StatusOK, "admins", uiPage{Title: "Admins", Section: "admins",
		Data: adminsData{Items: items, Pager: newPager(r, o, len(items), n, false), Search: o.Search}})
}

var adminFields = map[string]string{"username": "username", "password": "password", "superadmin": "superadmin",
	"active": "active", "domains": "domains", "disable_totp": "disable_totp"}

type adminData struct {
	New     bool
	Admin   store.Admin
	Grants  []store.DomainAdmin
	Choices domainChoices
	Self    bool
}

func (h *Handler) renderNewAdmin(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form) error {
	c, err := h.domainChoices(r.Context(), p)
	if err != nil {
		return err
	}
	return h.render(w, r, p, status, "admin", uiPage{Title: "New admin", Section: "admins", Form: f,
		Data: adminData{New: true, Choices: c}})
}

func (h *Handler) uiNewAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	v := url.Values{}
	v.Set("active", "on")
	return h.renderNewAdmin(w, r, p, http.StatusOK, newForm(v))
}

func (h *Handler) uiCreateAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	if !checkPasswordPair(f, "password", "password2") {
		return h.renderNewAdmin(w, r, p, http.StatusUnprocessableEntity, f)
	}
	pw := f.Get("password")
	var domains []string
	for _, d := range f.All("domains") {
		domains = append(domains, splitList(d)...)
	}
	in := adminInput{Username: f.Get("username"), Password: &pw, Superadmin: f.boolPtr("superadmin"),
		Active: f.boolPtr("active"), Domains: domains}
	a, err := h.createAdmin(r.Context(), p, in)
	if err != nil {
		status, err := f.fail(err, adminFields)
		if err != nil {
			return err
		}
		return h.renderNewAdmin(w, r, p, status, f)
	}
	return redirect(w, r, "/admins/"+url.PathEscape(a.Username), "created")
}

func (h *Handler) renderAdmin(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form) error {
	ctx := r.Context()
	a, err := h.st.GetAdmin(ctx, normUsername(r.PathValue("username")))
	if err != nil {
		return storeError(err, "")
	}
	grants, err := h.st.ListDomainAdmins(ctx, a.Username, store.ListOptions{Scope: p.scope()})
	if err != nil {
		return err
	}
	c, err := h.domainChoices(ctx, p)
	if err != nil {
		return err
	}
	if f == nil {
		v := url.Values{}
		v.Set("superadmin", boolField(a.Superadmin))
		v.Set("active", boolField(a.Active))
		f = newForm(v)
	}
	return h.render(w, r, p, status, "admin", uiPage{Title: "Admin " + a.Username, Section: "admins", Form: f,
		Data: adminData{Admin: a, Grants: grants, Choices: c, Self: a.Username == p.username}})
}

func (h *Handler) uiAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderAdmin(w, r, p, http.StatusOK, nil)
}

func (h *Handler) uiUpdateAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	username := normUsername(r.PathValue("username"))
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in := adminInput{Superadmin: f.boolPtr("superadmin"), Active: f.boolPtr("active"), DisableTOTP: f.Checked("disable_totp")}
	if pw := f.Get("password"); pw != "" {
		if !checkPasswordPair(f, "password", "password2") {
			return h.renderAdmin(w, r, p, http.StatusUnprocessableEntity, f)
		}
		in.Password = &pw
	}
	if _, err := h.updateAdmin(r.Context(), p, username, in); err != nil {
		status, err := f.fail(err, adminFields)
		if err != nil {
			return err
		}
		return h.renderAdmin(w, r, p, status, f)
	}
	return redirect(w, r, "/admins/"+url.PathEscape(username), "updated")
}

func (h *Handler) uiDeleteAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteAdmin(r.Context(), p, normUsername(r.PathValue("username"))); err != nil {
		return err
	}
	return redirect(w, r, "/admins", "deleted")
}

func (h *Handler) uiGrantDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	username := normUsername(r.PathValue("username"))
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	if _, err := h.createDomainAdmin(r.Context(), p, domainAdminInput{Username: username, Domain: f.Get("domain")}); err != nil {
		status, err := f.fail(err, map[string]string{"domain": "domain", "username": "domain"})
		if err != nil {
			return err
		}
		return h.renderAdmin(w, r, p, status, f)
	}
	return redirect(w, r, "/admins/"+url.PathEscape(username), "granted")
}

func (h *Handler) uiRevokeDomain(w http.ResponseWriter, r *http.Request, p *principal) error {
	username := normUsername(r.PathValue("username"))
	if err := h.deleteDomainAdmin(r.Context(), p, username, r.PathValue("domain")); err != nil {
		return err
	}
	return redirect(w, r, "/admins/"+url.PathEscape(username), "revoked")
}
