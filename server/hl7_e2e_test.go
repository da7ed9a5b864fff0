package server_test

import (
	"strings"
	"testing"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// TestEndToEndHL7 protects the legacy service's HL7 v2 route, described to
// the request model as a legacy route: the same decision path as FHIR, and
// the same redaction vocabulary applied to PID fields.
func TestEndToEndHL7(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		stacktest.WithTokenKey(t)(c)
		c.Request.LegacyRoutes = []authz.LegacyRoute{{Method: "GET", Pattern: "/hl7/patients/{id}/adt", Kind: "hl7-adt", PatientFrom: "path:id"}}
	}})
	billing := s.Token(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})
	doc := s.Token(stacktest.Physician(1))
	direct := directHL7(t, s, "pat-0001")
	phone := field(direct, "PID", 13)
	if phone == "" || field(direct, "PID", 5) == "" {
		t.Fatalf("the legacy message has no phone or name to protect:\n%s", direct)
	}

	r := s.Do("GET", "/hl7/patients/pat-0001/adt", billing, nil, nil)
	if r.Status != 200 {
		t.Fatalf("billing: status %d: %.300s", r.Status, r.Body)
	}
	got := string(r.Body)
	if !strings.HasPrefix(got, "MSH|^~\\&|") {
		t.Fatalf("not an ER7 message: %.200s", got)
	}
	if f := field(got, "PID", 13); f != "" {
		t.Errorf("billing still sees PID-13 %q", f)
	}
	if f := field(got, "PID", 11); f != "" {
		t.Errorf("billing still sees PID-11 %q", f)
	}
	if f, want := field(got, "PID", 5), field(direct, "PID", 5); f != want {
		t.Errorf("PID-5 = %q, want the name kept (%q): billing's directives do not remove it", f, want)
	}

	// PID-3 names the patient, so response-side enforcement holds the
	// message to the grant.
	if r := s.Do("GET", "/hl7/patients/pat-0001/adt", doc, nil, nil); r.Status != 200 {
		t.Errorf("physician, own patient: status %d, want 200: %.200s", r.Status, r.Body)
	}
	if r := s.Do("GET", "/hl7/patients/pat-0002/adt", doc, nil, nil); r.Status != 403 {
		t.Errorf("physician, patient outside the care team: status %d, want 403", r.Status)
	}
	if r := s.Do("GET", "/hl7/patients/pat-0001/adt", "", nil, nil); r.Status != 401 {
		t.Errorf("no token: status %d, want 401", r.Status)
	}
}

// directHL7 fetches the message from the legacy service, bypassing Envoy.
func directHL7(t *testing.T, s *stacktest.Stack, id string) string {
	t.Helper()
	code, body := stacktest.GetBody(t, "http://"+s.Up.Addr+"/hl7/patients/"+id+"/adt")
	if code != 200 {
		t.Fatalf("legacy service: %d", code)
	}
	return body
}

// field returns field n of the first segment named seg (default delimiters).
func field(msg, seg string, n int) string {
	for _, line := range strings.FieldsFunc(msg, func(r rune) bool { return r == '\r' || r == '\n' }) {
		fs := strings.Split(line, "|")
		if fs[0] == seg && n < len(fs) {
			return fs[n]
		}
	}
	return ""
}

// TestEndToEndHL7Segments: the guarantor (GT1), the insured (IN1, IN2) and
// the next of kin (NK1) carry addresses, phones and SSNs as much as PID
// does, and billing's directives must reach them. A segment the redaction
// table does not know (a Z-segment) could hold anything: the message is
// refused rather than released.
func TestEndToEndHL7Segments(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		stacktest.WithTokenKey(t)(c)
		c.Request.LegacyRoutes = []authz.LegacyRoute{{Method: "GET", Pattern: "/hl7/patients/{id}/adt", Kind: "hl7-adt", PatientFrom: "path:id"}}
	}})
	billing := s.Token(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})
	const (
		gtAddr  = "77 Guarantor Way^^Springfield^MO^65804"
		gtPhone = "^PRN^PH^^^555^3030303"
		inAddr  = "9 Insured Lane^^Springfield^MO^65804"
		nkPhone = "^PRN^PH^^^555^2010102"
	)
	msg := strings.Join([]string{
		`MSH|^~\&|ADT|ACME|EHR|ACME|20240501101500||ADT^A01^ADT_A01|MSG00002|P|2.5.1`,
		`EVN|A01|20240501101500`,
		`PID|1||pat-0001^^^ACME^MR||Doe^Jane||19840719|F|||1200 Elm Street^^Springfield^MO^65804||^PRN^PH^^^555^2010101|||||||123-45-6789`,
		`NK1|1|Doe^John|SPO^Spouse|1200 Elm Street^^Springfield^MO^65804|` + nkPhone,
		`PV1|1|I|WARD^101^1||||1234^Adams^Ann`,
		`GT1|1||Doe^John||` + gtAddr + `|` + gtPhone + `|||||987-65-4321`,
		`IN1|1|PLAN01|INS01|Acme Health||||||||||||Doe^John|SPO|19800101|` + inAddr,
		`IN2|1|987-65-4321`,
	}, "\r") + "\r"
	s.Up.Override("/hl7/patients/pat-0001/adt", "x-application/hl7-v2+er7", msg)

	r := s.Do("GET", "/hl7/patients/pat-0001/adt", billing, nil, nil)
	if r.Status != 200 {
		t.Fatalf("billing: status %d: %.300s", r.Status, r.Body)
	}
	got := string(r.Body)
	for _, leak := range []string{"77 Guarantor Way", "3030303", "9 Insured Lane", "2010102", "2010101"} {
		if strings.Contains(got, leak) {
			t.Errorf("billing still sees %q:\n%s", leak, strings.ReplaceAll(got, "\r", "\n"))
		}
	}
	if field(got, "PID", 5) != "Doe^Jane" || field(got, "IN1", 4) != "Acme Health" {
		t.Errorf("PID-5 %q, IN1-4 %q: the patient's name and the insurer, which billing keeps, were lost",
			field(got, "PID", 5), field(got, "IN1", 4))
	}

	s.Up.Override("/hl7/patients/pat-0001/adt", "x-application/hl7-v2+er7", msg+"ZPI|1|555-12-3456|free text\r")
	r = s.Do("GET", "/hl7/patients/pat-0001/adt", billing, nil, nil)
	if r.Status != 502 || strings.Contains(string(r.Body), "555-12-3456") {
		t.Errorf("a message with a Z-segment: status %d body %.200s, want 502", r.Status, r.Body)
	}
}
