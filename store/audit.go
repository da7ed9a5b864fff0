package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/phigate/phigate/audit"
)

// AuditCentre is the fleet's copy of every replica's audit trail in
// PostgreSQL (migration 0003): what a replica's audit.Shipper writes and
// what audit query and verify --central read. It has a pool of its own,
// apart from the Store's, so shipping never holds a connection a Check's
// state lookup is waiting for.
type AuditCentre struct {
	pool *pgxpool.Pool
}

var (
	_ audit.Centre         = (*AuditCentre)(nil)
	_ audit.CentralSource  = (*AuditCentre)(nil)
	_ audit.CentralQuerier = (*AuditCentre)(nil)
)

// auditCentreConns bounds the centre's pool: one shipper, or one reader.
const auditCentreConns = 2

// OpenAuditCentre connects to the database at dsn, whose schema must be
// at this build's version.
func OpenAuditCentre(ctx context.Context, dsn string) (*AuditCentre, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres dsn: %w", err)
	}
	cfg.MaxConns = auditCentreConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	if err := check(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return &AuditCentre{pool: pool}, nil
}

// Close closes the pool.
func (c *AuditCentre) Close() error {
	c.pool.Close()
	return nil
}

func seqArg(v uint64) int64 { return int64(v) } //nolint:gosec // sequences stay far below 2^63

func conflictErr(replica string, seq uint64, detail string) error {
	return &audit.Error{Code: audit.CodeShipConflict, Detail: fmt.Sprintf("replica %s record %d: %s", replica, seq, detail)}
}

// Register implements audit.Centre.
func (c *AuditCentre) Register(ctx context.Context, r audit.Replica) error {
	var got string
	err := c.pool.QueryRow(ctx, `INSERT INTO phigate_audit_replicas (replica, key_id, genesis, host) VALUES ($1, $2, $3, $4)
		ON CONFLICT (replica) DO UPDATE SET host = EXCLUDED.host
		WHERE phigate_audit_replicas.genesis = EXCLUDED.genesis AND phigate_audit_replicas.key_id = EXCLUDED.key_id
		RETURNING replica`, r.ID, r.KeyID, r.Genesis[:], r.Host).Scan(&got)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := c.pool.Exec(ctx, "INSERT INTO phigate_audit_conflicts (replica, seq, offered) VALUES ($1, 0, $2)", r.ID, r.Genesis[:]); err != nil {
			return fmt.Errorf("store: postgres: %w", err)
		}
		return conflictErr(r.ID, 0, "another chain (or signing key) already ships under this replica id")
	case err != nil:
		return fmt.Errorf("store: postgres: %w", err)
	}
	return nil
}

// Resume implements audit.Centre.
func (c *AuditCentre) Resume(ctx context.Context, replica string) (uint64, []byte, error) {
	var seq int64
	var frame []byte
	err := c.pool.QueryRow(ctx, "SELECT seq, frame FROM phigate_audit_records WHERE replica = $1 ORDER BY seq DESC LIMIT 1", replica).Scan(&seq, &frame)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, nil, nil
	case err != nil:
		return 0, nil, fmt.Errorf("store: postgres: %w", err)
	}
	return uint64(seq), frame, nil
}

const insertRecord = `INSERT INTO phigate_audit_records
	(replica, seq, frame, kind, recorded, decision_id, user_id, fhir_user, patients, outcome, break_glass)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (replica, seq) DO NOTHING`

// PutRecords implements audit.Centre: the batch and the reported head go
// in one transaction; a record already held with other bytes rolls the
// batch back, is kept as evidence and is returned as a conflict.
func (c *AuditCentre) PutRecords(ctx context.Context, replica string, recs []audit.ShipRecord, head uint64) (int, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("store: postgres: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // after Commit, a no-op
	b := &pgx.Batch{}
	for i := range recs {
		r := &recs[i]
		x := r.Index
		b.Queue(insertRecord, replica, seqArg(r.Seq), r.Frame, x.Kind, nullTime(x.Recorded), x.DecisionID, x.User, x.FHIRUser,
			nonNil(x.Patients), x.Outcome, x.BreakGlass)
	}
	br := tx.SendBatch(ctx, b)
	var held []int64 // present before: their bytes must be the same
	inserted := 0
	for i := range recs {
		ct, err := br.Exec()
		if err != nil {
			br.Close()
			return 0, fmt.Errorf("store: postgres: %w", err)
		}
		if ct.RowsAffected() == 1 {
			inserted++
		} else {
			held = append(held, seqArg(recs[i].Seq))
		}
	}
	if err := br.Close(); err != nil {
		return 0, fmt.Errorf("store: postgres: %w", err)
	}
	if len(held) > 0 {
		rows, err := tx.Query(ctx, "SELECT seq, frame FROM phigate_audit_records WHERE replica = $1 AND seq = ANY($2) ORDER BY seq", replica, held)
		if err != nil {
			return 0, fmt.Errorf("store: postgres: %w", err)
		}
		type stored struct {
			seq   int64
			frame []byte
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stored, error) {
			var s stored
			return s, r.Scan(&s.seq, &s.frame)
		})
		if err != nil {
			return 0, fmt.Errorf("store: postgres: %w", err)
		}
		first := recs[0].Seq
		for _, s := range got {
			offered := recs[uint64(s.seq)-first].Frame
			if string(offered) != string(s.frame) {
				_ = tx.Rollback(ctx)
				if _, err := c.pool.Exec(ctx, "INSERT INTO phigate_audit_conflicts (replica, seq, offered) VALUES ($1, $2, $3)", replica, s.seq, offered); err != nil {
					return 0, fmt.Errorf("store: postgres: %w", err)
				}
				return 0, conflictErr(replica, uint64(s.seq), "the centre holds other bytes for this record")
			}
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE phigate_audit_replicas SET local_head = GREATEST(local_head, $2), reported_at = now() WHERE replica = $1",
		replica, seqArg(head)); err != nil {
		return 0, fmt.Errorf("store: postgres: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("store: postgres: commit: %w", err)
	}
	return inserted, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// PutCheckpoints implements audit.Centre.
func (c *AuditCentre) PutCheckpoints(ctx context.Context, replica string, cps []audit.Checkpoint) error {
	b := &pgx.Batch{}
	for _, cp := range cps {
		b.Queue(`INSERT INTO phigate_audit_checkpoints (replica, size, head, segment, byte_offset, signed_at, key_id, sig)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (replica, sig) DO NOTHING`,
			replica, seqArg(cp.Size), cp.Head, cp.Segment, cp.Offset, cp.Time, cp.KeyID, cp.Sig)
	}
	if err := c.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	return nil
}

// Replicas implements audit.CentralSource.
func (c *AuditCentre) Replicas(ctx context.Context) ([]audit.CentralReplica, error) {
	rows, err := c.pool.Query(ctx, "SELECT replica, key_id, genesis, host, local_head FROM phigate_audit_replicas ORDER BY replica")
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (audit.CentralReplica, error) {
		var r audit.CentralReplica
		var genesis []byte
		var head int64
		err := row.Scan(&r.ID, &r.KeyID, &genesis, &r.Host, &head)
		copy(r.Genesis[:], genesis)
		r.Head = uint64(head)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	rows, err = c.pool.Query(ctx, "SELECT replica, seq FROM phigate_audit_conflicts ORDER BY replica, seq")
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	type conflict struct {
		replica string
		seq     int64
	}
	cs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (conflict, error) {
		var k conflict
		return k, row.Scan(&k.replica, &k.seq)
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	for _, k := range cs {
		for i := range out {
			if out[i].ID == k.replica {
				out[i].Conflicts = append(out[i].Conflicts, uint64(k.seq))
			}
		}
	}
	return out, nil
}

const recordColumns = "seq, frame, kind, recorded, decision_id, user_id, fhir_user, patients, outcome, break_glass"

func scanRecord(row pgx.Rows, r *audit.ShipRecord) error {
	var seq int64
	var recorded *time.Time
	x := &r.Index
	if err := row.Scan(&seq, &r.Frame, &x.Kind, &recorded, &x.DecisionID, &x.User, &x.FHIRUser, &x.Patients, &x.Outcome, &x.BreakGlass); err != nil {
		return err
	}
	r.Seq = uint64(seq)
	x.Recorded = fromNull(recorded)
	return nil
}

// Records implements audit.CentralSource, streaming the rows.
func (c *AuditCentre) Records(ctx context.Context, replica string, fn func(*audit.ShipRecord) error) error {
	rows, err := c.pool.Query(ctx, "SELECT "+recordColumns+" FROM phigate_audit_records WHERE replica = $1 ORDER BY seq", replica)
	if err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r audit.ShipRecord
		if err := scanRecord(rows, &r); err != nil {
			return fmt.Errorf("store: postgres: %w", err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	return nil
}

// Checkpoints implements audit.CentralSource.
func (c *AuditCentre) Checkpoints(ctx context.Context, replica string) ([]audit.Checkpoint, error) {
	rows, err := c.pool.Query(ctx, `SELECT size, head, segment, byte_offset, signed_at, key_id, sig FROM phigate_audit_checkpoints
		WHERE replica = $1 ORDER BY size, signed_at`, replica)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (audit.Checkpoint, error) {
		var cp audit.Checkpoint
		var size int64
		err := row.Scan(&size, &cp.Head, &cp.Segment, &cp.Offset, &cp.Time, &cp.KeyID, &cp.Sig)
		cp.Size = uint64(size)
		return cp, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	return out, nil
}

// Select implements audit.CentralQuerier. Time bounds are widened by a
// microsecond, PostgreSQL's precision; the caller matches exactly.
func (c *AuditCentre) Select(ctx context.Context, f audit.Filter, fn func(string, *audit.ShipRecord) error) error {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if f.Patient != "" {
		add("patients @> ARRAY[$?]::text[]", f.Patient)
	}
	if f.User != "" {
		add("(user_id = $? OR fhir_user = $?)", f.User)
	}
	if !f.Since.IsZero() {
		add("recorded >= $?", f.Since.Add(-time.Microsecond).UTC())
	}
	if !f.Until.IsZero() {
		add("recorded < $?", f.Until.Add(time.Microsecond).UTC())
	}
	if f.Outcome != "" {
		add("outcome = $?", f.Outcome)
	}
	if f.BreakGlass != nil {
		add("break_glass = $?", *f.BreakGlass)
	}
	if f.DecisionID != "" {
		add("decision_id = $?", f.DecisionID)
	}
	if f.Kind != "" {
		add("kind = $?", f.Kind)
	}
	q := "SELECT replica, " + recordColumns + " FROM phigate_audit_records"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY recorded, replica, seq"
	rows, err := c.pool.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var replica string
		var r audit.ShipRecord
		var seq int64
		var recorded *time.Time
		x := &r.Index
		if err := rows.Scan(&replica, &seq, &r.Frame, &x.Kind, &recorded, &x.DecisionID, &x.User, &x.FHIRUser, &x.Patients, &x.Outcome, &x.BreakGlass); err != nil {
			return fmt.Errorf("store: postgres: %w", err)
		}
		r.Seq, x.Recorded = uint64(seq), fromNull(recorded)
		if err := fn(replica, &r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	return nil
}
