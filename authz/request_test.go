package authz

import (
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func newTestParser(t testing.TB) *RequestParser {
	t.Helper()
	p, err := NewRequestParser(RequestConfig{Base: "/fhir", LegacyRoutes: []LegacyRoute{
		{Method: "GET", Pattern: "/legacy/patients/{id}/summary", Kind: "patient-summary", PatientFrom: "path:id"},
		{Method: "GET", Pattern: "/legacy/lookup", Kind: "lookup", PatientFrom: "query:mrn"},
		{Method: "GET", Pattern: "/legacy/current", Kind: "current", PatientFrom: "header:X-Patient-Id"},
		{Method: "GET", Pattern: "/legacy/census", Kind: "census"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// parseCase is one request and what the parser must make of it. want is
// compared field by field where set; code is the refusal expected.
type parseCase struct {
	name    string
	method  string
	path    string
	headers map[string]string
	body    string
	code    Code
	want    FHIRRequest
}

var jsonCT = map[string]string{"content-type": "application/fhir+json"}

func parseCases() []parseCase {
	ps := func(ids ...string) []string { return append([]string{}, ids...) }
	return []parseCase{
		// Interactions.
		{name: "capabilities", path: "/fhir/metadata", want: FHIRRequest{Interaction: "capabilities", Patients: ps()}},
		{name: "read Patient", path: "/fhir/Patient/123", want: FHIRRequest{Interaction: "read", ResourceType: "Patient", ID: "123", Patients: ps("123")}},
		{name: "read Observation", path: "/fhir/Observation/o1", want: FHIRRequest{Interaction: "read", ResourceType: "Observation", ID: "o1", Patients: ps()}},
		{name: "HEAD read", method: "HEAD", path: "/fhir/Patient/123", want: FHIRRequest{Interaction: "read", ResourceType: "Patient", ID: "123", Patients: ps("123")}},
		{name: "vread", path: "/fhir/Patient/123/_history/2", want: FHIRRequest{Interaction: "vread", ResourceType: "Patient", ID: "123", Version: "2", Patients: ps("123")}},
		{name: "update Patient", method: "PUT", path: "/fhir/Patient/123", headers: jsonCT, body: `{"resourceType":"Patient","id":"123"}`,
			want: FHIRRequest{Interaction: "update", ResourceType: "Patient", ID: "123", Patients: ps("123")}},
		{name: "update Observation moves refs", method: "PUT", path: "/fhir/Observation/o1", headers: jsonCT,
			body: `{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/9"}}`,
			want: FHIRRequest{Interaction: "update", ResourceType: "Observation", ID: "o1", Patients: ps("9")}},
		{name: "update without body is all patients", method: "PUT", path: "/fhir/Observation/o1", headers: jsonCT,
			want: FHIRRequest{Interaction: "update", ResourceType: "Observation", ID: "o1", Patients: ps(), AllPatients: true}},
		{name: "patch", method: "PATCH", path: "/fhir/Patient/123", headers: map[string]string{"content-type": "application/json-patch+json"}, body: `[{"op":"replace","path":"/active","value":false}]`,
			want: FHIRRequest{Interaction: "patch", ResourceType: "Patient", ID: "123", Patients: ps("123")}},
		{name: "delete", method: "DELETE", path: "/fhir/Patient/123", want: FHIRRequest{Interaction: "delete", ResourceType: "Patient", ID: "123", Patients: ps("123")}},
		{name: "conditional delete", method: "DELETE", path: "/fhir/Observation?patient=7", want: FHIRRequest{Interaction: "delete", ResourceType: "Observation", Patients: ps("7")}},
		{name: "create", method: "POST", path: "/fhir/Observation", headers: jsonCT,
			body: `{"resourceType":"Observation","subject":{"reference":"Patient/5"},"performer":[{"reference":"Practitioner/p"}]}`,
			want: FHIRRequest{Interaction: "create", ResourceType: "Observation", Patients: ps("5")}},
		{name: "search-type", path: "/fhir/Observation?patient=123&code=x", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("123")}},
		{name: "search-type unconstrained", path: "/fhir/Observation?code=x", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "search non-patient type", path: "/fhir/Practitioner?name=x", want: FHIRRequest{Interaction: "search-type", ResourceType: "Practitioner", Patients: ps()}},
		{name: "POST _search form", method: "POST", path: "/fhir/Observation/_search",
			headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}, body: "patient=Patient%2F44",
			want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("44")}},
		{name: "POST _search form without body is all patients", method: "POST", path: "/fhir/Observation/_search",
			want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "search-system", path: "/fhir?_type=Observation&patient=1", want: FHIRRequest{Interaction: "search-system", Patients: ps("1"), AllPatients: true}},
		{name: "search-compartment", path: "/fhir/Patient/123/Observation?code=x",
			want: FHIRRequest{Interaction: "search-compartment", ResourceType: "Observation", Compartment: &Compartment{"Patient", "123"}, Patients: ps("123")}},
		{name: "compartment all types", path: "/fhir/Patient/123/*",
			want: FHIRRequest{Interaction: "search-compartment", ResourceType: "*", Compartment: &Compartment{"Patient", "123"}, Patients: ps("123")}},
		{name: "practitioner compartment is all patients", path: "/fhir/Practitioner/p1/Observation",
			want: FHIRRequest{Interaction: "search-compartment", ResourceType: "Observation", Compartment: &Compartment{"Practitioner", "p1"}, Patients: ps(), AllPatients: true}},
		{name: "history-instance", path: "/fhir/Patient/123/_history", want: FHIRRequest{Interaction: "history-instance", ResourceType: "Patient", ID: "123", Patients: ps("123")}},
		{name: "history-type", path: "/fhir/Observation/_history", want: FHIRRequest{Interaction: "history-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "history-system", path: "/fhir/_history", want: FHIRRequest{Interaction: "history-system", Patients: ps(), AllPatients: true}},
		{name: "$everything instance", path: "/fhir/Patient/123/$everything", want: FHIRRequest{Interaction: "operation", ResourceType: "Patient", ID: "123", Operation: "everything", Patients: ps("123")}},
		{name: "$everything type", path: "/fhir/Patient/$everything", want: FHIRRequest{Interaction: "operation", ResourceType: "Patient", Operation: "everything", Patients: ps(), AllPatients: true}},
		{name: "$export system", path: "/fhir/$export", want: FHIRRequest{Interaction: "operation", Operation: "export", Patients: ps(), AllPatients: true}},
		{name: "$export group", path: "/fhir/Group/g1/$export", want: FHIRRequest{Interaction: "operation", ResourceType: "Group", ID: "g1", Operation: "export", Patients: ps(), AllPatients: true}},
		{name: "$lastn with patient", path: "/fhir/Observation/$lastn?patient=3", want: FHIRRequest{Interaction: "operation", ResourceType: "Observation", Operation: "lastn", Patients: ps("3")}},
		{name: "$expand on terminology", path: "/fhir/ValueSet/$expand?url=x", want: FHIRRequest{Interaction: "operation", ResourceType: "ValueSet", Operation: "expand", Patients: ps()}},
		{name: "trailing slash on base", path: "/fhir/?_type=Patient", want: FHIRRequest{Interaction: "search-system", Patients: ps(), AllPatients: true}},

		// Patient extraction per parameter and resource type.
		{name: "subject Patient ref", path: "/fhir/Observation?subject=Patient/5", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("5")}},
		{name: "subject bare id names the patient without pinning", path: "/fhir/Observation?subject=5", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("5"), AllPatients: true}},
		{name: "subject:Patient bare id is not a pin", path: "/fhir/Observation?subject:Patient=5", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("5"), AllPatients: true}},
		{name: "subject Group is not a patient", path: "/fhir/Observation?subject=Group/5", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "OR list of patients", path: "/fhir/Condition?patient=1,2", want: FHIRRequest{Interaction: "search-type", ResourceType: "Condition", Patients: ps("1", "2")}},
		{name: "OR list with a group widens", path: "/fhir/Observation?subject=Patient/1,Group/2", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("1"), AllPatients: true}},
		{name: "absolute reference on base", path: "/fhir/Observation?subject=https%3A%2F%2Fhost%2Ffhir%2FPatient%2F8", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("8")}},
		{name: "absolute reference elsewhere names without pinning", path: "/fhir/Observation?subject=https%3A%2F%2Fhost%2Fother%2FPatient%2F8", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("8"), AllPatients: true}},
		{name: "absolute versioned reference elsewhere", path: "/fhir/Observation?subject=https%3A%2F%2Fh%2Fr4%2FPatient%2F8%2F_history%2F2", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("8"), AllPatients: true}},
		{name: "absolute non-patient reference elsewhere", path: "/fhir/Observation?subject=https%3A%2F%2Fh%2Fr4%2FGroup%2F8", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "bare id in an OR list names it", path: "/fhir/Observation?subject=Patient/1,7", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("1", "7"), AllPatients: true}},
		{name: "performer bare id names the patient", path: "/fhir/Observation?code=x&performer=7", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("7"), AllPatients: true}},
		{name: "focus is not compartment but names", path: "/fhir/Observation?patient=1&focus=7", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("1", "7")}},
		{name: "subject:Patient chained _id names", path: "/fhir/Observation?subject:Patient._id=7", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("7"), AllPatients: true}},
		{name: "subject chained _id names", path: "/fhir/Observation?subject._id=7", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("7"), AllPatients: true}},
		{name: "subject:identifier names nobody", path: "/fhir/Observation?subject:identifier=mrn|7", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "subject:Group names nobody", path: "/fhir/Observation?subject:Group=7", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "Group member bare id does not pin", path: "/fhir/Group?member=7", want: FHIRRequest{Interaction: "search-type", ResourceType: "Group", Patients: ps("7"), AllPatients: true}},
		{name: "Linkage item names on a non-patient type", path: "/fhir/Linkage?item=7", want: FHIRRequest{Interaction: "search-type", ResourceType: "Linkage", Patients: ps("7")}},
		{name: "Provenance target names", path: "/fhir/Provenance?target=7", want: FHIRRequest{Interaction: "search-type", ResourceType: "Provenance", Patients: ps("7"), AllPatients: true}},
		{name: "DeviceUseStatement patient may be a Group", path: "/fhir/DeviceUseStatement?patient=7", want: FHIRRequest{Interaction: "search-type", ResourceType: "DeviceUseStatement", Patients: ps("7"), AllPatients: true}},
		{name: "EnrollmentRequest subject is Patient-only", path: "/fhir/EnrollmentRequest?subject=7", want: FHIRRequest{Interaction: "search-type", ResourceType: "EnrollmentRequest", Patients: ps("7")}},
		{name: "system search subject names", path: "/fhir?_type=Observation&subject=7", want: FHIRRequest{Interaction: "search-system", Patients: ps("7"), AllPatients: true}},
		{name: "compartment search naming another", path: "/fhir/Patient/1/Observation?subject=7",
			want: FHIRRequest{Interaction: "search-compartment", ResourceType: "Observation", Compartment: &Compartment{"Patient", "1"}, Patients: ps("1", "7")}},
		{name: "Coverage beneficiary", path: "/fhir/Coverage?beneficiary=9", want: FHIRRequest{Interaction: "search-type", ResourceType: "Coverage", Patients: ps("9")}},
		{name: "ResearchSubject individual", path: "/fhir/ResearchSubject?individual=Patient/9", want: FHIRRequest{Interaction: "search-type", ResourceType: "ResearchSubject", Patients: ps("9")}},
		{name: "CareTeam participant", path: "/fhir/CareTeam?participant=Patient/9", want: FHIRRequest{Interaction: "search-type", ResourceType: "CareTeam", Patients: ps("9")}},
		{name: "Appointment actor", path: "/fhir/Appointment?actor=Patient/9", want: FHIRRequest{Interaction: "search-type", ResourceType: "Appointment", Patients: ps("9")}},
		{name: "ServiceRequest requester is not compartment but names", path: "/fhir/ServiceRequest?requester=Patient/9", want: FHIRRequest{Interaction: "search-type", ResourceType: "ServiceRequest", Patients: ps("9"), AllPatients: true}},
		{name: "CommunicationRequest requester", path: "/fhir/CommunicationRequest?requester=Patient/9", want: FHIRRequest{Interaction: "search-type", ResourceType: "CommunicationRequest", Patients: ps("9")}},
		{name: "Patient _id", path: "/fhir/Patient?_id=4,5", want: FHIRRequest{Interaction: "search-type", ResourceType: "Patient", Patients: ps("4", "5")}},
		{name: "Patient by name is all patients", path: "/fhir/Patient?name=smith", want: FHIRRequest{Interaction: "search-type", ResourceType: "Patient", Patients: ps(), AllPatients: true}},
		{name: "Patient link is all patients", path: "/fhir/Patient?link=Patient/4", want: FHIRRequest{Interaction: "search-type", ResourceType: "Patient", Patients: ps(), AllPatients: true}},
		{name: "chained subject.identifier", path: "/fhir/Observation?subject.identifier=mrn|1", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "chained patient.name", path: "/fhir/Observation?patient.name=smith", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "chained subject:Patient.name", path: "/fhir/Observation?subject:Patient.name=smith", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "chained patient._id is not a pin", path: "/fhir/Observation?patient._id=6", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("6"), AllPatients: true}},
		{name: "patient:missing is not a pin", path: "/fhir/Observation?patient:missing=false", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "patient:not is not a pin", path: "/fhir/Observation?patient:not=1", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps(), AllPatients: true}},
		{name: "pin plus chain stays pinned", path: "/fhir/Observation?patient=1&subject.name=x", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("1")}},
		{name: "include recorded", path: "/fhir/Observation?patient=1&_include=Observation:performer&_revinclude:iterate=Provenance:target",
			want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("1"), AllPatients: true,
				Include: []string{"Observation:performer"}, RevInclude: []string{"Provenance:target:iterate"},
				IncludedTypes: []string{"CareTeam", "Organization", "Patient", "Practitioner", "PractitionerRole", "Provenance", "RelatedPerson"}}},
		{name: "wildcard include recorded", path: "/fhir/Patient?_id=1&_revinclude=*", want: FHIRRequest{Interaction: "search-type", ResourceType: "Patient",
			Patients: ps("1"), AllPatients: true, RevInclude: []string{"*"}, IncludedTypes: []string{"*"}}},
		{name: "same repeated patient is fine", path: "/fhir/Observation?patient=1&patient=Patient/1", want: FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: ps("1")}},

		// Legacy routes.
		{name: "legacy path patient", path: "/legacy/patients/77/summary", want: FHIRRequest{Interaction: "non-fhir", Kind: "patient-summary", Patients: ps("77")}},
		{name: "legacy query patient", path: "/legacy/lookup?mrn=m1", want: FHIRRequest{Interaction: "non-fhir", Kind: "lookup", Patients: ps("m1")}},
		{name: "legacy header patient", path: "/legacy/current", headers: map[string]string{"x-patient-id": "h1"}, want: FHIRRequest{Interaction: "non-fhir", Kind: "current", Patients: ps("h1")}},
		{name: "legacy without patient source", path: "/legacy/census", want: FHIRRequest{Interaction: "non-fhir", Kind: "census", Patients: ps(), AllPatients: true}},
		{name: "legacy missing patient", path: "/legacy/lookup", code: CodeAmbiguous},
		{name: "legacy conflicting patient", path: "/legacy/lookup?mrn=1&mrn=2", code: CodeAmbiguous},

		// Refusals.
		{name: "encoded slash", path: "/fhir/Patient%2F123", code: CodeAmbiguous},
		{name: "encoded slash lower case", path: "/fhir/Patient/1%2f2", code: CodeAmbiguous},
		{name: "encoded dot", path: "/fhir/Patient/%2E%2E/Observation", code: CodeAmbiguous},
		{name: "encoded backslash", path: "/fhir/Patient/1%5c2", code: CodeAmbiguous},
		{name: "double encoding", path: "/fhir/Patient/1%252F2", code: CodeAmbiguous},
		{name: "bad escape", path: "/fhir/Patient/1%G1", code: CodeAmbiguous},
		{name: "dot segment", path: "/fhir/Observation/../Patient/1", code: CodeAmbiguous},
		{name: "single dot segment", path: "/fhir/./Patient/1", code: CodeAmbiguous},
		{name: "repeated slash", path: "/fhir//Patient/1", code: CodeAmbiguous},
		{name: "trailing slash", path: "/fhir/Patient/1/", code: CodeAmbiguous},
		{name: "path parameter", path: "/fhir/Patient/1;x=y", code: CodeAmbiguous},
		{name: "raw backslash", path: "/fhir/Patient\\1", code: CodeAmbiguous},
		{name: "NUL byte", path: "/fhir/Patient/1\x00", code: CodeAmbiguous},
		{name: "encoded NUL", path: "/fhir/Patient/1%00", code: CodeAmbiguous},
		{name: "control byte in query", path: "/fhir/Observation?patient=1%0a", code: CodeAmbiguous},
		{name: "fragment", path: "/fhir/Patient/1#x", code: CodeAmbiguous},
		{name: "lower-case type", path: "/fhir/patient/1", code: CodeAmbiguous},
		{name: "unknown type", path: "/fhir/Patients/1", code: CodeAmbiguous},
		{name: "invalid id", path: "/fhir/Patient/a_b", code: CodeAmbiguous},
		{name: "conflicting repeated patient", path: "/fhir/Observation?patient=1&patient=2", code: CodeAmbiguous},
		{name: "conflicting query and form", method: "POST", path: "/fhir/Observation/_search?patient=1",
			headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}, body: "patient=2", code: CodeAmbiguous},
		{name: "conflicting Patient _id", path: "/fhir/Patient?_id=1&_id=2", code: CodeAmbiguous},
		{name: "semicolon in query", path: "/fhir/Observation?patient=1;patient=2", code: CodeAmbiguous},
		{name: "token in query", path: "/fhir/Patient/1?access_token=abc", code: CodeAmbiguous},
		{name: "token in query any case", path: "/fhir/Patient/1?Access_Token=abc", code: CodeAmbiguous},
		{name: "_method in query", path: "/fhir/Patient/1?_method=DELETE", code: CodeAmbiguous},
		{name: "method override header", path: "/fhir/Patient/1", headers: map[string]string{"x-http-method-override": "DELETE"}, code: CodeAmbiguous},
		{name: "x-http-method header", path: "/fhir/Patient/1", headers: map[string]string{"x-http-method": "PUT"}, code: CodeAmbiguous},
		{name: "x-method-override header", path: "/fhir/Patient/1", headers: map[string]string{"x-method-override": "PUT"}, code: CodeAmbiguous},
		{name: "x-original-url header", path: "/fhir/metadata", headers: map[string]string{"x-original-url": "/fhir/Patient"}, code: CodeAmbiguous},
		{name: "non-FHIR content type", method: "POST", path: "/fhir/Observation", headers: map[string]string{"content-type": "text/plain"}, body: "x", code: CodeUnsupported},
		{name: "missing content type", method: "PUT", path: "/fhir/Patient/1", body: `{}`, code: CodeUnsupported},
		{name: "body type differs from path", method: "PUT", path: "/fhir/Patient/1", headers: jsonCT, body: `{"resourceType":"Observation","id":"1"}`, code: CodeAmbiguous},
		{name: "body id differs from path", method: "PUT", path: "/fhir/Patient/1", headers: jsonCT, body: `{"resourceType":"Patient","id":"2"}`, code: CodeAmbiguous},
		{name: "duplicate JSON key", method: "POST", path: "/fhir/Observation", headers: jsonCT,
			body: `{"resourceType":"Observation","subject":{"reference":"Patient/1","reference":"Patient/2"}}`, code: CodeAmbiguous},
		{name: "duplicate JSON key by case", method: "POST", path: "/fhir/Observation", headers: jsonCT,
			body: `{"resourceType":"Observation","subject":{"reference":"Patient/1"},"Subject":{"reference":"Patient/2"}}`, code: CodeAmbiguous},
		{name: "outside base", path: "/admin/users", code: CodeNoRoute},
		{name: "base prefix is not base", path: "/fhirx/Patient/1", code: CodeNoRoute},
		{name: "unknown method", method: "TRACE", path: "/fhir/Patient/1", code: CodeUnsupported},
		{name: "bad operation name", path: "/fhir/Patient/1/$every%20thing", code: CodeAmbiguous},
		{name: "unknown purpose", path: "/fhir/metadata", headers: map[string]string{"x-purpose-of-use": "FUN"}, code: CodeAmbiguous},
		{name: "lower-case purpose", path: "/fhir/metadata", headers: map[string]string{"x-purpose-of-use": "treat"}, code: CodeAmbiguous},
	}
}

func TestParse(t *testing.T) {
	p := newTestParser(t)
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			req, err := p.Parse(tc.input())
			if got := CodeOf(err); got != tc.code {
				t.Fatalf("code = %q, want %q (err %v)", got, tc.code, err)
			}
			if tc.code != "" {
				return
			}
			if tc.want.IncludedTypes == nil {
				tc.want.IncludedTypes = []string{} // always present in the policy input
			}
			if !reflect.DeepEqual(req.FHIR, tc.want) {
				t.Fatalf("FHIR =\n %+v\nwant\n %+v", req.FHIR, tc.want)
			}
		})
	}
}

func (tc parseCase) input() *CheckInput {
	m := tc.method
	if m == "" {
		m = "GET"
	}
	h := map[string]string{}
	for k, v := range tc.headers {
		h[k] = v
	}
	var body []byte
	if tc.body != "" {
		body = []byte(tc.body)
	}
	return &CheckInput{ID: "r1", Method: m, Path: tc.path, Headers: h, Body: body}
}

func TestParseBatch(t *testing.T) {
	p := newTestParser(t)
	tests := []struct {
		name     string
		body     string
		code     Code
		patients []string
		all      bool
		entries  []string // interaction of each entry
	}{
		{"batch of reads", `{"resourceType":"Bundle","type":"batch","entry":[
			{"request":{"method":"GET","url":"Patient/1"}},
			{"request":{"method":"GET","url":"Observation?patient=2"}}]}`, "", []string{"1", "2"}, false, []string{"read", "search-type"}},
		{"transaction smuggles another patient in a create", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"request":{"method":"GET","url":"Patient/1"}},
			{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/666"}},"request":{"method":"POST","url":"Observation"}}]}`,
			"", []string{"1", "666"}, false, []string{"read", "create"}},
		{"absolute entry url on base", `{"resourceType":"Bundle","type":"batch","entry":[
			{"request":{"method":"GET","url":"https://h/fhir/Patient/3"}}]}`, "", []string{"3"}, false, []string{"read"}},
		{"unconstrained search entry widens", `{"resourceType":"Bundle","type":"batch","entry":[
			{"request":{"method":"GET","url":"Observation?code=x"}}]}`, "", []string{}, true, []string{"search-type"}},
		{"conditional reference widens", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":{"resourceType":"Observation","subject":{"reference":"Patient?identifier=x"}},"request":{"method":"POST","url":"Observation"}}]}`,
			"", []string{}, true, []string{"create"}},
		{"entry with encoded slash", `{"resourceType":"Bundle","type":"batch","entry":[
			{"request":{"method":"GET","url":"Patient%2F1"}}]}`, CodeAmbiguous, nil, false, nil},
		{"entry with token in query", `{"resourceType":"Bundle","type":"batch","entry":[
			{"request":{"method":"GET","url":"Patient/1?access_token=x"}}]}`, CodeAmbiguous, nil, false, nil},
		{"nested batch", `{"resourceType":"Bundle","type":"batch","entry":[
			{"request":{"method":"POST","url":""}}]}`, CodeAmbiguous, nil, false, nil},
		{"entry outside base", `{"resourceType":"Bundle","type":"batch","entry":[
			{"request":{"method":"GET","url":"https://h/other/Patient/1"}}]}`, CodeUnsupported, nil, false, nil},
		{"duplicate request key", `{"resourceType":"Bundle","type":"batch","entry":[
			{"request":{"method":"GET","url":"Patient/1"},"request":{"method":"GET","url":"Patient/2"}}]}`, CodeAmbiguous, nil, false, nil},
		{"entry without request", `{"resourceType":"Bundle","type":"batch","entry":[{"resource":{}}]}`, CodeAmbiguous, nil, false, nil},
		{"collection bundle", `{"resourceType":"Bundle","type":"collection"}`, CodeUnsupported, nil, false, nil},
		{"not a bundle", `{"resourceType":"Patient"}`, CodeUnsupported, nil, false, nil},
		{"trailing garbage", `{"resourceType":"Bundle","type":"batch"} {}`, CodeAmbiguous, nil, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := p.Parse(&CheckInput{Method: "POST", Path: "/fhir", Headers: map[string]string{"content-type": "application/fhir+json"}, Body: []byte(tc.body)})
			if got := CodeOf(err); got != tc.code {
				t.Fatalf("code = %q, want %q (err %v)", got, tc.code, err)
			}
			if tc.code != "" {
				return
			}
			f := req.FHIR
			if !slices.Equal(f.Patients, tc.patients) || f.AllPatients != tc.all {
				t.Fatalf("patients = %v all=%v, want %v all=%v", f.Patients, f.AllPatients, tc.patients, tc.all)
			}
			var got []string
			for _, e := range f.Entries {
				got = append(got, string(e.Interaction))
				if e.Method == "" {
					t.Fatal("entry without method")
				}
			}
			if !slices.Equal(got, tc.entries) {
				t.Fatalf("entries = %v, want %v", got, tc.entries)
			}
		})
	}
}

func TestParseIntentAndHeaders(t *testing.T) {
	p := newTestParser(t)
	tests := []struct {
		name       string
		headers    map[string]string
		purpose    string
		breakGlass BreakGlassRequest
	}{
		{"no intent", nil, "", BreakGlassRequest{Grants: []Grant{}}},
		{"purpose header", map[string]string{"x-purpose-of-use": "ETREAT"}, "ETREAT", BreakGlassRequest{Grants: []Grant{}}},
		{"purpose with system", map[string]string{"x-purpose-of-use": purposeSystem + "|HPAYMT"}, "HPAYMT", BreakGlassRequest{Grants: []Grant{}}},
		{"break glass with reason", map[string]string{"x-break-glass": " cardiac arrest "}, "", BreakGlassRequest{Requested: true, Reason: "cardiac arrest", Grants: []Grant{}}},
		{"break glass without reason", map[string]string{"x-break-glass": ""}, "", BreakGlassRequest{Requested: true, Grants: []Grant{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"authorization": "Bearer secret", "cookie": "c"}
			for k, v := range tc.headers {
				h[k] = v
			}
			req, err := p.Parse(&CheckInput{Method: "GET", Path: "/fhir/metadata", Headers: h})
			if err != nil {
				t.Fatal(err)
			}
			if req.Purpose != tc.purpose || !reflect.DeepEqual(req.BreakGlass, tc.breakGlass) {
				t.Fatalf("purpose %q break-glass %+v, want %q %+v", req.Purpose, req.BreakGlass, tc.purpose, tc.breakGlass)
			}
			if _, ok := req.Headers["authorization"]; ok {
				t.Fatal("authorization header reached the policy input")
			}
		})
	}
}

func TestRequestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   RequestConfig
		field string
	}{
		{"defaults", RequestConfig{}, ""},
		{"base with trailing slash", RequestConfig{Base: "/fhir/"}, "request.base"},
		{"relative base", RequestConfig{Base: "fhir"}, "request.base"},
		{"negative body", RequestConfig{MaxBody: -1}, "request.max_body"},
		{"route without kind", RequestConfig{LegacyRoutes: []LegacyRoute{{Method: "GET", Pattern: "/x"}}}, "request.legacy_routes[0].kind"},
		{"route capture missing", RequestConfig{LegacyRoutes: []LegacyRoute{{Method: "GET", Pattern: "/x/{id}", Kind: "k", PatientFrom: "path:pid"}}}, "request.legacy_routes[0].patient_from"},
		{"route bad source", RequestConfig{LegacyRoutes: []LegacyRoute{{Method: "GET", Pattern: "/x", Kind: "k", PatientFrom: "cookie:p"}}}, "request.legacy_routes[0].patient_from"},
		{"route lower-case method", RequestConfig{LegacyRoutes: []LegacyRoute{{Method: "get", Pattern: "/x", Kind: "k"}}}, "request.legacy_routes[0].method"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil || tc.cfg.Base != DefaultFHIRBase || tc.cfg.MaxBody != DefaultMaxBody {
					t.Fatalf("err %v, cfg %+v", err, tc.cfg)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
				t.Fatalf("err = %v, want it to start with %s", err, tc.field)
			}
		})
	}
}

// canonicalTarget rebuilds a request target from a parsed request, for the
// idempotence check: parsing it again must give the same result.
func canonicalTarget(req *Request) string {
	t := req.Path
	if len(req.Query) > 0 {
		t += "?" + url.Values(req.Query).Encode()
	}
	return t
}
