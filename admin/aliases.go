package admin

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/facteur/facteur/store"
)

func (h *Handler) apiListAliases(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	items, lerr := h.st.ListAliases(ctx, o)
	n, cerr := h.st.CountAliases(ctx, o)
	return listPage(w, o, items, lerr, n, cerr)
}

// aliasInput is the body of POST and PATCH /api/v1/aliases. Address is
// local@domain or "@domain" (a catch-all). KeepCopy adds the alias's own
// address to its destinations: forward and keep a copy in the mailbox of
// the same address. On PATCH, destinations replaces the list, and
// add_destinations / remove_destinations edit it.
type aliasInput struct {
	Address            string    `json:"address"`
	Destinations       *[]string `json:"destinations"`
	AddDestinations    []string  `json:"add_destinations"`
	RemoveDestinations []string  `json:"remove_destinations"`
	KeepCopy           bool      `json:"keep_copy"`
	Description        *string   `json:"description"`
	Active             *bool     `json:"active"`
}

func (h *Handler) apiCreateAlias(w http.ResponseWriter, r *http.Request, p *principal) error {
	var in aliasInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.createAlias(r.Context(), p, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// createAlias checks and creates an alias: its address (or catch-all) in
// p's scope, address destinations only.
func (h *Handler) createAlias(ctx context.Context, p *principal, in aliasInput) (store.Alias, error) {
	addr, err := scopedAliasAddress(p, in.Address, "address")
	if err != nil {
		return store.Alias{}, err
	}
	if len(in.AddDestinations) > 0 || len(in.RemoveDestinations) > 0 {
		return store.Alias{}, errInvalid("add_destinations", "use destinations to create an alias")
	}
	if in.KeepCopy && strings.HasPrefix(addr, "@") {
		return store.Alias{}, errInvalid("keep_copy", "a catch-all has no mailbox to keep a copy in")
	}
	var dests []string
	if in.Destinations != nil {
		if dests, err = checkDestinations(p, *in.Destinations, "destinations"); err != nil {
			return store.Alias{}, err
		}
	}
	if in.KeepCopy && !slices.Contains(dests, addr) {
		dests = append(dests, addr)
	}
	if len(dests) == 0 {
		return store.Alias{}, errInvalid("destinations", "an alias needs at least one destination")
	}
	a := store.Alias{Address: addr, Destinations: dests, Active: in.Active == nil || *in.Active}
	if in.Description != nil {
		a.Description = *in.Description
	}
	out, err := h.st.CreateAlias(store.WithActor(ctx, p.actor()), a)
	if err != nil {
		return store.Alias{}, storeError(err, "address")
	}
	return out, nil
}

// getAlias returns the alias raw (an address or @domain in any spelling)
// if p may manage it.
func (h *Handler) getAlias(ctx context.Context, p *principal, raw string) (store.Alias, error) {
	addr, err := scopedAliasAddress(p, raw, "")
	if err != nil {
		return store.Alias{}, err
	}
	a, err := h.st.GetAlias(ctx, addr)
	if err != nil {
		return store.Alias{}, storeError(err, "")
	}
	return a, nil
}

func (h *Handler) apiGetAlias(w http.ResponseWriter, r *http.Request, p *principal) error {
	a, err := h.getAlias(r.Context(), p, r.PathValue("address"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (h *Handler) apiUpdateAlias(w http.ResponseWriter, r *http.Request, p *principal) error {
	addr, err := scopedAliasAddress(p, r.PathValue("address"), "")
	if err != nil {
		return err
	}
	var in aliasInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	out, err := h.updateAlias(r.Context(), p, addr, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// updateAlias changes the alias addr (canonical, in p's scope).
func (h *Handler) updateAlias(ctx context.Context, p *principal, addr string, in aliasInput) (store.Alias, error) {
	if in.Address != "" {
		return store.Alias{}, errInvalid("address", "an alias cannot be renamed")
	}
	if in.KeepCopy && strings.HasPrefix(addr, "@") {
		return store.Alias{}, errInvalid("keep_copy", "a catch-all has no mailbox to keep a copy in")
	}
	patch := store.AliasPatch{Description: in.Description, Active: in.Active}
	if in.Destinations != nil {
		d, err := checkDestinations(p, *in.Destinations, "destinations")
		if err != nil {
			return store.Alias{}, err
		}
		if in.KeepCopy && !slices.Contains(d, addr) {
			d = append(d, addr)
		}
		patch.Destinations = &d
	} else if in.KeepCopy {
		patch.AddDestinations = []string{addr}
	}
	if len(in.AddDestinations) > 0 {
		d, err := checkDestinations(p, in.AddDestinations, "add_destinations")
		if err != nil {
			return store.Alias{}, err
		}
		patch.AddDestinations = append(patch.AddDestinations, d...)
	}
	if len(in.RemoveDestinations) > 0 {
		// Compared exactly with the stored form; normalised when possible.
		d, err := checkDestinations(p, in.RemoveDestinations, "remove_destinations")
		if err != nil {
			d = in.RemoveDestinations
		}
		patch.RemoveDestinations = d
	}
	if in.Active != nil && !*in.Active && h.isProtected(addr) && !p.isSuper() {
		return store.Alias{}, errForbidden("active", "only a superadmin may disable %s", addr)
	}
	out, err := h.st.UpdateAlias(store.WithActor(ctx, p.actor()), addr, patch)
	if err != nil {
		return store.Alias{}, storeError(err, "")
	}
	return out, nil
}

func (h *Handler) apiDeleteAlias(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := h.deleteAlias(r.Context(), p, r.PathValue("address")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteAlias deletes the alias raw if p may: in its scope, and only a
// superadmin deletes a protected address.
func (h *Handler) deleteAlias(ctx context.Context, p *principal, raw string) error {
	addr, err := scopedAliasAddress(p, raw, "")
	if err != nil {
		return err
	}
	if h.isProtected(addr) && !p.isSuper() {
		return errForbidden("", "only a superadmin may delete %s", addr)
	}
	if err := h.st.DeleteAlias(store.WithActor(ctx, p.actor()), addr); err != nil {
		return storeError(err, "")
	}
	return nil
}
