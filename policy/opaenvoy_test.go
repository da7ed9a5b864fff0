package policy

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
)

// fakeJWT is a token io.jwt.decode reads: the policy does not verify it
// (phigate's verifier did).
func fakeJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]any{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte("sig"))
}

// envoyDoc is an OPA-Envoy input document for one request.
func envoyDoc(t *testing.T, method, path, token string, query map[string][]string, body any) []byte {
	t.Helper()
	parsed := strings.Split(strings.TrimLeft(path, "/"), "/")
	if query == nil {
		query = map[string][]string{}
	}
	doc := map[string]any{
		"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"method": method, "path": path, "headers": map[string]any{"authorization": "Bearer " + token},
		}}},
		"parsed_path": parsed, "parsed_query": query, "parsed_body": body, "truncated_body": false,
		"version": map[string]any{"encoding": "protojson", "ext_authz": "v3"},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func opaEnvoyEngine(t *testing.T, dir string, oe OPAEnvoyConfig) *Engine {
	t.Helper()
	e, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}, OPAEnvoy: &oe}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

var requestPatients = OPAEnvoyResponse{Enforce: &OPAEnvoyEnforce{Patients: "request", ResourceTypes: []string{"*"}}}

func readRequest(id string) *authz.Request {
	return &authz.Request{ID: "r", TimeNS: 1, Method: "GET", Path: "/fhir/Patient/" + id,
		Identity: authz.Identity{Authenticated: true, Subject: "prac-001", Roles: []string{"physician"}},
		FHIR:     authz.FHIRRequest{Interaction: authz.InteractionRead, ResourceType: "Patient", ID: id, Patients: []string{id}}}
}

// TestOPAEnvoyDocumentedPolicy: the documented style of policy, as the
// boolean decision and as the object result, decided request by request.
func TestOPAEnvoyDocumentedPolicy(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	doctor := fakeJWT(t, map[string]any{"sub": "prac-001", "roles": []string{"physician"}, "exp": exp})
	nurse := fakeJWT(t, map[string]any{"sub": "nurse-01", "roles": []string{"nurse"}, "exp": exp})
	expired := fakeJWT(t, map[string]any{"sub": "prac-001", "roles": []string{"physician"}, "exp": time.Now().Add(-time.Hour).Unix()})
	boolean := opaEnvoyEngine(t, "testdata/opaenvoy", OPAEnvoyConfig{Response: requestPatients})
	object := opaEnvoyEngine(t, "testdata/opaenvoy", OPAEnvoyConfig{Query: "data.envoy.authz.result", Response: requestPatients})
	search := &authz.Request{ID: "s", TimeNS: 1, Method: "GET", Path: "/fhir/Observation",
		Identity: authz.Identity{Authenticated: true, Subject: "nurse-01", Roles: []string{"nurse"}},
		FHIR:     authz.FHIRRequest{Interaction: authz.InteractionSearchType, ResourceType: "Observation", Patients: []string{"pat-0001"}}}
	cases := []struct {
		name   string
		req    *authz.Request
		doc    []byte
		allow  bool
		status int
		reason string
	}{
		{"physician reads a patient", readRequest("pat-0001"), envoyDoc(t, "GET", "/fhir/Patient/pat-0001", doctor, nil, nil), true, 200, reasonOPAEnvoyAllowed},
		{"physician may not delete", readRequest("pat-0001"), envoyDoc(t, "DELETE", "/fhir/Patient/pat-0001", doctor, nil, nil), false, 403, reasonOPAEnvoyDenied},
		{"nurse may not read a patient", readRequest("pat-0001"), envoyDoc(t, "GET", "/fhir/Patient/pat-0001", nurse, nil, nil), false, 403, reasonOPAEnvoyDenied},
		{"an expired token is refused by the policy", readRequest("pat-0001"), envoyDoc(t, "GET", "/fhir/Patient/pat-0001", expired, nil, nil), false, 0, reasonOPAEnvoyDenied},
		{"nurse searches one patient (parsed_query)", search, envoyDoc(t, "GET", "/fhir/Observation", nurse, map[string][]string{"patient": {"pat-0001"}}, nil), true, 200, reasonOPAEnvoyAllowed},
		{"nurse searches two (parsed_query)", search, envoyDoc(t, "GET", "/fhir/Observation", nurse, map[string][]string{"patient": {"pat-0001", "pat-0002"}}, nil), false, 403, reasonOPAEnvoyDenied},
		{"physician posts as themselves (parsed_body)", readRequest("pat-0001"), envoyDoc(t, "POST", "/fhir/Basic", doctor, nil, map[string]any{"author": "prac-001"}), true, 200, reasonOPAEnvoyAllowed},
		{"physician posts as another (parsed_body)", readRequest("pat-0001"), envoyDoc(t, "POST", "/fhir/Basic", doctor, nil, map[string]any{"author": "prac-002"}), false, 403, reasonOPAEnvoyDenied},
	}
	for _, tc := range cases {
		for _, mode := range []struct {
			name string
			e    *Engine
		}{{"allow", boolean}, {"result", object}} {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				d, err := mode.e.EvaluateForeign(t.Context(), tc.req, tc.doc)
				if err != nil {
					t.Fatal(err)
				}
				if d.Allow != tc.allow || d.Reason != tc.reason {
					t.Fatalf("allow=%v reason=%q, want allow=%v reason=%q", d.Allow, d.Reason, tc.allow, tc.reason)
				}
				wantStatus := tc.status
				if wantStatus == 0 { // the object result says 401, the boolean nothing
					wantStatus = map[string]int{"allow": 403, "result": 401}[mode.name]
				}
				if !d.Allow && d.Status != wantStatus {
					t.Errorf("status %d, want %d", d.Status, wantStatus)
				}
				if d.Policy.Revision == "" || !slices.Contains(d.Audit.Rules, "opa_envoy:"+mode.e.cfg.OPAEnvoy.Ref()) {
					t.Errorf("provenance %+v rules %v: want the revision and the decision's reference", d.Policy, d.Audit.Rules)
				}
				if !d.Allow {
					return
				}
				if d.Headers["x-phigate-user"] != tc.req.Identity.Subject || !slices.Contains(d.RemoveHeaders, "x-phigate-break-glass") {
					t.Errorf("identity headers %v remove %v: want phigate's, from the verified identity", d.Headers, d.RemoveHeaders)
				}
				if d.Plan.Enforce == nil || !slices.Equal(d.Plan.Enforce.Patients, authz.NamedPatients(&tc.req.FHIR)) {
					t.Errorf("plan %+v: want the request's patients enforced", d.Plan.Enforce)
				}
				if mode.name == "result" {
					if d.Headers["x-ext-auth-allow"] != "yes" || d.ResponseHeaders["x-foo"] != "bar" || !slices.Contains(d.RemoveHeaders, "one-auth-header") {
						t.Errorf("headers %v response %v remove %v: the result's are missing", d.Headers, d.ResponseHeaders, d.RemoveHeaders)
					}
				} else if d.Headers["x-ext-auth-allow"] != "" {
					t.Errorf("a boolean decision set headers %v", d.Headers)
				}
			})
		}
	}
}

// TestOPAEnvoyNativeEvaluateRefused: a policy served in OPA-Envoy mode
// never decides on phigate's input alone.
func TestOPAEnvoyNativeEvaluateRefused(t *testing.T) {
	e := opaEnvoyEngine(t, "testdata/opaenvoy", OPAEnvoyConfig{Response: requestPatients})
	if d, err := e.Evaluate(t.Context(), readRequest("pat-0001")); err == nil || d.Allow {
		t.Fatalf("Evaluate: %+v, %v; want an error", d, err)
	}
}

// TestOPAEnvoyResults: how each result is mapped, and every result phigate
// refuses: its own headers forged, the query rewritten, unknown keys, its
// metadata keys, a request whose response cannot be planned.
func TestOPAEnvoyResults(t *testing.T) {
	cases := []struct {
		name    string
		result  string
		req     *authz.Request
		wantErr string
		check   func(t *testing.T, d authz.Decision)
	}{
		{name: "http_status of a denial", result: `{"allowed": false, "http_status": 418, "body": "no"}`,
			check: func(t *testing.T, d authz.Decision) {
				if d.Allow || d.Status != 418 || d.Reason != reasonOPAEnvoyDenied {
					t.Errorf("got %v %d %q", d.Allow, d.Status, d.Reason)
				}
			}},
		{name: "a denial below 400 answers 403", result: `{"allowed": false, "http_status": 301}`,
			check: func(t *testing.T, d authz.Decision) {
				if d.Allow || d.Status != 403 {
					t.Errorf("got %v %d", d.Allow, d.Status)
				}
			}},
		{name: "headers as an array of objects with several values",
			result: `{"allowed": true, "headers": [{"X-A": "1"}, {"x-a": ["2", "3"]}], "dynamic_metadata": {"team": {"name": "x"}}}`,
			check: func(t *testing.T, d authz.Decision) {
				if !d.Allow || d.Headers["x-a"] != "1,2,3" || d.Metadata["team"] == nil {
					t.Errorf("got allow=%v headers=%v metadata=%v", d.Allow, d.Headers, d.Metadata)
				}
			}},
		{name: "forged identity header", result: `{"allowed": true, "headers": {"X-Phigate-User": "admin"}}`, check: refusedAs(reasonOPAEnvoyReserved + ":x-phigate-user")},
		{name: "forged decision id to the client", result: `{"allowed": true, "response_headers_to_add": {"x-phigate-decision-id": "0"}}`, check: refusedAs(reasonOPAEnvoyReserved + ":x-phigate-decision-id")},
		{name: "removing the request id", result: `{"allowed": true, "request_headers_to_remove": ["X-Request-Id"]}`, check: refusedAs(reasonOPAEnvoyReserved + ":x-request-id")},
		{name: "content-length to the client", result: `{"allowed": true, "response_headers_to_add": {"content-length": "1"}}`, check: refusedAs(reasonOPAEnvoyReserved + ":content-length")},
		{name: "query rewritten", result: `{"allowed": true, "query_parameters_to_set": {"patient": "pat-0002"}}`, check: refusedAs("")},
		{name: "a search over every patient cannot be planned", result: `true`,
			req: &authz.Request{TimeNS: 1, FHIR: authz.FHIRRequest{Interaction: authz.InteractionSearchType, ResourceType: "Observation", AllPatients: true}},
			check: func(t *testing.T, d authz.Decision) {
				if d.Allow || d.Reason != reasonOPAEnvoyUnplannable {
					t.Errorf("got %v %q", d.Allow, d.Reason)
				}
			}},
		{name: "unknown key", result: `{"allowed": true, "reqest_headers_to_remove": ["x"]}`, wantErr: "result.reqest_headers_to_remove: unknown field"},
		{name: "allowed missing", result: `{"headers": {}}`, wantErr: "result.allowed"},
		{name: "phigate's metadata key", result: `{"allowed": true, "dynamic_metadata": {"phigate": "{}"}}`, wantErr: "dynamic_metadata"},
		{name: "a string", result: `"yes"`, wantErr: "want boolean or object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writePolicy(t, dir, "package envoy.authz\n\ndecide := "+tc.result+" if input.attributes.request.http.method != \"probe\"\n")
			if tc.wantErr != "" {
				// A result of the wrong shape is refused where the policy
				// loads (the probe reads it) and where it decides.
				_, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}, OPAEnvoy: &OPAEnvoyConfig{Path: "envoy/authz/decide", Response: requestPatients}}, nil, nil)
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, &Error{Code: CodeShape}) {
					t.Fatalf("load: %v, want a shape error naming %q", err, tc.wantErr)
				}
				return
			}
			e := opaEnvoyEngine(t, dir, OPAEnvoyConfig{Path: "/envoy/authz/decide/", Response: requestPatients})
			req := tc.req
			if req == nil {
				req = readRequest("pat-0001")
			}
			d, err := e.EvaluateForeign(t.Context(), req, envoyDoc(t, "GET", "/fhir/Patient/pat-0001", "x", nil, nil))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, d)
		})
	}
}

func refusedAs(rule string) func(t *testing.T, d authz.Decision) {
	return func(t *testing.T, d authz.Decision) {
		t.Helper()
		if d.Allow || d.Status != 403 {
			t.Fatalf("allow=%v status=%d: want the allowed result refused", d.Allow, d.Status)
		}
		if rule != "" && !slices.Contains(d.Audit.Rules, rule) {
			t.Errorf("rules %v, want %q", d.Audit.Rules, rule)
		}
	}
}

// TestOPAEnvoyUndefined: an undefined decision denies, as in the plugin.
func TestOPAEnvoyUndefined(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "package envoy.authz\n\nallow if input.parsed_path == [\"open\"]\n")
	e := opaEnvoyEngine(t, dir, OPAEnvoyConfig{Response: OPAEnvoyResponse{Unfiltered: true}})
	d, err := e.EvaluateForeign(t.Context(), readRequest("p"), envoyDoc(t, "GET", "/closed", "x", nil, nil))
	if err != nil || d.Allow || d.Reason != reasonOPAEnvoyUndefined {
		t.Fatalf("got %+v, %v; want an undefined denial", d, err)
	}
	d, err = e.EvaluateForeign(t.Context(), readRequest("p"), envoyDoc(t, "GET", "/open", "x", nil, nil))
	if err != nil || !d.Allow || !d.Plan.Empty() {
		t.Fatalf("got %+v, %v; want an unfiltered allow", d, err)
	}
}

func TestOPAEnvoyConfig(t *testing.T) {
	cases := []struct {
		name string
		c    OPAEnvoyConfig
		want string
	}{
		{"path and query", OPAEnvoyConfig{Path: "a/b", Query: "data.a.b", Response: requestPatients}, "policy.opa_envoy.query: set"},
		{"bad path", OPAEnvoyConfig{Path: "a/b-c", Response: requestPatients}, "policy.opa_envoy.path"},
		{"bad query", OPAEnvoyConfig{Query: "input.x", Response: requestPatients}, "policy.opa_envoy.query"},
		{"no plan", OPAEnvoyConfig{}, "policy.opa_envoy.response.enforce: required"},
		{"unfiltered and enforce", OPAEnvoyConfig{Response: OPAEnvoyResponse{Unfiltered: true, Enforce: requestPatients.Enforce}}, "policy.opa_envoy.response.unfiltered"},
		{"bad patients", OPAEnvoyConfig{Response: OPAEnvoyResponse{Enforce: &OPAEnvoyEnforce{Patients: "mine"}}}, "policy.opa_envoy.response.enforce.patients"},
		{"bad directive", OPAEnvoyConfig{Response: OPAEnvoyResponse{Enforce: requestPatients.Enforce, Redact: []OPAEnvoyDirective{{Path: "Patient.telecom", Action: "shred"}}}}, "policy.opa_envoy.response.redact"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{OPAEnvoy: &tc.c}
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
	c := Config{OPAEnvoy: &OPAEnvoyConfig{Response: requestPatients}}
	if err := c.Validate(); err != nil || c.OPAEnvoy.Ref() != "data.envoy.authz.allow" {
		t.Fatalf("default: %v, ref %q", err, c.OPAEnvoy.Ref())
	}
	// A source without the decision does not load: phigate's own library
	// defines no data.envoy.authz.allow.
	if _, err := NewEngine(t.Context(), Config{OPAEnvoy: &OPAEnvoyConfig{Response: requestPatients}}, nil, nil); err == nil || !strings.Contains(err.Error(), "no rule defines data.envoy.authz.allow") {
		t.Fatalf("embedded library in OPA-Envoy mode: %v", err)
	}
}

// TestOPAEnvoyNoCacheReuse: the decision cache is on (the default), yet
// two requests phigate's own input cannot tell apart (the same canonical
// Request) but whose OPA-Envoy inputs differ (another caller's token) get
// their own decisions: nothing is reused in this mode.
func TestOPAEnvoyNoCacheReuse(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	doctor := fakeJWT(t, map[string]any{"sub": "prac-001", "roles": []string{"physician"}, "exp": exp})
	nurse := fakeJWT(t, map[string]any{"sub": "prac-001", "roles": []string{"nurse"}, "exp": exp})
	e := opaEnvoyEngine(t, "testdata/opaenvoy", OPAEnvoyConfig{Response: requestPatients})
	req := readRequest("pat-0001")
	for i, want := range []bool{true, false, true, false} {
		tok := doctor
		if !want {
			tok = nurse
		}
		d, err := e.EvaluateForeign(t.Context(), req, envoyDoc(t, "GET", "/fhir/Patient/pat-0001", tok, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow != want || d.Policy.Reused {
			t.Fatalf("request %d: allow=%v reused=%v, want allow=%v, evaluated", i, d.Allow, d.Policy.Reused, want)
		}
	}
	if c := e.CacheCounts(); c.Hits != 0 {
		t.Errorf("cache counts %+v: want no hits", c)
	}
}

// TestOPAEnvoyConsent: a patient's consent directives hold after an
// OPA-Envoy policy allowed, read as phigate's library reads them.
func TestOPAEnvoyConsent(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	doctor := fakeJWT(t, map[string]any{"sub": "prac-001", "roles": []string{"physician"}, "exp": exp})
	enforce := OPAEnvoyResponse{Enforce: &OPAEnvoyEnforce{Patients: "request", PermittedLabels: []string{"ETH", "PSY"}}}
	e := opaEnvoyEngine(t, "testdata/opaenvoy", OPAEnvoyConfig{Response: enforce})
	open := opaEnvoyEngine(t, "testdata/opaenvoy", OPAEnvoyConfig{Response: OPAEnvoyResponse{Unfiltered: true}})
	optOut := authz.ConsentDirective{Patient: "pat-0001", Effect: "deny"}
	cases := []struct {
		name     string
		e        *Engine
		consents []authz.ConsentDirective
		fhirUser string
		purpose  string
		care     bool
		reason   string
		labels   []string
	}{
		{"no consent", e, nil, "Practitioner/prac-001", "TREAT", false, reasonOPAEnvoyAllowed, []string{"ETH", "PSY"}},
		{"opted out", e, []authz.ConsentDirective{optOut}, "Practitioner/prac-001", "TREAT", false, "consent.opt_out", nil},
		{"opted out of another purpose", e, []authz.ConsentDirective{{Patient: "pat-0001", Effect: "deny", Purpose: "HPAYMT"}}, "Practitioner/prac-001", "TREAT", false, reasonOPAEnvoyAllowed, []string{"ETH", "PSY"}},
		{"the patient's own access", e, []authz.ConsentDirective{optOut}, "Patient/pat-0001", "TREAT", false, reasonOPAEnvoyAllowed, []string{"ETH", "PSY"}},
		{"restricted, not treating", e, []authz.ConsentDirective{{Patient: "pat-0001", Effect: "restrict"}}, "Practitioner/prac-001", "TREAT", false, "consent.restricted", nil},
		{"restricted, treating", e, []authz.ConsentDirective{{Patient: "pat-0001", Effect: "restrict"}}, "Practitioner/prac-001", "TREAT", true, reasonOPAEnvoyAllowed, []string{"ETH", "PSY"}},
		{"a label withheld", e, []authz.ConsentDirective{{Patient: "pat-0001", Effect: "deny", Label: "PSY"}}, "Practitioner/prac-001", "TREAT", false, reasonOPAEnvoyAllowed, []string{"ETH"}},
		{"a label withheld, unfiltered", open, []authz.ConsentDirective{{Patient: "pat-0001", Effect: "deny", Label: "PSY"}}, "Practitioner/prac-001", "TREAT", false, reasonOPAEnvoyUnplannable, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := readRequest("pat-0001")
			req.Consents, req.Purpose, req.Identity.FHIRUser = tc.consents, tc.purpose, tc.fhirUser
			if tc.care {
				req.Care = []authz.CareRelationship{{Patient: "pat-0001", Role: "attending", Source: "store"}}
			}
			d, err := tc.e.EvaluateForeign(t.Context(), req, envoyDoc(t, "GET", "/fhir/Patient/pat-0001", doctor, nil, nil))
			if err != nil {
				t.Fatal(err)
			}
			if d.Reason != tc.reason || d.Allow != (tc.reason == reasonOPAEnvoyAllowed) {
				t.Fatalf("allow=%v reason=%q, want %q", d.Allow, d.Reason, tc.reason)
			}
			if d.Allow && !slices.Equal(d.Plan.Enforce.PermittedLabels, tc.labels) {
				t.Errorf("permitted labels %v, want %v", d.Plan.Enforce.PermittedLabels, tc.labels)
			}
		})
	}
}
