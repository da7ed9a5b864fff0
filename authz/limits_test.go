package authz

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

// countingEvaluator counts the evaluations it is asked for and allows
// whatever the policy's public rule would (capabilities), standing in for
// the engine at the Evaluator seam.
type countingEvaluator struct{ calls int }

func (e *countingEvaluator) Evaluate(_ context.Context, req *Request) (Decision, error) {
	e.calls++
	if req.FHIR.Interaction == "capabilities" || req.Identity.Authenticated {
		return Decision{Allow: true}, nil
	}
	return Decision{Status: 401}, nil
}

// keptRecorder keeps every record it is handed.
type keptRecorder struct {
	reqs []*Request
	ds   []Decision
}

func (r *keptRecorder) Record(_ context.Context, req *Request, d *Decision) error {
	r.reqs = append(r.reqs, req)
	r.ds = append(r.ds, *d)
	return nil
}

// ids returns n distinct patient ids joined by commas.
func ids(prefix string, n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return strings.Join(s, ",")
}

// batchOf builds a batch bundle whose entries are GETs of the given urls.
func batchOf(urls ...string) string {
	var b strings.Builder
	b.WriteString(`{"resourceType":"Bundle","type":"batch","entry":[`)
	for i, u := range urls {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"request":{"method":"GET","url":%q}}`, u)
	}
	b.WriteString(`]}`)
	return b.String()
}

// An unauthenticated caller gets its 401 without the policy running, and
// the record of the refusal lists a bounded number of patients with the
// count of those left out.
func TestAuthorizeUnauthenticatedSkipsPolicy(t *testing.T) {
	var urls []string
	for i := range 5 {
		urls = append(urls, "Observation?patient="+ids(fmt.Sprintf("e%d-", i), 20))
	}
	tests := []struct {
		name      string
		method    string
		path      string
		headers   map[string]string
		body      string
		status    int
		evaluated bool
		listed    int // patients listed in the record
		withheld  int
	}{
		{name: "read without a token", method: "GET", path: "/fhir/Patient/1", status: 401, listed: 1},
		{name: "garbage token", method: "GET", path: "/fhir/Patient/1", headers: map[string]string{"authorization": "Bearer not.a.jwt"}, status: 401, listed: 1},
		{name: "search of many patients", method: "GET", path: "/fhir/Observation?patient=" + ids("p", 40), status: 401,
			listed: maxRefusedPatients, withheld: 40 - maxRefusedPatients},
		{name: "batch of many patients", method: "POST", path: "/fhir", headers: jsonCT, body: batchOf(urls...), status: 401,
			listed: maxRefusedPatients, withheld: 100 - maxRefusedPatients},
		{name: "malformed authorization header", method: "GET", path: "/fhir/Observation?patient=" + ids("p", 40),
			headers: map[string]string{"authorization": "Basic eDp5"}, status: 401, listed: maxRefusedPatients, withheld: 40 - maxRefusedPatients},
		{name: "search of all patients", method: "GET", path: "/fhir/Observation?code=x", status: 401},
		{name: "capabilities are public", method: "GET", path: "/fhir/metadata", status: 200, evaluated: true},
		{name: "capabilities with a query stay public", method: "GET", path: "/fhir/metadata?_format=json", status: 200, evaluated: true},
	}
	v := newVerifier(t, writeTestJWKS(t), nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, rec := &countingEvaluator{}, &keptRecorder{}
			a := NewAuthorizer(Options{Verifier: v, Parser: newTestParser(t), Evaluator: ev, Recorder: rec})
			h := map[string]string{}
			for k, v := range tc.headers {
				h[k] = v
			}
			_, d, _ := a.Authorize(t.Context(), &CheckInput{Method: tc.method, Path: tc.path, Headers: h, Body: []byte(tc.body)})
			if d.Status != tc.status {
				t.Fatalf("status = %d, want %d (reason %s)", d.Status, tc.status, d.Reason)
			}
			if got := ev.calls > 0; got != tc.evaluated {
				t.Fatalf("policy evaluated = %v, want %v", got, tc.evaluated)
			}
			if len(rec.reqs) != 1 {
				t.Fatalf("%d records, want 1", len(rec.reqs))
			}
			f := rec.reqs[0].FHIR
			if len(f.Patients) != tc.listed || f.PatientsWithheld != tc.withheld {
				t.Fatalf("record lists %d patients, %d withheld; want %d, %d", len(f.Patients), f.PatientsWithheld, tc.listed, tc.withheld)
			}
			for _, e := range f.Entries {
				if len(e.Patients) != 0 {
					t.Fatalf("entry lists patients %v in a refused unauthenticated record", e.Patients)
				}
			}
			// A malformed header is refused by the header check itself,
			// with its code as the reason, as before.
			if tc.status == 401 && !strings.HasPrefix(tc.headers["authorization"], "Basic") && d.Reason != "identity."+rec.reqs[0].Identity.Error {
				t.Fatalf("reason %q, want identity.%s", d.Reason, rec.reqs[0].Identity.Error)
			}
		})
	}
}

// Each cap refuses the request with its own code and status, and the
// error names the rule, never the value.
func TestParseLimits(t *testing.T) {
	p, err := NewRequestParser(RequestConfig{Base: "/fhir", MaxBody: 4096, MaxEntries: 3, MaxPatients: 5, MaxParamIDs: 4})
	if err != nil {
		t.Fatal(err)
	}
	big := `{"resourceType":"Observation","note":[{"text":"` + strings.Repeat("x", 5000) + `"}]}`
	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		body    string
		code    Code
		status  int
	}{
		{name: "ids in one value at the cap", path: "/fhir/Observation?patient=" + ids("p", 4)},
		{name: "ids in one value over the cap", path: "/fhir/Observation?patient=" + ids("p", 5), code: CodeOverLimit, status: 400},
		{name: "Patient _id over the cap", path: "/fhir/Patient?_id=" + ids("p", 5), code: CodeOverLimit, status: 400},
		{name: "unresolvable ids over the cap", path: "/fhir/Observation?subject=" + ids("Group/g", 5), code: CodeOverLimit, status: 400},
		{name: "patients across parameters over the cap", path: "/fhir/Observation?patient=" + ids("p", 3) + "&performer=" + ids("Patient/q", 3),
			code: CodeOverLimit, status: 400},
		{name: "patients across entries over the cap", method: "POST", path: "/fhir", headers: jsonCT,
			body: batchOf("Observation?patient="+ids("a", 3), "Observation?patient="+ids("b", 3)), code: CodeOverLimit, status: 400},
		{name: "entries at the cap", method: "POST", path: "/fhir", headers: jsonCT, body: batchOf("Patient/1", "Patient/2", "Patient/3")},
		{name: "entries over the cap", method: "POST", path: "/fhir", headers: jsonCT,
			body: batchOf("Patient/1", "Patient/2", "Patient/3", "Patient/4"), code: CodeOverLimit, status: 400},
		{name: "body over the limit", method: "POST", path: "/fhir/Observation", headers: jsonCT, body: big, code: CodeTooLarge, status: 413},
		{name: "declared length over the limit", method: "POST", path: "/fhir/Observation",
			headers: map[string]string{"content-type": "application/fhir+json", "content-length": "99999"}, code: CodeTooLarge, status: 413},
		{name: "create body naming too many patients", method: "POST", path: "/fhir/Observation", headers: jsonCT,
			body: `{"resourceType":"Observation","performer":[{"reference":"Patient/a0"},{"reference":"Patient/a1"},` +
				`{"reference":"Patient/a2"},{"reference":"Patient/a3"},{"reference":"Patient/a4"},{"reference":"Patient/a5"}]}`,
			code: CodeOverLimit, status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.method
			if m == "" {
				m = "GET"
			}
			_, err := p.Parse(&CheckInput{Method: m, Path: tc.path, Headers: tc.headers, Body: []byte(tc.body)})
			if got := CodeOf(err); got != tc.code {
				t.Fatalf("code = %q, want %q (err %v)", got, tc.code, err)
			}
			if err == nil {
				return
			}
			if got := StatusOf(err); got != tc.status {
				t.Fatalf("status = %d, want %d", got, tc.status)
			}
			for _, leak := range []string{"p0", "a0", "Patient/", "g0", "xxxx"} {
				if strings.Contains(err.Error(), leak) {
					t.Fatalf("error %q carries a request value", err)
				}
			}
		})
	}
}

// The request that poisoned the audit trail: an unauthenticated batch of
// ten searches naming 140k patients. It is refused by the caps alone, and
// cheaply.
func TestParseRefusesThePoisonBatch(t *testing.T) {
	var urls []string
	for i := range 10 {
		urls = append(urls, "Observation?patient="+ids(fmt.Sprintf("q%d", i), 14000))
	}
	body := batchOf(urls...)
	if len(body) > DefaultMaxBody {
		t.Fatalf("test body of %d bytes is over the default limit", len(body))
	}
	_, err := newTestParser(t).Parse(&CheckInput{Method: "POST", Path: "/fhir", Headers: jsonCT, Body: []byte(body)})
	if CodeOf(err) != CodeOverLimit {
		t.Fatalf("err = %v, want %s", err, CodeOverLimit)
	}
}

func writeTestJWKS(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, newTestKey(t, "k1", jwa.RS256))
	return path
}

func TestRequestConfigValidateLimits(t *testing.T) {
	tests := []struct {
		name  string
		cfg   RequestConfig
		field string
	}{
		{"negative patients", RequestConfig{MaxPatients: -1}, "request.max_patients"},
		{"negative ids", RequestConfig{MaxParamIDs: -1}, "request.max_param_ids"},
		{"negative entries", RequestConfig{MaxEntries: -1}, "request.max_entries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.field) {
				t.Fatalf("err = %v, want it to start with %s", err, tc.field)
			}
		})
	}
	var c RequestConfig
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.MaxPatients != DefaultMaxPatients || c.MaxParamIDs != DefaultMaxParamIDs || c.MaxEntries != DefaultMaxEntries {
		t.Fatalf("defaults not filled: %+v", c)
	}
}
