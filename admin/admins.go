package admin

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
)

// Admins and domain grants: a superadmin's (superOnly routes).

func (h *Handler) apiListAdmins(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, lerr := h.st.ListAdmins(ctx, o)
	n, cerr := h.st.CountAdmins(ctx, o)
	return listPage(w, o, items, lerr, n, cerr)
}

type adminInput struct {
	Username   string   `json:"username"`
	Password   *string  `json:"password"`
	Superadmin *bool    `json:"superadmin"`
	Active     *bool    `json:"active"`
	Domains    []string `json:"domains"`
	// DisableTOTP turns off the admin's TOTP (a lost authenticator).
	DisableTOTP bool `json:"disable_totp"`
}

func normUsername(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func (h *Handler) apiCreateAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in adminInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.createAdmin(r.Context(), p, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// createAdmin creates an admin with grants on domains (superOnly routes).
func (h *Handler) createAdmin(ctx context.Context, p *principal, in adminInput) (store.Admin, error) {
	username := normUsername(in.Username)
	if username == "" {
		return store.Admin{}, errInvalid("username", "a username is required")
	}
	if in.Password == nil {
		return store.Admin{}, errInvalid("password", "a password is required")
	}
	if in.DisableTOTP {
		return store.Admin{}, errInvalid("disable_totp", "a new admin has no TOTP")
	}
	if err := h.checkPassword(*in.Password, username); err != nil {
		return store.Admin{}, err
	}
	domains := make([]string, 0, len(in.Domains))
	for _, d := range in.Domains {
		n, err := scopedDomain(p, d, "domains")
		if err != nil {
			return store.Admin{}, err
		}
		domains = append(domains, n)
	}
	hash, err := h.hash(ctx, *in.Password)
	if err != nil {
		return store.Admin{}, err
	}
	out, err := h.st.CreateAdmin(store.WithActor(ctx, p.actor()), store.Admin{Username: username, Password: hash,
		Superadmin: in.Superadmin != nil && *in.Superadmin, Active: in.Active == nil || *in.Active}, domains)
	if err != nil {
		return store.Admin{}, storeError(err, "username")
	}
	return out, nil
}

func (h *Handler) apiGetAdmin(w http.ResponseWriter, r *http.Request, _ *principal) error {
	a, err := h.st.GetAdmin(r.Context(), normUsername(r.PathValue("username")))
	if err != nil {
		return storeError(err, "")
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (h *Handler) apiUpdateAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	username := normUsername(r.PathValue("username"))
	var in adminInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.updateAdmin(r.Context(), p, username, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// updateAdmin changes the admin username (superOnly routes); a new
// password ends the admin's other sessions.
func (h *Handler) updateAdmin(ctx context.Context, p *principal, username string, in adminInput) (store.Admin, error) {
	if in.Username != "" {
		return store.Admin{}, errInvalid("username", "an admin cannot be renamed")
	}
	if in.Domains != nil {
		return store.Admin{}, errInvalid("domains", "change domains with /api/v1/domain-admins")
	}
	self := username == p.username
	if self && ((in.Superadmin != nil && !*in.Superadmin) || (in.Active != nil && !*in.Active)) {
		return store.Admin{}, &apiError{Status: http.StatusConflict, Code: codeConflict, Field: "superadmin",
			Message: "you cannot demote or disable yourself"}
	}
	patch := store.AdminPatch{Superadmin: in.Superadmin, Active: in.Active}
	if in.Password != nil {
		if err := h.checkPassword(*in.Password, username); err != nil {
			return store.Admin{}, err
		}
		hash, err := h.hash(ctx, *in.Password)
		if err != nil {
			return store.Admin{}, err
		}
		patch.Password = &hash
	}
	if in.DisableTOTP {
		patch.TOTPSecret = store.SetNull[string]()
		patch.TOTPLastStep = store.SetNull[int64]()
	}
	out, err := h.st.UpdateAdmin(store.WithActor(ctx, p.actor()), username, patch)
	if err != nil {
		return store.Admin{}, storeError(err, "")
	}
	if in.Password != nil {
		keep := ""
		if self {
			keep = p.sessionHash
		}
		if _, err := h.st.DeleteAdminSessionsOf(ctx, store.SessionAdmin, username, keep); err != nil {
			return store.Admin{}, err
		}
	}
	return out, nil
}

func (h *Handler) apiDeleteAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteAdmin(r.Context(), p, normUsername(r.PathValue("username"))); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteAdmin deletes the admin username and ends its sessions (superOnly
// routes); no one deletes itself.
func (h *Handler) deleteAdmin(ctx context.Context, p *principal, username string) error {
	if username == p.username {
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: "you cannot delete yourself"}
	}
	if err := h.st.DeleteAdmin(store.WithActor(ctx, p.actor()), username); err != nil {
		return storeError(err, "")
	}
	if _, err := h.st.DeleteAdminSessionsOf(ctx, store.SessionAdmin, username, ""); err != nil {
		return err
	}
	return nil
}

func (h *Handler) apiListDomainAdmins(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	username := normUsername(r.URL.Query().Get("username"))
	ctx := r.Context()
	items, lerr := h.st.ListDomainAdmins(ctx, username, o)
	n, cerr := h.st.CountDomainAdmins(ctx, username, o)
	return listPage(w, o, items, lerr, n, cerr)
}

type domainAdminInput struct {
	Username string `json:"username"`
	Domain   string `json:"domain"`
	Active   *bool  `json:"active"`
}

func (h *Handler) apiCreateDomainAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in domainAdminInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	da, err := h.createDomainAdmin(r.Context(), p, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, da)
	return nil
}

// createDomainAdmin grants an admin a domain (superOnly routes).
func (h *Handler) createDomainAdmin(ctx context.Context, p *principal, in domainAdminInput) (store.DomainAdmin, error) {
	d, err := scopedDomain(p, in.Domain, "domain")
	if err != nil {
		return store.DomainAdmin{}, err
	}
	username := normUsername(in.Username)
	actx := store.WithActor(ctx, p.actor())
	out, err := h.st.AddDomainAdmins(actx, username, d)
	if err != nil {
		return store.DomainAdmin{}, storeError(err, "username")
	}
	da := out[0]
	if in.Active != nil && !*in.Active {
		if da, err = h.st.SetDomainAdminActive(actx, username, d, false); err != nil {
			return store.DomainAdmin{}, storeError(err, "")
		}
	}
	return da, nil
}

func (h *Handler) apiUpdateDomainAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	d, err := scopedDomain(p, r.PathValue("domain"), "")
	if err != nil {
		return err
	}
	var in domainAdminInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if in.Username != "" || in.Domain != "" {
		return errInvalid("username", "only active can change")
	}
	if in.Active == nil {
		return errInvalid("active", "active is required")
	}
	out, err := h.st.SetDomainAdminActive(store.WithActor(r.Context(), p.actor()), normUsername(r.PathValue("username")), d, *in.Active)
	if err != nil {
		return storeError(err, "")
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) apiDeleteDomainAdmin(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteDomainAdmin(r.Context(), p, normUsername(r.PathValue("username")), r.PathValue("domain")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteDomainAdmin takes the domain rawDomain from the admin username
// (superOnly routes).
func (h *Handler) deleteDomainAdmin(ctx context.Context, p *principal, username, rawDomain string) error {
	d, err := scopedDomain(p, rawDomain, "")
	if err != nil {
		return err
	}
	if err := h.st.RemoveDomainAdmins(store.WithActor(ctx, p.actor()), username, d); err != nil {
		return storeError(err, "")
	}
	return nil
}

// API tokens. An admin sees and manages its own; a superadmin everyone's.
// A token acts with its admin's rights as they are at each request.

// tokenOwner is the admin whose tokens p may see: its own, or every
// admin's ("") for a superadmin.
func tokenOwner(p *principal) string {
	if p.isSuper() {
		return ""
	}
	return p.username
}

func (h *Handler) apiListTokens(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	owner := tokenOwner(p)
	if v := r.URL.Query().Get("admin"); v != "" && p.isSuper() {
		owner = normUsername(v)
	}
	ctx := r.Context()
	items, lerr := h.st.ListAPITokens(ctx, owner, o)
	n, cerr := h.st.CountAPITokens(ctx, owner, o)
	return listPage(w, o, items, lerr, n, cerr)
}

type tokenInput struct {
	Name      *string        `json:"name"`
	ExpiresAt opt[time.Time] `json:"expires_at"`
	Active    *bool          `json:"active"`
}

// tokenCreated is the answer to a creation: the only time the token is
// shown. Only its SHA-256 is stored.
type tokenCreated struct {
	Token  store.APIToken `json:"token"`
	Secret string         `json:"secret"`
}

func (h *Handler) apiCreateToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in tokenInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.createToken(r.Context(), p, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// createToken makes an API token of p's admin; the secret is in the result
// and nowhere else (only its SHA-256 is stored).
func (h *Handler) createToken(ctx context.Context, p *principal, in tokenInput) (tokenCreated, error) {
	if in.Name == nil || strings.TrimSpace(*in.Name) == "" {
		return tokenCreated{}, errInvalid("name", "a name is required")
	}
	if t := in.ExpiresAt.ptr(); t != nil && !t.After(h.now()) {
		return tokenCreated{}, errInvalid("expires_at", "expires_at must be in the future")
	}
	secret := tokenPrefix + randomToken(32)
	out, err := h.st.CreateAPIToken(store.WithActor(ctx, p.actor()), store.APIToken{
		Admin: p.username, Name: strings.TrimSpace(*in.Name), TokenHash: sha256Hex(secret),
		ExpiresAt: in.ExpiresAt.ptr(), Active: in.Active == nil || *in.Active})
	if err != nil {
		return tokenCreated{}, storeError(err, "name")
	}
	return tokenCreated{Token: out, Secret: secret}, nil
}

// getToken returns the token id if p may see it (its own, or any for a
// superadmin).
func (h *Handler) getToken(ctx context.Context, p *principal, id int64) (store.APIToken, error) {
	t, err := h.st.GetAPITokenOf(ctx, id, tokenOwner(p))
	if err != nil {
		return store.APIToken{}, storeError(err, "")
	}
	return t, nil
}

func (h *Handler) tokenFromPath(r *http.Request, p *principal) (store.APIToken, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return store.APIToken{}, err
	}
	return h.getToken(r.Context(), p, id)
}

func (h *Handler) apiGetToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := h.tokenFromPath(r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (h *Handler) apiUpdateToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := h.tokenFromPath(r, p)
	if err != nil {
		return err
	}
	var in tokenInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if in.Name != nil && strings.TrimSpace(*in.Name) == "" {
		return errInvalid("name", "the name cannot be empty")
	}
	out, err := h.st.UpdateAPIToken(store.WithActor(r.Context(), p.actor()), t.ID, store.APITokenPatch{
		Name: in.Name, ExpiresAt: in.ExpiresAt.nullable(), Active: in.Active})
	if err != nil {
		return storeError(err, "")
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) apiDeleteToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := h.deleteToken(r.Context(), p, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteToken revokes the token id if p may see it.
func (h *Handler) deleteToken(ctx context.Context, p *principal, id int64) error {
	t, err := h.getToken(ctx, p, id)
	if err != nil {
		return err
	}
	if err := h.st.DeleteAPIToken(store.WithActor(ctx, p.actor()), t.ID); err != nil {
		return storeError(err, "")
	}
	return nil
}

// Transports (Postfix transport(5)): a superadmin's.

func (h *Handler) apiListTransports(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, lerr := h.st.ListTransports(ctx, o)
	n, cerr := h.st.CountTransports(ctx, o)
	return listPage(w, o, items, lerr, n, cerr)
}

type transportInput struct {
	Key         string  `json:"key"`
	Nexthop     *string `json:"nexthop"`
	Description *string `json:"description"`
	Active      *bool   `json:"active"`
}

func normTransportKey(s string) (string, error) {
	k, err := address.NormalizeDomainOrAddress(s)
	if err != nil || strings.HasPrefix(k, "@") {
		return "", errInvalid("key", "the key is a domain or an address")
	}
	return k, nil
}

func (h *Handler) apiCreateTransport(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in transportInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	key, err := normTransportKey(in.Key)
	if err != nil {
		return err
	}
	if in.Nexthop == nil {
		return errInvalid("nexthop", "nexthop is required")
	}
	if err := checkTransport(p, in.Nexthop, "nexthop"); err != nil {
		return err
	}
	t := store.Transport{Key: key, Nexthop: *in.Nexthop, Active: in.Active == nil || *in.Active}
	if in.Description != nil {
		t.Description = *in.Description
	}
	out, err := h.st.CreateTransport(store.WithActor(r.Context(), p.actor()), t)
	if err != nil {
		return storeError(err, "key")
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func pathTransportKey(r *http.Request) (string, error) {
	k, err := normTransportKey(r.PathValue("key"))
	if err != nil {
		return "", errNotFound("")
	}
	return k, nil
}

func (h *Handler) apiGetTransport(w http.ResponseWriter, r *http.Request, _ *principal) error {
	key, err := pathTransportKey(r)
	if err != nil {
		return err
	}
	t, err := h.st.GetTransport(r.Context(), key)
	if err != nil {
		return storeError(err, "")
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (h *Handler) apiUpdateTransport(w http.ResponseWriter, r *http.Request, p *principal) error {
	key, err := pathTransportKey(r)
	if err != nil {
		return err
	}
	var in transportInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if in.Key != "" {
		return errInvalid("key", "a transport cannot be renamed")
	}
	if in.Nexthop != nil {
		if err := checkTransport(p, in.Nexthop, "nexthop"); err != nil {
			return err
		}
	}
	out, err := h.st.UpdateTransport(store.WithActor(r.Context(), p.actor()), key, store.TransportPatch{
		Nexthop: in.Nexthop, Description: in.Description, Active: in.Active})
	if err != nil {
		return storeError(err, "")
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) apiDeleteTransport(w http.ResponseWriter, r *http.Request, p *principal) error {
	key, err := pathTransportKey(r)
	if err != nil {
		return err
	}
	if err := h.st.DeleteTransport(store.WithActor(r.Context(), p.actor()), key); err != nil {
		return storeError(err, "")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
