package authz

import (
	"slices"
	"testing"
)

// The parser names only listed interactions, so a consumer tested over
// Interactions() has seen every one it will meet.
func TestInteractionsListed(t *testing.T) {
	p, err := NewRequestParser(RequestConfig{LegacyRoutes: []LegacyRoute{{Method: "GET", Pattern: "/legacy/{id}", Kind: "k", PatientFrom: "path:id"}}})
	if err != nil {
		t.Fatal(err)
	}
	bundle := func(kind string) []byte {
		return []byte(`{"resourceType":"Bundle","type":"` + kind + `","entry":[]}`)
	}
	cases := []struct {
		method, path string
		body         []byte
	}{
		{"GET", "/fhir/metadata", nil}, {"GET", "/fhir/Patient/1", nil}, {"GET", "/fhir/Patient/1/_history/2", nil},
		{"DELETE", "/fhir/Patient/1", nil}, {"GET", "/fhir/Observation?patient=1", nil}, {"GET", "/fhir?patient=1", nil},
		{"GET", "/fhir/Patient/1/Observation", nil}, {"GET", "/fhir/Patient/1/_history", nil},
		{"GET", "/fhir/Observation/_history", nil}, {"GET", "/fhir/_history", nil}, {"GET", "/fhir/$export", nil},
		{"POST", "/fhir", bundle("batch")}, {"POST", "/fhir", bundle("transaction")}, {"GET", "/legacy/7", nil},
	}
	for _, tc := range cases {
		h := map[string]string{}
		if tc.body != nil {
			h["content-type"] = "application/fhir+json"
		}
		req, err := p.Parse(&CheckInput{Method: tc.method, Path: tc.path, Headers: h, Body: tc.body})
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		if !slices.Contains(Interactions(), req.FHIR.Interaction) {
			t.Errorf("%s %s: interaction %q not in Interactions()", tc.method, tc.path, req.FHIR.Interaction)
		}
	}
	for i, a := range Interactions() {
		if slices.Contains(Interactions()[i+1:], a) {
			t.Errorf("%q listed twice", a)
		}
	}
}
