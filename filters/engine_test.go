package filters

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/phigate/phigate/plan"
)

const (
	fhirJSON = "application/fhir+json; charset=utf-8"
	ssnPath  = "Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn').value"
)

func testEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := NewEngine(Config{Keys: map[string][]byte{
		"k1": []byte("0123456789abcdef0123456789abcdef"),
		"k2": []byte("fedcba9876543210fedcba9876543210"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decode parses JSON for comparisons that ignore formatting.
func decode(t testing.TB, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("output is not valid JSON: %v\n%s", err, b)
	}
	return v
}

// at walks a decoded document by keys and array indexes.
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func redactedCount(res any) int {
	n := 0
	sec, _ := at(res, "meta", "security").([]any)
	for _, c := range sec {
		if at(c, "code") == "REDACTED" && at(c, "system") == systemObservationValue {
			n++
		}
	}
	return n
}

func TestApplyPatientActions(t *testing.T) {
	e := testEngine(t)
	patient := readTestdata(t, "patient.json")
	cases := []struct {
		name    string
		d       []Directive
		removed []string
		check   func(t *testing.T, out any)
	}{
		{
			name:    "remove telecom",
			d:       []Directive{{Path: "Patient.telecom", Action: ActionRemove}},
			removed: []string{"Patient.telecom"},
			check: func(t *testing.T, out any) {
				if at(out, "telecom") != nil {
					t.Error("telecom survived")
				}
				if at(out, "name", 0, "family") != "Doe" {
					t.Error("name was touched")
				}
			},
		},
		{
			name:    "remove ssn value only",
			d:       []Directive{{Path: ssnPath, Action: ActionRemove}},
			removed: []string{ssnPath},
			check: func(t *testing.T, out any) {
				ssn := at(out, "identifier", 1)
				if at(ssn, "system") != "http://hl7.org/fhir/sid/us-ssn" || at(ssn, "value") != nil {
					t.Errorf("ssn identifier = %v", ssn)
				}
				if at(out, "identifier", 0, "value") != "MRN-0042117" {
					t.Error("MRN was touched")
				}
			},
		},
		{
			name:    "remove whole ssn identifier",
			d:       []Directive{{Path: "Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn')", Action: ActionRemove}},
			removed: []string{"Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn')"},
			check: func(t *testing.T, out any) {
				ids := at(out, "identifier").([]any)
				if len(ids) != 6 {
					t.Errorf("got %d identifiers, want 6", len(ids))
				}
			},
		},
		{
			name:    "remove address line keeps city",
			d:       []Directive{{Path: "Patient.address.line", Action: ActionRemove}},
			removed: []string{"Patient.address.line"},
			check: func(t *testing.T, out any) {
				if at(out, "address", 0, "line") != nil || at(out, "address", 0, "city") != "Springfield" {
					t.Errorf("address = %v", at(out, "address"))
				}
			},
		},
		{
			name:    "mask telecom keeps system and use",
			d:       []Directive{{Path: "Patient.telecom", Action: ActionMask}},
			removed: []string{"Patient.telecom"},
			check: func(t *testing.T, out any) {
				tel := at(out, "telecom", 0)
				if at(tel, "system") != "phone" || at(tel, "use") != "home" || at(tel, "value") != "************" {
					t.Errorf("telecom[0] = %v", tel)
				}
			},
		},
		{
			name:    "mask birthDate keeps year",
			d:       []Directive{{Path: "Patient.birthDate", Action: ActionMask}},
			removed: []string{"Patient.birthDate"},
			check: func(t *testing.T, out any) {
				if got := at(out, "birthDate"); got != "1984" {
					t.Errorf("birthDate = %v", got)
				}
			},
		},
		{
			name:    "mask choice element deceased[x] keeps boolean",
			d:       []Directive{{Path: "Patient.deceased[x]", Action: ActionMask}},
			removed: nil,
			check: func(t *testing.T, out any) {
				if got := at(out, "deceasedBoolean"); got != false {
					t.Errorf("deceasedBoolean = %v", got)
				}
			},
		},
		{
			name:    "tokenize mrn with hmac",
			d:       []Directive{{Path: "Patient.identifier.where(type.coding.code='MR').value", Action: ActionTokenize, KeyID: "k1"}},
			removed: []string{"Patient.identifier.where(type.coding.code='MR').value"},
			check: func(t *testing.T, out any) {
				got, _ := at(out, "identifier", 0, "value").(string)
				if !strings.HasPrefix(got, "tok:k1:") || len(got) != len("tok:k1:")+32 {
					t.Errorf("token = %q", got)
				}
				if at(out, "identifier", 1, "value") != "123-45-6789" {
					t.Error("where() selected the SSN too")
				}
			},
		},
		{
			name:    "tokenize mrn by system",
			d:       []Directive{{Path: "Patient.identifier.where(system='urn:oid:1.2.36.146.595.217.0.1').value", Action: ActionTokenize, KeyID: "k1"}},
			removed: []string{"Patient.identifier.where(system='urn:oid:1.2.36.146.595.217.0.1').value"},
			check: func(t *testing.T, out any) {
				got, _ := at(out, "identifier", 0, "value").(string)
				if !strings.HasPrefix(got, "tok:k1:") || len(got) != len("tok:k1:")+32 {
					t.Errorf("token = %q", got)
				}
			},
		},
		{
			name:    "tokenize ssn with ff1 keeps format",
			d:       []Directive{{Path: ssnPath, Action: ActionTokenize, KeyID: "k1", Format: "ff1"}},
			removed: []string{ssnPath},
			check: func(t *testing.T, out any) {
				got, _ := at(out, "identifier", 1, "value").(string)
				if len(got) != 11 || got[3] != '-' || got[6] != '-' || got == "123-45-6789" {
					t.Errorf("ff1 token = %q", got)
				}
			},
		},
		{
			name:    "tokenize ff1 falls back to hmac for non-numeric",
			d:       []Directive{{Path: "Patient.identifier.value", Action: ActionTokenize, KeyID: "k2", Format: "ff1"}},
			removed: []string{"Patient.identifier.value"},
			check: func(t *testing.T, out any) {
				if got, _ := at(out, "identifier", 0, "value").(string); !strings.HasPrefix(got, "tok:k2:") {
					t.Errorf("MRN token = %q", got)
				}
			},
		},
		{
			name: "allow keeps named elements",
			d:    []Directive{{Path: "Patient", Action: ActionAllow, Keep: []string{"gender", "birthDate"}}},
			removed: []string{"Patient.active", "Patient.address", "Patient.communication", "Patient.contact",
				"Patient.deceasedBoolean", "Patient.extension", "Patient.generalPractitioner", "Patient.identifier",
				"Patient.link", "Patient.managingOrganization", "Patient.maritalStatus", "Patient.name",
				"Patient.photo", "Patient.telecom", "Patient.text"},
			check: func(t *testing.T, out any) {
				var keys []string
				for k := range out.(map[string]any) {
					keys = append(keys, k)
				}
				if len(keys) != 5 {
					t.Errorf("kept %v", keys)
				}
			},
		},
		{
			name:    "star text",
			d:       []Directive{{Path: "*.text", Action: ActionRemove}},
			removed: []string{"Patient.text"},
			check:   func(t *testing.T, out any) {},
		},
		{
			name:    "other resource type untouched",
			d:       []Directive{{Path: "Observation.subject.display", Action: ActionMask}},
			removed: nil,
			check:   func(t *testing.T, out any) {},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, fhirJSON, patient, Plan{Redact: tc.d})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(res.Removed, tc.removed) {
				t.Errorf("Removed = %q, want %q", res.Removed, tc.removed)
			}
			if res.Changed != (tc.removed != nil) {
				t.Errorf("Changed = %v", res.Changed)
			}
			out := decode(t, res.Body)
			if !res.Changed {
				if &res.Body[0] != &patient[0] {
					t.Error("unchanged body was copied")
				}
				return
			}
			if at(out, "text") != nil {
				t.Error("narrative survived a change")
			}
			if n := redactedCount(out); n != 1 {
				t.Errorf("REDACTED labels = %d, want 1", n)
			}
			if at(out, "meta", "versionId") != "3" {
				t.Error("existing meta lost")
			}
			tc.check(t, out)
		})
	}
}

func TestTokensAreDeterministicPerKey(t *testing.T) {
	e := testEngine(t)
	body := []byte(`{"resourceType":"Patient","id":"a","identifier":[{"value":"MRN-1"}],"link":[{"other":{"identifier":{"value":"MRN-1"}}}]}`)
	tok := func(key string) (string, string) {
		res, err := apply(e, fhirJSON, body, Plan{Redact: []Directive{
			{Path: "Patient.identifier.value", Action: ActionTokenize, KeyID: key},
			{Path: "Patient.link.other.identifier.value", Action: ActionTokenize, KeyID: key},
		}})
		if err != nil {
			t.Fatal(err)
		}
		out := decode(t, res.Body)
		return at(out, "identifier", 0, "value").(string), at(out, "link", 0, "other", "identifier", "value").(string)
	}
	a1, b1 := tok("k1")
	a2, _ := tok("k1")
	c1, _ := tok("k2")
	if a1 != a2 || a1 != b1 {
		t.Errorf("same key, same value gave %q %q %q", a1, a2, b1)
	}
	if a1 == c1 || !strings.HasPrefix(c1, "tok:k2:") {
		t.Errorf("rotated key gave %q vs %q", a1, c1)
	}
}

func TestApplyNestedResources(t *testing.T) {
	e := testEngine(t)
	cases := []struct {
		name  string
		body  string
		d     []Directive
		check func(t *testing.T, out any)
	}{
		{
			name: "contained patient",
			body: `{"resourceType":"Observation","id":"o1","text":{"div":"x"},"contained":[{"resourceType":"Patient","id":"c","telecom":[{"value":"555-0001"}]}],"subject":{"reference":"#c"}}`,
			d:    []Directive{{Path: "Patient.telecom", Action: ActionRemove}},
			check: func(t *testing.T, out any) {
				if at(out, "contained", 0, "telecom") != nil || at(out, "text") != nil {
					t.Errorf("got %v", out)
				}
				if redactedCount(out) != 1 || redactedCount(at(out, "contained", 0)) != 1 {
					t.Error("REDACTED label missing on container or contained")
				}
			},
		},
		{
			name: "bundle in entry and outcome",
			body: `{"resourceType":"Bundle","type":"batch-response","entry":[
			  {"resource":{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Patient","id":"p","telecom":[{"value":"555-0002"}]}}]},"response":{"status":"200"}},
			  {"response":{"status":"400","outcome":{"resourceType":"OperationOutcome","text":{"div":"Patient 555-0003"},"issue":[]}}}]}`,
			d: []Directive{{Path: "Patient.telecom", Action: ActionRemove}, {Path: "*.text", Action: ActionRemove}},
			check: func(t *testing.T, out any) {
				inner := at(out, "entry", 0, "resource", "entry", 0, "resource")
				if at(inner, "telecom") != nil || redactedCount(inner) != 1 {
					t.Errorf("inner = %v", inner)
				}
				if at(out, "entry", 1, "response", "outcome", "text") != nil {
					t.Error("outcome narrative survived")
				}
				if redactedCount(out) != 0 {
					t.Error("outer bundle labelled though no entry was withheld")
				}
			},
		},
		{
			name: "observation subject display",
			body: `{"resourceType":"Bundle","type":"searchset","total":2,"entry":[
			  {"resource":{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1","display":"Jane Doe"}}},
			  {"resource":{"resourceType":"Observation","id":"o2","subject":{"reference":"Patient/p1"}}}]}`,
			d: []Directive{{Path: "Observation.subject.display", Action: ActionRemove}},
			check: func(t *testing.T, out any) {
				if at(out, "entry", 0, "resource", "subject", "display") != nil {
					t.Error("display survived")
				}
				if redactedCount(at(out, "entry", 1, "resource")) != 0 {
					t.Error("unchanged resource labelled")
				}
			},
		},
		{
			// Duplicates never get this far: TestDuplicateKeysRefused.
			name: "escaped key is removed",
			body: `{"resourceType":"Patient","tele\u0063om":[{"value":"555-0005"}]}`,
			d:    []Directive{{Path: "Patient.telecom", Action: ActionRemove}},
			check: func(t *testing.T, out any) {
				if at(out, "telecom") != nil {
					t.Error("telecom survived")
				}
			},
		},
		{
			name: "existing REDACTED label not duplicated",
			body: `{"resourceType":"Patient","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"REDACTED"}]},"telecom":[{"value":"1"}]}`,
			d:    []Directive{{Path: "Patient.telecom", Action: ActionRemove}},
			check: func(t *testing.T, out any) {
				if redactedCount(out) != 1 {
					t.Error("label duplicated")
				}
			},
		},
		{
			name: "emptied containers are dropped",
			body: `{"resourceType":"Observation","subject":{"display":"Jane"},"performer":[{"display":"x"}]}`,
			d:    []Directive{{Path: "Observation.subject.display", Action: ActionRemove}, {Path: "Observation.performer.display", Action: ActionRemove}},
			check: func(t *testing.T, out any) {
				if _, ok := out.(map[string]any)["subject"]; ok {
					t.Error("empty subject object kept")
				}
				if _, ok := out.(map[string]any)["performer"]; ok {
					t.Error("empty performer array kept")
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, fhirJSON, []byte(tc.body), Plan{Redact: tc.d})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Changed {
				t.Fatal("nothing changed")
			}
			tc.check(t, decode(t, res.Body))
			if bytes.Contains(res.Body, []byte("555-000")) {
				t.Errorf("a removed value survived: %s", res.Body)
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	e := testEngine(t)
	small, err := NewEngine(Config{MaxBody: 10})
	if err != nil {
		t.Fatal(err)
	}
	pat := []byte(`{"resourceType":"Patient"}`)
	rm := Plan{Redact: []Directive{{Path: "Patient.telecom", Action: ActionRemove}}}
	cases := []struct {
		name string
		e    *Engine
		ct   string
		body string
		plan Plan
		want error
	}{
		{"invalid json", e, fhirJSON, `{"resourceType":"Patient",}`, rm, ErrMalformed},
		{"trailing data", e, fhirJSON, `{"resourceType":"Patient"} x`, rm, ErrMalformed},
		{"duplicate escaped key", e, fhirJSON, `{"resourceType":"Patient","telecom":[{"value":"1"}],"tele\u0063om":[{"value":"2"}]}`, rm, ErrMalformed},
		{"control character", e, fhirJSON, "{\"resourceType\":\"Pat\x01\"}", rm, ErrMalformed},
		{"not a resource", e, fhirJSON, `[1,2]`, rm, ErrMalformed},
		{"deep nesting", e, fhirJSON, `{"resourceType":"Patient","x":` + strings.Repeat("[", 500) + strings.Repeat("]", 500) + `}`, rm, ErrMalformed},
		{"meta not object", e, fhirJSON, `{"resourceType":"Patient","meta":1,"telecom":[{"value":"1"}]}`, Plan{Redact: []Directive{{Path: "Patient.telecom", Action: ActionMask}, {Path: "Patient.id", Action: ActionRemove}, {Path: "*.telecom", Action: ActionRemove}}}, ErrMalformed},
		{"too large", small, fhirJSON, string(pat), rm, ErrTooLarge},
		{"xml", e, "application/fhir+xml", string(pat), rm, ErrUnsupportedMedia},
		{"latin1", e, "application/json; charset=iso-8859-1", string(pat), rm, ErrUnsupportedMedia},
		{"garbage content type", e, ";;", string(pat), rm, ErrUnsupportedMedia},
		// Directives are refused when compiled, before any body.
		{"unknown action", e, fhirJSON, string(pat), Plan{Redact: []Directive{{Path: "Patient.x", Action: "shred"}}}, plan.ErrBadDirective},
		{"unknown key", e, fhirJSON, string(pat), Plan{Redact: []Directive{{Path: "Patient.x", Action: ActionTokenize, KeyID: "nope"}}}, plan.ErrBadDirective},
		{"unknown format", e, fhirJSON, string(pat), Plan{Redact: []Directive{{Path: "Patient.x", Action: ActionTokenize, KeyID: "k1", Format: "rot13"}}}, plan.ErrBadDirective},
		{"path without element", e, fhirJSON, string(pat), Plan{Redact: []Directive{{Path: "Patient", Action: ActionRemove}}}, plan.ErrBadDirective},
		{"bad where", e, fhirJSON, string(pat), Plan{Redact: []Directive{{Path: "Patient.identifier.where(system)", Action: ActionRemove}}}, plan.ErrBadDirective},
		{"unbalanced", e, fhirJSON, string(pat), Plan{Redact: []Directive{{Path: "Patient.identifier.where(system='x'", Action: ActionRemove}}}, plan.ErrBadDirective},
		{"allow with element path", e, fhirJSON, string(pat), Plan{Redact: []Directive{{Path: "Patient.name", Action: ActionAllow}}}, plan.ErrBadDirective},
		{"unknown profile", e, fhirJSON, string(pat), Plan{Redact: []Directive{{Action: ActionDeidentify, Profile: "expert"}}}, plan.ErrBadDirective},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(tc.e, tc.ct, []byte(tc.body), tc.plan)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if res.Body != nil {
				t.Error("error result carries a body")
			}
		})
	}
}

// TestApplyRefusesUnboundRules: the engine applies only rules compiled by
// package plan, and only with keys it holds, whatever the plan's origin.
func TestApplyRefusesUnboundRules(t *testing.T) {
	e := testEngine(t)
	pat := readTestdata(t, "patient.json")
	otherKeys, err := plan.Compile([]Directive{{Path: "Patient.identifier.value", Action: ActionTokenize, KeyID: "k9"}}, nil, plan.NewKeys("k9"))
	if err != nil {
		t.Fatal(err)
	}
	handMade := plan.Plan{Redact: []plan.Rule{{Directive: Directive{Path: "Patient.telecom", Action: ActionRemove}}}}
	for name, p := range map[string]plan.Plan{"key this engine does not hold": otherKeys, "rule never compiled": handMade} {
		t.Run(name, func(t *testing.T) {
			res, err := e.Apply(fhirJSON, pat, p, "d")
			if !errors.Is(err, ErrBadDirective) || res.Body != nil {
				t.Fatalf("err = %v, body %d bytes; want %v and no body", err, len(res.Body), ErrBadDirective)
			}
		})
	}
}

func TestEmptyPlanPassesThrough(t *testing.T) {
	e := testEngine(t)
	body := []byte(`not even json`)
	if !(Plan{}).Empty() || (Plan{Enforce: &Enforcement{AnyPatient: true}}).Empty() {
		t.Fatal("Empty() wrong")
	}
	res, err := apply(e, fhirJSON, body, Plan{DecisionID: "d"})
	if err != nil || res.Changed || &res.Body[0] != &body[0] {
		t.Fatalf("res=%+v err=%v", res, err)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"negative max body", Config{MaxBody: -1}, "MaxBody"},
		{"negative depth", Config{MaxDepth: -1}, "MaxDepth"},
		{"short key", Config{Keys: map[string][]byte{"k": []byte("short")}}, "Keys[k]"},
		{"colon in key id", Config{Keys: map[string][]byte{"a:b": make([]byte, 32)}}, "Keys"},
		{"empty key id", Config{Keys: map[string][]byte{"": make([]byte, 32)}}, "Keys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewEngine(tc.cfg)
			if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want bad config naming %s", err, tc.field)
			}
		})
	}
	c := Config{}
	if err := c.Validate(); err != nil || c.MaxBody != defaultMaxBody || c.MaxDepth != defaultMaxDepth || c.Now == nil {
		t.Fatalf("defaults not filled: %+v %v", c, err)
	}
}
