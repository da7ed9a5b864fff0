package filters

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func entry(res string, mode string) string {
	if mode == "" {
		return `{"fullUrl":"http://x/` + fmt.Sprint(len(res)) + `","resource":` + res + `}`
	}
	return `{"resource":` + res + `,"search":{"mode":"` + mode + `"}}`
}

func bundleOf(typ string, total int, entries ...string) string {
	t := ""
	if total >= 0 {
		t = fmt.Sprintf(`,"total":%d`, total)
	}
	return `{"resourceType":"Bundle","type":"` + typ + `"` + t + `,"entry":[` + strings.Join(entries, ",") + `]}`
}

const (
	patA   = `{"resourceType":"Patient","id":"A","name":[{"family":"Alpha"}]}`
	patB   = `{"resourceType":"Patient","id":"B","name":[{"family":"Bravo"}]}`
	obsA   = `{"resourceType":"Observation","id":"oa","subject":{"reference":"Patient/A"}}`
	obsB   = `{"resourceType":"Observation","id":"ob","subject":{"reference":"https://fhir.example/r4/Patient/B/_history/2"}}`
	obsPsy = `{"resourceType":"Observation","id":"opsy","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}]},"subject":{"reference":"Patient/A"}}`
	encA   = `{"resourceType":"Encounter","id":"ea","subject":{"reference":"Patient/A"},"participant":[{"individual":{"reference":"Practitioner/d"}}]}`
	covB   = `{"resourceType":"Coverage","id":"cb","beneficiary":{"reference":"Patient/B"}}`
	condQ  = `{"resourceType":"Condition","id":"cq","subject":{"reference":"Patient?identifier=urn:x|123"}}`
	logRef = `{"resourceType":"Immunization","id":"il","patient":{"type":"Patient","identifier":{"value":"123"}}}`
	prac   = `{"resourceType":"Practitioner","id":"d","name":[{"family":"Adams"}]}`
	ctnPsy = `{"resourceType":"Observation","id":"oc","contained":[{"resourceType":"Observation","meta":{"security":[{"code":"PSYTHPN"}]}}],"subject":{"reference":"Patient/A"}}`
	rsB    = `{"resourceType":"ResearchSubject","id":"rs","individual":{"reference":"Patient/B"}}`
)

func TestEnforceBundles(t *testing.T) {
	e := testEngine(t)
	grantA := &Enforcement{Patients: []string{"A"}}
	cases := []struct {
		name      string
		body      string
		enf       *Enforcement
		withheld  int
		total     any // nil: no total expected
		ids       []string
		outcome   bool
		forbidden bool
	}{
		{
			name: "other patient's entries removed, total adjusted",
			body: bundleOf("searchset", 4, entry(patA, "match"), entry(obsA, "match"), entry(obsB, "match"), entry(patB, "include")),
			enf:  grantA, withheld: 2, total: 3.0, ids: []string{"A", "oa"}, outcome: true,
		},
		{
			// Other pages may hold more patients outside the grant: the
			// total cannot be known, so it goes.
			name: "paged searchset loses its total",
			body: strings.Replace(bundleOf("searchset", 1200, entry(patA, "match"), entry(obsB, "match")), `"entry":[`,
				`"link":[{"relation":"self","url":"u"},{"relation":"next","url":"u2"}],"entry":[`, 1),
			enf: grantA, withheld: 1, total: nil, ids: []string{"A"}, outcome: true,
		},
		{
			name: "compartment elements per type",
			body: bundleOf("searchset", 5, entry(encA, ""), entry(covB, ""), entry(rsB, ""), entry(prac, ""), entry(condQ, "")),
			enf:  grantA, withheld: 3, total: 2.0, ids: []string{"ea", "d"}, outcome: true,
		},
		{
			name: "logical patient reference is withheld",
			body: bundleOf("collection", -1, entry(logRef, ""), entry(obsA, "")),
			enf:  grantA, withheld: 1, ids: []string{"oa"}, outcome: true,
		},
		{
			name: "sensitivity label not permitted",
			body: bundleOf("searchset", 3, entry(obsA, "match"), entry(obsPsy, "match"), entry(ctnPsy, "match")),
			enf:  grantA, withheld: 2, total: 1.0, ids: []string{"oa"}, outcome: true,
		},
		{
			name: "permitted label kept",
			body: bundleOf("searchset", 2, entry(obsA, "match"), entry(obsPsy, "match")),
			enf:  &Enforcement{Patients: []string{"A"}, PermittedLabels: []string{"PSY"}}, total: 2.0, ids: []string{"oa", "opsy"},
		},
		{
			name: "any patient still checks labels",
			body: bundleOf("history", 3, entry(obsA, ""), entry(obsB, ""), entry(obsPsy, "")),
			enf:  &Enforcement{AnyPatient: true}, withheld: 1, total: 2.0, ids: []string{"oa", "ob"}, outcome: true,
		},
		{
			name: "empty grant withholds every patient resource",
			body: bundleOf("searchset", 2, entry(obsA, "match"), entry(prac, "match")),
			enf:  &Enforcement{}, withheld: 1, total: 1.0, ids: []string{"d"}, outcome: true,
		},
		{
			name: "nested bundle entries enforced",
			body: bundleOf("collection", -1, entry(bundleOf("searchset", 2, entry(obsA, "match"), entry(obsB, "match")), "")),
			enf:  grantA, withheld: 1, ids: []string{""}, outcome: false,
		},
		{
			name:      "single resource of another patient",
			body:      obsB,
			enf:       grantA,
			forbidden: true,
		},
		{
			name:      "single patient not granted",
			body:      patB,
			enf:       grantA,
			forbidden: true,
		},
		{
			name:      "single resource with label",
			body:      obsPsy,
			enf:       grantA,
			forbidden: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, fhirJSON, []byte(tc.body), Plan{Enforce: tc.enf, DecisionID: "dec-1"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Forbidden != tc.forbidden {
				t.Fatalf("Forbidden = %v", res.Forbidden)
			}
			if tc.forbidden {
				if res.Body != nil {
					t.Error("forbidden result carries a body")
				}
				return
			}
			if res.Withheld != tc.withheld {
				t.Errorf("Withheld = %d, want %d", res.Withheld, tc.withheld)
			}
			if res.Released != len(tc.ids) {
				t.Errorf("Released = %d, want %d (the ids released)", res.Released, len(tc.ids))
			}
			out := decode(t, res.Body)
			if got := at(out, "total"); got != tc.total {
				t.Errorf("total = %v, want %v", got, tc.total)
			}
			var ids []string
			sawOutcome := false
			for _, en := range at(out, "entry").([]any) {
				if at(en, "resource", "resourceType") == "OperationOutcome" {
					sawOutcome = true
					if at(en, "resource", "issue", 0, "code") != "suppressed" {
						t.Errorf("outcome = %v", en)
					}
					if d, _ := at(en, "resource", "issue", 0, "diagnostics").(string); strings.Contains(d, "B") && !strings.Contains(d, "dec-1") {
						t.Errorf("diagnostics %q", d)
					}
					if at(out, "type") == "searchset" && at(en, "search", "mode") != "outcome" {
						t.Error("outcome entry without search.mode outcome")
					}
					continue
				}
				id, _ := at(en, "resource", "id").(string)
				ids = append(ids, id)
			}
			if fmt.Sprint(ids) != fmt.Sprint(tc.ids) {
				t.Errorf("entries = %v, want %v", ids, tc.ids)
			}
			if sawOutcome != tc.outcome {
				t.Errorf("outcome entry = %v, want %v", sawOutcome, tc.outcome)
			}
			if tc.withheld > 0 && !tc.enf.AnyPatient && (bytes.Contains(res.Body, []byte("Bravo")) || bytes.Contains(res.Body, []byte("Patient/B"))) {
				t.Error("withheld data survived")
			}
		})
	}
}

func TestEnforceBatchResponseKeepsPositions(t *testing.T) {
	e := testEngine(t)
	body := `{"resourceType":"Bundle","type":"batch-response","entry":[
	  {"resource":` + obsA + `,"response":{"status":"200 OK"}},
	  {"fullUrl":"https://fhir.example/Observation/ob","resource":` + obsB + `,"response":{"status":"200 OK","etag":"W/\"1\"","location":"Observation/ob/_history/1"}}]}`
	res, err := apply(e, fhirJSON, []byte(body), Plan{Enforce: &Enforcement{Patients: []string{"A"}}})
	if err != nil {
		t.Fatal(err)
	}
	out := decode(t, res.Body)
	if n := len(at(out, "entry").([]any)); n != 2 || res.Withheld != 1 {
		t.Fatalf("entries = %d, withheld = %d", n, res.Withheld)
	}
	second := at(out, "entry", 1)
	if at(second, "resource") != nil || at(second, "fullUrl") != nil || at(second, "response", "status") != "403 Forbidden" ||
		at(second, "response", "outcome", "issue", 0, "code") != "suppressed" || at(second, "response", "location") != nil {
		t.Errorf("withheld entry = %v", second)
	}
	if at(out, "entry", 0, "resource", "id") != "oa" {
		t.Error("granted entry lost")
	}
}
