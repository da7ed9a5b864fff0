package filters

import (
	"bytes"
	"testing"
)

// A Bundle's links are written from the query the server answered and its
// paging state; under a grant limited to patient A, a link that names
// another patient is dropped and one that names none or only A is kept.
func TestBundleLinksNamingOtherPatients(t *testing.T) {
	e := testEngine(t)
	link := func(rel, u string) string { return `{"relation":"` + rel + `","url":"` + u + `"}` }
	bundle := func(links ...string) string {
		l := ""
		for i, x := range links {
			if i > 0 {
				l += ","
			}
			l += x
		}
		return `{"resourceType":"Bundle","type":"searchset","link":[` + l + `],"entry":[{"resource":` + obsA + `,"search":{"mode":"match"}}]}`
	}
	cases := []struct {
		name string
		url  string
		keep bool
	}{
		{"patient parameter, bare id", "https://fhir.example/r4/Observation?patient=B", false},
		{"subject, typed", "https://fhir.example/r4/Observation?subject=Patient/B&_count=10", false},
		{"subject, absolute", "https://fhir.example/r4/Observation?subject=https%3A%2F%2Ffhir.example%2Fr4%2FPatient%2FB", false},
		{"one of an OR list", "https://fhir.example/r4/Observation?patient=A,B", false},
		{"chained id", "https://fhir.example/r4/Observation?subject:Patient._id=B", false},
		{"Patient _id", "https://fhir.example/r4/Patient?_id=B", false},
		{"compartment path", "https://fhir.example/r4/Patient/B/Observation", false},
		{"operation path", "https://fhir.example/r4/Patient/B/$everything?_page=2", false},
		{"unparseable", "https://fhir.example/r4/Observation?patient=%zz", false},
		{"granted patient", "https://fhir.example/r4/Observation?patient=A&_page=2", true},
		{"no patient", "https://fhir.example/r4/Observation?code=8867-4&_page=2", true},
		{"a reference to another type", "https://fhir.example/r4/Observation?subject=Group/g1", true},
		{"a name search", "https://fhir.example/r4/Patient?name=Bravo", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := bundle(link("self", tc.url), link("next", "https://fhir.example/r4/Observation?_page=2"))
			res, err := apply(e, fhirJSON, []byte(body), Plan{Enforce: &Enforcement{Patients: []string{"A"}}})
			if err != nil {
				t.Fatal(err)
			}
			out := decode(t, res.Body)
			self := at(out, "link", 0, "relation") == "self"
			if self != tc.keep {
				t.Errorf("self link kept = %v, want %v: %s", self, tc.keep, res.Body)
			}
			if !bytes.Contains(res.Body, []byte(`_page=2"`)) {
				t.Errorf("the next link that names no patient was dropped: %s", res.Body)
			}
		})
	}
	t.Run("any patient keeps every link", func(t *testing.T) {
		body := bundle(link("self", "https://fhir.example/r4/Observation?patient=B"))
		res, err := apply(e, fhirJSON, []byte(body), Plan{Enforce: &Enforcement{AnyPatient: true}})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(res.Body, []byte("patient=B")) {
			t.Errorf("link dropped under an any-patient grant: %s", res.Body)
		}
	})
}
