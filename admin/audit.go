package admin

import (
	"net/http"
	"time"

	"github.com/facteur/facteur/store"
)

// apiListAudit is GET /api/v1/audit: the audit log, newest first, filtered
// by table, actor, since/until (RFC 3339), domain and search (the row
// key). A domain admin sees the rows whose domain is one of its domains,
// by query; rows of no domain (admins, tokens, settings) are a
// superadmin's.
func (h *Handler) apiListAudit(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.AuditFilter{ListOptions: o, Table: q.Get("table"), Actor: q.Get("actor")}
	for _, t := range []struct {
		name string
		dst  **time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(t.name); v != "" {
			tm, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return errBadRequest(t.name, "%s must be an RFC 3339 time", t.name)
			}
			*t.dst = &tm
		}
	}
	ctx := r.Context()
	items, lerr := h.st.ListAuditLog(ctx, f)
	n, cerr := h.st.CountAuditLog(ctx, f)
	return listPage(w, o, items, lerr, n, cerr)
}
