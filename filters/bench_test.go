package filters

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// genBundle builds a deterministic searchset of n entries: every fourth a
// Patient with every identifier kind, the rest Observations about those
// patients with narrative. Values are synthetic.
func genBundle(n int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"resourceType":"Bundle","id":"gen-%d","type":"searchset","total":%d,"link":[{"relation":"self","url":"https://fhir.example/r4/Observation?_count=%d"}],"entry":[`, n, n, n)
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		p := i / 4
		if i%4 == 0 {
			fmt.Fprintf(&b, `{"fullUrl":"https://fhir.example/r4/Patient/pat-%04d","resource":{"resourceType":"Patient","id":"pat-%04d","meta":{"versionId":"1","lastUpdated":"2024-01-%02dT08:00:00Z"},`+
				`"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Patient %04d Testperson, born 19%02d-0%d-1%d, phone 555-01%02d</div>"},`+
				`"identifier":[{"use":"usual","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}]},"system":"urn:oid:1.2.36.146.595.217.0.1","value":"MRN%07d"},`+
				`{"system":"http://hl7.org/fhir/sid/us-ssn","value":"9%02d-%02d-%04d"},{"system":"http://acme-health.example/member","value":"MB%010d"}],`+
				`"active":true,"name":[{"use":"official","family":"Testperson%d","given":["Alex","Jordan"]}],`+
				`"telecom":[{"system":"phone","value":"555-01%02d","use":"home"},{"system":"email","value":"pat%d@example.org"}],`+
				`"gender":"%s","birthDate":"19%02d-0%d-1%d",`+
				`"address":[{"use":"home","line":["%d Main Street"],"city":"Springfield","state":"MO","postalCode":"658%02d","country":"US"}]},"search":{"mode":"match"}}`,
				p, p, 1+p%28, p, 40+p%60, 1+p%9, p%10, p%100,
				p, p%100, p%100, p, p,
				p,
				p%100, p, []string{"female", "male"}[p%2], 40+p%60, 1+p%9, p%10,
				100+p, p%100)
			continue
		}
		fmt.Fprintf(&b, `{"fullUrl":"https://fhir.example/r4/Observation/obs-%05d","resource":{"resourceType":"Observation","id":"obs-%05d","meta":{"versionId":"2","lastUpdated":"2024-02-%02dT09:30:00Z"},`+
			`"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Heart rate 7%d bpm for Patient %04d Testperson on 2024-02-%02d</div>"},`+
			`"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"Vital Signs"}]}],`+
			`"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}],"text":"Heart rate"},`+
			`"subject":{"reference":"Patient/pat-%04d","display":"Alex Testperson%d"},"effectiveDateTime":"2024-02-%02dT09:%02d:00-05:00",`+
			`"performer":[{"reference":"Practitioner/prac-%d","display":"Dr. Example %d"}],`+
			`"valueQuantity":{"value":7%d,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"},`+
			`"note":[{"text":"Measured at rest, seated, after five minutes."}]},"search":{"mode":"match"}}`,
			i, i, 1+i%28, i%10, p, 1+i%28, p, p, 1+i%28, i%60, i%7, i%7, i%10)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// bundle1MB grows genBundle until it passes 1 MiB.
func bundle1MB() []byte {
	n := 800
	for {
		b := genBundle(n)
		if len(b) >= 1<<20 {
			return b
		}
		n += 100
	}
}

func benchPlan() Plan {
	return Plan{
		Redact: []Directive{
			{Path: "Patient.telecom", Action: ActionRemove},
			{Path: "Patient.address.line", Action: ActionRemove},
			{Path: ssnPath, Action: ActionTokenize, KeyID: "k1"},
			{Path: "Patient.birthDate", Action: ActionMask},
			{Path: "Observation.subject.display", Action: ActionRemove},
			{Path: "*.text", Action: ActionRemove},
		},
		Enforce: &Enforcement{AnyPatient: true},
	}
}

func BenchmarkRedactBundle1MB(b *testing.B) {
	e := testEngine(b)
	body := bundle1MB()
	// Compiled once, as the decision is: Apply is what a response costs.
	p, err := benchPlan().compile(e)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := e.Apply(fhirJSON, body, p, "")
		if err != nil || !res.Changed {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseJSON1MB isolates the validating scan every body goes
// through, where grammar, depth and duplicate keys are checked.
func BenchmarkParseJSON1MB(b *testing.B) {
	body := bundle1MB()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseJSON(body, defaultMaxDepth); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodingJSONRoundTrip1MB(b *testing.B) {
	body := bundle1MB()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(v); err != nil {
			b.Fatal(err)
		}
	}
}

func TestGeneratedBundleIsValid(t *testing.T) {
	b := bundle1MB()
	if !json.Valid(b) || len(b) < 1<<20 {
		t.Fatalf("generated bundle: valid=%v size=%d", json.Valid(b), len(b))
	}
}
