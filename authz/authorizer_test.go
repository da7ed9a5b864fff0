package authz

import (
	"context"
	"github.com/phigate/phigate/plan"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

// echoEvaluator allows authenticated callers and keeps the input it saw,
// standing in for the policy engine at the Evaluator seam.
type echoEvaluator struct{ seen *Request }

func (e *echoEvaluator) Evaluate(_ context.Context, req *Request) (Decision, error) {
	e.seen = req
	if !req.Identity.Authenticated {
		return Decision{Status: 401}, nil
	}
	return Decision{Allow: true}, nil
}

func TestAuthorizeIdentityAndPurpose(t *testing.T) {
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	k := newTestKey(t, "k1", jwa.RS256)
	writeJWKS(t, jwks, k)
	v := newVerifier(t, jwks, nil)
	now := time.Now()
	claims := func(mod map[string]any) string {
		c := baseClaims(now)
		for n, val := range mod {
			if val == nil {
				delete(c, n)
			} else {
				c[n] = val
			}
		}
		return "Bearer " + mint(t, k, c)
	}
	const spiffe = "spiffe://phigate.local/ns/billing/sa/exporter"
	services := ServiceAccounts{spiffe: {"billing-export"}}
	if err := services.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		path      string
		headers   map[string]string
		principal string
		status    int
		subject   string
		service   bool
		purpose   string
	}{
		{"bearer token", "/fhir/Patient/1", map[string]string{"authorization": claims(nil)}, "", 200, "user-1", false, "TREAT"},
		{"purpose header agrees", "/fhir/Patient/1", map[string]string{"authorization": claims(nil), "x-purpose-of-use": "TREAT"}, "", 200, "user-1", false, "TREAT"},
		{"purpose header disagrees", "/fhir/Patient/1", map[string]string{"authorization": claims(nil), "x-purpose-of-use": "HMARKT"}, "", 400, "", false, ""},
		{"purpose only in header", "/fhir/Patient/1", map[string]string{"authorization": claims(map[string]any{"purpose_of_use": nil}), "x-purpose-of-use": "HPAYMT"}, "", 200, "user-1", false, "HPAYMT"},
		{"unknown purpose in token", "/fhir/Patient/1", map[string]string{"authorization": claims(map[string]any{"purpose_of_use": "FUN"})}, "", 400, "", false, ""},
		{"token in query string", "/fhir/Patient/1?access_token=x", nil, "", 400, "", false, ""},
		{"expired token", "/fhir/Patient/1", map[string]string{"authorization": claims(map[string]any{"exp": now.Add(-time.Hour).Unix()})}, "", 401, "", false, ""},
		{"no credentials", "/fhir/Patient/1", nil, "", 401, "", false, ""},
		{"mTLS service account", "/fhir/Patient/1", nil, spiffe, 200, spiffe, true, ""},
		{"mTLS unknown principal", "/fhir/Patient/1", nil, "spiffe://phigate.local/ns/x/sa/y", 401, "", false, ""},
		{"bearer wins over mTLS and must verify", "/fhir/Patient/1", map[string]string{"authorization": "Bearer not.a.jwt"}, spiffe, 401, "", false, ""},
		{"bearer wins over mTLS", "/fhir/Patient/1", map[string]string{"authorization": claims(nil)}, spiffe, 200, "user-1", false, "TREAT"},
	}
	p := newTestParser(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := &echoEvaluator{}
			a := NewAuthorizer(Options{Verifier: v, Parser: p, Evaluator: ev, ServiceAccounts: services})
			h := map[string]string{}
			for k, v := range tc.headers {
				h[k] = v
			}
			req, d, _ := a.Authorize(t.Context(), &CheckInput{Method: "GET", Path: tc.path, Headers: h,
				Source: Peer{Address: "127.0.0.1:1", Principal: tc.principal}})
			if d.Status != tc.status {
				t.Fatalf("status = %d, want %d (reason %s)", d.Status, tc.status, d.Reason)
			}
			if tc.status != 200 {
				return
			}
			id := req.Identity
			if id.Subject != tc.subject || id.Service != tc.service || req.Purpose != tc.purpose {
				t.Fatalf("identity %+v purpose %q; want subject %q service %v purpose %q", id, req.Purpose, tc.subject, tc.service, tc.purpose)
			}
		})
	}
}

func TestServiceAccountsValidate(t *testing.T) {
	tests := []struct {
		name string
		s    ServiceAccounts
		ok   bool
	}{
		{"spiffe", ServiceAccounts{"spiffe://td/ns/a/sa/b": {"r"}}, true},
		{"subject DN", ServiceAccounts{"CN=exporter,O=Example": {"r"}}, true},
		{"no roles", ServiceAccounts{"spiffe://td/x": nil}, false},
		{"bad spiffe", ServiceAccounts{"spiffe:///x": {"r"}}, false},
		{"padded", ServiceAccounts{" CN=x": {"r"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.s.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// heldGrants is a GrantStore holding fixed grants for every caller.
type heldGrants []Grant

func (h heldGrants) Active(context.Context, string, time.Time) ([]Grant, error) {
	return append([]Grant(nil), h...), nil
}
func (heldGrants) Put(context.Context, string, Grant) error { return nil }

// The policy sees only the caller's grants for patients the request names:
// a grant opens one patient, so the others cannot change the decision.
func TestAuthorizeNarrowsGrantsToNamedPatients(t *testing.T) {
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	k := newTestKey(t, "k1", jwa.RS256)
	writeJWKS(t, jwks, k)
	v := newVerifier(t, jwks, nil)
	tok := "Bearer " + mint(t, k, baseClaims(time.Now()))
	exp := time.Now().Add(time.Hour).UnixNano()
	store := heldGrants{{Patient: "1", ExpiresNS: exp}, {Patient: "2", ExpiresNS: exp}, {Patient: "3", ExpiresNS: exp}}
	batch := `{"resourceType":"Bundle","type":"batch","entry":[` +
		`{"request":{"method":"GET","url":"Patient/1"}},{"request":{"method":"GET","url":"Observation?patient=3"}}]}`
	for _, tc := range []struct {
		name, method, path, body string
		want                     []string
	}{
		{"read", "GET", "/fhir/Patient/2", "", []string{"2"}},
		{"search by patient", "GET", "/fhir/Observation?patient=3", "", []string{"3"}},
		{"compartment", "GET", "/fhir/Patient/1/Condition", "", []string{"1"}},
		{"search over all patients", "GET", "/fhir/Observation", "", nil},
		{"other patient", "GET", "/fhir/Patient/9", "", nil},
		{"batch", "POST", "/fhir", batch, []string{"1", "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := &echoEvaluator{}
			a := NewAuthorizer(Options{Verifier: v, Parser: newTestParser(t), Evaluator: ev, Grants: store})
			h := map[string]string{"authorization": tok}
			if tc.body != "" {
				h["content-type"] = "application/fhir+json"
			}
			_, d, err := a.Authorize(t.Context(), &CheckInput{Method: tc.method, Path: tc.path, Headers: h,
				Body: []byte(tc.body), Source: Peer{Address: "127.0.0.1:1"}})
			if err != nil || ev.seen == nil {
				t.Fatalf("authorize: %v (status %d %s)", err, d.Status, d.Reason)
			}
			var got []string
			for _, g := range ev.seen.BreakGlass.Grants {
				got = append(got, g.Patient)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("grants for %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRefusalNamesItsRule: a request refused before the policy carries,
// for the audit trail, the rule it broke, and nothing of its values.
func TestRefusalNamesItsRule(t *testing.T) {
	a := NewAuthorizer(Options{Parser: newTestParser(t), Evaluator: &echoEvaluator{}})
	for _, tc := range []struct {
		path, rule string
		status     int
	}{
		{`/fhir/Patient\pat-0001`, "request.ambiguous_request.backslash_in_the_request_target", 400},
		{"/admin/users/pat-0001", "request.no_route.path_outside_the_fhir_base_and_every_legacy_route", 404},
	} {
		_, d, _ := a.Authorize(t.Context(), &CheckInput{Method: "GET", Path: tc.path, Headers: map[string]string{}})
		if d.Status != tc.status || len(d.Audit.Rules) != 1 || d.Audit.Rules[0] != tc.rule {
			t.Errorf("%s: status %d rules %q, want %d [%s]", tc.path, d.Status, d.Audit.Rules, tc.status, tc.rule)
		}
		if strings.Contains(strings.Join(d.Audit.Rules, ""), "pat-0001") {
			t.Errorf("%s: the rule carries a request value: %q", tc.path, d.Audit.Rules)
		}
	}
}

type planEvaluator struct{ d Decision }

func (e planEvaluator) Evaluate(context.Context, *Request) (Decision, error) { return e.d, nil }

// TestUnfilterableFormat: an allowed request whose response must be
// filtered, asking for XML only, is refused with 406 (and recorded so);
// with JSON acceptable too, or with nothing to filter, it passes.
func TestUnfilterableFormat(t *testing.T) {
	filtered := Decision{Allow: true, Plan: plan.Plan{Enforce: &plan.Enforcement{Patients: []string{"1"}}}}
	cases := []struct {
		name   string
		d      Decision
		path   string
		accept string
		want   int
	}{
		{"_format=xml", filtered, "/fhir/Patient/1?_format=xml", "", 406},
		{"_format=application/fhir+xml", filtered, "/fhir/Patient/1?_format=application%2Ffhir%2Bxml", "", 406},
		{"Accept XML only", filtered, "/fhir/Patient/1", "application/fhir+xml", 406},
		{"Accept XML only, upper case", filtered, "/fhir/Patient/1", "Application/FHIR+XML", 406},
		{"Accept JSON only", filtered, "/fhir/Patient/1", "application/fhir+json", 200},
		{"Accept XML or JSON", filtered, "/fhir/Patient/1", "application/fhir+xml, application/fhir+json;q=0.5", 200},
		{"Accept XML or anything", filtered, "/fhir/Patient/1", "application/xml, */*;q=0.1", 200},
		{"_format=json", filtered, "/fhir/Patient/1?_format=json", "", 200},
		{"nothing to filter", Decision{Allow: true}, "/fhir/Patient/1?_format=xml", "", 200},
	}
	for _, c := range cases {
		a := NewAuthorizer(Options{Parser: newTestParser(t), Evaluator: planEvaluator{c.d}, Verifier: allowAll{}})
		h := map[string]string{"authorization": "Bearer x"}
		if c.accept != "" {
			h["accept"] = c.accept
		}
		_, d, _ := a.Authorize(t.Context(), &CheckInput{Method: "GET", Path: c.path, Headers: h})
		if d.Status != c.want {
			t.Errorf("%s: status %d, want %d", c.name, d.Status, c.want)
		}
		if c.want == 406 && (d.Reason != "format_not_filterable" || d.Allow) {
			t.Errorf("%s: decision %+v", c.name, d)
		}
	}
}

// allowAll verifies any token as a physician.
type allowAll struct{}

func (allowAll) Verify(context.Context, string) (Identity, error) {
	return Identity{Authenticated: true, Subject: "s", Roles: []string{"physician"}, Scopes: []Scope{}}, nil
}
