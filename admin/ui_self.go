package admin

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/facteur/facteur/store"
)

// Mailbox self-service: every page acts on the logged-in mailbox (p.mailbox)
// and nothing else; no route takes a mailbox from the client.

type selfData struct {
	Mailbox    store.Mailbox
	Vacation   bool
	Forwarding *forwarding
}

func (h *Handler) renderSelf(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form) error {
	ctx := r.Context()
	m, err := h.st.GetMailbox(ctx, p.mailbox)
	if err != nil {
		return storeError(err, "")
	}
	d := selfData{Mailbox: m}
	if _, err := h.st.GetVacation(ctx, p.mailbox); err == nil {
		d.Vacation = true
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if a, err := h.st.GetAlias(ctx, p.mailbox); err == nil {
		fw := forwardingOf(a)
		d.Forwarding = &fw
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if f == nil {
		f = newForm(nil)
	}
	return h.render(w, r, p, status, "self", uiPage{Title: "Your mailbox", Section: "user", Form: f, Data: d})
}

func (h *Handler) uiSelf(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderSelf(w, r, p, http.StatusOK, nil)
}

func (h *Handler) uiSelfPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in := passwordChangeInput{CurrentPassword: f.Get("current_password"), NewPassword: f.Get("new_password")}
	if in.NewPassword != f.Get("new_password2") {
		f.set("new_password2", "the two new passwords differ")
		return h.renderSelf(w, r, p, http.StatusUnprocessableEntity, f)
	}
	if err := h.selfPassword(r, p, in); err != nil {
		status, err := f.fail(err, same("current_password", "new_password"))
		if err != nil {
			return err
		}
		return h.renderSelf(w, r, p, status, f)
	}
	return redirect(w, r, "/user", "password")
}

func (h *Handler) uiSelfVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderVacation(w, r, p, p.mailbox, true, http.StatusOK, nil)
}

func (h *Handler) uiSelfPutVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.putVacationForm(w, r, p, p.mailbox, true, "/user/vacation")
}

func (h *Handler) uiSelfDeleteVacation(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteVacation(r.Context(), p, p.mailbox); err != nil {
		return err
	}
	return redirect(w, r, "/user/vacation", "vacation-off")
}

type selfForwardingData struct {
	Exists bool
}

func (h *Handler) renderSelfForwarding(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form) error {
	a, err := h.st.GetAlias(r.Context(), p.mailbox)
	exists := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if f == nil {
		v := url.Values{}
		v.Set("active", "on")
		if exists {
			fw := forwardingOf(a)
			v.Set("destinations", strings.Join(fw.Destinations, "\n"))
			v.Set("active", boolField(fw.Active))
		}
		f = newForm(v)
	}
	return h.render(w, r, p, status, "self_forwarding", uiPage{Title: "Forwarding", Section: "user-forwarding", Form: f,
		Data: selfForwardingData{Exists: exists}})
}

func (h *Handler) uiSelfForwarding(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderSelfForwarding(w, r, p, http.StatusOK, nil)
}

func (h *Handler) uiSelfPutForwarding(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in := forwardingInput{Destinations: splitList(f.Get("destinations")), Active: f.boolPtr("active")}
	if _, _, err := h.selfPutForwarding(r.Context(), p, in); err != nil {
		status, err := f.fail(err, same("destinations", "active"))
		if err != nil {
			return err
		}
		return h.renderSelfForwarding(w, r, p, status, f)
	}
	return redirect(w, r, "/user/forwarding", "forwarding")
}

func (h *Handler) uiSelfDeleteForwarding(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.selfDeleteForwarding(r.Context(), p); err != nil {
		return err
	}
	return redirect(w, r, "/user/forwarding", "forwarding-off")
}

type selfAppPasswordsData struct {
	Items   []store.AppPassword
	Created *appPasswordCreated
}

func (h *Handler) renderSelfAppPasswords(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form, created *appPasswordCreated) error {
	items, err := h.st.ListAppPasswords(r.Context(), p.mailbox, store.ListOptions{Limit: 200})
	if err != nil {
		return err
	}
	if f == nil {
		f = newForm(nil)
	}
	return h.render(w, r, p, status, "self_app_passwords", uiPage{Title: "App passwords", Section: "user-app-passwords",
		Form: f, Data: selfAppPasswordsData{Items: items, Created: created}})
}

func (h *Handler) uiSelfAppPasswords(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderSelfAppPasswords(w, r, p, http.StatusOK, nil, nil)
}

func (h *Handler) uiSelfCreateAppPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in, ok := appPasswordInputOf(f)
	if !ok {
		return h.renderSelfAppPasswords(w, r, p, http.StatusUnprocessableEntity, f, nil)
	}
	out, err := h.createAppPassword(r.Context(), p, p.mailbox, in)
	if err != nil {
		status, err := f.fail(err, appPasswordFields)
		if err != nil {
			return err
		}
		return h.renderSelfAppPasswords(w, r, p, status, f, nil)
	}
	return h.renderSelfAppPasswords(w, r, p, http.StatusOK, nil, &out)
}

func (h *Handler) uiSelfDeleteAppPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := h.selfDeleteAppPassword(r.Context(), p, id); err != nil {
		return err
	}
	return redirect(w, r, "/user/app-passwords", "revoked")
}
