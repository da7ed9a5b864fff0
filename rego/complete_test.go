package regolib

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
)

// checkComplete fails unless d carries every decision field with its type:
// the Go side decodes it without guessing, and a denial is explicit.
func checkComplete(t testing.TB, d map[string]any) {
	t.Helper()
	want := map[string]string{
		"allow": "bool", "status": "number", "reason": "string", "headers": "object",
		"remove_headers": "array", "response_headers": "object", "redact": "array",
		"enforce": "object", "break_glass": "object", "obligations": "array", "audit": "object",
		"cache": "object",
	}
	for k, typ := range want {
		v, ok := d[k]
		if !ok {
			t.Fatalf("decision lacks %q: %v", k, d)
		}
		if got := kind(v); got != typ {
			t.Fatalf("decision.%s is %s, want %s", k, got, typ)
		}
	}
	if len(d) != len(want) {
		t.Fatalf("decision has %d fields, want %d: %v", len(d), len(want), d)
	}
	st, _ := d["status"].(json.Number)
	switch st.String() {
	case "200", "400", "401", "403":
	default:
		t.Fatalf("status %v outside 200/400/401/403", d["status"])
	}
	if d["allow"] == true && st.String() != "200" || d["allow"] == false && st.String() == "200" {
		t.Fatalf("allow %v with status %v", d["allow"], st)
	}
	sub := map[string]map[string]string{
		"enforce":     {"patients": "array", "any_patient": "bool", "permitted_labels": "array"},
		"break_glass": {"active": "bool", "reason": "string", "expires": "string"},
		"cache":       {"until_ns": "number"},
		"audit":       {"patients": "array", "purpose": "string", "rules": "array"},
	}
	for k, fields := range sub {
		o := d[k].(map[string]any)
		for f, typ := range fields {
			if got := kind(o[f]); got != typ {
				t.Fatalf("decision.%s.%s is %s, want %s", k, f, got, typ)
			}
		}
	}
	if rules := d["audit"].(map[string]any)["rules"].([]any); len(rules) == 0 {
		t.Fatal("decision names no rule that decided")
	}
}

func kind(v any) string {
	switch v.(type) {
	case bool:
		return "bool"
	case json.Number, float64, int:
		return "number"
	case string:
		return "string"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case nil:
		return "null"
	}
	return "other"
}

// evalJSON evaluates the decision for an input given as JSON text, decoding
// numbers as json.Number like OPA's own input parsing.
func evalJSON(t testing.TB, pq rego.PreparedEvalQuery, raw []byte) (map[string]any, bool) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var input any
	if err := dec.Decode(&input); err != nil {
		return nil, false
	}
	rs, err := pq.Eval(t.Context(), rego.EvalInput(input))
	if err != nil {
		t.Fatalf("eval error for %s: %v", raw, err)
	}
	if len(rs) != 1 {
		t.Fatalf("decision undefined for %s", raw)
	}
	b, _ := json.Marshal(rs[0].Expressions[0].Value)
	dec = json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var d map[string]any
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("decision for %s is not an object: %s", raw, b)
	}
	return d, true
}

var garbageSeeds = []string{
	`null`, `"hello"`, `42`, `[]`, `{}`, `true`,
	`{"identity": "admin"}`,
	`{"identity": {"authenticated": "true", "roles": ["physician"]}}`,
	`{"identity": {"authenticated": 1, "roles": ["admin"]}, "fhir": {"interaction": "read"}}`,
	`{"identity": {"authenticated": true, "roles": "physician", "fhir_user": 7}, "fhir": {"interaction": "read", "resource_type": "Patient", "id": "p"}}`,
	`{"identity": {"authenticated": true, "roles": ["physician"], "fhir_user": "Practitioner/prac-001"}, "fhir": "read"}`,
	`{"identity": {"authenticated": true, "roles": ["physician"], "fhir_user": "Practitioner/prac-001"}, "fhir": {"interaction": "read", "resource_type": "Patient", "id": "pat-0001", "patients": "pat-0002"}}`,
	`{"identity": {"authenticated": true, "roles": ["physician"], "fhir_user": "Practitioner/prac-001"}, "fhir": {"interaction": "batch", "entries": "x"}}`,
	`{"identity": {"authenticated": true, "roles": ["physician"], "fhir_user": "Practitioner/prac-001"}, "fhir": {"interaction": "batch", "entries": [1, null, {"interaction": "batch"}]}}`,
	`{"identity": {"authenticated": true, "roles": ["physician"], "scopes": [1, {"context": "patient"}]}, "fhir": {"interaction": "read", "resource_type": "Patient", "id": "x", "patients": ["x"]}, "time_ns": "now"}`,
	`{"identity": {"authenticated": true, "roles": ["physician"], "mfa": true, "fhir_user": "Practitioner/prac-001"}, "fhir": {"interaction": "read", "resource_type": "Patient", "id": "pat-0002", "patients": ["pat-0002"]}, "break_glass": {"requested": true, "reason": 5, "grants": [{"patient": 1}, "g"]}, "time_ns": -4}`,
	`{"identity": {"authenticated": true, "roles": ["front-desk"], "subject": "s"}, "fhir": {"interaction": "read", "resource_type": "Patient", "id": "p", "patients": ["p"]}, "time_ns": 1e30}`,
	`{"identity": {"authenticated": true, "roles": ["physician"], "fhir_user": "Practitioner/prac-001"}, "fhir": {"interaction": "read", "resource_type": "Patient", "id": "pat-0001", "compartment": "Patient/pat-0002"}, "purpose_of_use": ["TREAT"]}`,
}

// TestGarbageInputsGiveCompleteDecisions: whatever arrives, the policy
// answers with a complete, typed object and never allows what it cannot read.
func TestGarbageInputsGiveCompleteDecisions(t *testing.T) {
	pq := prepare(t)
	for _, s := range garbageSeeds {
		t.Run(s, func(t *testing.T) {
			d, ok := evalJSON(t, pq, []byte(s))
			if !ok {
				t.Fatal("seed is not JSON")
			}
			checkComplete(t, d)
			if d["allow"] == true {
				t.Fatalf("garbage input allowed: %v", d)
			}
		})
	}
	// Random documents built from the input's own vocabulary, so they reach
	// deep into the modules instead of stopping at the identity check.
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 400 {
		raw, _ := json.Marshal(randomInput(r))
		d, _ := evalJSON(t, pq, raw)
		checkComplete(t, d)
		_ = i
	}
}

var (
	vocabStrings = []string{"", "read", "search-type", "batch", "operation", "export", "everything", "Patient", "Observation",
		"pat-0001", "pat-0002", "Practitioner/prac-001", "Patient/pat-0001", "RelatedPerson/rp-0010", "physician", "nurse",
		"billing", "patient", "admin", "service", "researcher", "front-desk", "TREAT", "HRESCH", "ETREAT", "*", "rs", "user", "patient"}
	vocabKeys = []string{"identity", "fhir", "authenticated", "roles", "scopes", "fhir_user", "subject", "patient", "mfa",
		"service", "interaction", "resource_type", "id", "patients", "all_patients", "entries", "operation", "compartment",
		"type", "purpose_of_use", "break_glass", "requested", "reason", "grants", "expires_ns", "time_ns", "context",
		"resource", "permissions", "raw", "kind", "method"}
)

func randomValue(r *rand.Rand, depth int) any {
	switch n := r.IntN(8); {
	case n == 0:
		return nil
	case n == 1:
		return r.IntN(2) == 0
	case n == 2:
		return r.Int64N(2_000_000_000_000_000_000) - 10
	case n <= 4 || depth > 3:
		return vocabStrings[r.IntN(len(vocabStrings))]
	case n == 5:
		a := make([]any, r.IntN(4))
		for i := range a {
			a[i] = randomValue(r, depth+1)
		}
		return a
	default:
		o := map[string]any{}
		for range r.IntN(6) {
			o[vocabKeys[r.IntN(len(vocabKeys))]] = randomValue(r, depth+1)
		}
		return o
	}
}

func randomInput(r *rand.Rand) any {
	if r.IntN(10) == 0 {
		return randomValue(r, 0)
	}
	id := map[string]any{"authenticated": r.IntN(4) != 0, "roles": []any{vocabStrings[r.IntN(len(vocabStrings))]}}
	for range r.IntN(5) {
		id[vocabKeys[r.IntN(len(vocabKeys))]] = randomValue(r, 1)
	}
	f := map[string]any{"interaction": vocabStrings[r.IntN(len(vocabStrings))]}
	for range r.IntN(6) {
		f[vocabKeys[r.IntN(len(vocabKeys))]] = randomValue(r, 1)
	}
	in := map[string]any{"identity": id, "fhir": f, "time_ns": 1741791600000000000}
	for range r.IntN(3) {
		in[vocabKeys[r.IntN(len(vocabKeys))]] = randomValue(r, 1)
	}
	return in
}

// FuzzDecision: any JSON input yields a complete decision, without error.
func FuzzDecision(f *testing.F) {
	for _, s := range garbageSeeds {
		f.Add([]byte(s))
	}
	for _, tc := range loadCases(f) {
		b, _ := json.Marshal(tc.Input)
		f.Add(b)
	}
	pq := prepare(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, ok := evalJSON(t, pq, raw)
		if !ok {
			return
		}
		checkComplete(t, d)
	})
}
