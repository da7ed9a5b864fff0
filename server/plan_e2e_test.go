package server_test

import (
	"strings"
	"testing"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
)

// TestPlanCompiledBeforeUpstream, through the real Envoy: the shipped
// policy tokenizes a nurse's identifiers with key demo-1. Without that key
// configured the decision is refused when it is decoded (503, a policy
// error), so the legacy service is never asked; before, the upstream
// answered and the response was refused. With the key, the same request
// is served (TestEndToEndRedaction), and a role whose plan needs no key is
// served either way.
func TestPlanCompiledBeforeUpstream(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	nurse := s.Token(demokeys.TokenSpec{Subject: "nurse-01", Roles: []string{"nurse"}, FHIRUser: "Practitioner/prac-001", Purpose: "TREAT"})
	billing := s.Token(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})

	s.Up.Reset()
	r := s.Do("GET", "/fhir/Patient/pat-0001", nurse, nil, nil)
	if r.Status != 503 || !stacktest.IsOutcome(r) {
		t.Fatalf("nurse without the token key: status %d, body %s; want 503 with an OperationOutcome", r.Status, r.Body)
	}
	if strings.Contains(string(r.Body), "pat-0001") || strings.Contains(string(r.Body), "demo-1") {
		t.Errorf("the refusal names the patient or the key: %s", r.Body)
	}
	for _, seen := range s.Up.Requests() {
		if strings.HasPrefix(seen.Path, "/fhir/Patient/pat-0001") {
			t.Fatalf("the upstream was asked for %s although the decision could not be applied", seen.Path)
		}
	}

	if r := s.Do("GET", "/fhir/Patient/pat-0001", billing, nil, nil); r.Status != 200 {
		t.Fatalf("billing, whose plan names no key: status %d: %s", r.Status, r.Body)
	}
	if len(s.Up.Requests()) == 0 {
		t.Fatal("the upstream saw no request at all, so its silence above shows nothing")
	}
}
