package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/facteur/facteur/store"
)

// The audit log.

// auditRow is an audit entry with what changed, for people.
type auditRow struct {
	store.AuditEntry
	Changes []auditChange
	OldJSON string
	NewJSON string
}

type auditChange struct {
	Field, Old, New string
}

// auditTables are the tables the filter offers.
var auditTables = []string{"domain", "alias_domain", "mailbox", "alias", "vacation", "sender_grant", "app_password",
	"transport", "admin", "domain_admin", "api_token", "setting", "queue_message"}

// describeAudit lists the fields an entry changed (for an update), set
// (an insert) or had (a delete), leaving out the timestamps.
func describeAudit(e store.AuditEntry) auditRow {
	row := auditRow{AuditEntry: e, OldJSON: prettyJSON(e.Old), NewJSON: prettyJSON(e.New)}
	var old, nw map[string]json.RawMessage
	_ = json.Unmarshal(e.Old, &old)
	_ = json.Unmarshal(e.New, &nw)
	keys := map[string]bool{}
	for k := range old {
		keys[k] = true
	}
	for k := range nw {
		keys[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if k == "created_at" || k == "updated_at" {
			continue
		}
		o, n := compactJSON(old[k]), compactJSON(nw[k])
		if o == n || (e.Operation == "INSERT" && n == "null") || (e.Operation == "DELETE" && o == "null") {
			continue
		}
		row.Changes = append(row.Changes, auditChange{Field: k, Old: truncate(o, 120), New: truncate(n, 120)})
	}
	return row
}

func compactJSON(b json.RawMessage) string {
	if len(b) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

func prettyJSON(b json.RawMessage) string {
	if len(b) == 0 || string(b) == "null" {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return string(b)
	}
	return buf.String()
}

type auditData struct {
	Domain  string
	Rows    []auditRow
	Pager   pager
	Filter  url.Values
	Tables  []string
	Choices domainChoices
}

// dateParam reads a date (or date and time) query parameter in UTC; end
// moves a bare date to the end of that day.
func dateParam(q url.Values, name string, end bool) (*time.Time, error) {
	v := strings.TrimSpace(q.Get(name))
	if v == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return &t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			if end && layout == "2006-01-02" {
				t = t.AddDate(0, 0, 1)
			}
			return &t, nil
		}
	}
	return nil, errBadRequest(name, "%s must be a date (2026-11-21) or a time", name)
}

func (h *Handler) uiAudit(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.AuditFilter{ListOptions: o, Table: q.Get("table"), Actor: strings.TrimSpace(q.Get("actor"))}
	if f.Since, err = dateParam(q, "since", false); err != nil {
		return err
	}
	if f.Until, err = dateParam(q, "until", true); err != nil {
		return err
	}
	ctx := r.Context()
	items, err := h.st.ListAuditLog(ctx, f)
	if err != nil {
		return err
	}
	n, err := h.st.CountAuditLog(ctx, f)
	if err != nil {
		return err
	}
	c := filterChoices(p)
	rows := make([]auditRow, len(items))
	for i, e := range items {
		rows[i] = describeAudit(e)
	}
	return h.render(w, r, p, http.StatusOK, "audit", uiPage{Title: "Audit log", Section: "audit",
		Data: auditData{Domain: shownDomain(p, o.Domain), Rows: rows, Pager: newPager(r, o, len(rows), n, false), Filter: q, Tables: auditTables, Choices: c}})
}

// The queue.

type queueData struct {
	Domain   string
	Items    []*store.QueueEntry
	Pager    pager
	Filter   url.Values
	Choices  domainChoices
	Statuses []string
	Back     string
}

// queueNotice describes an action's result from the redirect's query:
// only numbers and a known action are read.
func queueNotice(q url.Values) string {
	action := q.Get("did")
	if !slices.Contains(queueActions, action) {
		return ""
	}
	n, _ := strconv.Atoi(q.Get("messages"))
	changed, _ := strconv.Atoi(q.Get("changed"))
	busy, _ := strconv.Atoi(q.Get("busy"))
	s := fmt.Sprintf("%s: %d message(s), %d change(s)", action, n, changed)
	if busy > 0 {
		s += fmt.Sprintf("; %d recipient(s) being delivered were left alone, try again in a moment", busy)
	}
	return s + "."
}

func (h *Handler) uiQueue(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.AdminQueueFilter{Scope: p.scope(), Domain: o.Domain, Search: o.Search, Status: q.Get("status"),
		Limit: o.Limit, Offset: o.Offset}
	ctx := r.Context()
	items, err := h.st.ListQueueIn(ctx, f)
	if err != nil {
		return storeError(err, "status")
	}
	n, err := h.st.CountQueueIn(ctx, f)
	if err != nil {
		return err
	}
	c := filterChoices(p)
	return h.render(w, r, p, http.StatusOK, "queue", uiPage{Title: "Queue", Section: "queue", Notice: queueNotice(q),
		Data: queueData{Domain: shownDomain(p, o.Domain), Items: items, Pager: newPager(r, o, len(items), n, false), Filter: q, Choices: c,
			Statuses: []string{"held", "queued", "deferred", "active", "bounced", "expired"}, Back: r.URL.RequestURI()}})
}

func (h *Handler) uiQueueMessage(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	if !queueIDRE.MatchString(id) {
		return errNotFound("")
	}
	e, err := h.st.QueueEntryIn(r.Context(), id, p.scope())
	if err != nil {
		return storeError(err, "")
	}
	return h.render(w, r, p, http.StatusOK, "queue_message", uiPage{Title: "Message " + e.ID, Section: "queue",
		Notice: queueNotice(r.URL.Query()), Data: e})
}

func (h *Handler) uiQueueAction(w http.ResponseWriter, r *http.Request, p *principal) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	action := f.Get("action")
	sum, err := h.queueAction(r.Context(), p, action, f.All("id"))
	if err != nil {
		return err
	}
	back := safeNext(f.Get("back"), "/queue")
	if action == "delete" || !strings.HasPrefix(back, "/queue") {
		back = "/queue"
	}
	u, _ := url.Parse(back)
	q := u.Query()
	for _, k := range []string{"did", "messages", "changed", "busy", "done"} {
		q.Del(k)
	}
	q.Set("did", sum.Action)
	q.Set("messages", strconv.Itoa(sum.Messages))
	q.Set("changed", strconv.Itoa(sum.Changed))
	q.Set("busy", strconv.Itoa(sum.Busy))
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
	return nil
}

// The delivery log.

type logData struct {
	Domain   string
	Items    []store.DeliveryLogEntry
	Pager    pager
	Filter   url.Values
	Choices  domainChoices
	Statuses []string
}

func (h *Handler) uiDeliveryLog(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := uiListOptions(r, p)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.AdminLogFilter{Scope: p.scope(), Domain: o.Domain, Search: o.Search, Status: q.Get("status"),
		Limit: o.Limit + 1, Offset: o.Offset}
	if t, err := dateParam(q, "since", false); err != nil {
		return err
	} else if t != nil {
		f.Since = *t
	}
	if t, err := dateParam(q, "until", true); err != nil {
		return err
	} else if t != nil {
		f.Until = *t
	}
	ctx := r.Context()
	items, err := h.st.ListDeliveryLogIn(ctx, f)
	if err != nil {
		return storeError(err, "status")
	}
	more := len(items) > o.Limit
	if more {
		items = items[:o.Limit]
	}
	c := filterChoices(p)
	return h.render(w, r, p, http.StatusOK, "log", uiPage{Title: "Delivery log", Section: "log",
		Data: logData{Domain: shownDomain(p, o.Domain), Items: items, Pager: newPager(r, o, len(items), -1, more), Filter: q, Choices: c,
			Statuses: store.LogStatuses}})
}

// CSV import and export.

type csvPageData struct {
	Kind    string // mailboxes or aliases: the import just run
	Result  *csvResult
	Choices domainChoices
	Columns map[string][]string
}

func (h *Handler) renderCSV(w http.ResponseWriter, r *http.Request, p *principal, status int, f *form, kind string, res *csvResult) error {
	c, err := h.domainChoices(r.Context(), p)
	if err != nil {
		return err
	}
	if f == nil {
		v := url.Values{}
		v.Set("dry_run", "on")
		f = newForm(v)
	}
	return h.render(w, r, p, status, "csv", uiPage{Title: "Import and export", Section: "csv", Form: f,
		Data: csvPageData{Kind: kind, Result: res, Choices: c,
			Columns: map[string][]string{"mailboxes": mailboxCSVColumns, "aliases": aliasCSVColumns}}})
}

func (h *Handler) uiCSV(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.renderCSV(w, r, p, http.StatusOK, nil, "", nil)
}

// csvText returns the CSV of an import form: the uploaded file, else the
// text area.
func csvText(r *http.Request, f *form) (string, error) {
	if r.MultipartForm != nil {
		if fh := r.MultipartForm.File["file"]; len(fh) > 0 && fh[0].Size > 0 {
			file, err := fh[0].Open()
			if err != nil {
				return "", err
			}
			defer file.Close()
			b, err := io.ReadAll(io.LimitReader(file, maxCSVBody+1))
			if err != nil {
				return "", err
			}
			if len(b) > maxCSVBody {
				return "", &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge, Message: "the file is too large"}
			}
			return string(b), nil
		}
	}
	return f.Get("csv"), nil
}

func (h *Handler) uiImport(w http.ResponseWriter, r *http.Request, p *principal, kind string) error {
	f, err := postForm(w, r)
	if err != nil {
		return err
	}
	text, err := csvText(r, f)
	if err != nil {
		return err
	}
	fail := func(status int) error { return h.renderCSV(w, r, p, status, f, kind, nil) }
	if strings.TrimSpace(text) == "" {
		f.set("csv", "paste CSV text or choose a file")
		return fail(http.StatusUnprocessableEntity)
	}
	// The form keeps the text (when it fits a form), so that a dry run can
	// be followed by the real import.
	if len(text) <= maxForm {
		f.vals.Set("csv", text)
	}
	f.vals.Set("kind", kind)
	dryRun := f.Checked("dry_run")
	columns, run := mailboxCSVColumns, h.importMailboxes
	if kind == "aliases" {
		columns, run = aliasCSVColumns, h.importAliases
	}
	in, err := parseCSV(strings.NewReader(text), columns, dryRun)
	var res csvResult
	if err == nil {
		res, err = run(r.Context(), p, in)
	}
	if err != nil {
		status, err := f.fail(err, map[string]string{})
		if err != nil {
			return err
		}
		return fail(status)
	}
	if res.DryRun {
		// Next: the real import of the same text.
		f.vals.Set("dry_run", "off")
		return h.renderCSV(w, r, p, http.StatusOK, f, kind, &res)
	}
	return h.renderCSV(w, r, p, http.StatusOK, nil, kind, &res)
}

func (h *Handler) uiImportMailboxes(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.uiImport(w, r, p, "mailboxes")
}

func (h *Handler) uiImportAliases(w http.ResponseWriter, r *http.Request, p *principal) error {
	return h.uiImport(w, r, p, "aliases")
}
