package audit

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
)

// reviewTrail writes a small trail: u0 reads often, u1 stopped long ago,
// u2 only ever refused, one break-glass access reviewed and one not.
func reviewTrail(t *testing.T) (dir string, asOf time.Time, bgReviewed, bgOpen string) {
	t.Helper()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := base
	l, cfg := openTest(t, nil, WithClock(func() time.Time { return now }))
	ctx := t.Context()
	rec := func(at time.Time, i int, user string, allow bool, rules []string, mod func(*authz.Request, *authz.Decision)) string {
		now = at
		req := testRequest(i, user, fmt.Sprintf("p%d", i%7))
		req.Identity.Scopes = []authz.Scope{{Raw: "user/Patient.rs", Context: "user", Resource: "Patient", Permissions: "rs"},
			{Raw: "user/Claim.rs", Context: "user", Resource: "Claim", Permissions: "rs"}}
		d := testDecision(i, allow)
		d.Audit.Rules = rules
		if mod != nil {
			mod(req, d)
		}
		if err := l.Record(ctx, req, d); err != nil {
			t.Fatal(err)
		}
		return d.ID
	}
	read := []string{"rbac.allow:physician:read:Patient"}
	rec(base, 1, "u1", true, read, nil) // u1's last use: 100 days before asOf
	for i := 10; i < 40; i++ {
		rec(base.Add(90*24*time.Hour+time.Duration(i)*time.Hour), i, "u0", true, read, nil)
	}
	rec(base.Add(95*24*time.Hour), 50, "u2", false, nil, nil)
	bg := func(req *authz.Request, d *authz.Decision) {
		req.BreakGlass = authz.BreakGlassRequest{Requested: true, Reason: "trauma"}
		d.BreakGlass = authz.BreakGlass{Active: true, Reason: "trauma", Expires: base.Format(time.RFC3339)}
	}
	bgReviewed = rec(base.Add(96*24*time.Hour), 60, "u0", true, read, bg)
	bgOpen = rec(base.Add(97*24*time.Hour), 61, "u0", true, read, bg)
	now = base.Add(98 * 24 * time.Hour)
	if err := l.RecordWorkflow(ctx, WorkflowEvent{Action: WorkflowReviewed, Actor: "po-1", DecisionID: bgReviewed}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg.Dir, base.Add(101 * 24 * time.Hour), bgReviewed, bgOpen
}

func TestReview(t *testing.T) {
	dir, asOf, reviewed, open := reviewTrail(t)
	es, err := Query(dir, Filter{}, QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]map[string][]string{
		"physician": {"Patient": {"read", "search-type"}, "*": {"read"}},
		"billing":   {"Claim": {"read"}},
	}
	o := ReviewOptions{UnusedFor: 90 * 24 * time.Hour, AsOf: asOf, Roles: roles, Sample: 5, Seed: 7}
	r := BuildReview(es, o)

	var unused []string
	for _, u := range r.UnusedIdentities {
		unused = append(unused, u.Subject)
	}
	if !slices.Equal(unused, []string{"u1", "u2"}) {
		t.Errorf("unused identities %v, want u1 (last used 100 days ago) and u2 (never allowed)", unused)
	}
	var scopes []string
	for _, s := range r.UnusedScopes {
		if s.Subject == "u0" {
			scopes = append(scopes, s.Scope)
		}
	}
	if !slices.Equal(scopes, []string{"user/Claim.rs"}) {
		t.Errorf("u0's unused scopes %v, want only the Claim scope its Patient reads never used", scopes)
	}
	got := map[string]RoleUse{}
	for _, ro := range r.UnexercisedRoles {
		got[ro.Role] = ro
	}
	if b := got["billing"]; !b.All {
		t.Errorf("billing: %+v, want never exercised", b)
	}
	if p := got["physician"]; p.All || !slices.Equal(p.Unused, []string{"*:read", "Patient:search-type"}) {
		t.Errorf("physician: %+v, want only *:read and Patient:search-type unused", p)
	}
	if len(r.UnreviewedBreakGlass) != 1 || r.UnreviewedBreakGlass[0].DecisionID != open {
		t.Errorf("unreviewed break-glass %+v, want only %s (%s was reviewed)", r.UnreviewedBreakGlass, open, reviewed)
	}
	o.Reviewed = []string{open} // reviewed in the store, through another replica
	if r2 := BuildReview(es, o); len(r2.UnreviewedBreakGlass) != 0 {
		t.Errorf("a review from the store did not count: %+v", r2.UnreviewedBreakGlass)
	}

	if r.SampleFrom != 33 || len(r.Sample) != 5 {
		t.Fatalf("sample %d of %d, want 5 of the 33 allowed reads", len(r.Sample), r.SampleFrom)
	}
	ids := func(as []Access) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.DecisionID)
		}
		return out
	}
	if again := BuildReview(es, o); !slices.Equal(ids(again.Sample), ids(r.Sample)) {
		t.Errorf("the same seed drew %v, then %v", ids(r.Sample), ids(again.Sample))
	}
	o.Seed = 8
	if other := BuildReview(es, o); slices.Equal(ids(other.Sample), ids(r.Sample)) {
		t.Errorf("seeds 7 and 8 drew the same sample %v", ids(r.Sample))
	}

	var text, js bytes.Buffer
	if err := WriteReview(&text, r, false); err != nil {
		t.Fatal(err)
	}
	if err := WriteReview(&js, r, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Identities unused (2)", "Break-glass accesses not reviewed (1)", open, "seed 7"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	if !strings.Contains(js.String(), `"unreviewed_break_glass"`) {
		t.Errorf("JSON report: %s", js.String())
	}
}
