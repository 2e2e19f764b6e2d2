package admin

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/facteur/facteur/store"
)

// Mailboxes.

type mailboxListRow struct {
	store.Mailbox
	CanDelete bool
}

type mailboxesData struct {
	Rows    []mailboxListRow
	Pager   pager
	Search  string
	Domain  string
	Choices domainChoices
}

func (h *Handler) uiMailboxes(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, err := h.st.ListMailboxes(ctx, o)
	if err != nil {
		return err
	}
	n, err := h.st.CountMailboxes(ctx, o)
	if err != nil {
		return err
	}
	c := filterChoices(p)
	rows := make([]mailboxListRow, len(items))
	for i, m := range items {
		rows[i] = mailboxListRow{Mailbox: m, CanDelete: p.isSuper() || !h.isProtected(m.Address)}
	}
	return h.render(w, r, p, http.StatusOK, "mailboxes", uiPage{Title: "Mailboxes", Section: "mailboxes",
		Data: mailboxesData{Rows: rows, Pager: newPager(r, o, len(rows), n, false), Search: o.Search, Domain: shownDomain(p, o.Domain), Choices: c}})
}

// newAddressData is the data of the forms that create an address (a
// mailbox, an alias): the domains to choose from.
type newAddressData struct {
	Choices domainChoices
}

func (h *Handler) renderNewMailbox(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form) error {
	c, err := h.domainChoices(r.Context(), p)
	if err != nil {
		return err
	}
	return h.render(w, r, p, status, "mailbox_new", uiPage{Title: "New mailbox", Section: "mailboxes", Form: f,
		Data: newAddressData{Choices: c}})
}

func (h *Handler) uiNewMailbox(w http.ResponseWriter, r *http.Request, p *principal) error {
	v := url.Values{}
	v.Set("active", "on")
	v.Set("domain", r.URL.Query().Get("domain"))
	return h.renderNewMailbox(w, r, p, http.StatusOK, newForm(v))
}

// mailboxFields maps the API's mailbox fields to the form's.
var mailboxFields = map[string]string{"address": "local_part", "name": "name", "password": "password",
	"quota_bytes": "quota_mb", "active": "active", "transport": "transport"}

// joinAddress is the address a form's local part and domain make.
func joinAddress(f *form) string {
	return strings.TrimSpace(f.Get("local_part")) + "@" + strings.TrimSpace(f.Get("domain"))
}

// privilegedFields reads the superadmin's fields of a mailbox form
// (transport; a Maildir path, which no form shows) when the form has them:
// mailboxInput.checkPrivileged refuses them to anyone else, so a field
// added to a domain admin's form is a 403, never silently dropped.
func privilegedFields(f *form, in *mailboxInput) {
	if f.Present("transport") {
		if t := strings.TrimSpace(f.Get("transport")); t == "" {
			in.Transport = opt[string]{Set: true, Null: true}
		} else {
			in.Transport = opt[string]{Set: true, Value: t}
		}
	}
	in.Maildir = f.strPtr("maildir")
}

// checkPasswordPair checks that a password field and its confirmation
// agree (a typing mistake, not a rule: the policy is checkPassword's).
func checkPasswordPair(f *form, field, again string) bool {
	if f.Get(field) != f.Get(again) {
		f.set(again, "the two passwords differ")
		return false
	}
	return true
}

func (h *Handler) uiCreateMailbox(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	quota, ok := f.optMiB("quota_mb")
	ok = checkPasswordPair(f, "password", "password2") && ok
	if !ok {
		return h.renderNewMailbox(w, r, p, http.StatusUnprocessableEntity, f)
	}
	if quota.Null {
		quota = opt[int64]{} // the domain's default quota
	}
	pw, name := f.Get("password"), f.Get("name")
	in := mailboxInput{Address: joinAddress(f), Name: &name, Password: &pw, QuotaBytes: quota, Active: f.boolPtr("active")}
	privilegedFields(f, &in)
	m, err := h.createMailbox(r.Context(), p, in)
	if err != nil {
		status, err := f.fail(err, mailboxFields)
		if err != nil {
			return err
		}
		return h.renderNewMailbox(w, r, p, status, f)
	}
	return redirect(w, r, "/mailboxes/"+url.PathEscape(m.Address), "created")
}

type mailboxData struct {
	Mailbox      store.Mailbox
	CanDelete    bool
	Vacation     *store.Vacation
	AppPasswords []store.AppPassword
	Grants       []store.SenderGrant
	// Created is an app password just made, shown once.
	Created *appPasswordCreated
}

func mailboxForm(m store.Mailbox) *form {
	v := url.Values{}
	v.Set("name", m.Name)
	v.Set("quota_mb", mib(m.QuotaBytes))
	v.Set("active", boolField(m.Active))
	if m.Transport != nil {
		v.Set("transport", *m.Transport)
	}
	return newForm(v)
}

// renderMailbox writes the page of the mailbox raw (in any spelling) with
// f as its settings form (nil: its current settings).
func (h *Handler) renderMailbox(w http.ResponseWriter, r *http.Request, p *principal, raw string, status int, f *form, created *appPasswordCreated) error {
	ctx := r.Context()
	m, err := h.getMailbox(ctx, p, raw)
	if err != nil {
		return err
	}
	if f == nil {
		f = mailboxForm(m)
	} else {
		// A form of another part of the page (an app password): the
		// settings form keeps the mailbox's values.
		for k, v := range mailboxForm(m).vals {
			if !f.Present(k) {
				f.vals[k] = v
			}
		}
	}
	d := mailboxData{Mailbox: m, CanDelete: p.isSuper() || !h.isProtected(m.Address), Created: created}
	if v, err := h.st.GetVacation(ctx, m.Address); err == nil {
		d.Vacation = &v
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	// The mailbox was authorised above; the scope stays in the queries.
	o := store.ListOptions{Scope: p.scope(), Limit: 100}
	if d.AppPasswords, err = h.st.ListAppPasswords(ctx, m.Address, o); err != nil {
		return err
	}
	if d.Grants, err = h.st.ListSenderGrants(ctx, m.Address, o); err != nil {
		return err
	}
	return h.render(w, r, p, status, "mailbox", uiPage{Title: m.Address, Section: "mailboxes", Form: f, Data: d})
}

func (h *Handler) uiMailbox(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderMailbox(w, r, p, r.PathValue("address"), http.StatusOK, nil, nil)
}

func (h *Handler) uiUpdateMailbox(w http.ResponseWriter, r *http.Request, p *principal) error {
	addr, err := scopedAddress(p, r.PathValue("address"), "")
	if err != nil {
		return err
	}
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in := mailboxInput{Name: f.strPtr("name"), Active: f.boolPtr("active")}
	ok := true
	if f.Present("quota_mb") {
		in.QuotaBytes, ok = f.optMiB("quota_mb")
	}
	if pw := f.Get("password"); pw != "" {
		ok = checkPasswordPair(f, "password", "password2") && ok
		in.Password = &pw
	}
	privilegedFields(f, &in)
	if !ok {
		return h.renderMailbox(w, r, p, addr, http.StatusUnprocessableEntity, f, nil)
	}
	if _, err := h.updateMailbox(r.Context(), p, addr, in); err != nil {
		status, err := f.fail(err, mailboxFields)
		if err != nil {
			return err
		}
		return h.renderMailbox(w, r, p, addr, status, f, nil)
	}
	return redirect(w, r, "/mailboxes/"+url.PathEscape(addr), "updated")
}

func (h *Handler) uiDeleteMailbox(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteMailbox(r.Context(), p, r.PathValue("address")); err != nil {
		return err
	}
	return redirect(w, r, "/mailboxes", "deleted")
}

// Vacation.

type vacationData struct {
	Mailbox   string
	Exists    bool
	Intervals []intervalChoice
	Action    string // where the form posts
	Self      bool
}

type intervalChoice struct {
	Seconds int32
	Label   string
}

// vacationIntervals are the reply intervals the form offers.
var vacationIntervals = []intervalChoice{{0, "every message"}, {3600, "once an hour"}, {86400, "once a day"},
	{7 * 86400, "once a week"}, {30 * 86400, "once a month"}}

func vacationForm(v *store.Vacation) *form {
	vals := url.Values{}
	if v == nil {
		vals.Set("subject", "Out of office")
		vals.Set("interval_seconds", strconv.Itoa(store.DefaultVacationIntervalSeconds))
		vals.Set("active", "on")
		return newForm(vals)
	}
	vals.Set("subject", v.Subject)
	vals.Set("body", v.Body)
	vals.Set("active_from", datetimeLocal(v.ActiveFrom))
	vals.Set("active_until", datetimeLocal(v.ActiveUntil))
	vals.Set("interval_seconds", strconv.Itoa(int(v.IntervalSeconds)))
	vals.Set("active", boolField(v.Active))
	return newForm(vals)
}

// vacationInputOf reads a vacation form.
func vacationInputOf(f *form) (vacationInput, bool) {
	subject, body := f.Get("subject"), f.Get("body")
	in := vacationInput{Subject: &subject, Body: &body, Active: f.boolPtr("active")}
	ok := true
	var good bool
	in.ActiveFrom, good = f.optTime("active_from")
	ok = ok && good
	in.ActiveUntil, good = f.optTime("active_until")
	ok = ok && good
	if v := strings.TrimSpace(f.Get("interval_seconds")); v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			f.set("interval_seconds", "a number of seconds")
			ok = false
		} else {
			i := int32(n)
			in.IntervalSeconds = &i
		}
	}
	return in, ok
}

// intervalsWith returns the interval choices with cur among them.
func intervalsWith(cur string) []intervalChoice {
	n, err := strconv.Atoi(cur)
	out := slices.Clone(vacationIntervals)
	if err == nil && !slices.ContainsFunc(out, func(c intervalChoice) bool { return int(c.Seconds) == n }) {
		out = append(out, intervalChoice{int32(n), (time.Duration(n) * time.Second).String()})
	}
	return out
}

func (h *Handler) renderVacation(w http.ResponseWriter, r *http.Request, p *principal, mailbox string, self bool, status int, f *form) error {
	exists := true
	v, err := h.st.GetVacation(r.Context(), mailbox)
	if errors.Is(err, store.ErrNotFound) {
		exists = false
	} else if err != nil {
		return err
	}
	if f == nil {
		if exists {
			f = vacationForm(&v)
		} else {
			f = vacationForm(nil)
		}
	}
	d := vacationData{Mailbox: mailbox, Exists: exists, Intervals: intervalsWith(f.Get("interval_seconds")), Self: self,
		Action: "/mailboxes/" + url.PathEscape(mailbox) + "/vacation"}
	section := "vacations"
	if self {
		d.Action = "/user/vacation"
		section = "user-vacation"
	}
	return h.render(w, r, p, status, "vacation", uiPage{Title: "Vacation reply", Section: section, Form: f, Data: d})
}

// vacationMailbox returns the mailbox of an admin's vacation route, which
// must exist and be in p's scope.
func (h *Handler) vacationMailbox(r *http.Request, p *principal) (string, error) {
	m, err := h.getMailbox(r.Context(), p, r.PathValue("address"))
	if err != nil {
		return "", err
	}
	return m.Address, nil
}

func (h *Handler) uiVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	mb, err := h.vacationMailbox(r, p)
	if err != nil {
		return err
	}
	return h.renderVacation(w, r, p, mb, false, http.StatusOK, nil)
}

// vacationFields are the form's fields the API's errors name.
var vacationFields = same("subject", "body", "active_from", "active_until", "interval_seconds", "active")

func (h *Handler) uiPutVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	mb, err := h.vacationMailbox(r, p)
	if err != nil {
		return err
	}
	return h.putVacationForm(w, r, p, mb, false, "/mailboxes/"+url.PathEscape(mb))
}

// putVacationForm saves a vacation form for mailbox (authorised) and
// redirects to back, or shows the form again with its errors.
func (h *Handler) putVacationForm(w http.ResponseWriter, r *http.Request, p *principal, mailbox string, self bool, back string) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in, ok := vacationInputOf(f)
	if !ok {
		return h.renderVacation(w, r, p, mailbox, self, http.StatusUnprocessableEntity, f)
	}
	if _, _, err := h.putVacation(r.Context(), p, mailbox, in); err != nil {
		status, err := f.fail(err, vacationFields)
		if err != nil {
			return err
		}
		return h.renderVacation(w, r, p, mailbox, self, status, f)
	}
	return redirect(w, r, back, "vacation")
}

func (h *Handler) uiDeleteVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	mb, err := h.vacationMailbox(r, p)
	if err != nil {
		return err
	}
	if err := h.deleteVacation(r.Context(), p, mb); err != nil {
		return err
	}
	return redirect(w, r, "/mailboxes/"+url.PathEscape(mb), "vacation-off")
}

type vacationsData struct {
	Items   []store.Vacation
	Pager   pager
	Search  string
	Domain  string
	Choices domainChoices
}

func (h *Handler) uiVacations(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, err := h.st.ListVacations(ctx, o)
	if err != nil {
		return err
	}
	n, err := h.st.CountVacations(ctx, o)
	if err != nil {
		return err
	}
	c := filterChoices(p)
	return h.render(w, r, p, http.StatusOK, "vacations", uiPage{Title: "Vacation replies", Section: "vacations",
		Data: vacationsData{Items: items, Pager: newPager(r, o, len(items), n, false), Search: o.Search, Domain: shownDomain(p, o.Domain), Choices: c}})
}

// App passwords of a mailbox, by an admin.

// appPasswordInputOf reads an app password form.
func appPasswordInputOf(f *form) (appPasswordInput, bool) {
	name := f.Get("ap_name")
	in := appPasswordInput{Name: &name}
	exp, ok := f.optTime("ap_expires_at")
	if exp != nil {
		in.ExpiresAt = opt[time.Time]{Set: true, Value: *exp}
	}
	return in, ok
}

var appPasswordFields = map[string]string{"name": "ap_name", "expires_at": "ap_expires_at"}

func (h *Handler) uiCreateAppPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	mb, err := h.vacationMailbox(r, p)
	if err != nil {
		return err
	}
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in, ok := appPasswordInputOf(f)
	if !ok {
		return h.renderMailbox(w, r, p, mb, http.StatusUnprocessableEntity, f, nil)
	}
	out, err := h.createAppPassword(r.Context(), p, mb, in)
	if err != nil {
		status, err := f.fail(err, appPasswordFields)
		if err != nil {
			return err
		}
		return h.renderMailbox(w, r, p, mb, status, f, nil)
	}
	// The password is in this answer only.
	return h.renderMailbox(w, r, p, mb, http.StatusOK, nil, &out)
}

func (h *Handler) uiDeleteAppPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	ctx := r.Context()
	ap, err := h.getAppPassword(ctx, p, id, "")
	if err != nil {
		return err
	}
	if err := h.deleteAppPassword(ctx, p, ap.ID, ""); err != nil {
		return err
	}
	return redirect(w, r, "/mailboxes/"+url.PathEscape(ap.Mailbox), "revoked")
}

// Aliases.

type aliasListRow struct {
	store.Alias
	CanDelete bool
}

type aliasesData struct {
	Rows    []aliasListRow
	Pager   pager
	Search  string
	Domain  string
	Choices domainChoices
}

func (h *Handler) uiAliases(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, err := h.st.ListAliases(ctx, o)
	if err != nil {
		return err
	}
	n, err := h.st.CountAliases(ctx, o)
	if err != nil {
		return err
	}
	c := filterChoices(p)
	rows := make([]aliasListRow, len(items))
	for i, a := range items {
		rows[i] = aliasListRow{Alias: a, CanDelete: p.isSuper() || !h.isProtected(a.Address)}
	}
	return h.render(w, r, p, http.StatusOK, "aliases", uiPage{Title: "Aliases", Section: "aliases",
		Data: aliasesData{Rows: rows, Pager: newPager(r, o, len(rows), n, false), Search: o.Search, Domain: shownDomain(p, o.Domain), Choices: c}})
}

var aliasFields = map[string]string{"address": "local_part", "destinations": "destinations", "keep_copy": "keep_copy",
	"description": "description", "active": "active", "add_destinations": "destinations"}

type aliasData struct {
	New       bool
	Alias     store.Alias
	CanDelete bool
	Choices   domainChoices
}

func (h *Handler) renderNewAlias(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form) error {
	c, err := h.domainChoices(r.Context(), p)
	if err != nil {
		return err
	}
	return h.render(w, r, p, status, "alias", uiPage{Title: "New alias", Section: "aliases", Form: f,
		Data: aliasData{New: true, Choices: c}})
}

func (h *Handler) uiNewAlias(w http.ResponseWriter, r *http.Request, p *principal) error {
	v := url.Values{}
	v.Set("active", "on")
	v.Set("domain", r.URL.Query().Get("domain"))
	return h.renderNewAlias(w, r, p, http.StatusOK, newForm(v))
}

// aliasAddressOf is the address of a new alias form: local@domain, or
// "@domain" (a catch-all) for the local part "*".
func aliasAddressOf(f *form) string {
	local := strings.TrimSpace(f.Get("local_part"))
	if local == "*" {
		local = ""
	}
	return local + "@" + strings.TrimSpace(f.Get("domain"))
}

func (h *Handler) uiCreateAlias(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	dests := splitList(f.Get("destinations"))
	desc := f.Get("description")
	in := aliasInput{Address: aliasAddressOf(f), Destinations: &dests, KeepCopy: f.Checked("keep_copy"),
		Description: &desc, Active: f.boolPtr("active")}
	a, err := h.createAlias(r.Context(), p, in)
	if err != nil {
		status, err := f.fail(err, aliasFields)
		if err != nil {
			return err
		}
		return h.renderNewAlias(w, r, p, status, f)
	}
	return redirect(w, r, "/aliases/"+url.PathEscape(a.Address), "created")
}

// aliasForm fills the edit form of a: its own address among its
// destinations is the keep-a-copy box.
func aliasForm(a store.Alias) *form {
	v := url.Values{}
	var dests []string
	keep := false
	for _, d := range a.Destinations {
		if d == a.Address {
			keep = true
			continue
		}
		dests = append(dests, d)
	}
	v.Set("destinations", strings.Join(dests, "\n"))
	v.Set("keep_copy", boolField(keep))
	v.Set("description", a.Description)
	v.Set("active", boolField(a.Active))
	return newForm(v)
}

func (h *Handler) renderAlias(w http.ResponseWriter, r *http.Request, p *principal, raw string, status int, f *form) error {
	a, err := h.getAlias(r.Context(), p, raw)
	if err != nil {
		return err
	}
	if f == nil {
		f = aliasForm(a)
	}
	return h.render(w, r, p, status, "alias", uiPage{Title: a.Address, Section: "aliases", Form: f,
		Data: aliasData{Alias: a, CanDelete: p.isSuper() || !h.isProtected(a.Address)}})
}

func (h *Handler) uiAlias(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderAlias(w, r, p, r.PathValue("address"), http.StatusOK, nil)
}

func (h *Handler) uiUpdateAlias(w http.ResponseWriter, r *http.Request, p *principal) error {
	addr, err := scopedAliasAddress(p, r.PathValue("address"), "")
	if err != nil {
		return err
	}
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in := aliasInput{Description: f.strPtr("description"), Active: f.boolPtr("active")}
	if f.Present("destinations") {
		dests := splitList(f.Get("destinations"))
		// Unchecking "keep a copy" drops the alias's own address.
		dests = slices.DeleteFunc(dests, func(d string) bool { return strings.EqualFold(d, addr) })
		in.Destinations = &dests
		in.KeepCopy = f.Checked("keep_copy")
	}
	if _, err := h.updateAlias(r.Context(), p, addr, in); err != nil {
		status, err := f.fail(err, aliasFields)
		if err != nil {
			return err
		}
		return h.renderAlias(w, r, p, addr, status, f)
	}
	return redirect(w, r, "/aliases/"+url.PathEscape(addr), "updated")
}

func (h *Handler) uiDeleteAlias(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteAlias(r.Context(), p, r.PathValue("address")); err != nil {
		return err
	}
	return redirect(w, r, "/aliases", "deleted")
}

// Send-as grants.

type grantsData struct {
	Items   []store.SenderGrant
	Pager   pager
	Search  string
	Domain  string
	Choices domainChoices
}

func (h *Handler) renderSenderGrants(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, err := h.st.ListSenderGrants(ctx, "", o)
	if err != nil {
		return err
	}
	n, err := h.st.CountSenderGrants(ctx, "", o)
	if err != nil {
		return err
	}
	c := filterChoices(p)
	if f == nil {
		f = newForm(nil)
	}
	return h.render(w, r, p, status, "sender_grants", uiPage{Title: "Send-as grants", Section: "sender-grants", Form: f,
		Data: grantsData{Items: items, Pager: newPager(r, o, len(items), n, false), Search: o.Search, Domain: shownDomain(p, o.Domain), Choices: c}})
}

func (h *Handler) uiSenderGrants(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderSenderGrants(w, r, p, http.StatusOK, nil)
}

func (h *Handler) uiCreateSenderGrant(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	sender := f.Get("sender")
	in := senderGrantInput{Mailbox: f.Get("mailbox"), Sender: &sender}
	if _, err := h.createSenderGrant(r.Context(), p, in); err != nil {
		status, err := f.fail(err, same("mailbox", "sender"))
		if err != nil {
			return err
		}
		return h.renderSenderGrants(w, r, p, status, f)
	}
	return redirect(w, r, "/sender-grants", "granted")
}

func (h *Handler) uiDeleteSenderGrant(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := h.deleteSenderGrant(r.Context(), p, id); err != nil {
		return err
	}
	return redirect(w, r, "/sender-grants", "revoked")
}
