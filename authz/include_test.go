package authz

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// Every type an include can bring into the response is listed, and an
// include that can bring in other patients' data reads as all patients.
func TestParseIncludedTypes(t *testing.T) {
	form := map[string]string{"content-type": "application/x-www-form-urlencoded"}
	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		body    string
		code    Code
		types   []string
		all     bool
	}{
		{name: "no include", path: "/fhir/Observation?patient=1", types: []string{}},
		{name: "revinclude of patients from an organization search",
			path:  "/fhir/Organization?_count=50&_revinclude=Patient:organization",
			types: []string{"Patient"}, all: true},
		{name: "include with a target", path: "/fhir/Observation?patient=1&_include=Observation:subject:Patient", types: []string{"Patient"}},
		{name: "include through the pinning parameter", path: "/fhir/Observation?patient=1&_include=Observation:patient", types: []string{"Patient"}},
		{name: "include of subject from a patient pin", path: "/fhir/Observation?patient=1&_include=Observation:subject",
			types: []string{"Device", "Group", "Location", "Patient"}},
		{name: "include through another parameter", path: "/fhir/Observation?patient=1&_include=Observation:performer",
			types: []string{"CareTeam", "Organization", "Patient", "Practitioner", "PractitionerRole", "RelatedPerson"}, all: true},
		{name: "include of an encounter reaches past the pin", path: "/fhir/Observation?patient=1&_include=Observation:encounter:Encounter",
			types: []string{"Encounter"}, all: true},
		{name: "include of practitioners keeps the pin", path: "/fhir/Encounter?patient=1&_include=Encounter:practitioner",
			types: []string{"Practitioner"}},
		{name: "unknown parameter targets anything", path: "/fhir/Observation?patient=1&_include=Observation:focus", types: []string{"*"}, all: true},
		{name: "wildcard include", path: "/fhir/Observation?patient=1&_include=*", types: []string{"*"}, all: true},
		{name: "wildcard revinclude", path: "/fhir/Patient?_id=1&_revinclude=*", types: []string{"*"}, all: true},
		{name: "wildcard source", path: "/fhir/Patient?_id=1&_revinclude=*:patient", types: []string{"*"}, all: true},
		{name: "revinclude of the pinned patients' compartment", path: "/fhir/Patient?_id=1&_revinclude=Observation:subject",
			types: []string{"Observation"}},
		{name: "revinclude through a multi-valued parameter", path: "/fhir/Patient?_id=1&_revinclude=Observation:performer",
			types: []string{"Observation"}, all: true},
		{name: "include through a multi-valued pin", path: "/fhir/Observation?performer=Patient/1&_include=Observation:performer",
			types: []string{"CareTeam", "Organization", "Patient", "Practitioner", "PractitionerRole", "RelatedPerson"}, all: true},
		{name: "include on a type whose patients are a list", path: "/fhir/Appointment?patient=1&_include=Appointment:patient",
			types: []string{"Patient"}, all: true},
		{name: "include through beneficiary", path: "/fhir/Coverage?beneficiary=1&_include=Coverage:beneficiary", types: []string{"Patient"}},
		{name: "revinclude through a non-compartment parameter", path: "/fhir/Patient?_id=1&_revinclude=ServiceRequest:requester",
			types: []string{"ServiceRequest"}, all: true},
		{name: "revinclude from a non-patient search", path: "/fhir/Practitioner?_id=p&_revinclude=Observation:performer",
			types: []string{"Observation"}, all: true},
		{name: "revinclude of a non-patient type", path: "/fhir/Organization?_revinclude=Endpoint:organization", types: []string{"Endpoint"}},
		{name: "iterate never keeps the pin", path: "/fhir/Observation?patient=1&_include:iterate=Observation:patient", types: []string{"Patient"}, all: true},
		{name: "recurse never keeps the pin", path: "/fhir/Patient?_id=1&_revinclude:recurse=Observation:subject", types: []string{"Observation"}, all: true},
		{name: "link brings other patients", path: "/fhir/Patient?_id=1&_include=Patient:link", types: []string{"Patient", "RelatedPerson"}, all: true},
		{name: "compartment search include", path: "/fhir/Patient/1/Observation?_include=Observation:subject",
			types: []string{"Device", "Group", "Location", "Patient"}, all: true},
		{name: "system search include", path: "/fhir?_type=Organization&_include=Organization:endpoint", types: []string{"Endpoint"}, all: true},
		{name: "POST _search include", method: "POST", path: "/fhir/Organization/_search", headers: form,
			body: "_revinclude=Patient%3Aorganization", types: []string{"Patient"}, all: true},
		{name: "several includes", path: "/fhir/MedicationRequest?patient=1&_include=MedicationRequest:medication&_include=MedicationRequest:patient",
			types: []string{"Medication", "Patient"}},
		{name: "malformed: no parameter", path: "/fhir/Observation?_include=Observation", code: CodeAmbiguous},
		{name: "malformed: empty", path: "/fhir/Observation?_include=", code: CodeAmbiguous},
		{name: "malformed: unknown source type", path: "/fhir/Observation?_include=Observations:patient", code: CodeAmbiguous},
		{name: "malformed: unknown target type", path: "/fhir/Observation?_include=Observation:subject:patient", code: CodeAmbiguous},
		{name: "malformed: too many parts", path: "/fhir/Observation?_include=Observation:subject:Patient:x", code: CodeAmbiguous},
		{name: "malformed: unknown modifier", path: "/fhir/Observation?_include:deep=Observation:patient", code: CodeAmbiguous},
		{name: "wildcard parameter", path: "/fhir/Observation?patient=1&_include=Observation:*", types: []string{"*"}, all: true},
	}
	p := newTestParser(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.method
			if m == "" {
				m = "GET"
			}
			req, err := p.Parse(&CheckInput{Method: m, Path: tc.path, Headers: tc.headers, Body: []byte(tc.body)})
			if got := CodeOf(err); got != tc.code {
				t.Fatalf("code = %q, want %q (err %v)", got, tc.code, err)
			}
			if err != nil {
				return
			}
			if f := req.FHIR; !slices.Equal(f.IncludedTypes, tc.types) || f.IncludedTypes == nil || f.AllPatients != tc.all {
				t.Fatalf("included %q all=%v, want %q all=%v", f.IncludedTypes, f.AllPatients, tc.types, tc.all)
			}
		})
	}
}

// Batch entries carry their own included types; the bundle carries the
// union, and an entry whose include reaches other patients widens it.
func TestParseBatchIncludedTypes(t *testing.T) {
	body := batchOf("Organization?_revinclude=Patient:organization", "Observation?patient=1&_include=Observation:patient")
	req, err := newTestParser(t).Parse(&CheckInput{Method: "POST", Path: "/fhir", Headers: jsonCT, Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	f := req.FHIR
	if !slices.Equal(f.IncludedTypes, []string{"Patient"}) || !f.AllPatients {
		t.Fatalf("bundle included %q all=%v", f.IncludedTypes, f.AllPatients)
	}
	if !slices.Equal(f.Entries[0].IncludedTypes, []string{"Patient"}) || !f.Entries[0].AllPatients || f.Entries[1].AllPatients {
		t.Fatalf("entries %+v", f.Entries)
	}
}

// The parser never leaves IncludedTypes nil, and the JSON input carries
// it under included_types. (An empty list is omitted from the JSON, as the
// policy input built in policy/ omits it; Rego reads both the same.)
func TestIncludedTypesInput(t *testing.T) {
	p := newTestParser(t)
	for _, path := range []string{"/fhir/metadata", "/legacy/census", "/fhir/Observation?patient=1"} {
		req, err := p.Parse(&CheckInput{Method: "GET", Path: path})
		if err != nil {
			t.Fatal(err)
		}
		if req.FHIR.IncludedTypes == nil {
			t.Fatalf("%s: IncludedTypes is nil", path)
		}
	}
	req, err := p.Parse(&CheckInput{Method: "GET", Path: "/fhir/Organization?_revinclude=Patient:organization"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(req.FHIR)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"included_types":["Patient"]`) {
		t.Fatalf("JSON %s lacks included_types", raw)
	}
}
