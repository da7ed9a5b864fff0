package authz

import (
	"slices"
	"testing"
)

// Only a plain patient parameter pins a search: a modifier or a chain is a
// form upstreams disagree on (some ignore it and return everything), so the
// ids it names are recorded but the search reads as all patients.
func TestParseModifiersAndChainsNeverPin(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		patients []string
		all      bool
	}{
		{"plain patient", "/fhir/Observation?patient=A", []string{"A"}, false},
		{"plain subject reference", "/fhir/Observation?subject=Patient/A", []string{"A"}, false},
		{"chained subject:Patient._id", "/fhir/Observation?subject:Patient._id=A", []string{"A"}, true},
		{"type modifier", "/fhir/Observation?subject:Patient=A", []string{"A"}, true},
		{"chained patient._id", "/fhir/Observation?patient._id=A", []string{"A"}, true},
		{"chained subject._id", "/fhir/Observation?subject._id=A", []string{"A"}, true},
		{"identifier modifier", "/fhir/Observation?patient:identifier=mrn|1", []string{}, true},
		{"modifier beside a plain pin", "/fhir/Observation?patient=A&subject:Patient=B", []string{"A", "B"}, false},
		{"chain in a system search", "/fhir?patient._id=A", []string{"A"}, true},
	}
	p := newTestParser(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := p.Parse(&CheckInput{Method: "GET", Path: tc.path})
			if err != nil {
				t.Fatal(err)
			}
			if f := req.FHIR; !slices.Equal(f.Patients, tc.patients) || f.AllPatients != tc.all {
				t.Fatalf("patients %q all=%v, want %q all=%v", f.Patients, f.AllPatients, tc.patients, tc.all)
			}
		})
	}
}
