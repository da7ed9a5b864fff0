package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
)

// fullDecision carries every field the decoder reads, each set.
const fullDecision = `{
	"allow": true, "status": 200, "reason": "allow",
	"headers": {"x-phigate-user": "u"}, "remove_headers": ["x-phigate-roles"],
	"response_headers": {"cache-control": "no-store"},
	"redact": [{"path": "Patient.identifier.value", "action": "tokenize", "key_id": "k1", "format": "hmac", "keep": ["id"], "profile": "safe-harbor"}],
	"enforce": {"patients": ["p1"], "any_patient": false, "permitted_labels": ["PSY"], "resource_types": ["*"]},
	"break_glass": {"active": true, "reason": "code blue", "expires": "2026-01-01T00:00:00Z"},
	"obligations": [{"type": "notify", "params": {"to": "privacy"}}],
	"audit": {"patients": ["p1"], "purpose": "TREAT", "rules": ["rbac.physician"]},
	"cache": {"until_ns": 5}
}`

// fullDecisionKeys are the token keys the full decision's directive names.
var fullDecisionKeys = plan.NewKeys("k1")

func parseValue(t *testing.T, doc string) ast.Value {
	t.Helper()
	v, err := ast.ValueFromReader(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// at returns the value at a DecisionFields path ("redact[].keep": the
// first directive's keep) and a function that replaces it.
func at(t *testing.T, doc ast.Value, path string) (ast.Value, func(ast.Value)) {
	t.Helper()
	v := doc
	set := func(ast.Value) { t.Fatalf("%s: nothing to replace", path) }
	for _, seg := range strings.Split(path, ".") {
		name, elem := strings.CutSuffix(seg, "[]")
		o, ok := v.(ast.Object)
		if !ok || o.Get(ast.StringTerm(name)) == nil {
			t.Fatalf("the full decision lacks %s", path)
		}
		key := ast.StringTerm(name)
		set = func(x ast.Value) { o.Insert(key, ast.NewTerm(x)) }
		v = o.Get(key).Value
		if elem {
			a := v.(*ast.Array)
			v = a.Elem(0).Value
			set = func(x ast.Value) { a.Set(0, ast.NewTerm(x)) }
		}
	}
	return v, set
}

// TestDecoderFields holds the decoder to the fields it names: the full
// decision decodes; each named field set to null is refused naming that
// field, so the decoder reads every field it accepts; and each object of the
// document with one key more is refused naming the key.
func TestDecoderFields(t *testing.T) {
	if _, err := decodeDecision(parseValue(t, fullDecision), fullDecisionKeys); err != nil {
		t.Fatalf("full decision: %v", err)
	}
	for _, f := range DecisionFields() {
		t.Run(f, func(t *testing.T) {
			doc := parseValue(t, fullDecision)
			_, set := at(t, doc, f)
			set(ast.Null{})
			_, err := decodeDecision(doc, fullDecisionKeys)
			if want := "decision." + strings.ReplaceAll(f, "[]", "[0]") + ":"; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("%s set to null: got %v, want an error naming %s", f, err, want)
			}
		})
	}
	// Every object of the document: the decision itself and each field
	// whose value is an object of fixed keys.
	objects := []string{""}
	for _, f := range DecisionFields() {
		if i := strings.LastIndex(f, "."); i > 0 && !slices.Contains(objects, f[:i]) {
			objects = append(objects, f[:i])
		}
	}
	for _, o := range objects {
		t.Run("unknown key in "+o, func(t *testing.T) {
			doc := parseValue(t, fullDecision)
			obj := doc.(ast.Object)
			want := "decision.redcat"
			if o != "" {
				v, _ := at(t, doc, o)
				obj = v.(ast.Object)
				want = "decision." + strings.ReplaceAll(o, "[]", "[0]") + ".redcat"
			}
			obj.Insert(ast.StringTerm("redcat"), ast.ArrayTerm())
			_, err := decodeDecision(doc, fullDecisionKeys)
			if err == nil || !strings.Contains(err.Error(), want+": unknown field") {
				t.Errorf("got %v, want %s refused as an unknown field", err, want)
			}
		})
	}
}

// TestUnknownKeyIsNotEchoed: a key that is not a field name may come from
// the input (a patient's name); the error says what it is not, not what it
// says.
func TestUnknownKeyIsNotEchoed(t *testing.T) {
	for _, doc := range []string{
		`{"allow": true, "Jane Doe 1970-01-01": 1}`,
		`{"allow": true, "enforce": {"patients": [], "pat-0001": true}}`,
		`{"allow": true, "audit": {"Jane Doe 1970-01-01": []}}`,
	} {
		_, err := decodeDecision(parseValue(t, doc), fullDecisionKeys)
		if err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Fatalf("%s: got %v, want an unknown field", doc, err)
		}
		if strings.Contains(err.Error(), "Jane") || strings.Contains(err.Error(), "pat-0001") {
			t.Errorf("error %q repeats the key", err)
		}
	}
}

// TestUnknownFieldDeniesAtEvaluation: a key no load-time check can see (it
// comes from data, for one kind of request only) refuses the decision when
// it appears, naming the field.
func TestUnknownFieldDeniesAtEvaluation(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, `package phigate.authz

decision := object.union({"allow": true, "status": 200}, extra)

extra := data.extra if input.fhir.resource_type == "Encounter"
else := {}
`)
	writeData(t, dir, `{"extra": {"redcat": [{"path": "Patient.name", "action": "remove"}]}}`)
	e, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}}, nil, nil)
	if err != nil {
		t.Fatalf("the policy is refused at load (%v); the check must be the evaluation's here", err)
	}
	defer e.Close()
	if d, err := e.Evaluate(t.Context(), &authz.Request{FHIR: authz.FHIRRequest{Interaction: "read", ResourceType: "Patient"}}); err != nil || !d.Allow {
		t.Fatalf("a request without the unknown key: allow=%v err=%v, want allowed", d.Allow, err)
	}
	d, err := e.Evaluate(t.Context(), &authz.Request{FHIR: authz.FHIRRequest{Interaction: "read", ResourceType: "Encounter"}})
	if d.Allow || err == nil {
		t.Fatalf("decision with decision.redcat: allow=%v err=%v, want refused", d.Allow, err)
	}
	if !errors.Is(err, &Error{Code: CodeShape}) || !strings.Contains(err.Error(), "decision.redcat: unknown field") {
		t.Fatalf("got %v, want a shape error naming decision.redcat", err)
	}
}

// TestPlanCompiledAtDecode: the decoder compiles the decision's plan, so a
// directive that could not be applied refuses the decision, naming the
// directive, and a good one arrives parsed.
func TestPlanCompiledAtDecode(t *testing.T) {
	for _, tc := range []struct {
		name, redact string
	}{
		{"key id not configured", `[{"path": "Patient.identifier.value", "action": "tokenize", "key_id": "k2"}]`},
		{"bad path", `[{"path": "Patient.identifier.where(system)", "action": "remove"}]`},
		{"path names no element", `[{"path": "Patient", "action": "mask"}]`},
		{"unknown format", `[{"path": "Patient.identifier.value", "action": "tokenize", "key_id": "k1", "format": "rot13"}]`},
		{"unknown profile", `[{"path": "*", "action": "deidentify", "profile": "expert"}]`},
		{"second directive bad", `[{"path": "Patient.telecom", "action": "remove"}, {"path": "Patient.name", "action": "allow"}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeDecision(parseValue(t, `{"allow": true, "redact": `+tc.redact+`}`), fullDecisionKeys)
			if !errors.Is(err, plan.ErrBadDirective) || !strings.HasPrefix(err.Error(), "decision.redact: ") {
				t.Fatalf("got %v, want a bad directive naming decision.redact", err)
			}
		})
	}
	d, err := decodeDecision(parseValue(t, fullDecision), fullDecisionKeys)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Redact) != 1 || !d.Redact[0].Compiled() || d.Redact[0].Elem().Type != "Patient" || len(d.Redact[0].Elem().Steps) != 2 {
		t.Fatalf("redact = %+v, want one compiled rule on Patient with two steps", d.Redact)
	}
	if d.Enforce == nil || len(d.Enforce.Patients) != 1 {
		t.Fatalf("enforce = %+v, want the document's", d.Enforce)
	}
}

// TestUnconfiguredKeyDeniesAtEvaluation: a directive naming a token key the
// deployment does not hold refuses the decision when the policy makes it,
// rather than the response after the upstream answered.
func TestUnconfiguredKeyDeniesAtEvaluation(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, `package phigate.authz

decision := {"allow": true, "status": 200, "redact": redact}

redact := [{"path": "Patient.identifier.value", "action": "tokenize", "key_id": "k2"}] if input.fhir.resource_type == "Encounter"
else := []
`)
	enc := &authz.Request{FHIR: authz.FHIRRequest{Interaction: "read", ResourceType: "Encounter"}}
	for _, tc := range []struct {
		name  string
		keys  plan.Keys
		allow bool
	}{
		{"no keys", plan.Keys{}, false},
		{"other keys", plan.NewKeys("k1"), false},
		{"the key", plan.NewKeys("k1", "k2"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}, TokenKeys: tc.keys}, nil, nil)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			defer e.Close()
			d, err := e.Evaluate(t.Context(), enc)
			if tc.allow {
				if err != nil || !d.Allow || len(d.Redact) != 1 || !d.Redact[0].Compiled() {
					t.Fatalf("allow=%v redact=%+v err=%v, want allowed with one compiled rule", d.Allow, d.Redact, err)
				}
				return
			}
			if d.Allow || !errors.Is(err, &Error{Code: CodeShape}) || !errors.Is(err, plan.ErrBadDirective) || !strings.Contains(err.Error(), `unknown key id "k2"`) {
				t.Fatalf("allow=%v err=%v, want a shape error for the unknown key id", d.Allow, err)
			}
		})
	}
}
