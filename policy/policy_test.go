package policy

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phigate/phigate/authz"
)

const goodPolicy = `package phigate.authz

default allow := false

allow if input.identity.authenticated

decision := {"allow": allow, "status": 200, "reason": "ok", "headers": {"x-rev": "%s"}} if allow
else := {"allow": false, "status": 401, "reason": "no identity"}
`

func writePolicy(t *testing.T, dir, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedLibraryLoads(t *testing.T) {
	e, err := NewEngine(t.Context(), Config{}, nil, nil)
	if err != nil {
		t.Fatalf("embedded policy: %v", err)
	}
	defer e.Close()
	st := e.Status()
	if !st.Ready || st.Revision == "" || st.Source != "embedded" {
		t.Fatalf("status = %+v, want ready embedded with a revision", st)
	}
	d, err := e.Evaluate(t.Context(), &authz.Request{Identity: authz.Identity{Error: "missing_token"}, FHIR: authz.FHIRRequest{Interaction: "read", ResourceType: "Patient"}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow || d.Status != 401 {
		t.Fatalf("no identity: got allow=%v status=%d, want a 401 denial", d.Allow, d.Status)
	}
}

func TestLoadFailures(t *testing.T) {
	cases := []struct {
		name string
		body string
		code Code
		msg  string
	}{
		{"syntax error", "package phigate.authz\n\ndecision := {", CodeLoad, "authz.rego"},
		{"strict compile error", "package phigate.authz\n\nimport data.unused\n\ndecision := {\"allow\": false}\n", CodeCompile, "unused"},
		{"no decision rule", "package phigate.authz\n\nallow := true\n", CodeShape, "data.phigate.authz.decision"},
		{"allow not a boolean", "package phigate.authz\n\ndecision := {\"allow\": \"yes\"}\n", CodeShape, "decision.allow: want boolean, got string"},
		{"header value not a string", "package phigate.authz\n\ndecision := {\"allow\": true, \"headers\": {\"x\": 1}}\n", CodeShape, `decision.headers["x"]: want string, got number`},
		{"unknown redact action", "package phigate.authz\n\ndecision := {\"allow\": true, \"redact\": [{\"path\": \"Patient.name\", \"action\": \"shred\"}]}\n", CodeShape, `decision.redact[0].action: unknown action "shred"`},
		{"undefined for some input", "package phigate.authz\n\ndecision := {\"allow\": true} if input.identity.authenticated\n", CodeEval, "no decision"},
		{"status out of range", "package phigate.authz\n\ndecision := {\"allow\": false, \"status\": 42}\n", CodeShape, "decision.status: 42"},
		// Unknown fields, seen in the rules before any evaluation: each case
		// but the first answers the shape probes with known fields only.
		{"misspelt field", "package phigate.authz\n\ndecision := {\"allow\": true, \"redcat\": [{\"path\": \"Patient.name\", \"action\": \"remove\"}]}\n", CodeShape, "decision.redcat: unknown field"},
		{"misspelt field on a branch the probes miss", "package phigate.authz\n\ndecision := {\"allow\": true, \"redcat\": []} if input.fhir.resource_type == \"Encounter\"\nelse := {\"allow\": false, \"status\": 403}\n", CodeShape, "decision.redcat: unknown field"},
		{"misspelt field in enforce, through a rule", "package phigate.authz\n\ndecision := {\"allow\": false, \"enforce\": enforce}\n\ndefault enforce := {}\n\nenforce := {\"patients\": [], \"any_patients\": true} if input.fhir.resource_type == \"Encounter\"\n", CodeShape, "decision.enforce.any_patients: unknown field"},
		{"misspelt field in a directive comprehension", "package phigate.authz\n\ndecision := {\"allow\": false, \"redact\": [{\"path\": p, \"action\": \"tokenize\", \"keyid\": \"k\"} | some p in input.fhir.include]}\n", CodeShape, "decision.redact[].keyid: unknown field"},
		{"misspelt field in a rule of its own", "package phigate.authz\n\ndecision.allow := false\n\ndecision.audit := {\"patients\": [], \"rule\": []} if input.fhir.resource_type == \"Encounter\"\n", CodeShape, "decision.audit.rule: unknown field"},
		{"misspelt field as a constant key", "package phigate.authz\n\ndecision.allow := false\n\ndecision[\"redcat\"] := [] if input.fhir.resource_type == \"Encounter\"\n", CodeShape, "decision.redcat: unknown field"},
		{"misspelt field in a partial set", "package phigate.authz\n\ndecision := {\"allow\": false, \"redact\": redact}\n\nredact contains {\"path\": \"x\", \"action\": \"remove\", \"keyid\": \"k\"} if input.fhir.resource_type == \"Encounter\"\n", CodeShape, "decision.redact[].keyid: unknown field"},
		{"misspelt field bound in the body", "package phigate.authz\n\ndecision := d if {\n\td := {\"allow\": false, \"cache\": {\"until\": 0}}\n\tinput.fhir.resource_type == \"Encounter\"\n} else := {\"allow\": false}\n", CodeShape, "decision.cache.until: unknown field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writePolicy(t, dir, tc.body)
			_, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}}, nil, nil)
			if err == nil {
				t.Fatal("got no error, want the policy refused")
			}
			if !errors.Is(err, &Error{Code: tc.code}) {
				t.Errorf("got %v, want code %s", err, tc.code)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
}

func TestReloadKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, strings.Replace(goodPolicy, "%s", "one", 1))
	e, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}, ReloadInterval: 100 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	req := &authz.Request{Identity: authz.Identity{Authenticated: true}}
	header := func() string {
		d, err := e.Evaluate(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		return d.Headers["x-rev"]
	}
	if got := header(); got != "one" {
		t.Fatalf("x-rev = %q, want one", got)
	}
	rev1 := e.Status().Revision

	writePolicy(t, dir, "package phigate.authz\n\ndecision := {")
	waitFor(t, func() bool { return e.Status().LastError != "" })
	if got := header(); got != "one" {
		t.Fatalf("after a broken push x-rev = %q, want the last good policy still serving", got)
	}
	if st := e.Status(); st.Revision != rev1 || !st.Ready {
		t.Fatalf("status after broken push = %+v, want revision %s still ready", st, rev1)
	}

	writePolicy(t, dir, strings.Replace(goodPolicy, "%s", "two", 1))
	waitFor(t, func() bool { return header() == "two" })
	if st := e.Status(); st.LastError != "" || st.Revision == rev1 {
		t.Fatalf("status after good push = %+v, want a new revision and no error", st)
	}
}

func TestRunTestsRejectsFailingBundle(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, strings.Replace(goodPolicy, "%s", "x", 1))
	test := "package phigate.authz_test\n\nimport data.phigate.authz\n\ntest_denies_everyone if {\n\tnot authz.decision.allow with input as {\"identity\": {\"authenticated\": true}}\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "authz_test.rego"), []byte(test), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}, RunTests: true}, nil, nil)
	if !errors.Is(err, &Error{Code: CodeTest}) || !strings.Contains(err.Error(), "test_denies_everyone") {
		t.Fatalf("got %v, want a test failure naming test_denies_everyone", err)
	}
}

// TestInputMatchesJSON keeps the hand-built AST input in step with the JSON
// tags of authz.Request: a field added to one and not the other fails here.
func TestInputMatchesJSON(t *testing.T) {
	req := &authz.Request{
		ID: "r1", TimeNS: 1700000000000000000, Method: "POST", Path: "/fhir",
		Query:   map[string][]string{"patient": {"a", "b"}},
		Headers: map[string]string{"x-purpose-of-use": "TREAT"},
		Source:  authz.Peer{Address: "127.0.0.1:5", Principal: "spiffe://x/y"},
		Identity: authz.Identity{Authenticated: true, Error: "e", Subject: "s", Issuer: "i", FHIRUser: "Practitioner/1",
			Roles: []string{"physician"}, Scopes: []authz.Scope{{Raw: "patient/*.read", Context: "patient", Resource: "*", Permissions: "rs"}},
			Patient: "p", ClientID: "c", MFA: true, AMR: []string{"pwd", "otp"}, ACR: "aal2", IssuedAt: 1, Expires: 2, Service: true},
		FHIR: authz.FHIRRequest{Interaction: "batch", ResourceType: "Observation", ID: "o", Version: "2",
			Compartment: &authz.Compartment{Type: "Patient", ID: "p"}, Operation: "everything",
			Patients: []string{"p"}, AllPatients: true, Include: []string{"Observation:patient"}, RevInclude: []string{"Provenance:target"},
			Entries: []authz.FHIRRequest{{Interaction: "read", ResourceType: "Patient", ID: "q", Patients: []string{"q"}, Method: "GET"}},
			Method:  "POST", Kind: "legacy"},
		Purpose:    "TREAT",
		BreakGlass: authz.BreakGlassRequest{Requested: true, Reason: "r", Grants: []authz.Grant{{Patient: "p", Reason: "r", ExpiresNS: 5}}},
		Care:       []authz.CareRelationship{{Patient: "p", Role: "attending", Source: "adt"}},
		Consents:   []authz.ConsentDirective{{Patient: "p", Effect: "deny", Purpose: "HRESCH", Label: ""}},
		Elevations: []authz.Elevation{{Role: "physician", ExpiresNS: 9}},
		Alerts:     []authz.Alert{{Kind: "bulk_read.distinct_patients", RaisedNS: 3}},
		Throttle:   []string{"reads"},
	}
	// The filled request sets every field, found by reflection, so a field
	// added to authz.Request and not to inputValue fails here.
	for name, req := range map[string]*authz.Request{"hand-written": req, "every field set": filledRequest(t)} {
		raw, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ast.ValueFromReader(strings.NewReader(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		if got := inputValue(req); got.Compare(want) != 0 {
			t.Errorf("%s: AST input differs from JSON input\n got: %v\nwant: %v", name, got, want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
