package store

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/internal/pgtest"
)

// The central audit tests run the real shipper against a real PostgreSQL:
// records written to a trail on disk, shipped by audit.Shipper through
// AuditCentre, read back by audit.QueryCentral and audit.VerifyCentral.

// trail is one replica: its log, its metrics and its shipper.
type trail struct {
	t    *testing.T
	cfg  audit.Config
	log  *audit.Log
	ship *audit.Shipper
	reg  *prometheus.Registry
	n    int // records written
	user string
	opts []audit.Option
}

func openTrail(t *testing.T, dir string, mod func(*audit.Config), opts ...audit.Option) *trail {
	t.Helper()
	cfg := audit.Config{Dir: dir, CheckpointEvery: 7, SegmentMaxBytes: 16 << 10,
		Ship: audit.ShipConfig{Batch: 25, Interval: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}}
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	tr := &trail{t: t, cfg: cfg, user: filepath.Base(dir), opts: opts}
	tr.reopen()
	t.Cleanup(tr.close)
	return tr
}

// reopen opens the log again (after close), as a restarted replica does.
func (tr *trail) reopen() {
	tr.t.Helper()
	l, err := audit.Open(tr.cfg, tr.opts...)
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.log, tr.reg = l, prometheus.NewRegistry()
}

func (tr *trail) startShipping(c audit.Centre) {
	tr.t.Helper()
	s, err := audit.StartShipper(tr.log, c, audit.ShipRegisterer(tr.reg))
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.ship = s
}

func (tr *trail) close() {
	if tr.ship != nil {
		_ = tr.ship.Close()
		tr.ship = nil
	}
	if tr.log != nil {
		_ = tr.log.Close()
		tr.log = nil
	}
}

func (tr *trail) pub() ed25519.PublicKey { return tr.log.PublicKey() }

// write records n decisions: patient p<i%4>, every fifth denied.
func (tr *trail) write(n int) {
	tr.t.Helper()
	for range n {
		i := tr.n
		tr.n++
		now := time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
		patient := fmt.Sprintf("p%d", i%4)
		req := &authz.Request{ID: fmt.Sprintf("req-%d", i), Time: now, TimeNS: now.UnixNano(), Method: "GET",
			Path: "/fhir/Patient/" + patient, Query: map[string][]string{}, Headers: map[string]string{},
			Identity: authz.Identity{Authenticated: true, Subject: tr.user, FHIRUser: "Practitioner/" + tr.user, Roles: []string{"physician"}, Scopes: []authz.Scope{}},
			FHIR:     authz.FHIRRequest{Interaction: "read", ResourceType: "Patient", ID: patient, Patients: []string{patient}},
			Purpose:  "TREAT"}
		d := &authz.Decision{Allow: i%5 != 0, Status: 200, ID: fmt.Sprintf("%s-dec-%d", tr.user, i)}
		if !d.Allow {
			d.Status, d.Reason = 403, "role_not_permitted"
		}
		if err := tr.log.Record(tr.t.Context(), req, d); err != nil {
			tr.t.Fatalf("Record %d: %v", i, err)
		}
	}
}

// caughtUp waits (generously) until the centre holds every durable record.
func (tr *trail) caughtUp() {
	tr.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for tr.ship.LagRecords() != 0 || tr.ship.Shipped() == 0 {
		if time.Now().After(deadline) {
			tr.t.Fatalf("shipping did not catch up: shipped %d, lag %d", tr.ship.Shipped(), tr.ship.LagRecords())
		}
		if tr.ship.Halted() {
			tr.t.Fatal("shipping halted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gauge reads a metric as /metrics would expose it.
func (tr *trail) metric(name string, labels ...string) float64 {
	tr.t.Helper()
	mfs, err := tr.reg.Gather()
	if err != nil {
		tr.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(labels) == 2 && !hasLabel(m, labels[0], labels[1]) {
				continue
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Counter != nil:
				return m.Counter.GetValue()
			}
		}
	}
	tr.t.Fatalf("metric %s %v not exposed", name, labels)
	return 0
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

func openCentre(t *testing.T, dsn string) *AuditCentre {
	t.Helper()
	c, err := OpenAuditCentre(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rowCounts is what the centre holds of a replica: rows, distinct
// sequences and the highest.
func rowCounts(t *testing.T, dsn, replica string) (rows, distinct, maxSeq int64) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(t.Context(), "SELECT count(*), count(DISTINCT seq), COALESCE(max(seq), 0) FROM phigate_audit_records WHERE replica = $1",
		replica).Scan(&rows, &distinct, &maxSeq); err != nil {
		t.Fatal(err)
	}
	return rows, distinct, maxSeq
}

func execSQL(t *testing.T, dsn, sql string, args ...any) int64 {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	ct, err := conn.Exec(t.Context(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	return ct.RowsAffected()
}

// TestAuditCentralTwoReplicas: two replicas' trails (own keys, own
// directories) ship to one database, under default ids derived from each
// trail's first record; a query across the centre returns what the two
// local queries return together, and verify --central passes both.
func TestAuditCentralTwoReplicas(t *testing.T) {
	began := time.Now()
	dsn := pgDB(t)
	centre := openCentre(t, dsn)
	a := openTrail(t, filepath.Join(t.TempDir(), "alice"), nil)
	b := openTrail(t, filepath.Join(t.TempDir(), "bob"), nil)
	a.startShipping(centre)
	b.startShipping(centre)
	a.write(60)
	b.write(45)
	a.caughtUp()
	b.caughtUp()
	if a.ship.ReplicaID() == b.ship.ReplicaID() || len(a.ship.ReplicaID()) != len("trail-")+16 {
		t.Fatalf("replica ids %q and %q: want two distinct trail-<hash> ids", a.ship.ReplicaID(), b.ship.ReplicaID())
	}
	for _, tr := range []*trail{a, b} {
		rows, distinct, maxSeq := rowCounts(t, dsn, tr.ship.ReplicaID())
		if rows != int64(tr.n) || distinct != rows || maxSeq != rows {
			t.Errorf("%s: centre holds %d rows (%d distinct, max %d), want %d", tr.user, rows, distinct, maxSeq, tr.n)
		}
	}

	f := audit.Filter{Patient: "p1"}
	got, err := audit.QueryCentral(t.Context(), centre, f, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var want int
	for _, tr := range []*trail{a, b} {
		local, err := audit.Query(tr.cfg.Dir, f, audit.QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want += len(local)
	}
	byReplica := map[string]int{}
	for _, e := range got {
		byReplica[e.Replica]++
		if !slices.Contains(e.Event.Patients(), "p1") {
			t.Errorf("entry %s/%d is not about p1", e.Replica, e.Seq)
		}
	}
	if len(got) != want || byReplica[a.ship.ReplicaID()] == 0 || byReplica[b.ship.ReplicaID()] == 0 {
		t.Fatalf("central query for p1: %d entries %v, want %d from both replicas", len(got), byReplica, want)
	}
	// Every filter the local query has, answered the same way.
	deny := audit.OutcomeMinor
	for name, f := range map[string]audit.Filter{
		"user":     {User: "Practitioner/bob"},
		"outcome":  {Outcome: deny},
		"decision": {DecisionID: "alice-dec-7"},
		"since":    {Since: began, Until: time.Now().Add(time.Second)},
		"kind":     {Kind: audit.KindDecision, Patient: "p3"},
	} {
		got, err := audit.QueryCentral(t.Context(), centre, f, audit.QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, tr := range []*trail{a, b} {
			local, _ := audit.Query(tr.cfg.Dir, f, audit.QueryOptions{})
			want += len(local)
		}
		if len(got) != want || want == 0 {
			t.Errorf("%s: central %d entries, local %d", name, len(got), want)
		}
	}

	reps, err := audit.VerifyCentral(t.Context(), centre, audit.NewKeySet(a.pub(), b.pub()), audit.CentralVerifyOptions{})
	if err != nil || len(reps) != 2 {
		t.Fatalf("verify --central: %v, %d reports", err, len(reps))
	}
	for _, r := range reps {
		if len(r.Gaps) != 0 || len(r.Problems) != 0 || r.Checkpoints == 0 {
			t.Errorf("replica %s: %+v", r.Replica, r)
		}
	}
	// A key that is not pinned: its checkpoints are refused.
	if _, err := audit.VerifyCentral(t.Context(), centre, audit.NewKeySet(a.pub()), audit.CentralVerifyOptions{}); !errors.Is(err, audit.ErrSignature) {
		t.Errorf("verify --central with only alice's key: %v, want a signature error", err)
	}
}

// dyingCentre stores batches through the real centre, but after `after`
// batches it stores one more and then reports failure, as a shipper
// killed between PostgreSQL's commit and its own bookkeeping would see:
// the worst case for duplicates.
type dyingCentre struct {
	*AuditCentre
	mu    sync.Mutex
	after int
	died  chan struct{}
}

func (d *dyingCentre) PutRecords(ctx context.Context, replica string, recs []audit.ShipRecord, head uint64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.died:
		return 0, errors.New("shipper is dead")
	default:
	}
	n, err := d.AuditCentre.PutRecords(ctx, replica, recs, head)
	if err != nil {
		return n, err
	}
	if d.after--; d.after < 0 {
		close(d.died)
		return 0, errors.New("killed after the commit")
	}
	return n, nil
}

// TestAuditShipResumesAfterCrash: a shipper killed midway (its last
// batch committed at the centre but never acknowledged), then the replica
// restarted and shipping resumed: every record reaches the centre once,
// none is lost, none duplicated, and the chain verifies.
func TestAuditShipResumesAfterCrash(t *testing.T) {
	dsn := pgDB(t)
	centre := openCentre(t, dsn)
	tr := openTrail(t, t.TempDir(), nil)
	tr.write(200)
	dying := &dyingCentre{AuditCentre: centre, after: 2, died: make(chan struct{})}
	tr.startShipping(dying)
	select {
	case <-dying.died:
	case <-time.After(60 * time.Second):
		t.Fatal("the shipper never shipped three batches")
	}
	id := tr.ship.ReplicaID()
	_ = tr.ship.Close()
	tr.ship = nil
	rows, _, _ := rowCounts(t, dsn, id)
	if rows != 75 {
		t.Fatalf("before the restart the centre holds %d records, want 3 batches of 25", rows)
	}
	// The replica restarts, writes more, and ships again.
	_ = tr.log.Close()
	tr.reopen()
	tr.write(40)
	tr.startShipping(centre)
	tr.caughtUp()
	rows, distinct, maxSeq := rowCounts(t, dsn, id)
	if rows != 240 || distinct != 240 || maxSeq != 240 {
		t.Fatalf("after resuming: %d rows, %d distinct, max seq %d; want 240 of each", rows, distinct, maxSeq)
	}
	if got := tr.metric("phigate_audit_ship_records_total"); got != 240-75 {
		t.Errorf("the resumed shipper stored %v records, want %d", got, 240-75)
	}
	reps, err := audit.VerifyCentral(t.Context(), centre, audit.NewKeySet(tr.pub()), audit.CentralVerifyOptions{})
	if err != nil {
		t.Fatalf("verify --central: %v %+v", err, reps)
	}
}

// TestAuditShipSurvivesPostgresOutage: with PostgreSQL stopped, records
// are still written (the trail gates a Check, shipping does not), the lag
// grows in records and seconds and errors are counted; once PostgreSQL is
// back, shipping catches up and the lag returns to zero.
func TestAuditShipSurvivesPostgresOutage(t *testing.T) {
	srv := pgtest.StartOwn(t)
	dsn := srv.DSN
	if _, err := Migrate(t.Context(), dsn); err != nil {
		t.Fatal(err)
	}
	centre := openCentre(t, dsn)
	var mu sync.Mutex
	clock := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	set := func(t time.Time) { mu.Lock(); defer mu.Unlock(); clock = t }
	tr := openTrail(t, t.TempDir(), nil, audit.WithClock(now))
	s, err := audit.StartShipper(tr.log, centre, audit.ShipRegisterer(tr.reg), audit.ShipClock(now))
	if err != nil {
		t.Fatal(err)
	}
	tr.ship = s
	tr.write(20)
	tr.caughtUp()
	if lag := tr.metric("phigate_audit_ship_lag_records"); lag != 0 {
		t.Fatalf("lag before the outage: %v", lag)
	}

	srv.Stop()
	set(time.Date(2026, 12, 4, 9, 10, 0, 0, time.UTC))
	start := time.Now()
	tr.write(30) // recorded at 09:10
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("30 records took %s with PostgreSQL down", d)
	}
	deadline := time.Now().Add(60 * time.Second)
	for tr.metric("phigate_audit_ship_errors_total", "reason", "centre") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no shipping error counted with PostgreSQL down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	set(time.Date(2026, 12, 4, 10, 10, 0, 0, time.UTC))
	if lag := tr.metric("phigate_audit_ship_lag_records"); lag != 30 {
		t.Errorf("lag in records with PostgreSQL down: %v, want 30", lag)
	}
	// The oldest record waiting was recorded at 09:10; the clock says 10:10.
	if lag := tr.metric("phigate_audit_ship_lag_seconds"); lag != 3600 {
		t.Errorf("lag in seconds: %v, want 3600", lag)
	}

	srv.Restart()
	tr.caughtUp()
	if lag := tr.metric("phigate_audit_ship_lag_records"); lag != 0 {
		t.Errorf("lag after PostgreSQL came back: %v", lag)
	}
	if lag := tr.metric("phigate_audit_ship_lag_seconds"); lag != 0 {
		t.Errorf("lag in seconds after catching up: %v", lag)
	}
	rows, distinct, maxSeq := rowCounts(t, dsn, tr.ship.ReplicaID())
	if rows != 50 || distinct != 50 || maxSeq != 50 {
		t.Fatalf("after the outage: %d rows, %d distinct, max %d; want 50", rows, distinct, maxSeq)
	}
	if _, err := audit.VerifyCentral(t.Context(), centre, audit.NewKeySet(tr.pub()), audit.CentralVerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestAuditCentralTamper: verify --central names what was done to the
// centre's copy: a record whose bytes were edited, a record deleted (a
// gap, named by replica and range), columns that no longer say what the
// bytes say, and records that never arrived at the tail.
func TestAuditCentralTamper(t *testing.T) {
	dsn := pgDB(t)
	centre := openCentre(t, dsn)
	tr := openTrail(t, t.TempDir(), nil)
	tr.startShipping(centre)
	tr.write(40)
	tr.caughtUp()
	id := tr.ship.ReplicaID()
	keys := audit.NewKeySet(tr.pub())
	verify := func() (audit.CentralReport, error) {
		t.Helper()
		reps, err := audit.VerifyCentral(t.Context(), centre, keys, audit.CentralVerifyOptions{})
		if len(reps) != 1 {
			t.Fatalf("%d reports: %v", len(reps), err)
		}
		return reps[0], err
	}
	if _, err := verify(); err != nil {
		t.Fatalf("before tampering: %v", err)
	}

	// Deleted: record 20, and the last three (as if never shipped).
	execSQL(t, dsn, "DELETE FROM phigate_audit_records WHERE replica = $1 AND (seq = 20 OR seq > 37)", id)
	rep, err := verify()
	if !errors.Is(err, audit.ErrTruncated) || audit.ExitCode(err) != audit.ExitTruncated {
		t.Fatalf("after deleting: %v (exit %d), want truncated", err, audit.ExitCode(err))
	}
	wantGaps := []audit.Gap{{From: 20, To: 20}, {From: 38, To: 40}}
	if len(rep.Gaps) != len(wantGaps) {
		t.Fatalf("gaps %+v, want %v", rep.Gaps, wantGaps)
	}
	for i, g := range rep.Gaps {
		if g.From != wantGaps[i].From || g.To != wantGaps[i].To || g.Why == "" {
			t.Errorf("gap %d: %+v, want %d-%d with a reason", i, g, wantGaps[i].From, wantGaps[i].To)
		}
	}

	// Edited: one byte of record 10's payload.
	if n := execSQL(t, dsn, "UPDATE phigate_audit_records SET frame = set_byte(frame, 60, get_byte(frame, 60) # 1) WHERE replica = $1 AND seq = 10", id); n != 1 {
		t.Fatal("no record 10 to edit")
	}
	// Columns: record 5 said to be another user's.
	execSQL(t, dsn, "UPDATE phigate_audit_records SET user_id = 'someone-else' WHERE replica = $1 AND seq = 5", id)
	rep, err = verify()
	if !errors.Is(err, audit.ErrChainBroken) || audit.ExitCode(err) != audit.ExitChainBroken {
		t.Fatalf("after editing: %v (exit %d), want chain broken", err, audit.ExitCode(err))
	}
	var at []uint64
	for _, p := range rep.Problems {
		if p.Code == audit.CodeChainBroken {
			at = append(at, p.Seq)
		}
	}
	if !slices.Equal(at, []uint64{5, 10}) {
		t.Errorf("chain problems at %v, want records 5 and 10: %+v", at, rep.Problems)
	}
	if len(rep.Gaps) != 2 {
		t.Errorf("the gaps are still named: %+v", rep.Gaps)
	}
	// A query reads the bytes: the edited record is reported, not served.
	got, err := audit.QueryCentral(t.Context(), centre, audit.Filter{}, audit.QueryOptions{})
	if !errors.Is(err, audit.ErrChainBroken) || len(got) != 40-4-1 {
		t.Errorf("query over the tampered centre: %d entries, %v", len(got), err)
	}
}

// TestAuditShipRefusesSecondChain: two trails configured with one
// replica id. The first claims it; the second is refused and stops (an
// alarm in its metrics, a conflict row as evidence, a problem verify
// names), and the first's copy is untouched.
func TestAuditShipRefusesSecondChain(t *testing.T) {
	dsn := pgDB(t)
	centre := openCentre(t, dsn)
	same := func(c *audit.Config) { c.ReplicaID = "ward-3" }
	a := openTrail(t, filepath.Join(t.TempDir(), "a"), same)
	b := openTrail(t, filepath.Join(t.TempDir(), "b"), same)
	a.startShipping(centre)
	a.write(10)
	a.caughtUp()
	b.write(10)
	b.startShipping(centre)
	deadline := time.Now().Add(60 * time.Second)
	for !b.ship.Halted() {
		if time.Now().After(deadline) {
			t.Fatal("the second chain under ward-3 was not refused")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v := b.metric("phigate_audit_ship_halted"); v != 1 {
		t.Errorf("halted gauge %v", v)
	}
	if v := b.metric("phigate_audit_ship_errors_total", "reason", "conflict"); v != 1 {
		t.Errorf("conflict errors %v", v)
	}
	a.write(5)
	a.caughtUp()
	if rows, _, _ := rowCounts(t, dsn, "ward-3"); rows != 15 {
		t.Errorf("ward-3 holds %d records, want the first trail's 15", rows)
	}
	rep, err := audit.VerifyCentral(t.Context(), centre, audit.NewKeySet(a.pub(), b.pub()), audit.CentralVerifyOptions{})
	if !errors.Is(err, audit.ErrShipConflict) || len(rep) != 1 || len(rep[0].Problems) != 1 {
		t.Fatalf("verify --central: %v %+v", err, rep)
	}
}

// TestMigrateEitherOrder: migrations written side by side may reach a
// database in either order. One applied without a lower-numbered one gets
// the lower one applied later, and Check wants them all.
func TestMigrateEitherOrder(t *testing.T) {
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 2 {
		t.Skip("one migration")
	}
	for skip := 1; skip < len(all); skip++ {
		t.Run(all[skip].name, func(t *testing.T) {
			dsn := pgtest.Start(t)
			conn, err := pgx.Connect(t.Context(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			without := slices.Delete(slices.Clone(all), skip, skip+1)
			if _, err := migrate(t.Context(), conn, without); err != nil {
				t.Fatalf("without %s: %v", all[skip].name, err)
			}
			if err := Check(t.Context(), dsn); !errors.Is(err, ErrSchema) {
				t.Fatalf("check with %s missing: %v", all[skip].name, err)
			}
			applied, err := Migrate(t.Context(), dsn)
			if err != nil || !slices.Equal(applied, []int{all[skip].version}) {
				t.Fatalf("then Migrate applied %v (%v), want [%d]", applied, err, all[skip].version)
			}
			if err := Check(t.Context(), dsn); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestMigrateSharedNumber: two migrations written side by side took one
// number (0003_alerts and 0003_audit). A database an earlier build
// migrated, whose phigate_schema is keyed by the number alone and holds
// one of them, gets the other applied and its bookkeeping rekeyed; Check
// then wants both.
func TestMigrateSharedNumber(t *testing.T) {
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var shared []migration
	for i := 1; i < len(all); i++ {
		if all[i].version == all[i-1].version {
			shared = append(shared, all[i-1], all[i])
		}
	}
	if len(shared) == 0 {
		t.Skip("no two migrations share a number")
	}
	dsn := pgtest.Start(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// What an earlier build left: keyed by version, the first of the pair applied.
	if _, err := conn.Exec(t.Context(), `CREATE TABLE phigate_schema (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.name == shared[1].name {
			continue
		}
		if _, err := conn.Exec(t.Context(), m.sql); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		if _, err := conn.Exec(t.Context(), "INSERT INTO phigate_schema (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			t.Fatal(err)
		}
	}
	if err := Check(t.Context(), dsn); !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), shared[1].name) {
		t.Fatalf("check with %s missing: %v", shared[1].name, err)
	}
	applied, err := Migrate(t.Context(), dsn)
	if err != nil || !slices.Equal(applied, []int{shared[1].version}) {
		t.Fatalf("Migrate applied %v (%v), want [%d]", applied, err, shared[1].version)
	}
	if err := Check(t.Context(), dsn); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM phigate_schema WHERE version = $1", shared[1].version).Scan(&n); err != nil || n != 2 {
		t.Fatalf("phigate_schema holds %d rows of version %d (%v), want 2", n, shared[1].version, err)
	}
}
