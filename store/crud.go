package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ListOptions selects one page of a listing. The zero value lists every row.
type ListOptions struct {
	// Search keeps rows whose key contains this text, case-insensitively
	// (ILIKE; % and _ match themselves).
	Search string
	// Domain keeps the rows of this one domain ("" = any domain).
	Domain string
	// Scope keeps the rows of these domains only: the domains an admin may
	// manage. nil means no restriction (a superadmin, the CLI); an empty,
	// non-nil slice matches nothing. Ignored by tables that no domain owns.
	Scope []string
	// Limit is the page size; 0 or less means no limit.
	Limit int
	// Offset skips that many rows (ordered by key).
	Offset int
}

// limit returns the LIMIT argument: NULL means LIMIT ALL.
func (o ListOptions) limit() *int {
	if o.Limit <= 0 {
		return nil
	}
	return &o.Limit
}

func (o ListOptions) offset() int {
	if o.Offset < 0 {
		return 0
	}
	return o.Offset
}

// searchPattern turns the search text into an ILIKE pattern matching it as
// a substring, with the LIKE metacharacters escaped (” matches everything).
func (o ListOptions) searchPattern() string {
	return "%" + escapeLike(o.Search) + "%"
}

// escapeLike escapes \, % and _ for LIKE/ILIKE with the default escape
// character (backslash).
func escapeLike(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// scope returns the Scope argument: a nil slice is sent as NULL ("all").
func (o ListOptions) scope() []string {
	return o.Scope
}

// Nullable is an update of a column that may be NULL (an optional limit,
// where NULL means unlimited; an optional transport). The zero value leaves
// the column as it is.
type Nullable[T any] struct {
	Set   bool // change the column
	Value *T   // the new value; nil stores NULL
}

// SetValue returns a Nullable that stores v.
func SetValue[T any](v T) Nullable[T] { return Nullable[T]{Set: true, Value: &v} }

// SetNull returns a Nullable that stores NULL.
func SetNull[T any]() Nullable[T] { return Nullable[T]{Set: true} }

// setList builds the SET clause of an UPDATE from explicit columns. Column
// names are constants of this package, never input.
type setList struct {
	cols []string
	args []any
}

// arg adds a positional argument and returns its placeholder.
func (s *setList) arg(v any) string {
	s.args = append(s.args, v)
	return fmt.Sprintf("$%d", len(s.args))
}

func (s *setList) set(col string, v any) {
	s.cols = append(s.cols, col+" = "+s.arg(v))
}

func setIf[T any](s *setList, col string, v *T) {
	if v != nil {
		s.set(col, *v)
	}
}

func setNullable[T any](s *setList, col string, v Nullable[T]) {
	if v.Set {
		s.set(col, v.Value)
	}
}

func (s *setList) empty() bool { return len(s.cols) == 0 }

// update runs UPDATE table SET … WHERE where RETURNING returning in tx and
// scans the one row with scan. where uses placeholders from whereArgs,
// numbered after the SET arguments; write it with %s for each, e.g.
// "address = %s".
func (s *setList) update(ctx context.Context, tx pgx.Tx, table, where string, whereArgs []any, returning string, scan func(pgx.Row) error) error {
	ph := make([]any, len(whereArgs))
	for i, a := range whereArgs {
		ph[i] = s.arg(a)
	}
	sql := "UPDATE " + table + " SET " + strings.Join(s.cols, ", ") +
		" WHERE " + fmt.Sprintf(where, ph...) + " RETURNING " + returning
	return scan(tx.QueryRow(ctx, sql, s.args...))
}

// deleteRow runs a DELETE of one row by key in a transaction (so the audit
// actor is set) and reports ErrNotFound when no row matched.
func (s *Store) deleteRow(ctx context.Context, what, sql string, args ...any) error {
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, sql, args...)
		if err != nil {
			return MapDeleteError(err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete %s: %w", what, err)
	}
	return nil
}

// collect runs a query and scans every row with scan.
func collect[T any](ctx context.Context, q Querier, scan func(pgx.Row) (T, error), sql string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, MapError(err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, MapError(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, MapError(err)
	}
	return out, nil
}
