package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Alert states. An open or escalated alert holds against its subject (the
// policy may refuse the subject's PHI reads); a cleared one no longer does.
const (
	AlertOpen      = "open"
	AlertEscalated = "escalated"
	AlertCleared   = "cleared"
)

// Alert is something a replica noticed about an identity over time that
// a person must look at: a bulk read over its limit, say. It names the
// subject and a kind (a reason code), never a patient.
type Alert struct {
	ID         string    `json:"id"`
	Subject    string    `json:"subject"`
	Kind       string    `json:"kind"`
	RaisedAt   time.Time `json:"raised_at"`
	State      string    `json:"state"`
	ResolvedBy string    `json:"resolved_by,omitempty"`
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
	Note       string    `json:"note,omitempty"`
}

// Alerts is the part of the Store that keeps alerts.
type Alerts interface {
	// RaiseAlert opens an alert of kind on subject, unless one is open
	// (or escalated) already.
	RaiseAlert(ctx context.Context, subject, kind string, at time.Time) error
	// ListAlerts returns alerts in state ("" for open and escalated),
	// newest first, at most limit.
	ListAlerts(ctx context.Context, subject, state string, limit int) ([]Alert, error)
	// ResolveAlert escalates or clears an alert, recording who and why.
	// Clearing a cleared alert is ErrInvalid.
	ResolveAlert(ctx context.Context, id, state, by, note string, at time.Time) error
}

// ErrNotFound: no such alert.
var ErrNotFound = errors.New("store: not found")

func checkAlertKind(subject, kind string) error {
	if err := checkID("subject", subject); err != nil {
		return err
	}
	return checkID("kind", kind)
}

func checkResolution(state, by, note string) error {
	if state != AlertEscalated && state != AlertCleared {
		return invalid("state is not %s or %s", AlertEscalated, AlertCleared)
	}
	if err := checkID("by", by); err != nil {
		return err
	}
	if len(note) > maxText {
		return invalid("note is longer than %d bytes", maxText)
	}
	return nil
}

func holding(state string) bool { return state == AlertOpen || state == AlertEscalated }

// RaiseAlert implements Alerts.
func (m *Memory) RaiseAlert(_ context.Context, subject, kind string, at time.Time) error {
	if err := checkAlertKind(subject, kind); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, a := range m.alerts {
		if a.Subject == subject && a.Kind == kind && holding(a.State) {
			return nil
		}
	}
	m.alerts = append(m.alerts, Alert{ID: strconv.Itoa(len(m.alerts) + 1), Subject: subject, Kind: kind,
		RaisedAt: at.UTC(), State: AlertOpen})
	m.feed.send(Change{Kind: KindAlert, Subject: subject})
	return nil
}

// ListAlerts implements Alerts.
func (m *Memory) ListAlerts(_ context.Context, subject, state string, limit int) ([]Alert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Alert
	for i := len(m.alerts) - 1; i >= 0 && (limit <= 0 || len(out) < limit); i-- {
		a := m.alerts[i]
		if (subject == "" || a.Subject == subject) && (state == a.State || state == "" && holding(a.State)) {
			out = append(out, a)
		}
	}
	return out, nil
}

// ResolveAlert implements Alerts.
func (m *Memory) ResolveAlert(_ context.Context, id, state, by, note string, at time.Time) error {
	if err := checkResolution(state, by, note); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.alerts, func(a Alert) bool { return a.ID == id })
	if i < 0 {
		return ErrNotFound
	}
	a := &m.alerts[i]
	if a.State == AlertCleared {
		return invalid("alert %s is cleared already", id)
	}
	a.State, a.ResolvedBy, a.ResolvedAt, a.Note = state, by, at.UTC(), note
	m.feed.send(Change{Kind: KindAlert, Subject: a.Subject})
	return nil
}

// RaiseAlert implements Alerts.
func (p *Postgres) RaiseAlert(ctx context.Context, subject, kind string, at time.Time) error {
	if err := checkAlertKind(subject, kind); err != nil {
		return err
	}
	return p.write(ctx, Change{Kind: KindAlert, Subject: subject}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO phigate_alerts (subject, kind, raised_at) VALUES ($1, $2, $3)
			ON CONFLICT (subject, kind) WHERE state <> 'cleared' DO NOTHING`, subject, kind, at.UTC())
		return err
	})
}

// ListAlerts implements Alerts.
func (p *Postgres) ListAlerts(ctx context.Context, subject, state string, limit int) ([]Alert, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := p.pool.Query(ctx, `SELECT id, subject, kind, raised_at, state, resolved_by, resolved_at, note
		FROM phigate_alerts
		WHERE ($1 = '' OR subject = $1) AND (state = $2 OR ($2 = '' AND state <> 'cleared'))
		ORDER BY raised_at DESC, id DESC LIMIT $3`, subject, state, limit)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var a Alert
		var id int64
		var resolved *time.Time
		if err := rows.Scan(&id, &a.Subject, &a.Kind, &a.RaisedAt, &a.State, &a.ResolvedBy, &resolved, &a.Note); err != nil {
			return nil, fmt.Errorf("store: postgres: %w", err)
		}
		a.ID, a.ResolvedAt, a.RaisedAt = strconv.FormatInt(id, 10), fromNull(resolved), a.RaisedAt.UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	return out, nil
}

// ResolveAlert implements Alerts.
func (p *Postgres) ResolveAlert(ctx context.Context, id, state, by, note string, at time.Time) error {
	if err := checkResolution(state, by, note); err != nil {
		return err
	}
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return ErrNotFound
	}
	var subject, was string
	if err := p.pool.QueryRow(ctx, `SELECT subject, state FROM phigate_alerts WHERE id = $1`, n).Scan(&subject, &was); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		return fmt.Errorf("store: postgres: %w", err)
	}
	if was == AlertCleared {
		return invalid("alert %s is cleared already", id)
	}
	return p.write(ctx, Change{Kind: KindAlert, Subject: subject}, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE phigate_alerts SET state = $2, resolved_by = $3, resolved_at = $4, note = $5
			WHERE id = $1 AND state <> 'cleared'`, n, state, by, at.UTC(), note)
		if err == nil && tag.RowsAffected() != 1 {
			err = invalid("alert %s is cleared already", id)
		}
		return err
	})
}
