package fhirdata

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func marshalAll(t *testing.T, d *Dataset) []byte {
	t.Helper()
	b, err := json.Marshal(d.All())
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}

func TestGenerateDeterministic(t *testing.T) {
	a, b := Default(), Default()
	if !bytes.Equal(marshalAll(t, a), marshalAll(t, b)) {
		t.Fatal("two generations with the same seed differ")
	}
	other, err := Generate(Config{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(marshalAll(t, a), marshalAll(t, other)) {
		t.Fatal("a different seed produced the same data")
	}
	// Ids and rules do not depend on the seed.
	if len(a.All()) == 0 {
		t.Fatal("empty data set")
	}
	for _, typ := range []string{"Patient", "Practitioner", "CareTeam", "RelatedPerson"} {
		if got, want := len(other.OfType(typ)), len(a.OfType(typ)); got != want {
			t.Errorf("%s count with other seed = %d, want %d", typ, got, want)
		}
	}
}

// BenchmarkGenerate measures building the demo population: the demo's
// start waits on it, so a regression shows here (a timed unit test would
// fail on a loaded machine instead).
func BenchmarkGenerate(b *testing.B) {
	for b.Loop() {
		d := Default()
		if len(d.All()) == 0 {
			b.Fatal("empty population")
		}
	}
}

func TestRules(t *testing.T) {
	d := Default()
	tests := []struct {
		name string
		typ  string
		id   string
		want bool
	}{
		{"first patient", "Patient", "pat-0001", true},
		{"last patient", "Patient", "pat-1200", true},
		{"past last patient", "Patient", "pat-1201", false},
		{"first practitioner", "Practitioner", "prac-001", true},
		{"last practitioner", "Practitioner", "prac-060", true},
		{"past last practitioner", "Practitioner", "prac-061", false},
		{"example PSY observation", "Observation", ExamplePSYObservation, true},
		{"PSY condition of pat-0001", "Condition", "cond-pat-0001-psy", true},
		{"no PSY for pat-0002", "Observation", "obs-pat-0002-psy", false},
		{"ETH for pat-0003", "Observation", "obs-pat-0003-eth", true},
		{"HIV for pat-0007", "Observation", "obs-pat-0007-hiv", true},
		{"SDV for pat-0009", "Observation", "obs-pat-0009-sdv", true},
		{"related person of pat-0010", "RelatedPerson", "rp-0010", true},
		{"related person of pat-0020", "RelatedPerson", "rp-0020", true},
		{"no related person for pat-0002", "RelatedPerson", "rp-0002", false},
		{"care team", "CareTeam", "ct-pat-0061", true},
		{"vital sign", "Observation", "obs-pat-0001-01", true},
		{"first lab", "Observation", "obs-pat-1200-05", true},
		{"encounter", "Encounter", "enc-pat-0001-1", true},
		{"organization", "Organization", "org-003", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := d.Get(tc.typ, tc.id); ok != tc.want {
				t.Errorf("Get(%s, %s) found = %v, want %v", tc.typ, tc.id, ok, tc.want)
			}
		})
	}
}

func TestCareTeamRule(t *testing.T) {
	d := Default()
	perPrac := map[string]int{}
	for _, ct := range d.OfType("CareTeam") {
		subj := ct["subject"].(map[string]any)["reference"].(string)
		n, ok := PatientNumber(subj)
		if !ok {
			t.Fatalf("care team %s has subject %q", IDOf(ct), subj)
		}
		member := ct["participant"].([]any)[0].(map[string]any)["member"].(map[string]any)["reference"].(string)
		k, ok := PractitionerNumber(member)
		if !ok {
			t.Fatalf("care team %s has member %q", IDOf(ct), member)
		}
		if (n-1)%60 != k-1 {
			t.Errorf("care team of patient %d has practitioner %d", n, k)
		}
		perPrac[member]++
	}
	if len(perPrac) != 60 {
		t.Errorf("%d practitioners on care teams, want 60", len(perPrac))
	}
	for p, c := range perPrac {
		if c != 20 {
			t.Errorf("%s has %d patients, want 20", p, c)
		}
	}
	if got := PatientsOf(1, 1200, 60); len(got) != 20 || got[0] != "pat-0001" || got[1] != "pat-0061" || got[19] != "pat-1141" {
		t.Errorf("PatientsOf(1) = %v", got)
	}
	p, _ := d.Get("Patient", "pat-0061")
	gp := p["generalPractitioner"].([]any)[0].(map[string]any)["reference"]
	if gp != "Practitioner/prac-001" {
		t.Errorf("pat-0061 generalPractitioner = %v", gp)
	}
}

func TestPatientShape(t *testing.T) {
	d := Default()
	p, _ := d.Get("Patient", "pat-0001")
	systems := map[string]string{}
	for _, id := range p["identifier"].([]any) {
		m := id.(map[string]any)
		systems[m["system"].(string)] = m["value"].(string)
	}
	for _, s := range []string{SystemMRN, SystemSSN, SystemDriverMA, SystemPassportUS, SystemMember} {
		if systems[s] == "" {
			t.Errorf("pat-0001 has no identifier with system %s", s)
		}
	}
	div := p["text"].(map[string]any)["div"].(string)
	family := p["name"].([]any)[0].(map[string]any)["family"].(string)
	if !strings.Contains(div, systems[SystemMRN]) || !strings.Contains(div, strings.ReplaceAll(family, "'", "&#39;")) {
		t.Errorf("narrative %q does not repeat the MRN and name", div)
	}
	for _, f := range []string{"birthDate", "gender", "address", "telecom", "managingOrganization", "generalPractitioner"} {
		if p[f] == nil {
			t.Errorf("pat-0001 lacks %s", f)
		}
	}
	psy, _ := d.Get("Observation", ExamplePSYObservation)
	sec := psy["meta"].(map[string]any)["security"].([]any)[0].(map[string]any)
	if sec["system"] != SystemActCode || sec["code"] != LabelPSY {
		t.Errorf("PSY observation security = %v", sec)
	}
}

func TestLabelShare(t *testing.T) {
	d := Default()
	psy := map[string]bool{}
	for _, o := range d.OfType("Observation") {
		m := o["meta"].(map[string]any)
		for _, s := range asSlice(m["security"]) {
			if s.(map[string]any)["code"] == LabelPSY {
				psy[o["subject"].(map[string]any)["reference"].(string)] = true
			}
		}
	}
	if share := float64(len(psy)) / 1200; share < 0.05 {
		t.Errorf("PSY share = %.3f, want >= 0.05", share)
	}
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"zero fills defaults", Config{}, ""},
		{"too many patients", Config{Patients: 10000}, "Config.Patients"},
		{"negative practitioners", Config{Practitioners: -1}, "Config.Practitioners"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				if err != nil || tc.cfg.Patients != DefaultPatients {
					t.Fatalf("Validate() = %v, cfg %+v", err, tc.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want error naming %s", err, tc.wantErr)
			}
		})
	}
}

func TestNumbers(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"pat-0001", 1, true},
		{"Patient/pat-1200", 1200, true},
		{"pat-01", 0, false},
		{"pat-+001", 0, false},
		{"pat-0000", 0, false},
		{"prac-001", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			n, ok := PatientNumber(tc.in)
			if n != tc.want || ok != tc.ok {
				t.Errorf("PatientNumber(%q) = %d, %v; want %d, %v", tc.in, n, ok, tc.want, tc.ok)
			}
		})
	}
}
