package admin

// The web UI: server-rendered html/template pages over the same operations
// as the JSON API (createMailbox, updateAlias, …) and the same
// authorisation layer (the route table's access rules, scopedDomain and
// friends, the *In store queries). Pages work without JavaScript: links,
// GET forms for filters and plain POST forms for every change, each
// answered by a redirect (POST/redirect/GET) or, when the input was
// refused, by the form again with the message next to its field. A little
// script improves them where it is there: htmx (vendored, static/) filters
// lists as one types, and static/app.js asks before deletions and copies
// secrets. The Content-Security-Policy allows only our own script and
// style files: no inline script, style or event handler anywhere.
//
// CSRF: every change is a POST, which http.CrossOriginProtection checks
// (a browser's Sec-Fetch-Site or Origin must name this site); the session
// cookie is SameSite=Lax too. Nothing changes on GET.

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/facteur/facteur/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// uiAssets are the parsed page templates and the static files with their
// content hashes (for cache-busting URLs).
type uiAssets struct {
	pages   map[string]*template.Template
	static  fs.FS
	version map[string]string
}

// loadUI parses every page template (templates/*.html but the layout and
// partials, each combined with them) and hashes the static files.
func loadUI() (*uiAssets, error) {
	st, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	u := &uiAssets{pages: map[string]*template.Template{}, static: st, version: map[string]string{}}
	files, err := fs.ReadDir(st, ".")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := fs.ReadFile(st, f.Name())
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		u.version[f.Name()] = hex.EncodeToString(sum[:6])
	}
	base, err := template.New("layout.html").Funcs(u.funcs()).ParseFS(templateFS, "templates/layout.html", "templates/_*.html")
	if err != nil {
		return nil, fmt.Errorf("admin: templates: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		name := path.Base(n)
		if name == "layout.html" || strings.HasPrefix(name, "_") {
			continue
		}
		t, err := base.Clone()
		if err != nil {
			return nil, err
		}
		if _, err := t.ParseFS(templateFS, n); err != nil {
			return nil, fmt.Errorf("admin: template %s: %w", name, err)
		}
		u.pages[strings.TrimSuffix(name, ".html")] = t
	}
	return u, nil
}

func (u *uiAssets) funcs() template.FuncMap {
	return template.FuncMap{
		"asset": func(name string) string {
			return "/static/" + name + "?v=" + u.version[name]
		},
		"bytes":     formatBytes,
		"optBytes":  func(v *int64) string { return optBytes(v, "unlimited") },
		"optCount":  optCount,
		"unicode":   unicodeName,
		"when":      formatTime,
		"whenPtr":   func(t *time.Time) string { return formatTimePtr(t, "") },
		"pathEsc":   url.PathEscape,
		"queryEsc":  url.QueryEscape,
		"meterMax":  meterMax,
		"percent":   percent,
		"join":      strings.Join,
		"deref32":   func(v *int32) int64 { return int64(*v) },
		"isNil32":   func(v *int32) bool { return v == nil },
		"isNil64":   func(v *int64) bool { return v == nil },
		"seconds":   formatSeconds,
		"add":       func(a, b int) int { return a + b },
		"contains":  func(list []string, s string) bool { return containsString(list, s) },
		"truncate":  func(s string, n int) string { return truncate(s, n) },
		"lowerCase": strings.ToLower,
		"list":      func(xs ...string) []string { return xs },
		"meterHigh": func(used int64, limit *int64) int64 { return meterMax(used, limit) * 9 / 10 },
		"dict": func(kv ...any) (map[string]any, error) {
			if len(kv)%2 != 0 {
				return nil, errors.New("dict: odd number of arguments")
			}
			m := make(map[string]any, len(kv)/2)
			for i := 0; i < len(kv); i += 2 {
				k, ok := kv[i].(string)
				if !ok {
					return nil, errors.New("dict: keys are strings")
				}
				m[k] = kv[i+1]
			}
			return m, nil
		},
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// formatBytes writes a size for people, in binary units.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string("KMGTP"[exp]) + "iB"
}

func optBytes(v *int64, none string) string {
	if v == nil {
		return none
	}
	return formatBytes(*v)
}

func optCount(v *int32) string {
	if v == nil {
		return "∞"
	}
	return strconv.Itoa(int(*v))
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func formatTimePtr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return formatTime(*t)
}

func formatSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Second / 10)
	return d.String()
}

// meterMax is the max attribute of a usage meter: the limit, or the used
// amount when there is none (so that the meter shows full, not broken).
func meterMax(used int64, limit *int64) int64 {
	if limit == nil || *limit <= 0 {
		return max(used, 1)
	}
	return *limit
}

// percent is used/limit in whole percent ("" without a limit).
func percent(used int64, limit *int64) string {
	if limit == nil || *limit <= 0 {
		return ""
	}
	return strconv.Itoa(int(math.Round(100*float64(used)/float64(*limit)))) + "%"
}

// viewer is who a page is rendered for, as the layout shows it.
type viewer struct {
	Kind       string // admin, token, mailbox, or "" (anonymous)
	Username   string
	Superadmin bool
	Mailbox    string
	Domains    []string // a domain admin's; nil for a superadmin
}

func viewerOf(p *principal) viewer {
	if p == nil {
		return viewer{}
	}
	v := viewer{Kind: p.kind.String(), Username: p.username, Superadmin: p.isSuper(), Mailbox: p.mailbox}
	if p.isAdmin() && !p.isSuper() {
		v.Domains = p.domains
	}
	return v
}

// IsAdmin reports whether the viewer is an admin (session or token).
func (v viewer) IsAdmin() bool { return v.Kind == "admin" || v.Kind == "token" }

// uiPage is what every page template receives.
type uiPage struct {
	Title   string
	Section string // the navigation entry to mark as current
	Viewer  viewer
	Notice  string // a confirmation after a redirect
	Form    *form
	Data    any
	// Policy describes the password rules next to password fields.
	Policy string
}

// form is a submitted (or to be filled) form: its values and the errors
// to show next to each field.
type form struct {
	vals  url.Values
	errs  map[string]string
	Error string // about no single field
	// Rows are the failing lines of a CSV import.
	Rows []csvRowError
}

func newForm(vals url.Values) *form {
	if vals == nil {
		vals = url.Values{}
	}
	return &form{vals: vals, errs: map[string]string{}}
}

// Get returns the value of field.
func (f *form) Get(field string) string {
	if f == nil {
		return ""
	}
	return f.vals.Get(field)
}

// All returns every value of field.
func (f *form) All(field string) []string {
	if f == nil {
		return nil
	}
	return f.vals[field]
}

// Checked reports whether a checkbox field was checked. A checkbox comes
// after a hidden field of the same name and the value "off", so that an
// unchecked box is still sent (and "absent" means "not on this form"): the
// last value counts.
func (f *form) Checked(field string) bool {
	if f == nil {
		return false
	}
	vs := f.vals[field]
	if len(vs) == 0 {
		return false
	}
	v := vs[len(vs)-1]
	return v != "" && v != "0" && v != "false" && v != "off"
}

// Present reports whether the form has field at all.
func (f *form) Present(field string) bool {
	if f == nil {
		return false
	}
	_, ok := f.vals[field]
	return ok
}

// boolPtr returns the checkbox field as a *bool, nil when the form does
// not have it.
func (f *form) boolPtr(field string) *bool {
	if !f.Present(field) {
		return nil
	}
	b := f.Checked(field)
	return &b
}

// strPtr returns the field as a *string, nil when the form does not have
// it.
func (f *form) strPtr(field string) *string {
	if !f.Present(field) {
		return nil
	}
	s := f.Get(field)
	return &s
}

// Err returns the error of field ("" if none).
func (f *form) Err(field string) string {
	if f == nil {
		return ""
	}
	return f.errs[field]
}

// HasErrors reports whether the form has any error.
func (f *form) HasErrors() bool {
	return f != nil && (len(f.errs) > 0 || f.Error != "" || len(f.Rows) > 0)
}

// set records an error for field (the form's general error when field is
// not one of the form's fields).
func (f *form) set(field, msg string) {
	if field == "" {
		f.Error = msg
		return
	}
	if _, dup := f.errs[field]; !dup {
		f.errs[field] = msg
	}
}

// fail records err on the form: an *apiError next to its field, renamed
// through fields (API field → form field; a field not listed is shown as
// the form's general error). It returns the HTTP status to answer with, or
// err itself when it is not the client's error (a 500).
func (f *form) fail(err error, fields map[string]string) (int, error) {
	var ae *apiError
	if !errors.As(storeError(err, ""), &ae) {
		return 0, err
	}
	if rows, ok := ae.Extra["rows"].([]csvRowError); ok {
		f.Rows = rows
	}
	field, ok := fields[ae.Field]
	if !ok {
		field = ""
	}
	if ae.Field != "" && field == "" {
		// A field the form does not show: name it in the message.
		f.set("", ae.Field+": "+ae.Message)
	} else {
		f.set(field, ae.Message)
	}
	return ae.Status, nil
}

// same maps each field to itself, for forms whose fields are named as the
// API's.
func same(fields ...string) map[string]string {
	m := make(map[string]string, len(fields))
	for _, f := range fields {
		m[f] = f
	}
	return m
}

// notices are the confirmations a redirect after a change shows, by the
// done= code it carries (a fixed set: nothing from the query is shown).
var notices = map[string]string{
	"created":        "Created.",
	"updated":        "Saved.",
	"deleted":        "Deleted.",
	"revoked":        "Revoked.",
	"granted":        "Granted.",
	"password":       "The password was changed.",
	"vacation":       "The vacation reply was saved.",
	"vacation-off":   "The vacation reply was removed.",
	"forwarding":     "Forwarding was saved.",
	"forwarding-off": "Forwarding was stopped.",
	"totp-on":        "Two-factor authentication is on.",
	"totp-off":       "Two-factor authentication is off.",
	"queue":          "Done.",
}

// render writes the page template name with status.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, p *principal, status int, name string, pg uiPage) error {
	t, ok := h.ui.pages[name]
	if !ok {
		return fmt.Errorf("admin: no page template %q", name)
	}
	pg.Viewer = viewerOf(p)
	if pg.Notice == "" {
		pg.Notice = notices[r.URL.Query().Get("done")]
	}
	if pg.Policy == "" {
		pg.Policy = h.policyText()
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", pg); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// A page with a secret shown once must not be kept by anyone.
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// policyText describes the password policy for people.
func (h *Handler) policyText() string {
	pol := h.opts.Password
	s := fmt.Sprintf("At least %d characters", pol.MinLength)
	if pol.MinClasses > 1 {
		s += fmt.Sprintf(", mixing at least %d of lower case, upper case, digits and other characters", pol.MinClasses)
	}
	return s + "; not the account's own name or address."
}

// redirect answers a POST with a redirect to a page (303: the browser
// follows it with GET), with a confirmation code.
func redirect(w http.ResponseWriter, r *http.Request, to, done string) error {
	if done != "" {
		sep := "?"
		if strings.Contains(to, "?") {
			sep = "&"
		}
		to += sep + "done=" + url.QueryEscape(done)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
	return nil
}

// errorTitles are the titles of error pages by status.
var errorTitles = map[int]string{
	http.StatusBadRequest:            "Bad request",
	http.StatusUnauthorized:          "Please log in",
	http.StatusForbidden:             "Forbidden",
	http.StatusNotFound:              "Not found",
	http.StatusMethodNotAllowed:      "Method not allowed",
	http.StatusConflict:              "Conflict",
	http.StatusRequestEntityTooLarge: "Too large",
	http.StatusUnsupportedMediaType:  "Unsupported form",
	http.StatusUnprocessableEntity:   "Refused",
	http.StatusTooManyRequests:       "Too many attempts",
}

// uiErrorPage writes err as an HTML page: an *apiError with its status and
// message (a not-found never names the object), anything else as a 500
// whose details go to the log only.
func (h *Handler) uiErrorPage(w http.ResponseWriter, r *http.Request, p *principal, err error) {
	var ae *apiError
	if !errors.As(storeError(err, ""), &ae) {
		h.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "internal error"}
	}
	title := errorTitles[ae.Status]
	if title == "" {
		title = "Error"
	}
	msg := ae.Message
	if ae.Status == http.StatusNotFound {
		msg = "There is nothing here, or nothing that you may see."
	}
	data := struct {
		Status  int
		Message string
		Code    string
	}{ae.Status, msg, ae.Code}
	if rerr := h.render(w, r, p, ae.Status, "error", uiPage{Title: title, Data: data}); rerr != nil {
		h.log.ErrorContext(r.Context(), "render error page", "err", rerr)
		http.Error(w, title, ae.Status)
	}
}

// uiDenied answers a page request its route's access rule refused: an
// anonymous visitor goes to the login page (back here after it), anyone
// else gets the error page.
func (h *Handler) uiDenied(w http.ResponseWriter, r *http.Request, p *principal, a access, err error) {
	var ae *apiError
	if p == nil && errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		login := "/login"
		if a == mailboxSession {
			login = "/user/login"
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			login += "?next=" + url.QueryEscape(r.URL.RequestURI())
		}
		http.Redirect(w, r, login, http.StatusSeeOther)
		return
	}
	h.uiErrorPage(w, r, p, err)
}

// safeNext returns next if it is a path of this site, else def: a login
// never redirects elsewhere.
func safeNext(next, def string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") ||
		strings.HasPrefix(next, "/\\") || strings.ContainsAny(next, "\r\n") {
		return def
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || !isUIPath(u.Path) {
		return def
	}
	return next
}

// maxForm bounds a urlencoded form body.
const maxForm = 1 << 20

// parseForm reads a POST form body (urlencoded, or multipart with a file
// of at most maxCSVBody), so that its values are in r.PostForm.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var err error
	if mt == "multipart/form-data" {
		r.Body = http.MaxBytesReader(w, r.Body, maxCSVBody+maxForm)
		err = r.ParseMultipartForm(maxForm)
	} else {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		err = r.ParseForm()
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge, Message: "the form is too large"}
		}
		return errBadRequest("", "malformed form")
	}
	return nil
}

// postForm parses the request's form and returns it as a form.
func postForm(w http.ResponseWriter, r *http.Request) (*form, error) {
	if err := parseForm(w, r); err != nil {
		return nil, err
	}
	return newForm(r.PostForm), nil
}

// Field parsers: each records an error on f and returns ok false.

// optionalInt32 reads a whole number; "" is unset. set is true when the
// field was given (empty or not) and the form means to change it.
func (f *form) optInt32(field string) (opt[int32], bool) {
	v := strings.TrimSpace(f.Get(field))
	if v == "" {
		return opt[int32]{Set: true, Null: true}, true
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n < 0 {
		f.set(field, "a whole number, or empty for no limit")
		return opt[int32]{}, false
	}
	return opt[int32]{Set: true, Value: int32(n)}, true
}

// optMiB reads a size in MiB into bytes; "" is null.
func (f *form) optMiB(field string) (opt[int64], bool) {
	v := strings.TrimSpace(f.Get(field))
	if v == "" {
		return opt[int64]{Set: true, Null: true}, true
	}
	x, err := strconv.ParseFloat(v, 64)
	if err != nil || x <= 0 || x > 1<<40 || math.IsNaN(x) {
		f.set(field, "a positive number of MiB, or empty")
		return opt[int64]{}, false
	}
	return opt[int64]{Set: true, Value: int64(math.Round(x * (1 << 20)))}, true
}

// optTime reads a datetime-local (or date) field in UTC; "" is nil.
func (f *form) optTime(field string) (*time.Time, bool) {
	v := strings.TrimSpace(f.Get(field))
	if v == "" {
		return nil, true
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return &t, true
		}
	}
	f.set(field, "a date and time such as 2026-12-24T18:00 (UTC)")
	return nil, false
}

// mib writes bytes as MiB for a form field ("" for nil).
func mib(v *int64) string {
	if v == nil {
		return ""
	}
	x := float64(*v) / (1 << 20)
	return strconv.FormatFloat(x, 'f', -1, 64)
}

// boolField is "on" for a checked checkbox value.
func boolField(b bool) string {
	if b {
		return "on"
	}
	return ""
}

// datetimeLocal writes a time for a datetime-local field, in UTC.
func datetimeLocal(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04")
}

// splitList splits a list typed by people (one per line, or separated by
// commas, semicolons or spaces).
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ';' || r == ' ' || r == '\n' || r == '\r' || r == '\t'
	})
}

// pager is the paging of a list page.
type pager struct {
	Total      int64
	From, To   int64
	Prev, Next string // URLs, "" at the ends
	HasTotal   bool
}

// newPager computes the paging links of a list showing n items at
// o.Offset of total (total < 0: unknown, more is whether a next page
// exists).
func newPager(r *http.Request, o store.ListOptions, n int, total int64, more bool) pager {
	pg := pager{Total: total, HasTotal: total >= 0}
	if n > 0 {
		pg.From, pg.To = int64(o.Offset)+1, int64(o.Offset+n)
	}
	link := func(offset int) string {
		q := r.URL.Query()
		q.Del("done")
		if offset > 0 {
			q.Set("offset", strconv.Itoa(offset))
		} else {
			q.Del("offset")
		}
		if s := q.Encode(); s != "" {
			return r.URL.Path + "?" + s
		}
		return r.URL.Path
	}
	if o.Offset > 0 {
		pg.Prev = link(max(o.Offset-o.Limit, 0))
	}
	if (pg.HasTotal && int64(o.Offset+n) < total) || (!pg.HasTotal && more) {
		pg.Next = link(o.Offset + o.Limit)
	}
	return pg
}

// uiListOptions reads the list options of a page (search, domain, offset)
// with the page size of the UI, scoped to p.
func uiListOptions(r *http.Request, p *principal) (store.ListOptions, error) {
	o, err := listOptions(r, p)
	if err != nil {
		return o, err
	}
	if r.URL.Query().Get("limit") == "" {
		o.Limit = defaultLimit
	}
	return o, nil
}

// serveStatic serves the embedded static files (GET /static/{file}).
func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request, _ *principal) error {
	name := r.PathValue("file")
	if name == "" || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
		return errNotFound("")
	}
	b, err := fs.ReadFile(h.ui.static, name)
	if err != nil {
		return errNotFound("")
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	if r.URL.Query().Get("v") == h.ui.version[name] {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=300")
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, err = w.Write(b)
	}
	return err
}

// shownDomain is the domain filter a list page shows (in its links and
// forms): the one asked for when p may see it, else none, so that a page
// never repeats a foreign name it was given.
func shownDomain(p *principal, d string) string {
	if d == "" || !p.inScope(d) {
		return ""
	}
	return d
}
