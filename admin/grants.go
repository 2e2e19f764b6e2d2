package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/facteur/facteur/lookups/address"
	"github.com/facteur/facteur/store"
)

// pathID reads an integer id from the path; a malformed one is not found.
func pathID(r *http.Request, name string) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, errNotFound("")
	}
	return id, nil
}

// mailboxFilter reads the optional ?mailbox= filter of a list, normalised.
// A mailbox outside the scope is no error: the scoped query finds nothing.
func mailboxFilter(r *http.Request) (string, error) {
	v := r.URL.Query().Get("mailbox")
	if v == "" {
		return "", nil
	}
	a, err := address.Normalize(v)
	if err != nil {
		return "", errBadRequest("mailbox", "invalid address")
	}
	return a, nil
}

// Send-as grants.

func (h *Handler) apiListSenderGrants(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	mb, err := mailboxFilter(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, lerr := h.st.ListSenderGrants(ctx, mb, o)
	n, cerr := h.st.CountSenderGrants(ctx, mb, o)
	return listPage(w, o, items, lerr, n, cerr)
}

type senderGrantInput struct {
	Mailbox string  `json:"mailbox"`
	Sender  *string `json:"sender"`
	Active  *bool   `json:"active"`
}

// scopedSender normalises a send-as sender (an address or "@domain") and
// checks that p may grant it: a domain admin may let its mailboxes send as
// addresses of its own domains (or of alias domains of them) only, never
// as another tenant's.
func (h *Handler) scopedSender(ctx context.Context, p *principal, raw string) (string, error) {
	s, err := address.NormalizeDomainOrAddress(strings.TrimSpace(raw))
	if err != nil || !strings.Contains(s, "@") {
		return "", errInvalid("sender", "the sender is an address or @domain")
	}
	_, d := splitAddress(s)
	if p.inScope(d) {
		return s, nil
	}
	if _, err := h.st.GetAliasDomainIn(ctx, d, p.scope()); err == nil {
		return s, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	return "", errForbidden("sender", "the sender must be in one of your domains")
}

func (h *Handler) apiCreateSenderGrant(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in senderGrantInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.createSenderGrant(r.Context(), p, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// createSenderGrant lets a mailbox of p's send as a sender of p's.
func (h *Handler) createSenderGrant(ctx context.Context, p *principal, in senderGrantInput) (store.SenderGrant, error) {
	mb, err := scopedAddress(p, in.Mailbox, "mailbox")
	if err != nil {
		return store.SenderGrant{}, err
	}
	if in.Sender == nil {
		return store.SenderGrant{}, errInvalid("sender", "sender is required")
	}
	sender, err := h.scopedSender(ctx, p, *in.Sender)
	if err != nil {
		return store.SenderGrant{}, err
	}
	out, err := h.st.CreateSenderGrant(store.WithActor(ctx, p.actor()), store.SenderGrant{
		Mailbox: mb, Sender: sender, Active: in.Active == nil || *in.Active})
	if err != nil {
		return store.SenderGrant{}, storeError(err, "mailbox")
	}
	return out, nil
}

// getSenderGrant returns the grant id if its mailbox is in p's scope.
func (h *Handler) getSenderGrant(ctx context.Context, p *principal, id int64) (store.SenderGrant, error) {
	g, err := h.st.GetSenderGrantIn(ctx, id, p.scope())
	if err != nil {
		return store.SenderGrant{}, storeError(err, "")
	}
	return g, nil
}

func (h *Handler) apiGetSenderGrant(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	g, err := h.getSenderGrant(r.Context(), p, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

func (h *Handler) apiUpdateSenderGrant(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	g, err := h.getSenderGrant(r.Context(), p, id)
	if err != nil {
		return err
	}
	var in senderGrantInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.updateSenderGrant(r.Context(), p, g, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// updateSenderGrant changes g (read with getSenderGrant).
func (h *Handler) updateSenderGrant(ctx context.Context, p *principal, g store.SenderGrant, in senderGrantInput) (store.SenderGrant, error) {
	if in.Mailbox != "" {
		return store.SenderGrant{}, errInvalid("mailbox", "a grant cannot move to another mailbox")
	}
	patch := store.SenderGrantPatch{Active: in.Active}
	if in.Sender != nil {
		s, err := h.scopedSender(ctx, p, *in.Sender)
		if err != nil {
			return store.SenderGrant{}, err
		}
		patch.Sender = &s
	}
	out, err := h.st.UpdateSenderGrant(store.WithActor(ctx, p.actor()), g.ID, patch)
	if err != nil {
		return store.SenderGrant{}, storeError(err, "")
	}
	return out, nil
}

func (h *Handler) apiDeleteSenderGrant(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := h.deleteSenderGrant(r.Context(), p, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteSenderGrant deletes the grant id if its mailbox is in p's scope.
func (h *Handler) deleteSenderGrant(ctx context.Context, p *principal, id int64) error {
	g, err := h.getSenderGrant(ctx, p, id)
	if err != nil {
		return err
	}
	if err := h.st.DeleteSenderGrant(store.WithActor(ctx, p.actor()), g.ID); err != nil {
		return storeError(err, "")
	}
	return nil
}

// App passwords: extra passwords of a mailbox for IMAP and SMTP clients,
// generated here, shown once, stored hashed.

// appPasswordAlphabet avoids look-alike characters; 20 characters carry
// about 100 bits.
const appPasswordAlphabet = "abcdefghjkmnpqrstuvwxyz23456789"

func generateAppPassword() string {
	var b strings.Builder
	buf := make([]byte, 20)
	rand.Read(buf)
	for i, c := range buf {
		if i > 0 && i%5 == 0 {
			b.WriteByte('-')
		}
		// 256 is not a multiple of len(alphabet): draw again on the high values.
		for int(c) >= 256-256%len(appPasswordAlphabet) {
			var one [1]byte
			rand.Read(one[:])
			c = one[0]
		}
		b.WriteByte(appPasswordAlphabet[int(c)%len(appPasswordAlphabet)])
	}
	return b.String()
}

type appPasswordInput struct {
	Mailbox   string         `json:"mailbox"`
	Name      *string        `json:"name"`
	ExpiresAt opt[time.Time] `json:"expires_at"`
	Active    *bool          `json:"active"`
}

// appPasswordCreated is the answer to a creation: the only time the
// password is shown.
type appPasswordCreated struct {
	AppPassword store.AppPassword `json:"app_password"`
	Password    string            `json:"password"`
}

// createAppPassword makes an app password for mailbox (canonical, already
// authorised).
func (h *Handler) createAppPassword(ctx context.Context, p *principal, mailbox string, in appPasswordInput) (appPasswordCreated, error) {
	if in.Name == nil || strings.TrimSpace(*in.Name) == "" {
		return appPasswordCreated{}, errInvalid("name", "a name is required")
	}
	if t := in.ExpiresAt.ptr(); t != nil && !t.After(h.now()) {
		return appPasswordCreated{}, errInvalid("expires_at", "expires_at must be in the future")
	}
	pw := generateAppPassword()
	hash, err := h.hash(ctx, pw)
	if err != nil {
		return appPasswordCreated{}, err
	}
	out, err := h.st.CreateAppPassword(store.WithActor(ctx, p.actor()), store.AppPassword{
		Mailbox: mailbox, Name: strings.TrimSpace(*in.Name), Password: hash, ExpiresAt: in.ExpiresAt.ptr(),
		Active: in.Active == nil || *in.Active})
	if err != nil {
		return appPasswordCreated{}, storeError(err, "mailbox")
	}
	return appPasswordCreated{AppPassword: out, Password: pw}, nil
}

func (h *Handler) apiListAppPasswords(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	mb, err := mailboxFilter(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, lerr := h.st.ListAppPasswords(ctx, mb, o)
	n, cerr := h.st.CountAppPasswords(ctx, mb, o)
	return listPage(w, o, items, lerr, n, cerr)
}

func (h *Handler) apiCreateAppPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in appPasswordInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	mb, err := scopedAddress(p, in.Mailbox, "mailbox")
	if err != nil {
		return err
	}
	out, err := h.createAppPassword(r.Context(), p, mb, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// getAppPassword returns the app password id if its mailbox is in p's
// scope and, when mailbox is not "", is mailbox.
func (h *Handler) getAppPassword(ctx context.Context, p *principal, id int64, mailbox string) (store.AppPassword, error) {
	ap, err := h.st.GetAppPasswordIn(ctx, id, p.scope(), mailbox)
	if err != nil {
		return store.AppPassword{}, storeError(err, "")
	}
	return ap, nil
}

// appPasswordFromPath reads the {id} of the path and returns that app
// password if p may manage it.
func (h *Handler) appPasswordFromPath(r *http.Request, p *principal) (store.AppPassword, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return store.AppPassword{}, err
	}
	return h.getAppPassword(r.Context(), p, id, "")
}

func (h *Handler) apiGetAppPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	ap, err := h.appPasswordFromPath(r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ap)
	return nil
}

func (h *Handler) apiUpdateAppPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	ap, err := h.appPasswordFromPath(r, p)
	if err != nil {
		return err
	}
	var in appPasswordInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if in.Mailbox != "" {
		return errInvalid("mailbox", "an app password cannot move to another mailbox")
	}
	if in.Name != nil && strings.TrimSpace(*in.Name) == "" {
		return errInvalid("name", "the name cannot be empty")
	}
	out, err := h.st.UpdateAppPassword(store.WithActor(r.Context(), p.actor()), ap.ID, store.AppPasswordPatch{
		Name: in.Name, ExpiresAt: in.ExpiresAt.nullable(), Active: in.Active})
	if err != nil {
		return storeError(err, "")
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) apiDeleteAppPassword(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := h.deleteAppPassword(r.Context(), p, id, ""); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteAppPassword deletes the app password id if its mailbox is in p's
// scope and, when mailbox is not "", is mailbox (a user's own).
func (h *Handler) deleteAppPassword(ctx context.Context, p *principal, id int64, mailbox string) error {
	ap, err := h.getAppPassword(ctx, p, id, mailbox)
	if err != nil {
		return err
	}
	if err := h.st.DeleteAppPassword(store.WithActor(ctx, p.actor()), ap.ID); err != nil {
		return storeError(err, "")
	}
	return nil
}
