package authz

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// sharedRoles is the identity's role slice, shared the way a token cache
// shares it: an elevation must not write into it.
var sharedRoles = []string{"nurse"}

type practitionerVerifier struct{}

func (practitionerVerifier) Verify(context.Context, string) (Identity, error) {
	return Identity{Authenticated: true, Subject: "u1", FHIRUser: "Practitioner/p1",
		Roles: sharedRoles[:1:1], Scopes: []Scope{}}, nil
}

// state is the shared store at the authorizer's seams, failing on demand.
type state struct {
	down     map[string]bool // by lookup: consents, care, elevations, grants, put
	consents map[string][]ConsentDirective
	care     []CareRelationship
	elevs    []Elevation
	grants   []Grant
	put      []Grant
}

var errAway = errors.New("connection refused")

func (s *state) fail(kind string) error {
	if s.down[kind] {
		return errAway
	}
	return nil
}

func (s *state) ConsentDirectives(_ context.Context, p string, _ time.Time) ([]ConsentDirective, error) {
	return s.consents[p], s.fail("consents")
}

func (s *state) CareRelationships(context.Context, string, time.Time) ([]CareRelationship, error) {
	return s.care, s.fail("care")
}

func (s *state) Elevations(context.Context, string, time.Time) ([]Elevation, error) {
	return s.elevs, s.fail("elevations")
}

func (s *state) OpenAlerts(context.Context, string) ([]Alert, error) { return nil, s.fail("alerts") }

func (s *state) Active(context.Context, string, time.Time) ([]Grant, error) {
	return s.grants, s.fail("grants")
}

func (s *state) Put(_ context.Context, _ string, g Grant) error {
	if err := s.fail("put"); err != nil {
		return err
	}
	s.put = append(s.put, g)
	return nil
}

// policyFunc stands in for the policy at the Evaluator seam.
type policyFunc func(*Request) Decision

func (f policyFunc) Evaluate(_ context.Context, r *Request) (Decision, error) { return f(r), nil }

func authorizeWith(t *testing.T, st *state, pol policyFunc, path string, h map[string]string) (*Request, Decision) {
	t.Helper()
	a := NewAuthorizer(Options{Verifier: practitionerVerifier{}, Parser: newTestParser(t), Evaluator: pol,
		Grants: st, Care: st, Consents: st, Elevations: st, Alerts: st})
	hh := map[string]string{"authorization": "Bearer x"}
	for k, v := range h {
		hh[k] = v
	}
	req, d, _ := a.Authorize(t.Context(), &CheckInput{Method: "GET", Path: path, Headers: hh, Source: Peer{Address: "127.0.0.1:1"}})
	return req, d
}

// onlyCare allows a read when the store relates the caller to its patient.
func onlyCare(r *Request) Decision {
	if len(r.Care) > 0 {
		return Decision{Allow: true}
	}
	return Decision{Reason: "relationship.not_on_care_team"}
}

func TestStateReachesTheInput(t *testing.T) {
	st := &state{
		consents: map[string][]ConsentDirective{
			"1": {{Patient: "1", Effect: "restrict", Label: "PSY"}, {Patient: "1", Effect: "deny", Purpose: "HRESCH"}},
			"9": {{Patient: "9", Effect: "deny"}},
		},
		care:  []CareRelationship{{Patient: "1", Role: "attending", Source: "adt"}, {Patient: "2", Role: "attending", Source: "adt"}},
		elevs: []Elevation{{Role: "physician", ExpiresNS: 7}},
	}
	req, d := authorizeWith(t, st, onlyCare, "/fhir/Patient/1", nil)
	if !d.Allow {
		t.Fatalf("decision %+v", d)
	}
	if want := []ConsentDirective{{Patient: "1", Effect: "deny", Purpose: "HRESCH"}, {Patient: "1", Effect: "restrict", Label: "PSY"}}; !slices.Equal(req.Consents, want) {
		t.Errorf("consents %+v, want %+v (the named patient's only, sorted)", req.Consents, want)
	}
	if want := []CareRelationship{{Patient: "1", Role: "attending", Source: "adt"}}; !slices.Equal(req.Care, want) {
		t.Errorf("care %+v, want %+v", req.Care, want)
	}
	if !slices.Equal(req.Identity.Roles, []string{"nurse", "physician"}) || !slices.Equal(req.Elevations, st.elevs) {
		t.Errorf("roles %v elevations %+v: the elevation's role must join the identity's", req.Identity.Roles, req.Elevations)
	}
	if !slices.Equal(sharedRoles, []string{"nurse"}) || cap(sharedRoles) != 1 {
		t.Errorf("the shared role slice changed: %v", sharedRoles)
	}
}

func TestStoreAwayFailsClosed(t *testing.T) {
	allow := policyFunc(func(*Request) Decision { return Decision{Allow: true} })
	refuse := policyFunc(func(*Request) Decision { return Decision{Reason: "rbac.not_permitted"} })
	for _, tc := range []struct {
		name   string
		down   []string
		pol    policyFunc
		path   string
		h      map[string]string
		status int
		reason string
	}{
		// Consents only take away: a request naming a patient cannot be
		// decided without them, whatever the policy would say.
		{"consents unread", []string{"consents"}, allow, "/fhir/Patient/1", nil, 503, "store_unavailable"},
		// Relationships only add: the denial they might have prevented is
		// the store's failure, said so.
		{"relationship unread", []string{"care"}, onlyCare, "/fhir/Observation?patient=1", nil, 503, "store_unavailable"},
		// A request naming no patient needs no shared state beyond
		// elevations, which only add: allowed on the caller's own roles.
		// Alerts only take away: a request for patient data is refused
		// without them, one touching no patient goes on.
		{"alerts unread", []string{"alerts"}, allow, "/fhir/Patient/1", nil, 503, "store_unavailable"},
		{"alerts unread, search across patients", []string{"alerts"}, allow, "/fhir/Observation", nil, 503, "store_unavailable"},
		{"alerts unread, no patient", []string{"alerts"}, allow, "/fhir/Practitioner/p1", nil, 200, ""},
		{"grants unread", []string{"grants"}, refuse, "/fhir/Observation?patient=1", nil, 503, "store_unavailable"},
		{"elevations unread", []string{"elevations"}, refuse, "/fhir/Observation?patient=1", nil, 503, "store_unavailable"},
		// What is missing only adds: a request the policy allows without
		// it is allowed.
		{"relationship unread, allowed anyway", []string{"care", "grants", "elevations"}, allow, "/fhir/Observation?patient=1", nil, 200, ""},
		{"no patient named", []string{"consents", "care", "grants", "elevations", "alerts"}, allow, "/fhir/Practitioner/p1", nil, 200, ""},
		// A denial that the missing state could not have changed (a bad
		// request) keeps its own status.
		{"bad request", []string{"care"}, policyFunc(func(*Request) Decision { return Decision{Status: 400, Reason: "request.malformed"} }),
			"/fhir/Practitioner/p1", nil, 400, "request.malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &state{down: map[string]bool{}, care: []CareRelationship{{Patient: "1", Role: "attending", Source: "adt"}}}
			for _, k := range tc.down {
				st.down[k] = true
			}
			_, d := authorizeWith(t, st, tc.pol, tc.path, tc.h)
			if d.Status != tc.status || d.Reason != tc.reason || d.Allow != (tc.status == 200) {
				t.Fatalf("status %d reason %q allow %v, want %d %q", d.Status, d.Reason, d.Allow, tc.status, tc.reason)
			}
		})
	}
}

// A break-glass grant the store cannot keep refuses the emergency access
// instead of giving it on one replica only; one it keeps is written.
func TestBreakGlassNeedsTheStore(t *testing.T) {
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	grant := policyFunc(func(r *Request) Decision {
		return Decision{Allow: true, BreakGlass: BreakGlass{Active: r.BreakGlass.Requested, Reason: "code blue", Expires: exp}}
	})
	h := map[string]string{"x-break-glass": "code blue"}
	st := &state{down: map[string]bool{"put": true}}
	if _, d := authorizeWith(t, st, grant, "/fhir/Patient/1", h); d.Allow || d.Status != 503 || d.Reason != "store_unavailable" {
		t.Fatalf("grant not kept: %+v", d)
	}
	st.down["put"] = false
	if _, d := authorizeWith(t, st, grant, "/fhir/Patient/1", h); !d.Allow || len(st.put) != 1 || st.put[0].Patient != "1" {
		t.Fatalf("grant kept: %+v, put %+v", d, st.put)
	}
}
