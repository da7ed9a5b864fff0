package store

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/phigate/phigate/internal/pgtest"
)

// TestApprovalContract holds both backends to one approval workflow.
func TestApprovalContract(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("operation", func(t *testing.T) { testOperationApproval(t, open(t).(ApprovalStore)) })
			t.Run("elevation", func(t *testing.T) { testElevationApproval(t, open(t)) })
			t.Run("bad input changes nothing", func(t *testing.T) { testApprovalInvalid(t, open(t).(ApprovalStore)) })
			t.Run("reviews", func(t *testing.T) { testReviews(t, open(t).(ApprovalStore)) })
		})
	}
}

func exportRequest() Approval {
	return Approval{Kind: ApprovalOperation, Requester: "analyst-1", Scope: "export|level=system|_type=Patient",
		TTL: time.Hour, Expires: t0.Add(24 * time.Hour)}
}

func testOperationApproval(t *testing.T, s ApprovalStore) {
	ctx := t.Context()
	a, created, err := s.RequestApproval(ctx, exportRequest(), t0)
	must(t, err)
	if !created || a.State != ApprovalPending || len(a.ID) != 32 || a.Approver != "" {
		t.Fatalf("first request %+v created=%v: want a new pending one with a 32-hex id", a, created)
	}
	again, created, err := s.RequestApproval(ctx, exportRequest(), t0.Add(time.Minute))
	must(t, err)
	if created || again.ID != a.ID {
		t.Fatalf("a repeated kick-off made request %s (created %v), want the pending %s", again.ID, created, a.ID)
	}
	other := exportRequest()
	other.Scope = "export|level=system|_type=Observation"
	o, created, err := s.RequestApproval(ctx, other, t0)
	must(t, err)
	if !created || o.ID == a.ID {
		t.Fatal("another scope shares a request")
	}
	if _, err := s.DecideApproval(ctx, a.ID, "analyst-1", true, t0.Add(time.Minute)); !errors.Is(err, ErrSelfApproval) {
		t.Fatalf("self-approval: %v, want ErrSelfApproval", err)
	}
	if _, err := s.DecideApproval(ctx, "0000", "po-1", true, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	if got, _ := s.ApprovedFor(ctx, ApprovalOperation, "analyst-1", t0.Add(time.Minute)); len(got) != 0 {
		t.Fatalf("approved before any approval: %+v", got)
	}
	at := t0.Add(10 * time.Minute)
	ok, err := s.DecideApproval(ctx, a.ID, "po-1", true, at)
	must(t, err)
	if ok.State != ApprovalApproved || ok.Approver != "po-1" || !ok.Expires.Equal(at.Add(time.Hour)) || !ok.Decided.Equal(at) {
		t.Fatalf("approved %+v: want approved by po-1 until an hour after the approval", ok)
	}
	if _, err := s.DecideApproval(ctx, a.ID, "po-2", false, at); !errors.Is(err, ErrNotPending) {
		t.Fatalf("deciding twice: %v, want ErrNotPending", err)
	}
	got, err := s.ApprovedFor(ctx, ApprovalOperation, "analyst-1", at.Add(59*time.Minute))
	must(t, err)
	if len(got) != 1 || got[0].ID != a.ID {
		t.Fatalf("approved within the hour %+v", got)
	}
	if got, _ := s.ApprovedFor(ctx, ApprovalOperation, "analyst-1", at.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("approved after the hour %+v", got)
	}
	if got, _ := s.ApprovedFor(ctx, ApprovalOperation, "analyst-2", at); len(got) != 0 {
		t.Fatalf("another requester holds the approval: %+v", got)
	}
	// While approved, a repeated kick-off finds the approval, not a new request.
	if again, created, _ := s.RequestApproval(ctx, exportRequest(), at.Add(time.Minute)); created || again.ID != a.ID || again.State != ApprovalApproved {
		t.Fatalf("kick-off under an approval got %+v created=%v", again, created)
	}
	// Once expired, the next kick-off asks anew.
	if fresh, created, _ := s.RequestApproval(ctx, exportRequest(), at.Add(2*time.Hour)); !created || fresh.ID == a.ID {
		t.Fatalf("kick-off after expiry got %+v created=%v", fresh, created)
	}
	must(t, s.MarkApprovalUsed(ctx, a.ID, at.Add(time.Minute)))
	must(t, s.MarkApprovalUsed(ctx, a.ID, at.Add(2*time.Minute)))
	if g, _ := s.GetApproval(ctx, a.ID); !g.Used.Equal(at.Add(time.Minute)) {
		t.Fatalf("used %v, want the first use", g.Used)
	}
	denied, err := s.DecideApproval(ctx, o.ID, "po-1", false, at)
	must(t, err)
	if denied.State != ApprovalDenied {
		t.Fatalf("denied %+v", denied)
	}
	pending, err := s.ListApprovals(ctx, ApprovalPending, at.Add(2*time.Hour))
	must(t, err)
	if len(pending) != 1 || pending[0].ID == a.ID || pending[0].ID == o.ID {
		t.Fatalf("pending %+v: want only the request made after expiry", pending)
	}
	if lapsed, _ := s.ListApprovals(ctx, ApprovalLapsed, t0.Add(48*time.Hour)); len(lapsed) != 1 {
		t.Fatalf("lapsed %+v: want the undecided request once it lapsed", lapsed)
	}
	if l, _ := s.ListApprovals(ctx, ApprovalLapsed, t0.Add(48*time.Hour)); len(l) == 1 {
		if _, err := s.DecideApproval(ctx, l[0].ID, "po-1", true, t0.Add(48*time.Hour)); !errors.Is(err, ErrNotPending) {
			t.Fatalf("approving a lapsed request: %v", err)
		}
	}
}

func testElevationApproval(t *testing.T, s Store) {
	ctx := t.Context()
	as := s.(ApprovalStore)
	req := Approval{Kind: ApprovalElevation, Requester: "nurse-1", Scope: "physician", Reason: "covering ward 7",
		TTL: 30 * time.Minute, Expires: t0.Add(time.Hour)}
	a, _, err := as.RequestApproval(ctx, req, t0)
	must(t, err)
	if es, _ := s.Elevations(ctx, "nurse-1", t0); len(es) != 0 {
		t.Fatalf("elevated before the grant: %+v", es)
	}
	drain(s)
	at := t0.Add(5 * time.Minute)
	if _, err := as.DecideApproval(ctx, a.ID, "charge-1", true, at); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for range 2 {
		kinds = append(kinds, next(t, s.Changes(), 5*time.Second).Kind)
	}
	if !slices.Contains(kinds, KindApproval) || !slices.Contains(kinds, KindElevation) {
		t.Fatalf("changes %v, want an approval and an elevation", kinds)
	}
	es, err := s.Elevations(ctx, "nurse-1", at.Add(29*time.Minute))
	must(t, err)
	want := Elevation{Subject: "nurse-1", Role: "physician", Reason: "covering ward 7", GrantedBy: "charge-1", Expires: at.Add(30 * time.Minute)}
	if len(es) != 1 || es[0] != want {
		t.Fatalf("elevations %+v, want %+v", es, want)
	}
	if es, _ := s.Elevations(ctx, "nurse-1", at.Add(30*time.Minute)); len(es) != 0 {
		t.Fatalf("the elevation outlived its duration: %+v", es)
	}
	end := at.Add(30 * time.Minute)
	if got, _ := as.EndedBetween(ctx, ApprovalElevation, at, end); len(got) != 0 {
		t.Fatalf("ended before its end: %+v", got)
	}
	got, err := as.EndedBetween(ctx, ApprovalElevation, end, end.Add(time.Second))
	must(t, err)
	if len(got) != 1 || got[0].ID != a.ID {
		t.Fatalf("ended in [end, end+1s): %+v, want %s", got, a.ID)
	}
	if got, _ := as.EndedBetween(ctx, ApprovalOperation, end, end.Add(time.Second)); len(got) != 0 {
		t.Fatalf("an elevation listed as an operation: %+v", got)
	}
}

func drain(s Store) {
	for {
		select {
		case <-s.Changes():
		case <-time.After(200 * time.Millisecond):
			return
		}
	}
}

func testApprovalInvalid(t *testing.T, s ApprovalStore) {
	ctx := t.Context()
	mod := func(f func(*Approval)) Approval { a := exportRequest(); f(&a); return a }
	for name, a := range map[string]Approval{
		"unknown kind":           mod(func(a *Approval) { a.Kind = "export" }),
		"no requester":           mod(func(a *Approval) { a.Requester = "" }),
		"no scope":               mod(func(a *Approval) { a.Scope = "" }),
		"no ttl":                 mod(func(a *Approval) { a.TTL = 0 }),
		"ttl over a week":        mod(func(a *Approval) { a.TTL = 8 * 24 * time.Hour }),
		"no lapse time":          mod(func(a *Approval) { a.Expires = time.Time{} }),
		"elevation, no reason":   mod(func(a *Approval) { a.Kind, a.Scope = ApprovalElevation, "physician" }),
		"elevation, spaced role": mod(func(a *Approval) { a.Kind, a.Scope, a.Reason = ApprovalElevation, "a role", "x" }),
	} {
		if _, _, err := s.RequestApproval(ctx, a, t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := s.DecideApproval(ctx, "", "po-1", true, t0); !errors.Is(err, ErrInvalid) {
		t.Errorf("decide without id: %v", err)
	}
	if l, _ := s.ListApprovals(ctx, "", t0); len(l) != 0 {
		t.Fatalf("refused requests were stored: %+v", l)
	}
	if err := s.MarkReviewed(ctx, Review{DecisionID: "d1", At: t0}); !errors.Is(err, ErrInvalid) {
		t.Errorf("review without reviewer: %v", err)
	}
}

func testReviews(t *testing.T, s ApprovalStore) {
	ctx := t.Context()
	must(t, s.MarkReviewed(ctx, Review{DecisionID: "d2", Reviewer: "po-1", Note: "ED, appropriate", At: t0}))
	must(t, s.MarkReviewed(ctx, Review{DecisionID: "d1", Reviewer: "po-1", At: t0}))
	must(t, s.MarkReviewed(ctx, Review{DecisionID: "d2", Reviewer: "po-2", At: t0.Add(time.Hour)}))
	rs, err := s.Reviews(ctx)
	must(t, err)
	if len(rs) != 2 || rs[0].DecisionID != "d1" || rs[1].Reviewer != "po-2" || !rs[1].At.Equal(t0.Add(time.Hour)) {
		t.Fatalf("reviews %+v", rs)
	}
}

// TestMigrationsInEitherOrder: migrations numbered apart may be released
// in either order. A database that got a later number first still gets
// the earlier one, and is then at this build's schema.
func TestMigrationsInEitherOrder(t *testing.T) {
	dsn := pgtest.Start(t)
	ctx := t.Context()
	ms, err := migrations()
	must(t, err)
	conn, err := pgx.Connect(ctx, dsn)
	must(t, err)
	defer conn.Close(ctx)
	var m4 migration
	for _, m := range ms {
		if m.name == "0004_approvals.sql" {
			m4 = m
		}
	}
	if m4.name == "" {
		t.Fatalf("migrations %v lack 0004_approvals.sql", ms)
	}
	// 0004 first, alone, as on a database migrated by a build that had
	// 0001 and 0004 but not yet the numbers between.
	done, err := applyOne(ctx, conn, m4, ms)
	must(t, err)
	if !done {
		t.Fatal("0004 not applied")
	}
	if err := Check(ctx, dsn); !errors.Is(err, ErrSchema) {
		t.Fatalf("check with migrations missing: %v, want ErrSchema", err)
	}
	applied, err := Migrate(ctx, dsn)
	must(t, err)
	if len(applied) != len(ms)-1 || slices.Contains(applied, 4) {
		t.Fatalf("migrate applied %v, want every version but 4", applied)
	}
	must(t, Check(ctx, dsn))
}
