package compartment

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestTableMatchesDefinition holds the table to the embedded R4
// definition: every compartment type and parameter is mapped to at least
// one element path, and no type outside the definition and the extras is
// present.
func TestTableMatchesDefinition(t *testing.T) {
	var def definition
	if err := json.Unmarshal(definitionJSON, &def); err != nil {
		t.Fatal(err)
	}
	if def.FHIRVersion != "4.0.1" || def.Definition != "http://hl7.org/fhir/CompartmentDefinition/patient" {
		t.Fatalf("definition = %s %s", def.Definition, def.FHIRVersion)
	}
	var sp searchParams
	if err := json.Unmarshal(searchParamsJSON, &sp); err != nil {
		t.Fatal(err)
	}
	for rt, params := range def.Resources {
		if !Member(rt) {
			t.Errorf("%s: not a member", rt)
		}
		if len(params) == 0 {
			t.Errorf("%s: listed without parameters", rt)
		}
		for _, p := range params {
			if len(sp.Params[rt+"."+p]) == 0 {
				t.Errorf("%s.%s: no element path", rt, p)
			}
		}
		if len(Paths(rt)) == 0 {
			t.Errorf("Paths(%s) is empty", rt)
		}
	}
	extra := map[string]bool{}
	for _, x := range extras {
		extra[x.Type] = true
	}
	for rt := range table {
		if _, ok := def.Resources[rt]; !ok && !extra[rt] {
			t.Errorf("%s: neither in the definition nor an extra", rt)
		}
	}
	if got, want := len(table), len(def.Resources)+len(extras); got != want {
		t.Errorf("table has %d types, want %d", got, want)
	}
}

func TestLookups(t *testing.T) {
	cases := []struct {
		rt     string
		params []string // nil: not patient data
		paths  []string // dotted; every one must be present
	}{
		{"Observation", []string{"subject", "performer", "patient"}, []string{"subject", "performer"}},
		{"Appointment", []string{"actor", "patient"}, []string{"participant.actor"}},
		{"CarePlan", []string{"patient", "performer"}, []string{"subject", "activity.detail.performer"}},
		{"AuditEvent", []string{"patient"}, []string{"agent.who", "entity.what"}},
		{"Coverage", []string{"policy-holder", "subscriber", "beneficiary", "payor", "patient"}, []string{"policyHolder", "beneficiary"}},
		{"SupplyRequest", []string{"subject"}, []string{"deliverTo"}},
		// Patient?link=X selects other patients than X.
		{"Patient", []string{}, []string{"link.other"}},
		{"Task", []string{"patient", "subject"}, []string{"for"}},
		{"Device", []string{"patient"}, []string{"patient"}},
		{"Binary", []string{}, []string{"securityContext"}},
		{"Bundle", []string{}, nil},
		{"Practitioner", nil, nil},
		{"patient", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.rt, func(t *testing.T) {
			params, ok := Params(tc.rt)
			if ok != (tc.params != nil) {
				t.Fatalf("Params ok = %v", ok)
			}
			slices.Sort(params)
			want := slices.Clone(tc.params)
			slices.Sort(want)
			if !slices.Equal(params, want) {
				t.Errorf("Params = %v, want %v", params, want)
			}
			var got []string
			for _, p := range Paths(tc.rt) {
				got = append(got, strings.Join(p, "."))
			}
			for _, p := range tc.paths {
				if !slices.Contains(got, p) {
					t.Errorf("Paths = %v, lacks %s", got, p)
				}
			}
			if tc.params == nil && got != nil {
				t.Errorf("Paths = %v for a non-member", got)
			}
		})
	}
}

// TestParamsAreCopies: authz keeps what it gets; a change there must not
// reach the shared table.
func TestParamsAreCopies(t *testing.T) {
	p, _ := Params("Observation")
	p[0] = "x"
	m := ParamsByType()
	m["Observation"][0] = "y"
	if q, _ := Params("Observation"); slices.Contains(q, "x") || slices.Contains(q, "y") {
		t.Error("table modified through a returned slice")
	}
}

func TestBuildRejects(t *testing.T) {
	def := `{"resources":{"Observation":["subject"]}}`
	cases := []struct{ name, def, sp string }{
		{"param without path", def, `{"params":{}}`},
		{"path for unknown type", def, `{"params":{"Observation.subject":["subject"],"Foo.subject":["subject"]}}`},
		{"path for unknown param", def, `{"params":{"Observation.subject":["subject"],"Observation.focus":["focus"]}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := build([]byte(tc.def), []byte(tc.sp), nil); err == nil {
				t.Error("accepted")
			}
		})
	}
	if _, err := build([]byte(def), []byte(`{"params":{"Observation.subject":["subject"]}}`), []extraType{{Type: "Observation"}}); err == nil {
		t.Error("extra that duplicates a member accepted")
	}
}
