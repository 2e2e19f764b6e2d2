package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/facteur/facteur/store"
)

func (h *Handler) apiListMailboxes(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, lerr := h.st.ListMailboxes(ctx, o)
	n, cerr := h.st.CountMailboxes(ctx, o)
	return listPage(w, o, items, lerr, n, cerr)
}

// mailboxInput is the body of POST (address and password required) and
// PATCH /api/v1/mailboxes. Maildir and transport are a superadmin's: a
// domain admin who could set a Maildir path could point a mailbox of its
// own at another domain's mail.
type mailboxInput struct {
	Address    string      `json:"address"`
	Name       *string     `json:"name"`
	Password   *string     `json:"password"`
	QuotaBytes opt[int64]  `json:"quota_bytes"`
	Active     *bool       `json:"active"`
	Maildir    *string     `json:"maildir"`
	Transport  opt[string] `json:"transport"`
}

func (in *mailboxInput) checkPrivileged(p *principal) error {
	if in.Transport.Set {
		if err := checkTransport(p, in.Transport.ptr(), "transport"); err != nil {
			return err
		}
	}
	if in.Maildir != nil && !p.isSuper() {
		return errForbidden("maildir", "only a superadmin may set a Maildir path")
	}
	return nil
}

func (h *Handler) apiCreateMailbox(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in mailboxInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.createMailbox(r.Context(), p, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// createMailbox checks and creates a mailbox.
func (h *Handler) createMailbox(ctx context.Context, p *principal, in mailboxInput) (store.Mailbox, error) {
	m, err := h.newMailbox(ctx, p, in)
	if err != nil {
		return store.Mailbox{}, err
	}
	out, err := h.st.CreateMailbox(store.WithActor(ctx, p.actor()), m)
	if err != nil {
		return store.Mailbox{}, storeError(err, "address")
	}
	return out, nil
}

// newMailbox checks a new mailbox (address in scope, privileged fields,
// password policy) and hashes its password.
func (h *Handler) newMailbox(ctx context.Context, p *principal, in mailboxInput) (store.Mailbox, error) {
	addr, err := scopedAddress(p, in.Address, "address")
	if err != nil {
		return store.Mailbox{}, err
	}
	if err := in.checkPrivileged(p); err != nil {
		return store.Mailbox{}, err
	}
	if in.Password == nil {
		return store.Mailbox{}, errInvalid("password", "a password is required")
	}
	local, _ := splitAddress(addr)
	if err := h.checkPassword(*in.Password, addr, local); err != nil {
		return store.Mailbox{}, err
	}
	hash, err := h.hash(ctx, *in.Password)
	if err != nil {
		return store.Mailbox{}, err
	}
	m := store.Mailbox{
		Address:    addr,
		Password:   hash,
		QuotaBytes: in.QuotaBytes.ptr(),
		Transport:  in.Transport.ptr(),
		Active:     in.Active == nil || *in.Active,
	}
	if in.Name != nil {
		m.Name = *in.Name
	}
	if in.Maildir != nil {
		m.Maildir = *in.Maildir
	}
	return m, nil
}

// getMailbox returns the mailbox raw (an address in any spelling) if p
// may manage it.
func (h *Handler) getMailbox(ctx context.Context, p *principal, raw string) (store.Mailbox, error) {
	addr, err := scopedAddress(p, raw, "")
	if err != nil {
		return store.Mailbox{}, err
	}
	m, err := h.st.GetMailbox(ctx, addr)
	if err != nil {
		return store.Mailbox{}, storeError(err, "")
	}
	return m, nil
}

func (h *Handler) apiGetMailbox(w http.ResponseWriter, r *http.Request, p *principal) error {
	m, err := h.getMailbox(r.Context(), p, r.PathValue("address"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (h *Handler) apiUpdateMailbox(w http.ResponseWriter, r *http.Request, p *principal) error {
	addr, err := scopedAddress(p, r.PathValue("address"), "")
	if err != nil {
		return err
	}
	var in mailboxInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.updateMailbox(r.Context(), p, addr, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// updateMailbox changes the mailbox addr (canonical, in p's scope). A new
// password or disabling it ends the mailbox user's sessions.
func (h *Handler) updateMailbox(ctx context.Context, p *principal, addr string, in mailboxInput) (store.Mailbox, error) {
	if in.Address != "" {
		return store.Mailbox{}, errInvalid("address", "a mailbox cannot be renamed")
	}
	if err := in.checkPrivileged(p); err != nil {
		return store.Mailbox{}, err
	}
	if in.Active != nil && !*in.Active && h.isProtected(addr) && !p.isSuper() {
		return store.Mailbox{}, errForbidden("active", "only a superadmin may disable %s", addr)
	}
	patch := store.MailboxPatch{
		Name:       in.Name,
		QuotaBytes: in.QuotaBytes.nullable(),
		Maildir:    in.Maildir,
		Transport:  in.Transport.nullable(),
		Active:     in.Active,
	}
	if in.Password != nil {
		local, _ := splitAddress(addr)
		if err := h.checkPassword(*in.Password, addr, local); err != nil {
			return store.Mailbox{}, err
		}
		hash, err := h.hash(ctx, *in.Password)
		if err != nil {
			return store.Mailbox{}, err
		}
		patch.Password = &hash
	}
	out, err := h.st.UpdateMailbox(store.WithActor(ctx, p.actor()), addr, patch)
	if err != nil {
		field := ""
		if in.QuotaBytes.Set && errors.Is(err, store.ErrLimitExceeded) {
			field = "quota_bytes" // the only limit a mailbox's change can exceed
		}
		return store.Mailbox{}, storeError(err, field)
	}
	if in.Password != nil || (in.Active != nil && !*in.Active) {
		if _, err := h.st.DeleteAdminSessionsOf(ctx, store.SessionMailbox, addr, ""); err != nil {
			return store.Mailbox{}, err
		}
	}
	return out, nil
}

func (h *Handler) apiDeleteMailbox(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteMailbox(r.Context(), p, r.PathValue("address")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteMailbox deletes the mailbox raw if p may: in its scope, and only a
// superadmin deletes a protected address.
func (h *Handler) deleteMailbox(ctx context.Context, p *principal, raw string) error {
	addr, err := scopedAddress(p, raw, "")
	if err != nil {
		return err
	}
	if h.isProtected(addr) && !p.isSuper() {
		return errForbidden("", "only a superadmin may delete %s", addr)
	}
	if err := h.st.DeleteMailbox(store.WithActor(ctx, p.actor()), addr); err != nil {
		return storeError(err, "")
	}
	if _, err := h.st.DeleteAdminSessionsOf(ctx, store.SessionMailbox, addr, ""); err != nil {
		return err
	}
	return nil
}

// Vacation, by an admin (per mailbox) or by the mailbox user (self.go).

func (h *Handler) apiListVacations(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, lerr := h.st.ListVacations(ctx, o)
	n, cerr := h.st.CountVacations(ctx, o)
	return listPage(w, o, items, lerr, n, cerr)
}

// vacationInput is the body of PUT …/vacation: the whole auto-reply.
type vacationInput struct {
	Subject         *string    `json:"subject"`
	Body            *string    `json:"body"`
	ActiveFrom      *time.Time `json:"active_from"`
	ActiveUntil     *time.Time `json:"active_until"`
	IntervalSeconds *int32     `json:"interval_seconds"`
	Active          *bool      `json:"active"`
}

// putVacation creates or replaces the vacation of mailbox (canonical,
// already authorised).
func (h *Handler) putVacation(ctx context.Context, p *principal, mailbox string, in vacationInput) (store.Vacation, int, error) {
	if in.IntervalSeconds != nil && *in.IntervalSeconds < 0 {
		return store.Vacation{}, 0, errInvalid("interval_seconds", "interval_seconds must not be negative")
	}
	if in.ActiveFrom != nil && in.ActiveUntil != nil && !in.ActiveUntil.After(*in.ActiveFrom) {
		return store.Vacation{}, 0, errInvalid("active_until", "active_until must be after active_from")
	}
	v := store.Vacation{Mailbox: mailbox, Subject: "Out of office", ActiveFrom: in.ActiveFrom, ActiveUntil: in.ActiveUntil,
		IntervalSeconds: store.DefaultVacationIntervalSeconds, Active: in.Active == nil || *in.Active}
	if in.Subject != nil {
		v.Subject = *in.Subject
	}
	if in.Body != nil {
		v.Body = *in.Body
	}
	if in.IntervalSeconds != nil {
		v.IntervalSeconds = *in.IntervalSeconds
	}
	actx := store.WithActor(ctx, p.actor())
	nullTime := func(t *time.Time) store.Nullable[time.Time] {
		if t == nil {
			return store.SetNull[time.Time]()
		}
		return store.SetValue(*t)
	}
	patch := store.VacationPatch{Subject: &v.Subject, Body: &v.Body, ActiveFrom: nullTime(v.ActiveFrom),
		ActiveUntil: nullTime(v.ActiveUntil), IntervalSeconds: &v.IntervalSeconds, Active: &v.Active}
	out, err := h.st.UpdateVacation(actx, mailbox, patch)
	if err == nil {
		return out, http.StatusOK, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.Vacation{}, 0, storeError(err, "")
	}
	if v.IntervalSeconds == 0 {
		// CreateVacation reads 0 as "the default"; 0 means "every message".
		out, err = h.st.CreateVacation(actx, store.Vacation{Mailbox: mailbox, Subject: v.Subject, Body: v.Body,
			ActiveFrom: v.ActiveFrom, ActiveUntil: v.ActiveUntil, IntervalSeconds: 1, Active: v.Active})
		if err == nil {
			out, err = h.st.UpdateVacation(actx, mailbox, store.VacationPatch{IntervalSeconds: &v.IntervalSeconds})
		}
	} else {
		out, err = h.st.CreateVacation(actx, v)
	}
	if errors.Is(err, store.ErrConflict) {
		// Created meanwhile by another request: replace it.
		out, err = h.st.UpdateVacation(actx, mailbox, patch)
		return out, http.StatusOK, storeError(err, "")
	}
	if err != nil {
		return store.Vacation{}, 0, storeError(err, "")
	}
	return out, http.StatusCreated, nil
}

func (h *Handler) apiGetVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	addr, err := scopedAddress(p, r.PathValue("address"), "")
	if err != nil {
		return err
	}
	v, err := h.st.GetVacation(r.Context(), addr)
	if err != nil {
		return storeError(err, "")
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (h *Handler) apiPutVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	addr, err := scopedAddress(p, r.PathValue("address"), "")
	if err != nil {
		return err
	}
	var in vacationInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	v, status, err := h.putVacation(r.Context(), p, addr, in)
	if err != nil {
		return err
	}
	writeJSON(w, status, v)
	return nil
}

func (h *Handler) apiDeleteVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	addr, err := scopedAddress(p, r.PathValue("address"), "")
	if err != nil {
		return err
	}
	if err := h.deleteVacation(r.Context(), p, addr); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteVacation removes the vacation of mailbox (canonical, already
// authorised).
func (h *Handler) deleteVacation(ctx context.Context, p *principal, mailbox string) error {
	if err := h.st.DeleteVacation(store.WithActor(ctx, p.actor()), mailbox); err != nil {
		return storeError(err, "")
	}
	return nil
}
