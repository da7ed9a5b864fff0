package server_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/policy"
	"github.com/phigate/phigate/server"
)

// opaEnvoyShape checks, inside the policy, that the input a real Envoy's
// CheckRequest becomes has the documented fields with their documented
// types, and wraps the documented-style policy's result so the client is
// told ("x-input-shape": "ok" or the missing fields). A request asking
// for it ("x-test-forge") gets a result that forges phigate's identity
// header.
const opaEnvoyShape = `package e2e

import future.keywords

import data.envoy.authz

http := input.attributes.request.http

missing contains "attributes.source.address.socketAddress.address" if not is_string(input.attributes.source.address.socketAddress.address)
missing contains "attributes.source.address.socketAddress.portValue" if not is_number(input.attributes.source.address.socketAddress.portValue)
missing contains "attributes.destination.address.socketAddress.address" if not is_string(input.attributes.destination.address.socketAddress.address)
missing contains "attributes.destination.address.socketAddress.portValue" if not is_number(input.attributes.destination.address.socketAddress.portValue)
missing contains "attributes.metadataContext" if not is_object(input.attributes.metadataContext)
missing contains "attributes.request.time" if not is_string(input.attributes.request.time)
missing contains "attributes.request.http.id" if not is_string(http.id)
missing contains "attributes.request.http.method" if not is_string(http.method)
missing contains "attributes.request.http.host" if not is_string(http.host)
missing contains "attributes.request.http.protocol" if not is_string(http.protocol)
missing contains "attributes.request.http.headers" if not is_object(http.headers)
missing contains "attributes.request.http.headers[:path]" if not http.headers[":path"] == http.path
missing contains "attributes.request.http.headers[authorization]" if not startswith(http.headers.authorization, "Bearer ")
missing contains "parsed_path" if not is_array(input.parsed_path)
missing contains "parsed_query" if not is_object(input.parsed_query)
missing contains "parsed_body" if not input.parsed_body == null
missing contains "truncated_body" if not input.truncated_body == false
missing contains "version" if not input.version == {"encoding": "protojson", "ext_authz": "v3"}

shape := "ok" if count(missing) == 0
else := concat(" ", sort(missing))

default forge := false

forge if http.headers["x-test-forge"] == "yes"

result := object.union(authz.result, {"response_headers_to_add": object.union(authz.response_headers_to_add, {"x-input-shape": shape})}) if not forge

result := object.union(authz.result, {"headers": {"x-phigate-user": "admin"}}) if forge
`

// TestOPAEnvoyEndToEnd: a policy written for the OPA-Envoy plugin, in
// its documented style, decides through the real Envoy unchanged, with
// phigate's identity check and canonicalization before it, its audit
// records, its identity headers, and the configured response plan after.
func TestOPAEnvoyEndToEnd(t *testing.T) {
	dir := t.TempDir()
	lib, err := os.ReadFile("../policy/testdata/opaenvoy/authz.rego")
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{"authz.rego": lib, "e2e.rego": []byte(opaEnvoyShape)} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var auditDir string
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		auditDir = c.Audit.Dir
		c.Policy.Dir = dir
		c.Policy.OPAEnvoy = &policy.OPAEnvoyConfig{Query: "data.e2e.result", Response: policy.OPAEnvoyResponse{
			Redact:  []policy.OPAEnvoyDirective{{Path: "Patient.telecom", Action: "remove"}},
			Enforce: &policy.OPAEnvoyEnforce{Patients: "request", ResourceTypes: []string{"*"}},
		}}
	}})
	doc := s.Token(stacktest.Physician(1))
	nurse := s.Token(demokeys.TokenSpec{Subject: "nurse-01", Roles: []string{"nurse"}, FHIRUser: "Practitioner/prac-001", Purpose: "TREAT"})
	ids := map[string]string{}

	cases := []struct {
		name, method, path, token string
		headers                   map[string]string
		status                    int
	}{
		{"physician reads a patient", "GET", "/fhir/Patient/pat-0001", doc, map[string]string{"one-auth-header": "x", "x-phigate-roles": "admin"}, 200},
		{"nurse searches one patient's observations", "GET", "/fhir/Observation?patient=pat-0001", nurse, nil, 200},
		{"nurse searches two in one value: the plan enforces both", "GET", "/fhir/Observation?patient=pat-0001,pat-0002", nurse, nil, 200},
		{"physician may not delete", "DELETE", "/fhir/Patient/pat-0001", doc, nil, 403},
		{"nurse may not read a patient", "GET", "/fhir/Patient/pat-0001", nurse, nil, 403},
		{"no token: phigate's 401 before the policy", "GET", "/fhir/Patient/pat-0001", "", nil, 401},
		{"a forged identity header is refused", "GET", "/fhir/Patient/pat-0001", doc, map[string]string{"x-test-forge": "yes"}, 403},
		{"ambiguous: refused before the policy", "GET", "/fhir/Patient/pat-0001/%2e%2e/pat-0002", doc, nil, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.Up.Reset()
			r := s.Do(tc.method, tc.path, tc.token, tc.headers, nil)
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d: %.300s", r.Status, tc.status, r.Body)
			}
			ids[tc.name] = r.Header.Get(envoy.DecisionHeader)
			seen := s.Up.Requests()
			if tc.status != 200 {
				if len(seen) != 0 {
					t.Errorf("the upstream was asked %d times", len(seen))
				}
				if !stacktest.IsOutcome(r) {
					t.Errorf("denial body is not phigate's OperationOutcome: %.200s", r.Body)
				}
				return
			}
			if got := r.Header.Get("x-input-shape"); got != "ok" {
				t.Errorf("the input Envoy's CheckRequest became lacks: %s", got)
			}
			if r.Header.Get("x-foo") != "bar" || ids[tc.name] == "" {
				t.Errorf("response headers %v: want the policy's x-foo and the decision id", r.Header)
			}
			if len(seen) != 1 {
				t.Fatalf("the upstream saw %d requests", len(seen))
			}
			h := seen[0].Headers
			if h.Get("x-ext-auth-allow") != "yes" || h.Get("x-validated-by") != "security-checkpoint" {
				t.Errorf("upstream headers %v: want the policy's", h)
			}
			if h.Get("one-auth-header") != "" || h.Get("authorization") != "" {
				t.Errorf("upstream received a removed header: %v", h)
			}
			if h.Get("x-phigate-user") == "" || h.Get("x-phigate-roles") == "admin" {
				t.Errorf("upstream identity headers %v: want phigate's, from the verified token", h)
			}
		})
	}

	t.Run("parsed_body: a JSON body as the policy reads it", func(t *testing.T) {
		for _, c := range []struct {
			author string
			sent   bool
		}{{"prac-001", true}, {"prac-002", false}} {
			s.Up.Reset()
			body := `{"resourceType": "Basic", "id": "b1", "author": "` + c.author + `"}`
			r := s.Do("POST", "/fhir/Basic", doc, map[string]string{"content-type": "application/json"}, strings.NewReader(body))
			if sent := len(s.Up.Requests()) == 1; sent != c.sent {
				t.Errorf("author %s: status %d, upstream asked %v, want %v: %.200s", c.author, r.Status, sent, c.sent, r.Body)
			}
		}
	})

	t.Run("the response is redacted by the configured plan", func(t *testing.T) {
		r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil)
		if r.Status != 200 {
			t.Fatalf("status %d", r.Status)
		}
		p := decodeJSON(t, r.Body)
		if _, ok := p["telecom"]; ok {
			t.Error("telecom was not removed")
		}
		if p["id"] != "pat-0001" || !bytes.Contains(r.Body, []byte(`"REDACTED"`)) {
			t.Errorf("want the patient, marked REDACTED: %.300s", r.Body)
		}
		if _, direct := stacktest.GetBody(t, "http://"+s.Up.Addr+"/fhir/Patient/pat-0001"); !bytes.Contains([]byte(direct), []byte("telecom")) {
			t.Fatal("the upstream's patient has no telecom: the test shows nothing")
		}
	})

	t.Run("every decision is recorded", func(t *testing.T) {
		s.StopPhigate()
		entries, err := audit.Query(auditDir, audit.Filter{Kind: audit.KindDecision}, audit.QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]struct {
			outcome string
			reason  string
			policy  bool
		}{
			"physician reads a patient":                 {"0", "opa_envoy.allowed", true},
			"nurse searches one patient's observations": {"0", "opa_envoy.allowed", true},
			"physician may not delete":                  {"4", "opa_envoy.denied", true},
			"nurse may not read a patient":              {"4", "opa_envoy.denied", true},
			"no token: phigate's 401 before the policy": {"4", "identity.missing_token", false},
			"a forged identity header is refused":       {"4", "opa_envoy.reserved_header", true},
			"ambiguous: refused before the policy":      {"4", "ambiguous_request", false},
		}
		for name, w := range want {
			var e *audit.Entry
			for i := range entries {
				if ids[name] != "" && entries[i].Event.DecisionID() == ids[name] {
					e = &entries[i]
				}
			}
			if e == nil {
				t.Errorf("%s: no record of decision %q", name, ids[name])
				continue
			}
			if e.Event.Outcome != w.outcome || e.Decision.Reason != w.reason || (e.Event.PolicyRevision() != "") != w.policy {
				t.Errorf("%s: outcome %q reason %q revision %q, want %q %q policy=%v", name,
					e.Event.Outcome, e.Decision.Reason, e.Event.PolicyRevision(), w.outcome, w.reason, w.policy)
			}
			if w.policy && !slices.Contains(e.Decision.Audit.Rules, "opa_envoy:data.e2e.result") {
				t.Errorf("%s: rules %v, want the OPA-Envoy decision named", name, e.Decision.Audit.Rules)
			}
			if bytes.Contains(e.Input, []byte("Bearer")) {
				t.Errorf("%s: the record holds the bearer token", name)
			}
		}
	})
}
