package abuse

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/internal/redistest"
	"github.com/phigate/phigate/plan"
)

type raised struct{ subject, kind string }

type sink struct{ got []raised }

func (s *sink) RaiseAlert(_ context.Context, subject, kind string, _ time.Time) error {
	s.got = append(s.got, raised{subject, kind})
	return nil
}

func reqFor(subject string, in authz.Interaction, patients ...string) *authz.Request {
	return &authz.Request{Identity: authz.Identity{Authenticated: true, Subject: subject},
		Source: authz.Peer{Address: "10.0.0.7:4312"},
		FHIR:   authz.FHIRRequest{Interaction: in, ResourceType: "Patient", Patients: patients}}
}

func TestAdmitThrottlesPerBucket(t *testing.T) {
	g := NewGuard(NewMemory(), []BucketConfig{
		{Name: "reads", Per: "identity", Route: "read", Rate: 0.01, Burst: 2},
		{Name: "everything", Per: "address", Route: "any", Rate: 0.01, Burst: 5},
	}, nil, nil, nil, nil)
	ctx := t.Context()
	for i := range 2 {
		req := reqFor("u1", authz.InteractionRead)
		if r, err := g.Admit(ctx, req); err != nil || r != nil {
			t.Fatalf("read %d: %+v %v", i, r, err)
		}
		if strings.Join(req.Throttle, ",") != "reads,everything" {
			t.Fatalf("the policy sees buckets %v, want reads,everything", req.Throttle)
		}
	}
	r, err := g.Admit(ctx, reqFor("u1", authz.InteractionRead))
	if err != nil || r == nil || r.Status != 429 || r.Reason != "throttle.reads" || r.RetryAfter <= 0 {
		t.Fatalf("third read: %+v %v", r, err)
	}
	// A search is another class: only the address bucket counts it.
	if r, _ := g.Admit(ctx, reqFor("u1", authz.InteractionSearchType)); r != nil {
		t.Fatalf("a search was throttled by the read bucket: %+v", r)
	}
	// Other identities have their own read buckets but share the
	// address's, which has given 3 of its 5 (the refused read stopped at
	// the read bucket).
	for _, u := range []string{"u2", "u3"} {
		if r, _ := g.Admit(ctx, reqFor(u, authz.InteractionRead)); r != nil {
			t.Fatalf("%s's first read: %+v", u, r)
		}
	}
	if r, _ := g.Admit(ctx, reqFor("u4", authz.InteractionRead)); r == nil || r.Reason != "throttle.everything" {
		t.Fatalf("the address bucket: %+v", r)
	}
}

func limitDecision(max string) *authz.Decision {
	return &authz.Decision{Allow: true, Obligations: []authz.Obligation{
		{Type: "notify", Params: map[string]string{"to": "x"}},
		{Type: LimitObligation, Params: map[string]string{"kind": KindDistinctPatients, "max": max, "window": "1m"}},
	}}
}

func TestWatchDistinctPatients(t *testing.T) {
	s := &sink{}
	g := NewGuard(NewMemory(), nil, nil, s, nil, nil)
	ctx := t.Context()
	for i := range 3 {
		p := []string{"p" + string(rune('0'+i))}
		if r, err := g.Watch(ctx, reqFor("u1", authz.InteractionRead, p...), limitDecision("3"), p); err != nil || r != nil {
			t.Fatalf("patient %d: %+v %v", i, r, err)
		}
	}
	// The same patients again and again are not more patients.
	for range 20 {
		if r, _ := g.Watch(ctx, reqFor("u1", authz.InteractionRead), limitDecision("3"), []string{"p1"}); r != nil {
			t.Fatalf("a patient read again was refused: %+v", r)
		}
	}
	r, err := g.Watch(ctx, reqFor("u1", authz.InteractionRead), limitDecision("3"), []string{"p9"})
	if err != nil || r == nil || r.Allow || r.Reason != "bulk_read.distinct_patients" || r.Status != 403 {
		t.Fatalf("the fourth patient: %+v %v", r, err)
	}
	if len(s.got) != 1 || s.got[0] != (raised{"u1", "bulk_read.distinct_patients"}) {
		t.Fatalf("alerts raised: %+v", s.got)
	}
	// Another identity counts on its own.
	if r, _ := g.Watch(ctx, reqFor("u2", authz.InteractionRead), limitDecision("3"), []string{"p9"}); r != nil {
		t.Fatalf("u2: %+v", r)
	}
	// Cleared, the identity starts afresh.
	g.Cleared(ctx, "u1")
	if r, _ := g.Watch(ctx, reqFor("u1", authz.InteractionRead), limitDecision("3"), []string{"p8"}); r != nil {
		t.Fatalf("after clearing: %+v", r)
	}
	// A limit that cannot be applied refuses instead of serving unwatched.
	for _, max := range []string{"0", "many", ""} {
		if _, err := g.Watch(ctx, reqFor("u3", authz.InteractionRead), limitDecision(max), []string{"p1"}); err == nil {
			t.Errorf("max %q accepted", max)
		}
	}
}

// Counters that are away refuse: the caller gets an error, never a pass.
type away struct{ *Memory }

var errGone = errors.New("gone")

func (*away) Take(context.Context, string, float64, int) (bool, time.Duration, error) {
	return false, 0, errGone
}

func (*away) Touch(context.Context, string, []string, time.Duration) (int, int, error) {
	return 0, 0, errGone
}

func TestCountersAwayFailClosed(t *testing.T) {
	g := NewGuard(&away{NewMemory()}, []BucketConfig{{Name: "b", Per: "identity", Route: "any", Rate: 1, Burst: 1}}, nil, nil, nil, nil)
	if _, err := g.Admit(t.Context(), reqFor("u1", authz.InteractionRead)); !errors.Is(err, errGone) {
		t.Fatalf("Admit: %v", err)
	}
	if _, err := g.Watch(t.Context(), reqFor("u1", authz.InteractionRead), limitDecision("3"), []string{"p"}); !errors.Is(err, errGone) {
		t.Fatalf("Watch: %v", err)
	}
}

// Redis holds keyed members, never the patient id.
func TestRedisHoldsNoPatientID(t *testing.T) {
	addr, prefix := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	g := NewGuard(NewRedis(c, prefix), nil, []byte(strings.Repeat("k", 32)), nil, nil, nil)
	const id = "pat-distinctive-4711"
	if _, err := g.Watch(t.Context(), reqFor("u1", authz.InteractionRead), limitDecision("5"), []string{id}); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(t.Context(), prefix+"*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v %v", keys, err)
	}
	members, err := c.ZRange(t.Context(), keys[0], 0, -1).Result()
	if err != nil || len(members) != 1 {
		t.Fatalf("members %v %v", members, err)
	}
	if strings.Contains(members[0], "4711") || strings.Contains(keys[0], "4711") {
		t.Fatalf("the patient id is in Redis: key %q member %q", keys[0], members[0])
	}
}

func TestReleasedResources(t *testing.T) {
	s := &sink{}
	g := NewGuard(NewMemory(), nil, nil, s, nil, nil)
	d := &authz.Decision{Allow: true, Obligations: []authz.Obligation{
		{Type: LimitObligation, Params: map[string]string{"kind": KindDistinctPatients, "max": "100", "window": "1m"}},
		{Type: LimitObligation, Params: map[string]string{"kind": KindReleasedResources, "max": "10", "window": "2m"}},
	}}
	// The request side counts distinct patients and leaves released
	// resources to the response side, read once into the decision.
	if r, err := g.Watch(t.Context(), reqFor("u1", authz.InteractionSearchType, "p1"), d, []string{"p1"}); r != nil || err != nil {
		t.Fatalf("Watch: %+v %v", r, err)
	}
	lims := d.ResponseLimits
	if len(lims) != 1 || lims[0] != (plan.Limit{Kind: plan.KindReleasedResources, Max: 10, WindowS: 120}) {
		t.Fatalf("response limits %+v", lims)
	}
	// A caller without a subject has nothing to count under.
	anon := &authz.Decision{Allow: true, Obligations: d.Obligations}
	if _, err := g.Watch(t.Context(), reqFor("", authz.InteractionSearchType, "p1"), anon, []string{"p1"}); err != nil || anon.ResponseLimits != nil {
		t.Fatalf("without a subject: %+v %v", anon.ResponseLimits, err)
	}
	for _, n := range []int{4, 6} {
		if over, err := g.Released(t.Context(), "u1", lims, map[string]int{KindReleasedResources: n, KindReleasedBytes: 99}, time.Now()); over || err != nil {
			t.Fatalf("%d released: over %v %v", n, over, err)
		}
	}
	if over, _ := g.Released(t.Context(), "u1", lims, map[string]int{KindReleasedResources: 1}, time.Now()); !over {
		t.Fatal("the eleventh resource in the window was released")
	}
	if len(s.got) != 1 || s.got[0] != (raised{"u1", "bulk_read.released_resources"}) {
		t.Fatalf("alerts %+v", s.got)
	}
	bad := &authz.Decision{Allow: true, Obligations: []authz.Obligation{{Type: LimitObligation,
		Params: map[string]string{"kind": KindReleasedResources, "max": "x", "window": "1m"}}}}
	if _, err := g.Watch(t.Context(), reqFor("u1", authz.InteractionRead, "p1"), bad, []string{"p1"}); err == nil || bad.ResponseLimits != nil {
		t.Fatal("a limit that cannot be applied was carried")
	}
}
