package admin

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/facteur/facteur/store"
)

// Mailbox self-service: a mailbox user, logged in with its address and
// password, manages its own password, vacation, forwarding and app
// passwords. Every route acts on p.mailbox and nothing else: no route
// takes a mailbox from the client.

func (h *Handler) apiSelf(w http.ResponseWriter, r *http.Request, p *principal) error {
	m, err := h.st.GetMailbox(r.Context(), p.mailbox)
	if err != nil {
		return storeError(err, "")
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

// apiSelfPassword is PUT /api/v1/self/password: the current password
// (throttled as a login) and a new one; other sessions of the mailbox end.
func (h *Handler) apiSelfPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in passwordChangeInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := h.selfPassword(r, p, in); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// selfPassword changes the mailbox user's password: the current one
// (throttled as a login) and a new one; other sessions of the mailbox end.
func (h *Handler) selfPassword(r *http.Request, p *principal, in passwordChangeInput) error {
	ctx := r.Context()
	stored, _, err := h.st.MailboxPassword(ctx, p.mailbox)
	if err != nil {
		return storeError(err, "")
	}
	if err := h.confirmPassword(ctx, r, "mailbox", p.mailbox, stored, in.CurrentPassword); err != nil {
		return err
	}
	local, _ := splitAddress(p.mailbox)
	if err := h.checkPassword(in.NewPassword, p.mailbox, local); err != nil {
		return renameField(err, "password", "new_password")
	}
	hash, err := h.hash(ctx, in.NewPassword)
	if err != nil {
		return renameField(err, "password", "new_password")
	}
	if err := h.st.SetMailboxPassword(store.WithActor(ctx, p.actor()), p.mailbox, hash); err != nil {
		return storeError(err, "")
	}
	if _, err := h.st.DeleteAdminSessionsOf(ctx, store.SessionMailbox, p.mailbox, p.sessionHash); err != nil {
		return err
	}
	return nil
}

func (h *Handler) apiSelfGetVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	v, err := h.st.GetVacation(r.Context(), p.mailbox)
	if err != nil {
		return storeError(err, "")
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (h *Handler) apiSelfPutVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in vacationInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	v, status, err := h.putVacation(r.Context(), p, p.mailbox, in)
	if err != nil {
		return err
	}
	writeJSON(w, status, v)
	return nil
}

func (h *Handler) apiSelfDeleteVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.st.DeleteVacation(store.WithActor(r.Context(), p.actor()), p.mailbox); err != nil {
		return storeError(err, "")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// forwarding is a mailbox's forwarding: the alias of its own address. The
// schema lets such an alias exist only with the address among its
// destinations (forward and keep a copy), so KeepCopy is always true.
type forwarding struct {
	Address      string   `json:"address"`
	Destinations []string `json:"destinations"` // without the mailbox itself
	KeepCopy     bool     `json:"keep_copy"`
	Active       bool     `json:"active"`
}

func forwardingOf(a store.Alias) forwarding {
	f := forwarding{Address: a.Address, Destinations: []string{}, Active: a.Active}
	for _, d := range a.Destinations {
		if d == a.Address {
			f.KeepCopy = true
			continue
		}
		f.Destinations = append(f.Destinations, d)
	}
	return f
}

func (h *Handler) apiSelfGetForwarding(w http.ResponseWriter, r *http.Request, p *principal) error {
	a, err := h.st.GetAlias(r.Context(), p.mailbox)
	if err != nil {
		return storeError(err, "")
	}
	writeJSON(w, http.StatusOK, forwardingOf(a))
	return nil
}

type forwardingInput struct {
	Destinations []string `json:"destinations"`
	Active       *bool    `json:"active"`
}

// apiSelfPutForwarding is PUT /api/v1/self/forwarding: forward to these
// addresses and keep a copy. Only addresses are accepted: a command, file
// or :include: destination is a 403.
func (h *Handler) apiSelfPutForwarding(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in forwardingInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	f, status, err := h.selfPutForwarding(r.Context(), p, in)
	if err != nil {
		return err
	}
	writeJSON(w, status, f)
	return nil
}

// selfPutForwarding sets the mailbox user's forwarding: these addresses and
// a copy kept. Only addresses are accepted: a command, file or :include:
// destination is a 403.
func (h *Handler) selfPutForwarding(ctx context.Context, p *principal, in forwardingInput) (forwarding, int, error) {
	dests, err := checkDestinations(p, in.Destinations, "destinations")
	if err != nil {
		return forwarding{}, 0, err
	}
	dests = slices.DeleteFunc(dests, func(d string) bool { return d == p.mailbox })
	if len(dests) == 0 {
		return forwarding{}, 0, errInvalid("destinations", "give at least one address to forward to (or DELETE to stop forwarding)")
	}
	dests = append(dests, p.mailbox)
	actx := store.WithActor(ctx, p.actor())
	status := http.StatusOK
	a, err := h.st.UpdateAlias(actx, p.mailbox, store.AliasPatch{Destinations: &dests, Active: in.Active})
	if errors.Is(err, store.ErrNotFound) {
		status = http.StatusCreated
		a, err = h.st.CreateAlias(actx, store.Alias{Address: p.mailbox, Destinations: dests,
			Description: "forwarding", Active: in.Active == nil || *in.Active})
	}
	if err != nil {
		return forwarding{}, 0, storeError(err, "destinations")
	}
	return forwardingOf(a), status, nil
}

func (h *Handler) apiSelfDeleteForwarding(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.selfDeleteForwarding(r.Context(), p); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// selfDeleteForwarding stops the mailbox user's forwarding.
func (h *Handler) selfDeleteForwarding(ctx context.Context, p *principal) error {
	if h.isProtected(p.mailbox) {
		return errForbidden("", "only a superadmin may delete %s", p.mailbox)
	}
	if err := h.st.DeleteAlias(store.WithActor(ctx, p.actor()), p.mailbox); err != nil {
		return storeError(err, "")
	}
	return nil
}

func (h *Handler) apiSelfListAppPasswords(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	o.Scope = nil // the mailbox filter below is the scope
	o.Domain = ""
	ctx := r.Context()
	items, lerr := h.st.ListAppPasswords(ctx, p.mailbox, o)
	n, cerr := h.st.CountAppPasswords(ctx, p.mailbox, o)
	return listPage(w, o, items, lerr, n, cerr)
}

// selfAppPasswordInput is appPasswordInput without a mailbox: a user's app
// passwords are always its own.
type selfAppPasswordInput struct {
	Name      *string        `json:"name"`
	ExpiresAt opt[time.Time] `json:"expires_at"`
	Active    *bool          `json:"active"`
}

func (h *Handler) apiSelfCreateAppPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in selfAppPasswordInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.createAppPassword(r.Context(), p, p.mailbox,
		appPasswordInput{Name: in.Name, ExpiresAt: in.ExpiresAt, Active: in.Active})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (h *Handler) apiSelfDeleteAppPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := h.selfDeleteAppPassword(r.Context(), p, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// selfDeleteAppPassword deletes one of the mailbox user's own app
// passwords; any other id is not found.
func (h *Handler) selfDeleteAppPassword(ctx context.Context, p *principal, id int64) error {
	ap, err := h.st.GetAppPasswordIn(ctx, id, nil, p.mailbox)
	if err != nil {
		return storeError(err, "")
	}
	if err := h.st.DeleteAppPassword(store.WithActor(ctx, p.actor()), ap.ID); err != nil {
		return storeError(err, "")
	}
	return nil
}
