package admin

import (
	"net/http"
	"strings"
	"time"

	"github.com/facteur/facteur/store"
)

// uiHome sends each kind of principal to its first page.
func (h *Handler) uiHome(w http.ResponseWriter, r *http.Request, p *principal) error {
	if p.kind == kindMailbox {
		http.Redirect(w, r, "/user", http.StatusSeeOther)
		return nil
	}
	http.Redirect(w, r, "/domains", http.StatusSeeOther)
	return nil
}

type loginData struct {
	Next    string
	Mailbox bool // the mailbox user's login
	TOTP    bool // ask for the TOTP code
}

func (h *Handler) uiLoginPage(w http.ResponseWriter, r *http.Request, _ *principal) error {
	f := newForm(nil)
	return h.render(w, r, nil, http.StatusOK, "login", uiPage{Title: "Log in", Form: f,
		Data: loginData{Next: safeNext(r.URL.Query().Get("next"), "")}})
}

func (h *Handler) uiLogin(w http.ResponseWriter, r *http.Request, _ *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in := adminLoginInput{Username: f.Get("username"), Password: f.Get("password"), TOTPCode: f.Get("totp_code")}
	data := loginData{Next: safeNext(f.Get("next"), ""), TOTP: in.TOTPCode != ""}
	if _, err := h.loginAdmin(w, r, in); err != nil {
		status, err := f.fail(err, same("username", "totp_code"))
		if err != nil {
			return err
		}
		if f.Err("totp_code") != "" {
			data.TOTP = true
		}
		return h.render(w, r, nil, status, "login", uiPage{Title: "Log in", Form: f, Data: data})
	}
	http.Redirect(w, r, safeNext(data.Next, "/domains"), http.StatusSeeOther)
	return nil
}

func (h *Handler) uiUserLoginPage(w http.ResponseWriter, r *http.Request, _ *principal) error {
	return h.render(w, r, nil, http.StatusOK, "login", uiPage{Title: "Log in to your mailbox", Form: newForm(nil),
		Data: loginData{Next: safeNext(r.URL.Query().Get("next"), ""), Mailbox: true}})
}

func (h *Handler) uiUserLogin(w http.ResponseWriter, r *http.Request, _ *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	data := loginData{Next: safeNext(f.Get("next"), ""), Mailbox: true}
	if _, err := h.loginMailbox(w, r, mailboxLoginInput{Address: f.Get("address"), Password: f.Get("password")}); err != nil {
		status, err := f.fail(err, same("address"))
		if err != nil {
			return err
		}
		return h.render(w, r, nil, status, "login", uiPage{Title: "Log in to your mailbox", Form: f, Data: data})
	}
	next := safeNext(data.Next, "/user")
	if !strings.HasPrefix(next, "/user") {
		next = "/user"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (h *Handler) uiLogout(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.logout(w, r, p); err != nil {
		return err
	}
	if p.kind == kindMailbox {
		http.Redirect(w, r, "/user/login", http.StatusSeeOther)
		return nil
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
	return nil
}

// The admin's own account: password and TOTP.

type accountData struct {
	Admin store.Admin
	Setup *totpSecretOutput // a secret being enrolled
}

func (h *Handler) renderAccount(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form, setup *totpSecretOutput) error {
	a, err := h.st.GetAdmin(r.Context(), p.username)
	if err != nil {
		return storeError(err, "")
	}
	if f == nil {
		f = newForm(nil)
	}
	return h.render(w, r, p, status, "account", uiPage{Title: "Your account", Section: "account", Form: f,
		Data: accountData{Admin: a, Setup: setup}})
}

func (h *Handler) uiAccount(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderAccount(w, r, p, http.StatusOK, nil, nil)
}

func (h *Handler) uiAccountPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in := passwordChangeInput{CurrentPassword: f.Get("current_password"), NewPassword: f.Get("new_password")}
	if in.NewPassword != f.Get("new_password2") {
		f.set("new_password2", "the two new passwords differ")
		return h.renderAccount(w, r, p, http.StatusUnprocessableEntity, f, nil)
	}
	if err := h.accountPassword(r, p, in); err != nil {
		status, err := f.fail(err, same("current_password", "new_password"))
		if err != nil {
			return err
		}
		return h.renderAccount(w, r, p, status, f, nil)
	}
	return redirect(w, r, "/account", "password")
}

func (h *Handler) uiTOTPSecret(w http.ResponseWriter, r *http.Request, p *principal) error {
	s, err := h.newTOTPSecret(p)
	if err != nil {
		return err
	}
	return h.renderAccount(w, r, p, http.StatusOK, nil, &s)
}

func (h *Handler) uiTOTPEnable(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	in := totpEnableInput{Secret: f.Get("secret"), Code: f.Get("code"), Password: f.Get("password")}
	if err := h.enableTOTP(r, p, in); err != nil {
		status, err := f.fail(err, same("secret", "code", "password"))
		if err != nil {
			return err
		}
		setup := &totpSecretOutput{Secret: in.Secret}
		return h.renderAccount(w, r, p, status, f, setup)
	}
	return redirect(w, r, "/account", "totp-on")
}

func (h *Handler) uiTOTPDisable(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	if err := h.disableTOTP(r, p, totpDisableInput{Password: f.Get("off_password")}); err != nil {
		status, err := f.fail(err, map[string]string{"password": "off_password"})
		if err != nil {
			return err
		}
		return h.renderAccount(w, r, p, status, f, nil)
	}
	return redirect(w, r, "/account", "totp-off")
}

// API tokens.

type tokensData struct {
	Tokens  []store.APIToken
	Pager   pager
	Created *tokenCreated // the token just made, shown once
	Now     time.Time
}

func (h *Handler) renderTokens(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form, created *tokenCreated) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	o.Scope, o.Domain = nil, ""
	ctx := r.Context()
	owner := tokenOwner(p)
	items, err := h.st.ListAPITokens(ctx, owner, o)
	if err != nil {
		return err
	}
	n, err := h.st.CountAPITokens(ctx, owner, o)
	if err != nil {
		return err
	}
	if f == nil {
		f = newForm(nil)
	}
	return h.render(w, r, p, status, "tokens", uiPage{Title: "API tokens", Section: "tokens", Form: f,
		Data: tokensData{Tokens: items, Pager: newPager(r, o, len(items), n, false), Created: created, Now: h.now()}})
}

func (h *Handler) uiTokens(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderTokens(w, r, p, http.StatusOK, nil, nil)
}

func (h *Handler) uiCreateToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	name := f.Get("name")
	in := tokenInput{Name: &name}
	if exp, ok := f.optTime("expires_at"); !ok {
		return h.renderTokens(w, r, p, http.StatusUnprocessableEntity, f, nil)
	} else if exp != nil {
		in.ExpiresAt = opt[time.Time]{Set: true, Value: *exp}
	}
	out, err := h.createToken(r.Context(), p, in)
	if err != nil {
		status, err := f.fail(err, same("name", "expires_at"))
		if err != nil {
			return err
		}
		return h.renderTokens(w, r, p, status, f, nil)
	}
	// The secret is in this answer only: no redirect can carry it.
	return h.renderTokens(w, r, p, http.StatusOK, nil, &out)
}

func (h *Handler) uiDeleteToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := h.deleteToken(r.Context(), p, id); err != nil {
		return err
	}
	return redirect(w, r, "/tokens", "revoked")
}
