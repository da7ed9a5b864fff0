package filters

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

const planted = "PLANTED-7731"

func fuzzPlan() Plan {
	return Plan{
		Redact: []Directive{
			{Path: "Patient.telecom", Action: ActionRemove},
			{Path: "*.telecom", Action: ActionRemove},
			{Path: ssnPath, Action: ActionTokenize, KeyID: "k1", Format: "ff1"},
			{Path: "Patient.name", Action: ActionMask},
			{Path: "Observation", Action: ActionAllow, Keep: []string{"status", "code"}},
		},
		Enforce: &Enforcement{Patients: []string{"p1", "A"}},
	}
}

func addSeeds(f *testing.F, pattern string) {
	files, _ := filepath.Glob(filepath.Join("testdata", pattern))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

func FuzzRedactJSON(f *testing.F) {
	addSeeds(f, "*.json")
	addSeeds(f, "golden/*.in.json")
	f.Add([]byte(bundleOf("searchset", 3, entry(patA, "match"), entry(obsB, "match"), entry(obsPsy, "match"))))
	f.Add(genBundle(3))
	e := testEngine(f)
	plan := fuzzPlan()
	f.Fuzz(func(t *testing.T, in []byte) {
		res, err := e.Apply(fhirJSON, in, plan)
		if err == nil && !res.Forbidden && res.Changed && !json.Valid(res.Body) {
			t.Fatalf("invalid JSON output for valid run:\n%s", res.Body)
		}
		if err == nil && !res.Forbidden && !res.Changed && !bytes.Equal(res.Body, in) {
			t.Fatal("unchanged result differs from input")
		}
		if bytes.Contains(in, []byte(planted)) {
			return
		}
		// The same bytes inside a Patient whose telecom must go.
		doc := []byte(`{"resourceType":"Patient","id":"p1","telecom":[{"system":"phone","value":"` + planted + `"}],"extension":[`)
		doc = append(append(doc, in...), "]}"...)
		res, err = e.Apply(fhirJSON, doc, plan)
		if err != nil || res.Forbidden {
			return
		}
		if !json.Valid(res.Body) {
			t.Fatalf("invalid JSON output:\n%s", res.Body)
		}
		if bytes.Contains(res.Body, []byte(planted)) {
			t.Fatalf("removed value survived:\n%s", res.Body)
		}
	})
}

func FuzzRedactHL7(f *testing.F) {
	addSeeds(f, "*.hl7")
	f.Add([]byte("MSH#$%@!#A#B\nPID#1##ID1$$$X##Doe$Jane##19800101\n"))
	f.Add([]byte("MSH|^~\\&|A|B\r\nPID|1||ID1||O\\S\\Brien^Pat\r\n"))
	e := testEngine(f)
	plan := Plan{Redact: []Directive{
		{Path: "Patient.telecom", Action: ActionRemove},
		{Path: "Patient.name", Action: ActionMask},
		{Path: "Patient.identifier.value", Action: ActionTokenize, KeyID: "k1", Format: "ff1"},
	}}
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := e.Apply(hl7CT, in, plan); err != nil {
			return
		}
		if bytes.Contains(in, []byte(planted)) {
			return
		}
		msg := append([]byte("MSH|^~\\&|A|B\rPID|1||X||||||||||^PRN^PH^^^"+planted+"\r"), in...)
		res, err := e.Apply(hl7CT, msg, plan)
		if err != nil {
			return
		}
		if bytes.Contains(res.Body, []byte(planted)) {
			t.Fatalf("removed value survived:\n%q", res.Body)
		}
	})
}
