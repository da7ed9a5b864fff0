package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
)

// frontDeskOnShift mirrors the default data's front-desk shift, so the
// time module's case is right whenever the test runs.
func frontDeskOnShift(now time.Time) bool {
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		return false
	}
	l := now.In(loc)
	if l.Weekday() == time.Saturday || l.Weekday() == time.Sunday {
		return false
	}
	m := l.Hour()*60 + l.Minute()
	return m >= 7*60 && m < 19*60
}

const smuggleBatch = `{"resourceType":"Bundle","type":"batch","entry":[
 {"request":{"method":"GET","url":"Patient/pat-0001"}},
 {"request":{"method":"GET","url":"Observation?patient=pat-0002"}}]}`

const cleanBatch = `{"resourceType":"Bundle","type":"batch","entry":[
 {"request":{"method":"GET","url":"Patient/pat-0001"}},
 {"request":{"method":"GET","url":"Observation?patient=pat-0061"}}]}`

// TestEndToEndDecisions drives one allowed and one denied case per policy
// module, every token flaw, and every ambiguous request form through the
// real Envoy, and checks that nothing denied reached the legacy service.
func TestEndToEndDecisions(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{Mutate: stacktest.WithTokenKey(t)})
	mfaDoc := demokeys.TokenSpec{Subject: "prac-001", Roles: []string{"physician"}, FHIRUser: "Practitioner/prac-001", AMR: []string{"pwd", "otp"}}
	tok := func(spec demokeys.TokenSpec) string { return s.Token(spec) }
	doc := tok(stacktest.Physician(1))
	patient := tok(demokeys.TokenSpec{Subject: "pat-0001", Roles: []string{"patient"}, FHIRUser: "Patient/pat-0001"})
	related := tok(demokeys.TokenSpec{Subject: "rp-0010", Roles: []string{"related-person"}, FHIRUser: "RelatedPerson/rp-0010"})
	scoped := tok(demokeys.TokenSpec{Subject: "prac-001", Roles: []string{"physician"}, FHIRUser: "Practitioner/prac-001",
		Scopes: []string{"patient/Observation.rs"}, Patient: "pat-0001"})
	wrongPurpose := tok(demokeys.TokenSpec{Subject: "prac-001", Roles: []string{"physician"}, FHIRUser: "Practitioner/prac-001", Purpose: "HPAYMT"})
	frontDesk := tok(demokeys.TokenSpec{Subject: "fd-1", Roles: []string{"front-desk"}})
	admin := tok(demokeys.TokenSpec{Subject: "admin-1", Roles: []string{"admin"}})
	adminMFA := tok(demokeys.TokenSpec{Subject: "admin-1", Roles: []string{"admin"}, AMR: []string{"pwd", "otp"}})
	noMFA := tok(stacktest.Physician(1))
	withMFA := tok(mfaDoc)
	frontDeskWant := 403
	if frontDeskOnShift(time.Now()) {
		frontDeskWant = 200
	}
	fhir := map[string]string{"content-type": "application/fhir+json"}

	type tc struct {
		name    string
		method  string
		path    string
		token   string
		headers map[string]string
		body    string
		want    int
	}
	cases := []tc{
		{"rbac: physician reads", "GET", "/fhir/Patient/pat-0001", doc, nil, "", 200},
		{"rbac: admin may not read clinical data", "GET", "/fhir/Observation?patient=pat-0001", admin, nil, "", 403},
		{"relationship: care team search", "GET", "/fhir/Observation?patient=pat-0061", doc, nil, "", 200},
		{"relationship: search of a patient outside the care team", "GET", "/fhir/Observation?patient=pat-0002", doc, nil, "", 403},
		{"relationship: compartment outside the care team", "GET", "/fhir/Patient/pat-0002/Observation", doc, nil, "", 403},
		{"relationship: patient reads self", "GET", "/fhir/Patient/pat-0001", patient, nil, "", 200},
		{"relationship: patient reads another patient", "GET", "/fhir/Patient/pat-0002", patient, nil, "", 403},
		{"relationship: delegate reads the delegating patient", "GET", "/fhir/Patient/pat-0010", related, nil, "", 200},
		{"relationship: delegate reads someone else", "GET", "/fhir/Patient/pat-0011", related, nil, "", 403},
		{"purpose: purpose not permitted for the role", "GET", "/fhir/Patient/pat-0001", wrongPurpose, nil, "", 403},
		{"purpose: unknown purpose code", "GET", "/fhir/Patient/pat-0001", doc, map[string]string{"x-purpose-of-use": "NOPE"}, "", 400},
		{"smart scopes: scope allows Observation", "GET", "/fhir/Observation?patient=pat-0001", scoped, nil, "", 200},
		{"smart scopes: scope narrows the role", "GET", "/fhir/Patient/pat-0001", scoped, nil, "", 403},
		{"time: front desk outside or inside its shift", "GET", "/fhir/Patient/pat-0001", frontDesk, nil, "", frontDeskWant},
		{"mfa: bulk export without a second factor", "GET", "/fhir/$export", admin, nil, "", 403},
		// The legacy service has no $export: reaching it (its 404) is the allow.
		{"mfa: bulk export with a second factor", "GET", "/fhir/$export", adminMFA, nil, "", 404},
		// Break-glass uses pat-0005 alone: a grant is state, and it must not
		// leak into the other cases.
		{"break-glass: without multi-factor", "GET", "/fhir/Patient/pat-0005", noMFA, map[string]string{"x-break-glass": "trauma bay"}, "", 403},
		{"break-glass: without a reason", "GET", "/fhir/Patient/pat-0005", withMFA, map[string]string{"x-break-glass": ""}, "", 403},
		{"break-glass: with a reason", "GET", "/fhir/Patient/pat-0005", withMFA, map[string]string{"x-break-glass": "trauma bay"}, "", 200},
		{"break-glass: the grant covers the next read of that patient", "GET", "/fhir/Patient/pat-0005", withMFA, nil, "", 200},
		{"break-glass: the grant covers no other patient", "GET", "/fhir/Patient/pat-0003", withMFA, nil, "", 403},
		{"batch: entries within the care team", "POST", "/fhir", doc, fhir, cleanBatch, 200},
		{"batch: an entry smuggles another patient", "POST", "/fhir", doc, fhir, smuggleBatch, 403},
	}
	for _, f := range demokeys.Flaws() {
		bad, err := s.Keys.MintFlawed(stacktest.Physician(1), f)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, tc{"token: " + string(f), "GET", "/fhir/Patient/pat-0001", bad, nil, "", 401})
	}
	for _, p := range []string{
		"/fhir/Patient%2Fpat-0001", "/fhir/Patient%2fpat-0001", "/fhir/%2E%2E/Patient/pat-0001", "/fhir/Patient/pat-0001%252F",
		"/fhir/Patient/pat-0001%5C", "/fhir/Observation/../Patient/pat-0002", "/fhir/./Patient/pat-0001", "/fhir//Patient/pat-0001",
		"/fhir/Patient;x=1/pat-0001", "/fhir/patient/pat-0001", "/fhir/PATIENT/pat-0001",
		"/fhir/Observation?patient=pat-0001&patient=pat-0002", "/fhir/Patient/pat-0001?access_token=abc",
	} {
		cases = append(cases, tc{"ambiguous: " + p, "GET", p, doc, nil, "", 400})
	}
	for _, h := range []string{"x-http-method-override", "x-http-method", "x-method-override"} {
		cases = append(cases, tc{"ambiguous: " + h, "GET", "/fhir/Patient/pat-0001", doc, map[string]string{h: "DELETE"}, "", 400})
	}
	cases = append(cases, tc{"ambiguous: non-FHIR content type", "POST", "/fhir", doc, map[string]string{"content-type": "text/plain"}, cleanBatch, 400})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.Up.Reset()
			var body *strings.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			var r stacktest.Response
			if body != nil {
				r = s.Do(c.method, c.path, c.token, c.headers, body)
			} else {
				r = s.Do(c.method, c.path, c.token, c.headers, nil)
			}
			if r.Status != c.want {
				t.Fatalf("status = %d, want %d; body %.300s", r.Status, c.want, r.Body)
			}
			seen := s.Up.Requests()
			// phigate never answers 404: a 404 comes from the legacy service.
			reached := c.want < 400 || c.want == 404
			if !reached {
				if !stacktest.IsOutcome(r) {
					t.Errorf("denial body is not an OperationOutcome: %.200s", r.Body)
				}
				if len(seen) != 0 {
					t.Errorf("the legacy service saw a denied request: %+v", seen)
				}
			} else if len(seen) != 1 {
				t.Errorf("the legacy service saw %d requests, want 1", len(seen))
			}
		})
	}
}
