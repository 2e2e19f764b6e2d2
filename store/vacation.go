package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Vacation is a row of the vacation table: the automatic reply (RFC 3834) of
// a mailbox, sent at delivery time between ActiveFrom and ActiveUntil, at
// most once per Interval to each sender.
type Vacation struct {
	Mailbox     string     `json:"mailbox"`
	Subject     string     `json:"subject"`
	Body        string     `json:"body"`
	ActiveFrom  *time.Time `json:"active_from"`
	ActiveUntil *time.Time `json:"active_until"`
	// IntervalSeconds is the least time between two replies to one sender.
	IntervalSeconds int32     `json:"interval_seconds"`
	Domain          string    `json:"domain"`
	Active          bool      `json:"active"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

const vacationColumns = `mailbox, subject, body, active_from, active_until, interval_seconds, domain, active,
	created_at, updated_at`

func scanVacation(r pgx.Row) (Vacation, error) {
	var v Vacation
	err := r.Scan(&v.Mailbox, &v.Subject, &v.Body, &v.ActiveFrom, &v.ActiveUntil, &v.IntervalSeconds, &v.Domain,
		&v.Active, &v.CreatedAt, &v.UpdatedAt)
	return v, err
}

// DefaultVacationIntervalSeconds is the schema's default interval: a week,
// as RFC 3834 section 4.1 suggests.
const DefaultVacationIntervalSeconds = 7 * 24 * 3600

// CreateVacation inserts v (Mailbox, Subject, Body, ActiveFrom,
// ActiveUntil, IntervalSeconds, Active as given; a zero IntervalSeconds
// means DefaultVacationIntervalSeconds, set 0 with UpdateVacation). A mailbox
// that has one is ErrConflict; an unknown mailbox is ErrNotFound.
func (s *Store) CreateVacation(ctx context.Context, v Vacation) (Vacation, error) {
	if v.IntervalSeconds == 0 {
		v.IntervalSeconds = DefaultVacationIntervalSeconds
	}
	var out Vacation
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanVacation(tx.QueryRow(ctx, `
			INSERT INTO vacation (mailbox, subject, body, active_from, active_until, interval_seconds, active)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			RETURNING `+vacationColumns,
			v.Mailbox, v.Subject, v.Body, v.ActiveFrom, v.ActiveUntil, v.IntervalSeconds, v.Active))
		return err
	})
	if err != nil {
		return Vacation{}, fmt.Errorf("create vacation of %s: %w", v.Mailbox, err)
	}
	return out, nil
}

// GetVacation returns the vacation of mailbox.
func (s *Store) GetVacation(ctx context.Context, mailbox string) (Vacation, error) {
	v, err := scanVacation(s.pool.QueryRow(ctx, `SELECT `+vacationColumns+` FROM vacation WHERE mailbox = $1`, mailbox))
	if err != nil {
		return Vacation{}, fmt.Errorf("get vacation of %s: %w", mailbox, MapError(err))
	}
	return v, nil
}

// ListVacations returns vacations ordered by mailbox. Search matches the
// mailbox or the subject; Domain and Scope restrict the mailbox's domain.
func (s *Store) ListVacations(ctx context.Context, o ListOptions) ([]Vacation, error) {
	out, err := collect(ctx, s.pool, scanVacation, `
		SELECT `+vacationColumns+`
		FROM vacation
		WHERE (mailbox ILIKE $1 OR subject ILIKE $1)
		  AND ($2 = '' OR domain = $2)
		  AND ($3::text[] IS NULL OR domain = ANY ($3))
		ORDER BY mailbox
		LIMIT $4 OFFSET $5`,
		o.searchPattern(), o.Domain, o.scope(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list vacations: %w", err)
	}
	return out, nil
}

// VacationPatch lists the columns an update changes.
type VacationPatch struct {
	Subject         *string
	Body            *string
	ActiveFrom      Nullable[time.Time]
	ActiveUntil     Nullable[time.Time]
	IntervalSeconds *int32
	Active          *bool
}

// UpdateVacation applies p to the vacation of mailbox.
func (s *Store) UpdateVacation(ctx context.Context, mailbox string, p VacationPatch) (Vacation, error) {
	var sl setList
	setIf(&sl, "subject", p.Subject)
	setIf(&sl, "body", p.Body)
	setNullable(&sl, "active_from", p.ActiveFrom)
	setNullable(&sl, "active_until", p.ActiveUntil)
	setIf(&sl, "interval_seconds", p.IntervalSeconds)
	setIf(&sl, "active", p.Active)
	if sl.empty() {
		return s.GetVacation(ctx, mailbox)
	}
	var out Vacation
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		return sl.update(ctx, tx, "vacation", "mailbox = %s", []any{mailbox}, vacationColumns, func(r pgx.Row) error {
			var err error
			out, err = scanVacation(r)
			return err
		})
	})
	if err != nil {
		return Vacation{}, fmt.Errorf("update vacation of %s: %w", mailbox, err)
	}
	return out, nil
}

// DeleteVacation deletes the vacation of mailbox and forgets whom it
// answered.
func (s *Store) DeleteVacation(ctx context.Context, mailbox string) error {
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM vacation WHERE mailbox = $1`, mailbox)
		if err != nil {
			return MapDeleteError(err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		_, err = tx.Exec(ctx, `DELETE FROM vacation_notified WHERE mailbox = $1`, mailbox)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete vacation of %s: %w", mailbox, err)
	}
	return nil
}

// VacationNotified is a row of vacation_notified: mailbox last answered
// sender at NotifiedAt.
type VacationNotified struct {
	Mailbox    string    `json:"mailbox"`
	Sender     string    `json:"sender"`
	NotifiedAt time.Time `json:"notified_at"`
}

// NoteVacationReply records that mailbox answered sender at when, unless a
// reply to that sender was recorded within interval before when. It reports
// whether it recorded one: the caller sends the reply only then, so two
// deliveries racing for the same sender send one reply.
func (s *Store) NoteVacationReply(ctx context.Context, mailbox, sender string, at time.Time, interval time.Duration) (bool, error) {
	var recorded bool
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			INSERT INTO vacation_notified (mailbox, sender, notified_at) VALUES ($1, lower($2), $3)
			ON CONFLICT (mailbox, sender) DO UPDATE SET notified_at = EXCLUDED.notified_at
			WHERE vacation_notified.notified_at <= EXCLUDED.notified_at - make_interval(secs => $4)`,
			mailbox, sender, at, interval.Seconds())
		recorded = err == nil && tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("note vacation reply of %s to %s: %w", mailbox, sender, err)
	}
	return recorded, nil
}

// GetVacationNotified returns when mailbox last answered sender.
func (s *Store) GetVacationNotified(ctx context.Context, mailbox, sender string) (VacationNotified, error) {
	var n VacationNotified
	err := s.pool.QueryRow(ctx, `
		SELECT mailbox, sender, notified_at FROM vacation_notified WHERE mailbox = $1 AND sender = lower($2)`,
		mailbox, sender).Scan(&n.Mailbox, &n.Sender, &n.NotifiedAt)
	if err != nil {
		return VacationNotified{}, fmt.Errorf("get vacation reply of %s to %s: %w", mailbox, sender, MapError(err))
	}
	return n, nil
}

// ListVacationNotified returns whom mailbox answered, most recent first.
func (s *Store) ListVacationNotified(ctx context.Context, mailbox string, o ListOptions) ([]VacationNotified, error) {
	out, err := collect(ctx, s.pool, func(r pgx.Row) (VacationNotified, error) {
		var n VacationNotified
		err := r.Scan(&n.Mailbox, &n.Sender, &n.NotifiedAt)
		return n, err
	}, `
		SELECT mailbox, sender, notified_at FROM vacation_notified
		WHERE mailbox = $1 AND sender ILIKE $2
		ORDER BY notified_at DESC, sender
		LIMIT $3 OFFSET $4`,
		mailbox, o.searchPattern(), o.limit(), o.offset())
	if err != nil {
		return nil, fmt.Errorf("list vacation replies of %s: %w", mailbox, err)
	}
	return out, nil
}

// ClearVacationNotified forgets whom mailbox answered (after its vacation
// text changes, say), and returns how many rows it removed.
func (s *Store) ClearVacationNotified(ctx context.Context, mailbox string) (int64, error) {
	var n int64
	err := s.WithTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM vacation_notified WHERE mailbox = $1`, mailbox)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("clear vacation replies of %s: %w", mailbox, err)
	}
	return n, nil
}
