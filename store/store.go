// Package store is facteur's PostgreSQL layer: the connection pool,
// transactions, and typed methods for the control-plane tables and the
// queue. It knows nothing of SMTP and imports no other facteur package.
//
// The database guards its own invariants (see migrations/): names are
// normalised and checked, domain limits are enforced by triggers that lock the
// domain row, and every control-plane write is audited and announced with
// NOTIFY facteur_config. The store maps the errors those guards raise to the
// sentinel errors below, by SQLSTATE, never by message text.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Sentinel errors. Callers test them with errors.Is; the wrapped error keeps
// the database's message, which is written for people.
var (
	// ErrNotFound means the row does not exist (or a row it refers to does not).
	ErrNotFound = errors.New("not found")
	// ErrConflict means a row with the same key already exists.
	ErrConflict = errors.New("already exists")
	// ErrInUse means the row is still referred to by other rows.
	ErrInUse = errors.New("in use")
	// ErrLimitExceeded means a domain limit (mailboxes, aliases, quota) would be exceeded.
	ErrLimitExceeded = errors.New("limit exceeded")
	// ErrInvalid means the write breaks a rule the database checks (a malformed
	// name, an alias shadowing a mailbox, a command destination on a non-local domain).
	ErrInvalid = errors.New("invalid")
	// ErrLeaseLost means a queue transition found the row in another state or
	// leased by another worker: the caller's view is stale and it changed nothing.
	ErrLeaseLost = errors.New("lease lost")
)

// SQLSTATEs raised by facteur's triggers (migrations/00001_control_plane.sql).
const (
	codeLimitExceeded = "FL001"
	codeInvalid       = "FV001"
)

// Error wraps a sentinel with the database's explanation.
type Error struct {
	Kind       error  // one of the sentinels
	Message    string // for people: the trigger's or constraint's message
	Constraint string
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Kind }

// MapError turns a driver error into one of the sentinel errors where one
// applies, and leaves other errors (connection failures, timeouts) as they are:
// a lookup error is never "not found".
func MapError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	kind := error(nil)
	msg := pe.Message
	switch pe.Code {
	case pgerrcode.UniqueViolation:
		kind = ErrConflict
		msg = "already exists"
		if pe.Detail != "" {
			msg = "already exists: " + pe.Detail
		}
	case pgerrcode.ForeignKeyViolation:
		// On insert or update the row names a missing parent. (Deletes of a
		// still-referenced parent are mapped to ErrInUse by MapDeleteError.)
		kind = ErrNotFound
		if pe.Detail != "" {
			msg = pe.Detail
		}
	case pgerrcode.CheckViolation, pgerrcode.NotNullViolation, pgerrcode.InvalidTextRepresentation,
		pgerrcode.StringDataRightTruncationDataException, pgerrcode.NumericValueOutOfRange,
		pgerrcode.InvalidParameterValue, pgerrcode.InvalidDatetimeFormat:
		kind = ErrInvalid
		if pe.ConstraintName != "" {
			msg = fmt.Sprintf("%s (constraint %s)", pe.Message, pe.ConstraintName)
		}
	case codeLimitExceeded:
		kind = ErrLimitExceeded
	case codeInvalid:
		kind = ErrInvalid
	default:
		return err
	}
	return &Error{Kind: kind, Message: msg, Constraint: pe.ConstraintName}
}

// MapDeleteError is MapError for a DELETE: a foreign key violation there
// means the row is still referred to.
func MapDeleteError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == pgerrcode.ForeignKeyViolation {
		return &Error{Kind: ErrInUse, Message: "still in use: " + pe.Detail, Constraint: pe.ConstraintName}
	}
	return MapError(err)
}

// Options configures the pool.
type Options struct {
	MaxConns int32 // 0: pgxpool's default
	// Application name reported in pg_stat_activity.
	ApplicationName string
	// CustomPlans plans every execution for its parameters
	// (plan_cache_mode=force_custom_plan): for the admin service's listings.
	CustomPlans bool
}

// Store is the PostgreSQL pool and the typed methods on it.
type Store struct {
	pool *pgxpool.Pool
	// Group commits of Enqueue (enqueue.go) and Settle (queue.go).
	enq     groupCommit[enqueueItem]
	settles groupCommit[settleItem]
}

// Open connects to the database at url.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.ApplicationName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = opts.ApplicationName
	}
	// Listings with optional filters (`$1 IS NULL OR col = $1`) get poor
	// generic plans once pgx's prepared statements are reused; the admin
	// service plans each of its queries for its parameters. The mail path
	// keeps PostgreSQL's plan cache: re-planning its hot lookups costs more
	// than they take to run (bench/: 7 ms of planning per address lookup).
	if opts.CustomPlans {
		if _, ok := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !ok {
			cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
		}
	}
	cfg.HealthCheckPeriod = 10 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return &Store{pool: pool}, nil
}

// New wraps an existing pool (tests pass their own).
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Pool returns the underlying pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Querier is what both the pool and a transaction offer.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

type actorKey struct{}

// WithActor returns a context whose writes are audited as done by actor
// (an admin's name, "cli:root", "api:token-name").
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom returns the actor set with WithActor, or "".
func ActorFrom(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}

// WithTx runs fn in a transaction, committing when fn returns nil. The
// context's actor is set with SET LOCAL facteur.actor for the audit trigger.
// The error is mapped with MapError.
func (s *Store) WithTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit this is a no-op
	if a := ActorFrom(ctx); a != "" {
		if _, err := tx.Exec(ctx, "SELECT set_config('facteur.actor', $1, true)", a); err != nil {
			return fmt.Errorf("set actor: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return MapError(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return MapError(fmt.Errorf("commit: %w", err))
	}
	return nil
}
