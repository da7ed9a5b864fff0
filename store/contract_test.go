package store

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// backends opens each Store implementation fresh for one test: the
// embedded one, and PostgreSQL on a real server (internal/pgtest).
func backends(t *testing.T) map[string]func(t *testing.T) Store {
	return map[string]func(t *testing.T) Store{
		"memory": func(t *testing.T) Store {
			m := NewMemory(0)
			t.Cleanup(func() { _ = m.Close() })
			return m
		},
		"postgres": func(t *testing.T) Store {
			return openPG(t, pgDB(t))
		},
	}
}

func pgDB(t *testing.T) string {
	t.Helper()
	dsn := pgtest.Start(t)
	if _, err := Migrate(t.Context(), dsn); err != nil {
		t.Fatal(err)
	}
	return dsn
}

func openPG(t *testing.T, dsn string) *Postgres {
	t.Helper()
	p, err := OpenPostgres(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

var t0 = time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC)

// TestStoreContract holds both backends to one behaviour.
func TestStoreContract(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("grants", func(t *testing.T) { testGrants(t, open(t)) })
			t.Run("relationships", func(t *testing.T) { testRelationships(t, open(t)) })
			t.Run("consents", func(t *testing.T) { testConsents(t, open(t)) })
			t.Run("elevations", func(t *testing.T) { testElevations(t, open(t)) })
			t.Run("alerts", func(t *testing.T) { testAlerts(t, open(t)) })
			t.Run("bad input changes nothing", func(t *testing.T) { testInvalid(t, open(t)) })
			t.Run("changes", func(t *testing.T) { testChanges(t, open(t)) })
		})
	}
}

func testGrants(t *testing.T, s Store) {
	ctx := t.Context()
	now := time.Now()
	exp := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	must(t, s.Put(ctx, "prac-1", authz.Grant{Patient: "pat-2", Reason: "ED", ExpiresNS: exp(time.Hour)}))
	must(t, s.Put(ctx, "prac-1", authz.Grant{Patient: "pat-2", Reason: "shorter", ExpiresNS: exp(time.Minute)}))
	must(t, s.Put(ctx, "prac-1", authz.Grant{Patient: "pat-3", Reason: "ED", ExpiresNS: exp(-time.Minute)}))
	gs, err := s.Active(ctx, "prac-1", now)
	must(t, err)
	if len(gs) != 1 || gs[0].Patient != "pat-2" || gs[0].Reason != "ED" || gs[0].ExpiresNS != exp(time.Hour) {
		t.Fatalf("active grants %+v: want pat-2's hour-long grant, not shortened, without the expired one", gs)
	}
	must(t, s.Put(ctx, "prac-1", authz.Grant{Patient: "pat-2", Reason: "longer", ExpiresNS: exp(2 * time.Hour)}))
	if gs, _ := s.Active(ctx, "prac-1", now); len(gs) != 1 || gs[0].Reason != "longer" {
		t.Fatalf("extended grant %+v", gs)
	}
	if gs, _ := s.Active(ctx, "prac-1", now.Add(3*time.Hour)); len(gs) != 0 {
		t.Fatalf("grants after expiry %+v", gs)
	}
	if gs, _ := s.Active(ctx, "nobody", now); len(gs) != 0 {
		t.Fatalf("grants of another subject %+v", gs)
	}
}

func testRelationships(t *testing.T, s Store) {
	ctx := t.Context()
	k := RelationshipKey{Practitioner: "prac-1", Patient: "pat-1", Role: "attending", Source: "adt"}
	must(t, s.PutRelationship(ctx, Relationship{RelationshipKey: k, From: t0}))
	k2 := k
	k2.Source = "careteam"
	must(t, s.PutRelationship(ctx, Relationship{RelationshipKey: k2, From: t0, Until: t0.Add(48 * time.Hour)}))
	k3 := RelationshipKey{Practitioner: "prac-1", Patient: "pat-9", Role: "consulting", Source: "adt"}
	must(t, s.PutRelationship(ctx, Relationship{RelationshipKey: k3, From: t0.Add(time.Hour)}))

	at := func(when time.Time) []RelationshipKey {
		t.Helper()
		rs, err := s.Relationships(ctx, "prac-1", when)
		must(t, err)
		var out []RelationshipKey
		for _, r := range rs {
			out = append(out, r.RelationshipKey)
		}
		return out
	}
	if got := at(t0.Add(-time.Second)); len(got) != 0 {
		t.Fatalf("before it began: %v", got)
	}
	if got := at(t0.Add(30 * time.Minute)); !slices.Equal(got, []RelationshipKey{k, k2}) {
		t.Fatalf("at 30m: %v", got)
	}
	if got := at(t0.Add(2 * time.Hour)); !slices.Equal(got, []RelationshipKey{k, k2, k3}) {
		t.Fatalf("at 2h: %v", got)
	}
	// A discharge through the ADT feed ends that source's relationship
	// only; the care team's stays until its own end.
	must(t, s.EndRelationship(ctx, k, t0.Add(3*time.Hour)))
	if got := at(t0.Add(4 * time.Hour)); !slices.Equal(got, []RelationshipKey{k2, k3}) {
		t.Fatalf("after discharge: %v", got)
	}
	if got := at(t0.Add(49 * time.Hour)); !slices.Equal(got, []RelationshipKey{k3}) {
		t.Fatalf("after the care team's end: %v", got)
	}
	// Ending an unknown relationship is not an error, and a readmission
	// reopens it.
	must(t, s.EndRelationship(ctx, RelationshipKey{Practitioner: "prac-1", Patient: "pat-77", Role: "attending", Source: "adt"}, t0))
	must(t, s.PutRelationship(ctx, Relationship{RelationshipKey: k, From: t0.Add(50 * time.Hour)}))
	if got := at(t0.Add(51 * time.Hour)); !slices.Equal(got, []RelationshipKey{k, k3}) {
		t.Fatalf("after readmission: %v", got)
	}
	// Ending before the start leaves it never in force.
	must(t, s.EndRelationship(ctx, k3, t0))
	if got := at(t0.Add(51 * time.Hour)); !slices.Equal(got, []RelationshipKey{k}) {
		t.Fatalf("after ending before the start: %v", got)
	}
}

func testConsents(t *testing.T, s Store) {
	ctx := t.Context()
	must(t, s.PutConsent(ctx, Consent{ID: "c1", Patient: "pat-1", Effect: EffectDeny, Purpose: "HRESCH", From: t0}))
	must(t, s.PutConsent(ctx, Consent{ID: "c2", Patient: "pat-1", Effect: EffectRestrict, Label: "PSY", From: t0, Until: t0.Add(time.Hour)}))
	must(t, s.PutConsent(ctx, Consent{ID: "c3", Patient: "pat-2", Effect: EffectDeny, Label: "ETH", From: t0}))
	ids := func(patient string, when time.Time) []string {
		t.Helper()
		cs, err := s.Consents(ctx, patient, when)
		must(t, err)
		var out []string
		for _, c := range cs {
			out = append(out, c.ID)
		}
		return out
	}
	if got := ids("pat-1", t0.Add(time.Minute)); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Fatalf("pat-1's consents %v", got)
	}
	if got := ids("pat-1", t0.Add(2*time.Hour)); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("pat-1's consents after c2 ended %v", got)
	}
	// Replacing c1 with a directive for another patient moves it.
	must(t, s.PutConsent(ctx, Consent{ID: "c1", Patient: "pat-2", Effect: EffectRestrict, Purpose: "HRESCH", From: t0}))
	if got := ids("pat-1", t0.Add(2*time.Hour)); len(got) != 0 {
		t.Fatalf("pat-1 keeps a moved consent: %v", got)
	}
	if got := ids("pat-2", t0.Add(2*time.Hour)); !slices.Equal(got, []string{"c1", "c3"}) {
		t.Fatalf("pat-2's consents %v", got)
	}
	cs, _ := s.Consents(ctx, "pat-2", t0.Add(2*time.Hour))
	if cs[0].Effect != EffectRestrict || cs[0].Purpose != "HRESCH" || !cs[0].From.Equal(t0) || !cs[0].Until.IsZero() {
		t.Fatalf("replaced consent %+v", cs[0])
	}
}

func testElevations(t *testing.T, s Store) {
	ctx := t.Context()
	e := Elevation{Subject: "nurse-1", Role: "physician", Reason: "covering ward 7", GrantedBy: "charge-nurse", Expires: t0.Add(8 * time.Hour)}
	must(t, s.PutElevation(ctx, e))
	must(t, s.PutElevation(ctx, Elevation{Subject: "nurse-1", Role: "admin", Reason: "x", GrantedBy: "it", Expires: t0.Add(time.Hour)}))
	es, err := s.Elevations(ctx, "nurse-1", t0.Add(2*time.Hour))
	must(t, err)
	if len(es) != 1 || es[0] != e {
		t.Fatalf("elevations %+v, want %+v", es, e)
	}
	e.Expires = t0.Add(time.Hour) // shortened: replaced
	must(t, s.PutElevation(ctx, e))
	if es, _ := s.Elevations(ctx, "nurse-1", t0.Add(2*time.Hour)); len(es) != 0 {
		t.Fatalf("elevations after shortening %+v", es)
	}
}

func testInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	k := RelationshipKey{Practitioner: "prac-1", Patient: "pat-1", Role: "attending", Source: "adt"}
	bad := []struct {
		name string
		err  error
	}{
		{"grant without patient", s.Put(ctx, "prac-1", authz.Grant{ExpiresNS: 1})},
		{"grant without expiry", s.Put(ctx, "prac-1", authz.Grant{Patient: "pat-1"})},
		{"relationship without role", s.PutRelationship(ctx, Relationship{RelationshipKey: RelationshipKey{Practitioner: "p", Patient: "q", Source: "adt"}, From: t0})},
		{"relationship ending before it starts", s.PutRelationship(ctx, Relationship{RelationshipKey: k, From: t0, Until: t0.Add(-time.Hour)})},
		{"relationship without a start", s.PutRelationship(ctx, Relationship{RelationshipKey: k})},
		{"id with a space", s.PutRelationship(ctx, Relationship{RelationshipKey: RelationshipKey{Practitioner: "prac 1", Patient: "q", Role: "r", Source: "s"}, From: t0})},
		{"consent with neither purpose nor label", s.PutConsent(ctx, Consent{ID: "c", Patient: "pat-1", Effect: EffectDeny, From: t0})},
		{"consent with an unknown effect", s.PutConsent(ctx, Consent{ID: "c", Patient: "pat-1", Effect: "permit", Purpose: "TREAT", From: t0})},
		{"elevation without a reason", s.PutElevation(ctx, Elevation{Subject: "u", Role: "r", GrantedBy: "g", Expires: t0})},
		{"end without a time", s.EndRelationship(ctx, k, time.Time{})},
	}
	for _, b := range bad {
		if !errors.Is(b.err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", b.name, b.err)
		}
	}
	if rs, _ := s.Relationships(ctx, "prac-1", t0.Add(time.Minute)); len(rs) != 0 {
		t.Errorf("a refused write stored %v", rs)
	}
	if cs, _ := s.Consents(ctx, "pat-1", t0.Add(time.Minute)); len(cs) != 0 {
		t.Errorf("a refused write stored %v", cs)
	}
}

func testChanges(t *testing.T, s Store) {
	ctx := t.Context()
	must(t, s.PutRelationship(ctx, Relationship{RelationshipKey: RelationshipKey{Practitioner: "prac-1", Patient: "pat-1", Role: "attending", Source: "adt"}, From: t0}))
	must(t, s.PutConsent(ctx, Consent{ID: "c1", Patient: "pat-4", Effect: EffectDeny, Label: "PSY", From: t0}))
	want := []Change{{Kind: KindRelationship, Subject: "prac-1", Patient: "pat-1"}, {Kind: KindConsent, Patient: "pat-4"}}
	for _, w := range want {
		if got := next(t, s.Changes(), 5*time.Second); got != w {
			t.Fatalf("change %+v, want %+v", got, w)
		}
	}
}

func next(t *testing.T, ch <-chan Change, within time.Duration) Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(within):
		t.Fatalf("no change within %v", within)
		return Change{}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPostgresReplicasSeeEachOther: two replicas on one database. A
// relationship revoked through one is gone for the other, and the other's
// change feed announces it: the bound a replica's cache can trust. The
// delay from the commit to the other replica's notification is measured
// over many revocations and reported; the test requires every one within
// a second.
func TestPostgresReplicasSeeEachOther(t *testing.T) {
	dsn := pgDB(t)
	a, b := openPG(t, dsn), openPG(t, dsn)
	ctx := t.Context()
	k := RelationshipKey{Practitioner: "prac-1", Patient: "pat-1", Role: "attending", Source: "adt"}
	var delays []time.Duration
	for i := range 200 {
		from := t0.Add(time.Duration(i) * time.Minute)
		must(t, a.PutRelationship(ctx, Relationship{RelationshipKey: k, From: from}))
		next(t, b.Changes(), 5*time.Second)
		start := time.Now()
		must(t, a.EndRelationship(ctx, k, from.Add(time.Second)))
		c := next(t, b.Changes(), time.Second)
		delays = append(delays, time.Since(start))
		if c.Kind != KindRelationship || c.Subject != "prac-1" || c.Patient != "pat-1" {
			t.Fatalf("replica b saw %+v", c)
		}
		if rs, _ := b.Relationships(ctx, "prac-1", from.Add(time.Minute)); len(rs) != 0 {
			t.Fatalf("replica b still reads the revoked relationship %+v", rs)
		}
	}
	slices.Sort(delays)
	t.Logf("revocation on replica a announced on replica b: p50 %v, p95 %v, p99 %v, max %v over %d",
		delays[len(delays)/2], delays[len(delays)*95/100], delays[len(delays)*99/100], delays[len(delays)-1], len(delays))
}

// TestFeedOwesAReset: a consumer that falls behind never blocks a writer
// and never silently misses a change: once it drains, a KindReset says it
// must drop what it derived.
func TestFeedOwesAReset(t *testing.T) {
	m := NewMemory(0)
	defer m.Close()
	for i := range feedBuffer + 10 {
		must(t, m.PutElevation(t.Context(), Elevation{Subject: "u", Role: "r", Reason: "x", GrantedBy: "g", Expires: t0.Add(time.Duration(i+1) * time.Minute)}))
	}
	for range feedBuffer {
		<-m.Changes()
	}
	must(t, m.PutElevation(t.Context(), Elevation{Subject: "v", Role: "r", Reason: "x", GrantedBy: "g", Expires: t0.Add(time.Hour)}))
	if c := next(t, m.Changes(), time.Second); c.Kind != KindReset {
		t.Fatalf("after an overflow the first change is %+v, want a reset", c)
	}
	if c := next(t, m.Changes(), time.Second); c.Subject != "v" {
		t.Fatalf("after the reset: %+v", c)
	}
}

// TestPostgresSchema: OpenPostgres refuses a database that has not been
// migrated, Migrate is idempotent and safe to run from two replicas at
// once, and Check agrees.
func TestPostgresSchema(t *testing.T) {
	dsn := pgtest.Start(t)
	ctx := t.Context()
	if _, err := OpenPostgres(ctx, dsn); !errors.Is(err, ErrSchema) {
		t.Fatalf("open before migrate: %v, want ErrSchema", err)
	}
	if err := Check(ctx, dsn); !errors.Is(err, ErrSchema) {
		t.Fatalf("check before migrate: %v", err)
	}
	errs := make(chan error, 2)
	applied := make(chan []int, 2)
	for range 2 {
		go func() {
			v, err := Migrate(ctx, dsn)
			applied <- v
			errs <- err
		}()
	}
	var total int
	for range 2 {
		must(t, <-errs)
		total += len(<-applied)
	}
	ms, err := migrations()
	must(t, err)
	if total != len(ms) {
		t.Fatalf("two concurrent migrations applied %d versions, want %d once", total, len(ms))
	}
	must(t, Check(ctx, dsn))
	if v, err := Migrate(ctx, dsn); err != nil || len(v) != 0 {
		t.Fatalf("migrate again: %v %v", v, err)
	}
	p := openPG(t, dsn)
	if _, err := p.pool.Exec(context.Background(), "INSERT INTO phigate_schema (version, name) VALUES (999, 'from the future')"); err != nil {
		t.Fatal(err)
	}
	if err := Check(ctx, dsn); !errors.Is(err, ErrSchema) {
		t.Fatalf("check of a newer schema: %v", err)
	}
	if _, err := Migrate(ctx, dsn); err == nil {
		t.Fatal("migrate downgraded a newer schema")
	}
}

func testAlerts(t *testing.T, s Store) {
	ctx := t.Context()
	at := t0.Add(time.Minute)
	must(t, s.RaiseAlert(ctx, "u1", "bulk_read.distinct_patients", at))
	must(t, s.RaiseAlert(ctx, "u1", "bulk_read.distinct_patients", at.Add(time.Second))) // kept: one open per kind
	must(t, s.RaiseAlert(ctx, "u2", "bulk_read.distinct_patients", at.Add(2*time.Second)))
	open, err := s.ListAlerts(ctx, "", "", 0)
	if err != nil || len(open) != 2 || open[0].Subject != "u2" || open[1].Subject != "u1" || !open[1].RaisedAt.Equal(at) {
		t.Fatalf("open alerts %+v %v, want u2's then u1's first", open, err)
	}
	id := open[1].ID
	must(t, s.ResolveAlert(ctx, id, AlertEscalated, "officer-1", "referred to HR", at.Add(time.Minute)))
	if mine, _ := s.ListAlerts(ctx, "u1", "", 0); len(mine) != 1 || mine[0].State != AlertEscalated || mine[0].ResolvedBy != "officer-1" {
		t.Fatalf("an escalated alert still holds: %+v", mine)
	}
	must(t, s.ResolveAlert(ctx, id, AlertCleared, "officer-1", "justified", at.Add(2*time.Minute)))
	if mine, _ := s.ListAlerts(ctx, "u1", "", 0); len(mine) != 0 {
		t.Fatalf("a cleared alert still holds: %+v", mine)
	}
	if cleared, _ := s.ListAlerts(ctx, "u1", AlertCleared, 0); len(cleared) != 1 || cleared[0].Note != "justified" {
		t.Fatalf("cleared: %+v", cleared)
	}
	if err := s.ResolveAlert(ctx, id, AlertCleared, "officer-1", "", at); !errors.Is(err, ErrInvalid) {
		t.Errorf("clearing twice: %v", err)
	}
	if err := s.ResolveAlert(ctx, "999999", AlertCleared, "officer-1", "", at); !errors.Is(err, ErrNotFound) {
		t.Errorf("an unknown alert: %v", err)
	}
	if err := s.ResolveAlert(ctx, open[0].ID, "forgotten", "officer-1", "", at); !errors.Is(err, ErrInvalid) {
		t.Errorf("an unknown state: %v", err)
	}
	// Raised again after clearing, it is a new alert.
	must(t, s.RaiseAlert(ctx, "u1", "bulk_read.distinct_patients", at.Add(3*time.Minute)))
	if mine, _ := s.ListAlerts(ctx, "u1", "", 0); len(mine) != 1 || mine[0].ID == id {
		t.Fatalf("raised after clearing: %+v", mine)
	}
}
