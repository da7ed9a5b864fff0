package filters

import (
	"bytes"
	"testing"
)

// Resources about patient B in shapes the compartment check must see.
const (
	auditB   = `{"resourceType":"AuditEvent","id":"ae","type":{"code":"rest"},"agent":[{"who":{"reference":"Practitioner/d"},"requestor":true}],"entity":[{"what":{"reference":"Patient/B"}}]}`
	taskB    = `{"resourceType":"Task","id":"tb","status":"ready","intent":"order","for":{"reference":"Patient/B"}}`
	binaryB  = `{"resourceType":"Binary","id":"bb","contentType":"text/plain","securityContext":{"reference":"Patient/B"},"data":"QnJhdm8="}`
	deviceB  = `{"resourceType":"Device","id":"db","patient":{"reference":"Patient/B"},"serialNumber":"Bravo-SN"}`
	taskA    = `{"resourceType":"Task","id":"ta","status":"ready","intent":"order","for":{"reference":"Patient/A"}}`
	paramsB  = `{"resourceType":"Parameters","parameter":[{"name":"a","resource":` + patA + `},{"name":"b","resource":` + patB + `}]}`
	partsB   = `{"resourceType":"Parameters","parameter":[{"name":"match","part":[{"name":"who","resource":` + patB + `},{"name":"score","valueDecimal":0.9}]}]}`
	ctnPatB  = `{"resourceType":"Observation","id":"oc1","contained":[{"resourceType":"Patient","id":"p","name":[{"family":"Bravo"}]}],"subject":{"reference":"#p"}}`
	ctnObsB  = `{"resourceType":"DiagnosticReport","id":"dr","subject":{"reference":"Patient/A"},"contained":[{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/B"},"valueString":"Bravo"}],"result":[{"reference":"#o"}]}`
	ctnPrac  = `{"resourceType":"Observation","id":"oc2","contained":[{"resourceType":"Practitioner","id":"pr","name":[{"family":"Adams"}]}],"subject":{"reference":"Patient/A"},"performer":[{"reference":"#pr"}]}`
	orgX     = `{"resourceType":"Organization","id":"org1","name":"Clinic"}`
	patAOrg  = `{"resourceType":"Patient","id":"A","name":[{"family":"Alpha"}],"managingOrganization":{"reference":"Organization/org1"}}`
	patBOrg  = `{"resourceType":"Patient","id":"B","name":[{"family":"Bravo"}],"managingOrganization":{"reference":"Organization/org1"}}`
	urnObs   = `{"resourceType":"Observation","id":"ou","subject":{"reference":"urn:uuid:9d6b5a5e-0000-4000-8000-00000000000b"}}`
	displayB = `{"resourceType":"Observation","id":"od","subject":{"display":"Bravo"}}`
)

func deleted(fullURL, reqURL string) string {
	return `{"fullUrl":"` + fullURL + `","request":{"method":"DELETE","url":"` + reqURL + `"},"response":{"status":"204"}}`
}

func TestEnforceShapes(t *testing.T) {
	e := testEngine(t)
	grantA := &Enforcement{Patients: []string{"A"}}
	cases := []struct {
		name      string
		body      string
		enf       *Enforcement
		forbidden bool
		withheld  int
		absent    []string // must not appear in the output
		present   []string // must appear in the output
	}{
		{name: "audit event entity.what", body: auditB, enf: grantA, forbidden: true},
		{name: "task for", body: taskB, enf: grantA, forbidden: true},
		{name: "binary securityContext", body: binaryB, enf: grantA, forbidden: true},
		{name: "device patient", body: deviceB, enf: grantA, forbidden: true},
		{name: "task of the granted patient", body: taskA, enf: grantA, present: []string{`"id":"ta"`}},
		{
			name: "extras inside a searchset", enf: grantA, withheld: 4,
			body:    bundleOf("searchset", 5, entry(auditB, "match"), entry(taskB, "match"), entry(binaryB, "match"), entry(deviceB, "match"), entry(taskA, "match")),
			absent:  []string{"Patient/B", "Bravo"},
			present: []string{`"id":"ta"`},
		},
		{name: "patient in Parameters", body: paramsB, enf: grantA, withheld: 1, absent: []string{"Bravo", `"id":"B"`}, present: []string{"Alpha", "REDACTED"}},
		{name: "patient in a Parameters part", body: partsB, enf: grantA, withheld: 1, absent: []string{"Bravo"}, present: []string{"valueDecimal"}},
		{name: "Parameters inside a Bundle", body: bundleOf("collection", -1, entry(paramsB, "")), enf: grantA, withheld: 1, absent: []string{"Bravo"}, present: []string{"Alpha"}},
		{name: "contained patient", body: ctnPatB, enf: grantA, forbidden: true},
		{name: "contained observation about another patient", body: ctnObsB, enf: grantA, forbidden: true},
		{name: "contained in an entry", body: bundleOf("searchset", 3, entry(ctnPatB, "match"), entry(ctnObsB, "match"), entry(obsA, "match")), enf: grantA, withheld: 2, absent: []string{"Bravo"}, present: []string{`"id":"oa"`}},
		{name: "contained practitioner is not a patient", body: ctnPrac, enf: grantA, present: []string{"Adams"}},
		{name: "reference that cannot be resolved", body: urnObs, enf: grantA, forbidden: true},
		{name: "reference by display alone", body: displayB, enf: grantA, forbidden: true},
		{
			name: "deleted patient in history", enf: grantA, withheld: 1,
			body:   bundleOf("history", 2, deleted("https://fhir.example/r4/Patient/B", "Patient/B"), entry(patA, "")),
			absent: []string{"Patient/B"},
		},
		{
			name: "deleted resource of a patient type in history", enf: grantA, withheld: 2,
			body:   bundleOf("history", 3, deleted("https://fhir.example/r4/Observation/ob", "Observation/ob"), deleted("", "Patient/B/_history/3"), entry(obsA, "")),
			absent: []string{"Observation/ob", "Patient/B"},
		},
		{
			name: "deleted granted patient and practitioner kept", enf: grantA,
			body:    bundleOf("history", 2, deleted("https://fhir.example/r4/Patient/A", "Patient/A"), deleted("https://fhir.example/r4/Practitioner/d", "Practitioner/d")),
			present: []string{"Patient/A", "Practitioner/d"},
		},
		{
			name: "fullUrl names another patient than the resource", enf: grantA, withheld: 1,
			body:   bundleOf("history", 1, `{"fullUrl":"https://fhir.example/r4/Patient/B","resource":`+patA+`}`),
			absent: []string{"Patient/B", "Alpha"},
		},
		{
			name: "fullUrl of another type than the resource", enf: grantA, withheld: 1,
			body:   bundleOf("searchset", 1, `{"fullUrl":"https://fhir.example/r4/Observation/ob","resource":`+prac+`,"search":{"mode":"match"}}`),
			absent: []string{"Adams"},
		},
		{
			name: "request.url names another patient than the resource", enf: grantA, withheld: 1,
			body:   bundleOf("history", 1, `{"resource":`+patA+`,"request":{"method":"PUT","url":"Patient/B"}}`),
			absent: []string{"Patient/B", "Alpha"},
		},
		{
			name: "request.url of the resource itself", enf: grantA,
			body:    bundleOf("history", 1, `{"fullUrl":"https://fhir.example/r4/Patient/A","resource":`+patA+`,"request":{"method":"PUT","url":"Patient/A"},"response":{"status":"200","location":"Patient/A/_history/2"}}`),
			present: []string{"Alpha"},
		},
		{
			name: "any patient keeps deleted entries", enf: &Enforcement{AnyPatient: true},
			body:    bundleOf("history", 1, deleted("https://fhir.example/r4/Patient/B", "Patient/B")),
			present: []string{"Patient/B"},
		},
		{
			name: "deleted entry in a batch response", enf: grantA, withheld: 1,
			body:   `{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"204","location":"Patient/B/_history/2"}}]}`,
			absent: []string{"Patient/B"}, present: []string{"403"},
		},
		// resource_types
		{
			name: "revinclude of a type the caller may not read", withheld: 2,
			enf:     &Enforcement{AnyPatient: true, ResourceTypes: []string{"Organization"}},
			body:    bundleOf("searchset", 1, entry(orgX, "match"), entry(patAOrg, "include"), entry(patBOrg, "include")),
			absent:  []string{"Alpha", "Bravo"},
			present: []string{"Clinic"},
		},
		{
			name: "wildcard type list", enf: &Enforcement{AnyPatient: true, ResourceTypes: []string{"*"}},
			body:    bundleOf("searchset", 1, entry(orgX, "match"), entry(patAOrg, "include")),
			present: []string{"Clinic", "Alpha"},
		},
		{
			name: "no type list restricts no type", enf: &Enforcement{AnyPatient: true},
			body:    bundleOf("searchset", 1, entry(orgX, "match"), entry(patAOrg, "include")),
			present: []string{"Clinic", "Alpha"},
		},
		{name: "single resource of a type not permitted", body: patA, enf: &Enforcement{AnyPatient: true, ResourceTypes: []string{"Observation"}}, forbidden: true},
		{name: "contained resource of a type not permitted", body: ctnPrac, enf: &Enforcement{Patients: []string{"A"}, ResourceTypes: []string{"Observation"}}, forbidden: true},
		{
			name: "nested resource of a type not permitted", withheld: 1,
			enf:    &Enforcement{AnyPatient: true, ResourceTypes: []string{"Parameters", "Observation"}},
			body:   `{"resourceType":"Parameters","parameter":[{"name":"p","resource":` + patA + `},{"name":"o","resource":` + obsA + `}]}`,
			absent: []string{"Alpha"}, present: []string{`"id":"oa"`},
		},
		{
			name: "deleted entry of a type not permitted", withheld: 1,
			enf:    &Enforcement{AnyPatient: true, ResourceTypes: []string{"Observation"}},
			body:   bundleOf("history", 2, deleted("https://fhir.example/r4/Patient/A", "Patient/A"), entry(obsA, "")),
			absent: []string{"DELETE", "r4/Patient/A"}, present: []string{`"id":"oa"`},
		},
		{
			name: "nested bundle entries of a type not permitted", withheld: 1,
			enf:    &Enforcement{Patients: []string{"A"}, ResourceTypes: []string{"Observation"}},
			body:   bundleOf("collection", -1, entry(bundleOf("searchset", 2, entry(obsA, "match"), entry(patA, "include")), "")),
			absent: []string{"Alpha"}, present: []string{`"id":"oa"`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, fhirJSON, []byte(tc.body), Plan{Enforce: tc.enf, DecisionID: "dec-1"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Forbidden != tc.forbidden {
				t.Fatalf("Forbidden = %v, want %v; body %s", res.Forbidden, tc.forbidden, res.Body)
			}
			if tc.forbidden {
				if res.Body != nil {
					t.Error("forbidden result carries a body")
				}
				return
			}
			if res.Withheld != tc.withheld {
				t.Errorf("Withheld = %d, want %d; body %s", res.Withheld, tc.withheld, res.Body)
			}
			decode(t, res.Body)
			for _, s := range tc.absent {
				if bytes.Contains(res.Body, []byte(s)) {
					t.Errorf("%q survived: %s", s, res.Body)
				}
			}
			for _, s := range tc.present {
				if !bytes.Contains(res.Body, []byte(s)) {
					t.Errorf("%q lost: %s", s, res.Body)
				}
			}
		})
	}
}

// TestDirectivesReachIncludedEntries: minimum necessary applies to every
// resource of the type in a Bundle, matches and _include'd ones alike.
func TestDirectivesReachIncludedEntries(t *testing.T) {
	e := testEngine(t)
	patTel := `{"resourceType":"Patient","id":"A","name":[{"family":"Alpha"}],"telecom":[{"system":"phone","value":"555-0101"}],"birthDate":"1980-01-02","address":[{"city":"Springfield"}]}`
	body := bundleOf("searchset", 1, entry(obsA, "match"), entry(patTel, "include"), entry(patTel, "match"))
	cases := []struct {
		name    string
		d       []Directive
		absent  []string
		present []string
	}{
		{"billing removes telecom", []Directive{{Path: "Patient.telecom", Action: ActionRemove}}, []string{"555-0101"}, []string{"Alpha", "Springfield"}},
		{"front desk allow-list", []Directive{{Path: "Patient", Action: ActionAllow, Keep: []string{"name"}}}, []string{"555-0101", "1980-01-02", "Springfield"}, []string{"Alpha", `"id":"oa"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, fhirJSON, []byte(body), Plan{Redact: tc.d, Enforce: &Enforcement{Patients: []string{"A"}, ResourceTypes: []string{"Patient", "Observation"}}})
			if err != nil {
				t.Fatal(err)
			}
			out := decode(t, res.Body)
			for i := 1; i <= 2; i++ {
				if at(out, "entry", i, "resource", "meta", "security", 0, "code") != "REDACTED" {
					t.Errorf("entry %d not marked redacted", i)
				}
			}
			for _, s := range tc.absent {
				if bytes.Contains(res.Body, []byte(s)) {
					t.Errorf("%q survived: %s", s, res.Body)
				}
			}
			for _, s := range tc.present {
				if !bytes.Contains(res.Body, []byte(s)) {
					t.Errorf("%q lost", s)
				}
			}
		})
	}
}

func TestParseRef(t *testing.T) {
	cases := []struct {
		in     string
		rt, id string
		ok     bool
	}{
		{"Patient/A", "Patient", "A", true},
		{"Patient/A/_history/3", "Patient", "A", true},
		{"https://fhir.example/r4/Patient/B/_history/2", "Patient", "B", true},
		{"https://fhir.example/r4/Observation/ob", "Observation", "ob", true},
		{"Patient", "Patient", "", true},
		{"Patient?identifier=urn:x|1", "Patient", "", true},
		{"https://fhir.example/r4/Patient?identifier=1", "Patient", "", true},
		{"urn:uuid:9d6b5a5e-0000-4000-8000-00000000000b", "", "", false},
		{"http://x/76", "", "", false},
		{"Patient/B/x", "", "", false},
		{"https://fhir.example/Patient/B/x", "", "", false},
		{"Observation/a b", "", "", false},
		{"observation/1", "", "", false},
		{"", "", "", false},
	}
	for _, tc := range cases {
		got, ok := parseRef(tc.in)
		if ok != tc.ok || got.rtype != tc.rt || got.id != tc.id {
			t.Errorf("parseRef(%q) = %+v, %v; want %s/%s, %v", tc.in, got, ok, tc.rt, tc.id, tc.ok)
		}
	}
}
