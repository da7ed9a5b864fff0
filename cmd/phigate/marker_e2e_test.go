package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/envoy/envoytest"
)

// procOnlyPrefix is the test route on which Envoy runs ext_proc without
// ext_authz: what a route that lost its authorization looks like.
const procOnlyPrefix = "/unauthorized/"

// startProcOnlyStack starts the stack, then puts in front of it an Envoy
// that also has the ext_proc-only route. It returns the audit directory.
func startProcOnlyStack(t *testing.T) (*stack, string) {
	t.Helper()
	var dir string
	s := startStack(t, stackOptions{mutate: func(c *Config) { dir = c.Audit.Dir }})
	s.envoy = envoytest.Start(t, envoy.BootstrapConfig{
		Upstream: s.up.addr, Phigate: s.phigate.GRPCAddr, ProcOnlyPrefix: procOnlyPrefix,
	})
	return s, dir
}

// filterings reads the response side's records back from the trail.
func filterings(t *testing.T, dir string) []audit.Entry {
	t.Helper()
	entries, err := audit.Query(dir, audit.Filter{Kind: audit.KindFiltering}, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func detail(ev *audit.AuditEvent, typ string) string {
	for _, en := range ev.Entity {
		for _, d := range en.Detail {
			if d.Type == typ {
				return d.ValueString
			}
		}
	}
	return ""
}

// TestPlanMarkerEndToEnd: a response whose request never met ext_authz
// carries no plan marker, and ext_proc refuses it (502, a minimal
// OperationOutcome, a filtering record saying why) although the legacy
// service answered; the normal route, empty plans included, still works.
// The refusals of the response side are told apart in the trail: no marker,
// an unreadable body, another patient's data.
func TestPlanMarkerEndToEnd(t *testing.T) {
	s, dir := startProcOnlyStack(t)
	doc := s.token(physician(1))

	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"normal route, a plan with a marker", "/fhir/Patient/pat-0001", doc, 200},
		{"normal route, an empty plan with a marker", "/fhir/metadata", "", 200},
		{"ext_proc alone, a patient read", procOnlyPrefix + "fhir/Patient/pat-0001", doc, 502},
		{"ext_proc alone, without a token", procOnlyPrefix + "fhir/Patient/pat-0002", "", 502},
		{"ext_proc alone, a search", procOnlyPrefix + "fhir/Observation?patient=pat-0002", "", 502},
		{"ext_proc alone, what needs no plan", procOnlyPrefix + "fhir/metadata", "", 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.up.reset()
			r := s.do("GET", tc.path, tc.token, nil, nil)
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %.300s", r.status, tc.want, r.body)
			}
			if tc.want == 200 {
				return
			}
			if len(s.up.requests()) != 1 {
				t.Fatalf("the legacy service saw %d requests; the test needs the response refused, not the request", len(s.up.requests()))
			}
			if !isOutcome(r) {
				t.Fatalf("body is not a minimal OperationOutcome: %s", r.body)
			}
			for _, leak := range []string{"pat-000", "marker", "family", "Patient"} {
				if strings.Contains(string(r.body), leak) {
					t.Errorf("refusal body reveals %q: %s", leak, r.body)
				}
			}
		})
	}

	// The response side's other refusals, for the trail.
	s.up.override("/fhir/Patient/pat-0001", "application/fhir+json", `{"resourceType":"Patient","id":"pat-0001","name":[{"family":"X"}`)
	if r := s.do("GET", "/fhir/Patient/pat-0001", doc, nil, nil); r.status != 502 {
		t.Fatalf("unreadable body: status %d, want 502", r.status)
	}
	s.up.override("/fhir/Patient/pat-0001", "application/fhir+json", `{"resourceType":"Patient","id":"pat-0002","name":[{"family":"X"}]}`)
	if r := s.do("GET", "/fhir/Patient/pat-0001", doc, nil, nil); r.status != 403 {
		t.Fatalf("another patient's body: status %d, want 403", r.status)
	}

	s.stopPhigate()
	got := map[string][]*audit.AuditEvent{}
	for _, e := range filterings(t, dir) {
		got[detail(e.Event, "reason")] = append(got[detail(e.Event, "reason")], e.Event)
	}
	for _, want := range []struct {
		reason, status, outcome string
		n                       int
	}{
		{envoy.RefusedMarkerMissing, "502", audit.OutcomeSerious, 4},
		{"malformed_body", "502", audit.OutcomeSerious, 1},
		{envoy.RefusedOutsideGrant, "403", audit.OutcomeMinor, 1},
	} {
		evs := got[want.reason]
		if len(evs) != want.n {
			t.Errorf("%d records with reason %q, want %d (reasons seen: %v)", len(evs), want.reason, want.n, keys(got))
			continue
		}
		for _, ev := range evs {
			if detail(ev, "status") != want.status || ev.Outcome != want.outcome || !strings.HasSuffix(ev.OutcomeDesc, want.reason) {
				t.Errorf("%s: status %q outcome %q %q, want %s %s", want.reason, detail(ev, "status"), ev.Outcome, ev.OutcomeDesc, want.status, want.outcome)
			}
			if want.reason == envoy.RefusedMarkerMissing && ev.RequestID() == "" {
				t.Errorf("a refusal for a missing marker does not name the request")
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestLocationHeadersEndToEnd: Location and Content-Location headers that
// name a patient outside the grant, or patient data the body does not
// vouch for, do not reach the client through the real Envoy; those about
// the granted patient, or the body itself, do.
func TestLocationHeadersEndToEnd(t *testing.T) {
	s := startStack(t, stackOptions{})
	doc := s.token(physician(1))
	patient := `{"resourceType":"Patient","id":"pat-0001","gender":"female"}`
	obs := `{"resourceType":"Observation","id":"obs-pat-0001-01","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/pat-0001"}}`
	for _, tc := range []struct {
		name, path, body string
		header           http.Header
		kept             []string
		dropped          []string
	}{
		{"another patient's id", "/fhir/Patient/pat-0001", patient, http.Header{
			"Location":         {"/fhir/Patient/pat-0002/_history/1"},
			"Content-Location": {"http://legacy/fhir/Patient/pat-0002"}}, nil, []string{"Location", "Content-Location"}},
		{"the granted patient", "/fhir/Patient/pat-0001", patient, http.Header{
			"Content-Location": {"/fhir/Patient/pat-0001/_history/3"}}, []string{"Content-Location"}, nil},
		{"a search about another patient", "/fhir/Patient/pat-0001", patient, http.Header{
			"Content-Location": {"/fhir/Observation?subject=Patient/pat-0002"}}, nil, []string{"Content-Location"}},
		{"the body's own resource", "/fhir/Observation/obs-pat-0001-01", obs, http.Header{
			"Content-Location": {"/fhir/Observation/obs-pat-0001-01/_history/1"}}, []string{"Content-Location"}, nil},
		{"patient data the body does not vouch for", "/fhir/Observation/obs-pat-0001-01", obs, http.Header{
			"Content-Location": {"/fhir/Observation/obs-pat-0002-01/_history/1"}}, nil, []string{"Content-Location"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.up.overrideHeaders(tc.path, "application/fhir+json", tc.body, tc.header)
			r := s.do("GET", tc.path, doc, nil, nil)
			if r.status != 200 {
				t.Fatalf("status %d, want 200: %.300s", r.status, r.body)
			}
			for _, h := range tc.kept {
				if r.header.Get(h) != tc.header.Get(h) {
					t.Errorf("%s = %q, want %q kept", h, r.header.Get(h), tc.header.Get(h))
				}
			}
			for _, h := range tc.dropped {
				if v := r.header.Get(h); v != "" {
					t.Errorf("%s reached the client: %q", h, v)
				}
			}
			if strings.Contains(string(r.body), "pat-0002") {
				t.Errorf("body names another patient: %s", r.body)
			}
		})
	}
}
