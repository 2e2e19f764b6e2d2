package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store"
)

// apiError is an error with the HTTP status and the body the client sees:
// {"error": {"code", "message", "field"}}. Operations return it for
// anything the client did wrong; every other error becomes a 500 whose
// details go to the log only.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// Extra is merged into the top level of the body (the per-row errors
	// of a CSV import).
	Extra map[string]any `json:"-"`
}

func (e *apiError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s (%s): %s", e.Code, e.Field, e.Message)
	}
	return e.Code + ": " + e.Message
}

// Error codes. A client branches on the code, never on the message.
const (
	codeBadRequest       = "bad_request"       // malformed JSON, unknown field, bad query parameter
	codeUnsupportedMedia = "unsupported_media" // the body is not application/json (or text/csv)
	codeUnauthenticated  = "unauthenticated"   // no or bad credentials
	codeTOTPRequired     = "totp_required"     // the password was right; a TOTP code is needed
	codeForbidden        = "forbidden"         // the principal may not do this
	codeForbiddenDest    = "forbidden_destination"
	codeTLSRequired      = "tls_required"       // plain HTTP from a non-loopback client
	codeCrossOrigin      = "cross_origin"       // refused by the CSRF check
	codeNotFound         = "not_found"          // no such object, or not one the principal may see
	codeMethod           = "method_not_allowed" // the path exists for other methods
	codeConflict         = "conflict"
	codeInUse            = "in_use"
	codeInvalid          = "invalid"        // a rule of facteur's was broken (422)
	codeLimitExceeded    = "limit_exceeded" // a domain limit (422)
	codeWeakPassword     = "weak_password"  // the password policy (422)
	codeThrottled        = "too_many_attempts"
	codeTooLarge         = "too_large"
	codeInvalidRows      = "invalid_rows" // a CSV import with failing rows; nothing written
	codeInternal         = "internal"
	codeUnavailable      = "unavailable"
)

func errBadRequest(field, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: codeBadRequest, Field: field, Message: fmt.Sprintf(format, args...)}
}

func errInvalid(field, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusUnprocessableEntity, Code: codeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

func errForbidden(field, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusForbidden, Code: codeForbidden, Field: field, Message: fmt.Sprintf(format, args...)}
}

// errNotFound is the answer for objects that do not exist and for objects
// outside the principal's scope alike, so that a domain admin cannot tell
// them apart: the message never names the object.
func errNotFound(field string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: codeNotFound, Field: field, Message: "not found"}
}

func errUnauthenticated() *apiError {
	return &apiError{Status: http.StatusUnauthorized, Code: codeUnauthenticated, Message: "authentication required"}
}

// storeError maps an error from the store to the client's error. field
// names the input the error is about, if any. Messages of the database's
// guards are written for people and only ever concern objects the
// principal was allowed to name; a not-found never says what was missing.
func storeError(err error, field string) error {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	msg := func() string {
		var se *store.Error
		if errors.As(err, &se) {
			return se.Message
		}
		return "rejected"
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errNotFound(field)
	case errors.Is(err, store.ErrConflict):
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Field: field, Message: msg()}
	case errors.Is(err, store.ErrInUse):
		return &apiError{Status: http.StatusConflict, Code: codeInUse, Field: field, Message: msg()}
	case errors.Is(err, store.ErrLimitExceeded):
		return &apiError{Status: http.StatusUnprocessableEntity, Code: codeLimitExceeded, Field: field, Message: msg()}
	case errors.Is(err, store.ErrInvalid):
		return &apiError{Status: http.StatusUnprocessableEntity, Code: codeInvalid, Field: field, Message: msg()}
	case errors.Is(err, passwd.ErrPasswordTooLong), errors.Is(err, passwd.ErrInvalidPassword):
		return &apiError{Status: http.StatusUnprocessableEntity, Code: codeWeakPassword, Field: "password",
			Message: "the password cannot be hashed: " + strings.TrimPrefix(err.Error(), "passwd: ")}
	}
	return err
}

// writeJSON writes v with status. HTML-significant characters are escaped
// (encoding/json's default), so a JSON body is never script in a browser.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v) // the client went away: nothing to do
}

// writeError writes err as the error body: an *apiError as it is, anything
// else as a 500 whose details go to the log only.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var ae *apiError
	if !errors.As(storeError(err, ""), &ae) {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "internal error"}
	}
	body := map[string]any{"error": ae}
	for k, v := range ae.Extra {
		body[k] = v
	}
	if ae.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="facteur"`)
	}
	writeJSON(w, ae.Status, body)
}

// maxBody is the largest JSON body accepted.
const maxBody = 1 << 20

// decodeJSON reads the request body into v: the content type must be
// application/json, the body at most maxBody, one JSON value, and every
// field known to v (so that a client cannot set a field it may not, such
// as superadmin, by adding it to the body).
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if err := requireContentType(r, "application/json"); err != nil {
		return err
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errBadRequest("", "the body must hold one JSON value")
	}
	return nil
}

func requireContentType(r *http.Request, want string) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != want {
		return &apiError{Status: http.StatusUnsupportedMediaType, Code: codeUnsupportedMedia,
			Message: "the body must be " + want}
	}
	return nil
}

func jsonError(err error) error {
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &mbe):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge, Message: "the body is too large"}
	case errors.As(err, &ute):
		return errBadRequest(ute.Field, "%s must be of JSON type %s", fieldName(ute.Field), ute.Type.Kind())
	case errors.As(err, &se):
		return errBadRequest("", "malformed JSON at byte %d", se.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errBadRequest("", "the body is empty or cut short")
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		f, _ = strconv.Unquote(f)
		return errBadRequest(f, "unknown field %q", f)
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return errBadRequest("", "malformed JSON: %s", err.Error())
}

func fieldName(f string) string {
	if f == "" {
		return "the value"
	}
	return f
}

// opt is a JSON field that distinguishes absent (Set false), null (Set
// true, Null true) and a value, for PATCH bodies of nullable columns.
type opt[T any] struct {
	Set   bool
	Null  bool
	Value T
}

func (o *opt[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if string(b) == "null" {
		o.Null = true
		return nil
	}
	return json.Unmarshal(b, &o.Value)
}

// nullable converts o to the store's update of a nullable column.
func (o opt[T]) nullable() store.Nullable[T] {
	switch {
	case !o.Set:
		return store.Nullable[T]{}
	case o.Null:
		return store.SetNull[T]()
	}
	return store.SetValue(o.Value)
}

// ptr returns o's value as a pointer: nil when absent or null.
func (o opt[T]) ptr() *T {
	if !o.Set || o.Null {
		return nil
	}
	v := o.Value
	return &v
}

// page is the body of every list: one page of items and the total count.
type page[T any] struct {
	Items  []T   `json:"items"`
	Total  int64 `json:"total"`
	Limit  int   `json:"limit"`
	Offset int   `json:"offset"`
}

// Paging limits.
const (
	defaultLimit = 50
	maxLimit     = 1000
)

// listOptions reads search, domain, limit and offset from the query and
// applies the principal's scope. A domain outside the scope is not an
// error: the query finds nothing, as it would for a domain that does not
// exist.
func listOptions(r *http.Request, p *principal) (store.ListOptions, error) {
	q := r.URL.Query()
	o := store.ListOptions{Search: q.Get("search"), Scope: p.scope(), Limit: defaultLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return o, errBadRequest("limit", "limit must be 1 to %d", maxLimit)
		}
		o.Limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return o, errBadRequest("offset", "offset must be a non-negative integer")
		}
		o.Offset = n
	}
	if v := q.Get("domain"); v != "" {
		d, err := normDomain(v)
		if err != nil {
			return o, errBadRequest("domain", "invalid domain")
		}
		o.Domain = d
	}
	return o, nil
}

// listPage runs list and count with the same options and writes the page.
func listPage[T any](w http.ResponseWriter, o store.ListOptions, items []T, listErr error, total int64, countErr error) error {
	if listErr != nil {
		return listErr
	}
	if countErr != nil {
		return countErr
	}
	writeJSON(w, http.StatusOK, page[T]{Items: items, Total: total, Limit: o.Limit, Offset: o.Offset})
	return nil
}

// renameField returns err with its field from renamed to to, when it is an
// *apiError about from: a rule shared by several inputs (the password
// policy) names the field of the input at hand.
func renameField(err error, from, to string) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.Field == from {
		c := *ae
		c.Field = to
		return &c
	}
	return err
}
