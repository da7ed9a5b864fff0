package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const approvalColumns = `id, kind, requester, scope, reason, ttl_ns, state, approver, created, decided, expires, used`

func scanApproval(row pgx.Row) (Approval, error) {
	var a Approval
	var ttl int64
	var decided, used *time.Time
	err := row.Scan(&a.ID, &a.Kind, &a.Requester, &a.Scope, &a.Reason, &ttl, &a.State, &a.Approver, &a.Created, &decided, &a.Expires, &used)
	a.TTL, a.Decided, a.Used = time.Duration(ttl), fromNull(decided), fromNull(used)
	a.Created, a.Expires = a.Created.UTC(), a.Expires.UTC()
	return a, err
}

func collectApprovals(rows pgx.Rows, err error) ([]Approval, error) {
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Approval, error) { return scanApproval(r) })
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	return out, nil
}

// RequestApproval implements ApprovalStore. Two replicas asked at once
// for the same scope serialize on an advisory lock, so one request is
// created, not two.
func (p *Postgres) RequestApproval(ctx context.Context, a Approval, now time.Time) (Approval, bool, error) {
	if err := a.validate(); err != nil {
		return Approval{}, false, err
	}
	var out Approval
	created := false
	err := p.write(ctx, Change{Kind: KindApproval, Subject: a.Requester}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", a.Kind+" "+a.Requester+" "+a.Scope); err != nil {
			return err
		}
		old, err := scanApproval(tx.QueryRow(ctx, `SELECT `+approvalColumns+` FROM phigate_approvals
			WHERE kind = $1 AND requester = $2 AND scope = $3 AND state IN ('pending', 'approved') AND expires > $4
			ORDER BY state = 'approved' DESC, created DESC LIMIT 1`, a.Kind, a.Requester, a.Scope, now.UTC()))
		switch {
		case err == nil:
			out = old
			return nil
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		a.ID, a.State, a.Approver, a.Created, a.Expires = newApprovalID(), ApprovalPending, "", now.UTC(), a.Expires.UTC()
		a.Decided, a.Used = time.Time{}, time.Time{}
		_, err = tx.Exec(ctx, `INSERT INTO phigate_approvals (`+approvalColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8, NULL, $9, NULL)`,
			a.ID, a.Kind, a.Requester, a.Scope, a.Reason, int64(a.TTL), a.State, a.Created, a.Expires)
		out, created = a, err == nil
		return err
	})
	if err != nil {
		return Approval{}, false, err
	}
	return out, created, nil
}

// errDecided carries a refusal out of a write's transaction unwrapped.
type errDecided struct {
	a   Approval
	err error
}

func (e *errDecided) Error() string { return e.err.Error() }

// DecideApproval implements ApprovalStore. A granted elevation is written
// in the same transaction.
func (p *Postgres) DecideApproval(ctx context.Context, id, approver string, approve bool, now time.Time) (Approval, error) {
	if err := checkDecider(id, approver); err != nil {
		return Approval{}, err
	}
	var out Approval
	err := p.writeN(ctx, func(tx pgx.Tx) ([]Change, error) {
		a, err := scanApproval(tx.QueryRow(ctx, `SELECT `+approvalColumns+` FROM phigate_approvals WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, &errDecided{err: ErrNotFound}
		}
		if err != nil {
			return nil, err
		}
		if a, err = a.decide(approver, approve, now); err != nil {
			return nil, &errDecided{a.Reported(now), err}
		}
		if _, err := tx.Exec(ctx, `UPDATE phigate_approvals SET state = $2, approver = $3, decided = $4, expires = $5 WHERE id = $1`,
			a.ID, a.State, a.Approver, a.Decided, a.Expires); err != nil {
			return nil, err
		}
		out = a
		changes := []Change{{Kind: KindApproval, Subject: a.Requester}}
		if a.Kind == ApprovalElevation && a.State == ApprovalApproved {
			e := a.elevationOf()
			if _, err := tx.Exec(ctx, `INSERT INTO phigate_elevations (subject, role, reason, granted_by, expires) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (subject, role) DO UPDATE SET reason = EXCLUDED.reason, granted_by = EXCLUDED.granted_by, expires = EXCLUDED.expires`,
				e.Subject, e.Role, e.Reason, e.GrantedBy, e.Expires.UTC()); err != nil {
				return nil, err
			}
			changes = append(changes, Change{Kind: KindElevation, Subject: e.Subject})
		}
		return changes, nil
	})
	var d *errDecided
	if errors.As(err, &d) {
		return d.a, d.err
	}
	return out, err
}

// writeN runs f and announces the changes it returns, in one transaction.
func (p *Postgres) writeN(ctx context.Context, f func(pgx.Tx) ([]Change, error)) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // after Commit, a no-op
	cs, err := f(tx)
	if err != nil {
		var d *errDecided
		if errors.As(err, &d) {
			return err
		}
		return fmt.Errorf("store: postgres: %w", err)
	}
	for _, c := range cs {
		if err := notify(ctx, tx, c); err != nil {
			return fmt.Errorf("store: postgres: notify: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: postgres: commit: %w", err)
	}
	return nil
}

// MarkApprovalUsed implements ApprovalStore.
func (p *Postgres) MarkApprovalUsed(ctx context.Context, id string, now time.Time) error {
	if err := checkID("id", id); err != nil {
		return err
	}
	return p.writeN(ctx, func(tx pgx.Tx) ([]Change, error) {
		var requester string
		var used *time.Time
		err := tx.QueryRow(ctx, "SELECT requester, used FROM phigate_approvals WHERE id = $1 FOR UPDATE", id).Scan(&requester, &used)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, &errDecided{err: ErrNotFound}
		}
		if err != nil || used != nil {
			return nil, err
		}
		if _, err := tx.Exec(ctx, "UPDATE phigate_approvals SET used = $2 WHERE id = $1", id, now.UTC()); err != nil {
			return nil, err
		}
		return []Change{{Kind: KindApproval, Subject: requester}}, nil
	})
}

// GetApproval implements ApprovalStore.
func (p *Postgres) GetApproval(ctx context.Context, id string) (Approval, error) {
	a, err := scanApproval(p.pool.QueryRow(ctx, `SELECT `+approvalColumns+` FROM phigate_approvals WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Approval{}, ErrNotFound
	}
	if err != nil {
		return Approval{}, fmt.Errorf("store: postgres: %w", err)
	}
	return a, nil
}

// ListApprovals implements ApprovalStore.
func (p *Postgres) ListApprovals(ctx context.Context, state string, now time.Time) ([]Approval, error) {
	all, err := collectApprovals(p.pool.Query(ctx, `SELECT `+approvalColumns+` FROM phigate_approvals ORDER BY created DESC, id`))
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, a := range all {
		if a = a.Reported(now); state == "" || a.State == state {
			out = append(out, a)
		}
	}
	return out, nil
}

// ApprovedFor implements ApprovalStore.
func (p *Postgres) ApprovedFor(ctx context.Context, kind, requester string, now time.Time) ([]Approval, error) {
	return collectApprovals(p.pool.Query(ctx, `SELECT `+approvalColumns+` FROM phigate_approvals
		WHERE kind = $1 AND requester = $2 AND state = 'approved' AND expires > $3 ORDER BY decided DESC, id`,
		kind, requester, now.UTC()))
}

// EndedBetween implements ApprovalStore.
func (p *Postgres) EndedBetween(ctx context.Context, kind string, from, to time.Time) ([]Approval, error) {
	return collectApprovals(p.pool.Query(ctx, `SELECT `+approvalColumns+` FROM phigate_approvals
		WHERE kind = $1 AND state = 'approved' AND expires >= $2 AND expires < $3 ORDER BY expires, id`,
		kind, from.UTC(), to.UTC()))
}

// MarkReviewed implements ApprovalStore.
func (p *Postgres) MarkReviewed(ctx context.Context, r Review) error {
	if err := r.validate(); err != nil {
		return err
	}
	return p.writeN(ctx, func(tx pgx.Tx) ([]Change, error) {
		_, err := tx.Exec(ctx, `INSERT INTO phigate_reviews (decision_id, reviewer, note, at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (decision_id) DO UPDATE SET reviewer = EXCLUDED.reviewer, note = EXCLUDED.note, at = EXCLUDED.at`,
			r.DecisionID, r.Reviewer, r.Note, r.At.UTC())
		return nil, err
	})
}

// Reviews implements ApprovalStore.
func (p *Postgres) Reviews(ctx context.Context) ([]Review, error) {
	rows, err := p.pool.Query(ctx, "SELECT decision_id, reviewer, note, at FROM phigate_reviews ORDER BY decision_id")
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Review, error) {
		var r Review
		err := row.Scan(&r.DecisionID, &r.Reviewer, &r.Note, &r.At)
		r.At = r.At.UTC()
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	return out, nil
}
