package regolib

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite data.json from data.base.json and the synthetic population")

// The demo population: practitioner prac-K (K = 1..practitioners) is on the
// care team of patient n (n = 1..patients) exactly when (n-1) % practitioners
// == K-1, and RelatedPerson rp-n holds a delegation for every tenth patient n.
// The synthetic FHIR data set used by the demo follows the same rule, so the
// policy and the data agree without anyone keeping two lists in step.
const (
	practitioners  = 60
	patients       = 1200
	delegateEveryN = 10
)

// generateData merges the hand-written policy data with the generated care
// teams and delegations and returns the bytes of data.json.
func generateData() ([]byte, error) {
	base, err := os.ReadFile("data.base.json")
	if err != nil {
		return nil, err
	}
	var doc map[string]map[string]any
	if err := json.Unmarshal(base, &doc); err != nil {
		return nil, fmt.Errorf("data.base.json: %w", err)
	}
	ph, ok := doc["phigate"]
	if !ok {
		return nil, fmt.Errorf("data.base.json: no phigate object")
	}
	teams := make(map[string][]string, practitioners)
	for n := 1; n <= patients; n++ {
		k := (n-1)%practitioners + 1
		ref := fmt.Sprintf("Practitioner/prac-%03d", k)
		teams[ref] = append(teams[ref], fmt.Sprintf("pat-%04d", n))
	}
	delegations := make(map[string][]string, patients/delegateEveryN)
	for n := delegateEveryN; n <= patients; n += delegateEveryN {
		delegations[fmt.Sprintf("RelatedPerson/rp-%04d", n)] = []string{fmt.Sprintf("pat-%04d", n)}
	}
	ph["care_teams"] = teams
	ph["delegations"] = delegations
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// TestGenerateData keeps data.json reproducible: it fails when data.json is
// not exactly what the generator produces, and rewrites it with -update.
func TestGenerateData(t *testing.T) {
	want, err := generateData()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("data.json", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile("data.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data.json is stale: run go test ./rego/ -run TestGenerateData -update")
	}
}

// TestGeneratedCareTeams checks the population rule on the generated data
// itself, not on the generator's loop.
func TestGeneratedCareTeams(t *testing.T) {
	raw, err := FS.ReadFile("data.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Phigate struct {
			CareTeams   map[string][]string `json:"care_teams"`
			Delegations map[string][]string `json:"delegations"`
		} `json:"phigate"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		ref        string
		wantCount  int
		wantFirst  string
		wantLast   string
		delegation bool
	}{
		{name: "first practitioner", ref: "Practitioner/prac-001", wantCount: 20, wantFirst: "pat-0001", wantLast: "pat-1141"},
		{name: "last practitioner", ref: "Practitioner/prac-060", wantCount: 20, wantFirst: "pat-0060", wantLast: "pat-1200"},
		{name: "first delegate", ref: "RelatedPerson/rp-0010", wantCount: 1, wantFirst: "pat-0010", wantLast: "pat-0010", delegation: true},
		{name: "last delegate", ref: "RelatedPerson/rp-1200", wantCount: 1, wantFirst: "pat-1200", wantLast: "pat-1200", delegation: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := doc.Phigate.CareTeams
			if tc.delegation {
				m = doc.Phigate.Delegations
			}
			got := m[tc.ref]
			if len(got) != tc.wantCount || got[0] != tc.wantFirst || got[len(got)-1] != tc.wantLast {
				t.Fatalf("%s: got %d patients %v, want %d from %s to %s", tc.ref, len(got), got, tc.wantCount, tc.wantFirst, tc.wantLast)
			}
		})
	}
	if n := len(doc.Phigate.CareTeams); n != practitioners {
		t.Errorf("care teams: got %d practitioners, want %d", n, practitioners)
	}
	if n := len(doc.Phigate.Delegations); n != patients/delegateEveryN {
		t.Errorf("delegations: got %d, want %d", n, patients/delegateEveryN)
	}
}
