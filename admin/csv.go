package admin

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/facteur/facteur/lookups/passwd"
	"github.com/facteur/facteur/store"
)

// CSV export and import of mailboxes and aliases. An import is checked
// row by row (scope, syntax, password policy) and then run in one
// transaction in which the database checks every row too (limits,
// conflicts); it commits only when every row passed and dry_run is false.
// A failed import writes nothing and answers with the errors of every
// failing line.

const (
	maxCSVBody = 16 << 20
	maxCSVRows = 100000
)

// csvRowError is one failing line of an import.
type csvRowError struct {
	Line    int    `json:"line"`
	Field   string `json:"field,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

type csvResult struct {
	DryRun bool `json:"dry_run"`
	Rows   int  `json:"rows"`
}

// spreadsheetSafe defuses a free-text cell that a spreadsheet would run as
// a formula (CSV injection) by prefixing a quote, which unspreadsheetSafe
// removes again on import.
func spreadsheetSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func unspreadsheetSafe(s string) string {
	if len(s) > 1 && s[0] == '\'' && strings.ContainsRune("=+-@\t\r", rune(s[1])) {
		return s[1:]
	}
	return s
}

func writeCSV(w http.ResponseWriter, name string, header []string, rows [][]string) error {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	cw := csv.NewWriter(w)
	if err := cw.Write(header); err != nil {
		return err
	}
	if err := cw.WriteAll(rows); err != nil {
		return fmt.Errorf("write CSV: %w", err)
	}
	return nil
}

func optInt(v *int64) string {
	if v == nil {
		return ""
	}
	return strconv.FormatInt(*v, 10)
}

func (h *Handler) apiExportMailboxes(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	o.Limit, o.Offset = 0, 0
	ms, err := h.st.ListMailboxes(r.Context(), o)
	if err != nil {
		return err
	}
	rows := make([][]string, len(ms))
	for i, m := range ms {
		rows[i] = []string{m.Address, spreadsheetSafe(m.Name), optInt(m.QuotaBytes), strconv.FormatBool(m.Active),
			strconv.FormatInt(m.UsedBytes, 10), strconv.FormatInt(m.UsedMessages, 10)}
	}
	return writeCSV(w, "mailboxes.csv", []string{"address", "name", "quota_bytes", "active", "used_bytes", "used_messages"}, rows)
}

func (h *Handler) apiExportAliases(w http.ResponseWriter, r *http.Request, p *principal) error {
	o, err := listOptions(r, p)
	if err != nil {
		return err
	}
	o.Limit, o.Offset = 0, 0
	as, err := h.st.ListAliases(r.Context(), o)
	if err != nil {
		return err
	}
	rows := make([][]string, len(as))
	for i, a := range as {
		rows[i] = []string{a.Address, spreadsheetSafe(strings.Join(a.Destinations, " ")),
			spreadsheetSafe(a.Description), strconv.FormatBool(a.Active)}
	}
	return writeCSV(w, "aliases.csv", []string{"address", "destinations", "description", "active"}, rows)
}

// csvInput is a parsed import: the column index of each header name and
// the records with their line numbers.
type csvInput struct {
	col     map[string]int
	records [][]string
	lines   []int
	dryRun  bool
}

func (in *csvInput) get(rec []string, name string) (string, bool) {
	i, ok := in.col[name]
	if !ok || i >= len(rec) {
		return "", false
	}
	return strings.TrimSpace(rec[i]), true
}

// readCSV reads a text/csv body with a header row of known columns
// (address required), and the dry_run query parameter.
func readCSV(w http.ResponseWriter, r *http.Request, known []string) (*csvInput, error) {
	if err := requireContentType(r, "text/csv"); err != nil {
		return nil, err
	}
	dryRun := false
	switch v := r.URL.Query().Get("dry_run"); v {
	case "", "false", "0":
	case "true", "1":
		dryRun = true
	default:
		return nil, errBadRequest("dry_run", "dry_run is true or false")
	}
	return parseCSV(http.MaxBytesReader(w, r.Body, maxCSVBody), known, dryRun)
}

// parseCSV reads CSV text with a header row of known columns (address
// required), at most maxCSVRows records.
func parseCSV(rd io.Reader, known []string, dryRun bool) (*csvInput, error) {
	in := &csvInput{col: map[string]int{}, dryRun: dryRun}
	cr := csv.NewReader(rd)
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		return nil, csvReadError(err)
	}
	for i, name := range header {
		name = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(name, "\ufeff")))
		if !slices.Contains(known, name) {
			return nil, errBadRequest(name, "unknown column %q (columns: %s)", truncate(name, 40), strings.Join(known, ", "))
		}
		if _, dup := in.col[name]; dup {
			return nil, errBadRequest(name, "column %q appears twice", name)
		}
		in.col[name] = i
	}
	if _, ok := in.col["address"]; !ok {
		return nil, errBadRequest("address", "the address column is required")
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvReadError(err)
		}
		if len(in.records) == maxCSVRows {
			return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge,
				Message: fmt.Sprintf("at most %d rows per import", maxCSVRows)}
		}
		line, _ := cr.FieldPos(0)
		in.records = append(in.records, rec)
		in.lines = append(in.lines, line)
	}
	return in, nil
}

func csvReadError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge, Message: "the body is too large"}
	}
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return errBadRequest("", "CSV line %d: %v", pe.Line, pe.Err)
	}
	if errors.Is(err, io.EOF) {
		return errBadRequest("", "the CSV is empty: a header row is required")
	}
	return errBadRequest("", "malformed CSV")
}

// rowError turns the error of one row into its line's entry.
func rowError(line int, err error) csvRowError {
	var ae *apiError
	if errors.As(storeError(err, ""), &ae) {
		return csvRowError{Line: line, Field: ae.Field, Code: ae.Code, Message: ae.Message}
	}
	return csvRowError{Line: line, Code: codeInvalid, Message: "rejected"}
}

func parseBoolCell(s, field string) (bool, error) {
	switch strings.ToLower(s) {
	case "", "true", "1", "yes", "y":
		return true, nil
	case "false", "0", "no", "n":
		return false, nil
	}
	return false, errInvalid(field, "%s is true or false", field)
}

// finishImport runs the database part of an import. A failure of any row
// is an *apiError with code invalid_rows whose Extra["rows"] lists every
// failing line ([]csvRowError); nothing was written.
func finishImport(in *csvInput, rowErrs []csvRowError, idx []int,
	run func(dryRun bool) ([]store.RowError, error)) (csvResult, error) {
	dbErrs, err := run(in.dryRun || len(rowErrs) > 0)
	if err != nil {
		return csvResult{}, err
	}
	for _, e := range dbErrs {
		rowErrs = append(rowErrs, rowError(in.lines[idx[e.Row]], e.Err))
	}
	if len(rowErrs) > 0 {
		slices.SortStableFunc(rowErrs, func(a, b csvRowError) int { return a.Line - b.Line })
		return csvResult{}, &apiError{Status: http.StatusUnprocessableEntity, Code: codeInvalidRows,
			Message: fmt.Sprintf("%d of %d rows failed; nothing was written", len(rowErrs), len(in.records)),
			Extra:   map[string]any{"rows": rowErrs}}
	}
	return csvResult{DryRun: in.dryRun, Rows: len(in.records)}, nil
}

// writeImport writes the answer to an import.
func writeImport(w http.ResponseWriter, res csvResult, err error) error {
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if res.DryRun {
		status = http.StatusOK
	}
	writeJSON(w, status, res)
	return nil
}

// apiImportMailboxes is POST /api/v1/csv/mailboxes[?dry_run=true], a
// text/csv body with columns address, name, password (clear text, checked
// against the policy and hashed), password_hash (a stored {SCHEME} hash, a
// superadmin's only), quota_bytes and active. A dry run hashes nothing.
func (h *Handler) apiImportMailboxes(w http.ResponseWriter, r *http.Request, p *principal) error {
	in, err := readCSV(w, r, mailboxCSVColumns)
	if err != nil {
		return err
	}
	res, err := h.importMailboxes(r.Context(), p, in)
	return writeImport(w, res, err)
}

// mailboxCSVColumns are the columns of a mailbox import.
var mailboxCSVColumns = []string{"address", "name", "password", "password_hash", "quota_bytes", "active"}

// importMailboxes checks and imports the mailbox rows of in.
func (h *Handler) importMailboxes(ctx context.Context, p *principal, in *csvInput) (csvResult, error) {
	if _, ok := in.col["password_hash"]; ok && !p.isSuper() {
		return csvResult{}, errForbidden("password_hash", "only a superadmin may import password hashes")
	}
	var rowErrs []csvRowError
	var rows []store.Mailbox
	var idx []int
	for i, rec := range in.records {
		m, err := h.mailboxRow(p, in, rec)
		if err != nil {
			rowErrs = append(rowErrs, rowError(in.lines[i], err))
			continue
		}
		rows = append(rows, m)
		idx = append(idx, i)
	}
	// Hash only for an import that can commit; otherwise nothing is
	// written and the clear-text marks are dropped.
	commit := !in.dryRun && len(rowErrs) == 0
	for i := range rows {
		plain, ok := strings.CutPrefix(rows[i].Password, plainMark)
		if !ok {
			continue
		}
		rows[i].Password = ""
		if !commit {
			continue
		}
		hash, err := h.hash(ctx, plain)
		if err != nil {
			rowErrs = append(rowErrs, rowError(in.lines[idx[i]], err))
			commit = false
			continue
		}
		rows[i].Password = hash
	}
	return finishImport(in, rowErrs, idx, func(dryRun bool) ([]store.RowError, error) {
		return h.st.ImportMailboxes(store.WithActor(ctx, p.actor()), rows, dryRun)
	})
}

// plainMark marks a clear-text password among checked rows, until it is
// hashed; NUL cannot occur in a password, so no hash starts with it.
const plainMark = "\x00plain:"

// mailboxRow checks one mailbox row. A clear-text password is returned
// marked (NUL cannot be in a password) and hashed only for a real import.
func (h *Handler) mailboxRow(p *principal, in *csvInput, rec []string) (store.Mailbox, error) {
	raw, _ := in.get(rec, "address")
	addr, err := scopedAddress(p, raw, "address")
	if err != nil {
		return store.Mailbox{}, err
	}
	m := store.Mailbox{Address: addr}
	if v, ok := in.get(rec, "name"); ok {
		m.Name = unspreadsheetSafe(v)
	}
	pw, _ := in.get(rec, "password")
	hash, _ := in.get(rec, "password_hash")
	switch {
	case pw != "" && hash != "":
		return store.Mailbox{}, errInvalid("password", "give password or password_hash, not both")
	case pw != "":
		local, _ := splitAddress(addr)
		if err := h.checkPassword(pw, addr, local); err != nil {
			return store.Mailbox{}, err
		}
		m.Password = plainMark + pw
	case hash != "":
		if _, ok := passwd.Scheme(hash); !ok {
			return store.Mailbox{}, errInvalid("password_hash", "a hash is {SCHEME}value")
		}
		if _, _, err := h.opts.Hasher.Verify(hash, "\x01probe"); err != nil {
			return store.Mailbox{}, errInvalid("password_hash", "a hash of an unknown or malformed scheme")
		}
		m.Password = hash
	default:
		return store.Mailbox{}, errInvalid("password", "a password is required")
	}
	if v, _ := in.get(rec, "quota_bytes"); v != "" {
		q, err := strconv.ParseInt(v, 10, 64)
		if err != nil || q <= 0 {
			return store.Mailbox{}, errInvalid("quota_bytes", "quota_bytes is a positive integer (empty: the domain's default)")
		}
		m.QuotaBytes = &q
	}
	v, _ := in.get(rec, "active")
	if m.Active, err = parseBoolCell(v, "active"); err != nil {
		return store.Mailbox{}, err
	}
	return m, nil
}

// apiImportAliases is POST /api/v1/csv/aliases[?dry_run=true], a text/csv
// body with columns address (or @domain), destinations (separated by
// spaces, commas or semicolons), description and active.
func (h *Handler) apiImportAliases(w http.ResponseWriter, r *http.Request, p *principal) error {
	in, err := readCSV(w, r, aliasCSVColumns)
	if err != nil {
		return err
	}
	res, err := h.importAliases(r.Context(), p, in)
	return writeImport(w, res, err)
}

// aliasCSVColumns are the columns of an alias import.
var aliasCSVColumns = []string{"address", "destinations", "description", "active"}

// importAliases checks and imports the alias rows of in.
func (h *Handler) importAliases(ctx context.Context, p *principal, in *csvInput) (csvResult, error) {
	var rowErrs []csvRowError
	var rows []store.Alias
	var idx []int
	for i, rec := range in.records {
		a, err := aliasRow(p, in, rec)
		if err != nil {
			rowErrs = append(rowErrs, rowError(in.lines[i], err))
			continue
		}
		rows = append(rows, a)
		idx = append(idx, i)
	}
	return finishImport(in, rowErrs, idx, func(dryRun bool) ([]store.RowError, error) {
		return h.st.ImportAliases(store.WithActor(ctx, p.actor()), rows, dryRun)
	})
}

func aliasRow(p *principal, in *csvInput, rec []string) (store.Alias, error) {
	raw, _ := in.get(rec, "address")
	addr, err := scopedAliasAddress(p, raw, "address")
	if err != nil {
		return store.Alias{}, err
	}
	v, _ := in.get(rec, "destinations")
	fields := strings.FieldsFunc(unspreadsheetSafe(v), func(r rune) bool { return r == ' ' || r == ',' || r == ';' || r == '\t' })
	dests, err := checkDestinations(p, fields, "destinations")
	if err != nil {
		return store.Alias{}, err
	}
	if len(dests) == 0 {
		return store.Alias{}, errInvalid("destinations", "an alias needs at least one destination")
	}
	a := store.Alias{Address: addr, Destinations: dests}
	if d, ok := in.get(rec, "description"); ok {
		a.Description = unspreadsheetSafe(d)
	}
	act, _ := in.get(rec, "active")
	if a.Active, err = parseBoolCell(act, "active"); err != nil {
		return store.Alias{}, err
	}
	return a, nil
}
