package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixedVerifier accepts any token as one physician.
type fixedVerifier struct{}

func (fixedVerifier) Verify(context.Context, string) (Identity, error) {
	return Identity{Authenticated: true, Subject: "doc-1", Roles: []string{"physician"}, Scopes: []Scope{}}, nil
}

// storedOwners is an OwnerResolver over a fixed table: a missing key is
// not found, a nil value an upstream failure.
type storedOwners map[string][]string

func (s storedOwners) Owners(_ context.Context, rt, id string) ([]string, error) {
	owners, ok := s[rt+"/"+id]
	switch {
	case !ok:
		return nil, &Error{Code: CodeNotFound, Detail: "no such resource"}
	case owners == nil:
		return nil, errors.New("upstream unavailable")
	}
	return owners, nil
}

// A write is authorized on the patients who own the resource it changes
// as well as those its new body names; a write whose owner cannot be
// read is refused.
func TestAuthorizeWritesOnOwners(t *testing.T) {
	crowd := make([]string, maxOwners+1)
	for i := range crowd {
		crowd[i] = fmt.Sprintf("m%03d", i)
	}
	owners := storedOwners{"Observation/ob": {"B"}, "Observation/broken": nil, "Condition/cb": {"B", "C"}, "Group/g": crowd}
	obsA := `{"resourceType":"Observation","id":"%s","subject":{"reference":"Patient/A"}}`
	jsonPatch := map[string]string{"content-type": "application/json-patch+json"}
	moveToA := `[{"op":"replace","path":"/subject/reference","value":"Patient/A"}]`
	txn := `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Condition/cb"}},` +
		`{"request":{"method":"GET","url":"Patient/D"}}]}`
	tests := []struct {
		name      string
		method    string
		path      string
		headers   map[string]string
		body      string
		resolver  OwnerResolver
		status    int
		patients  []string
		all       bool
		lookups   []string // resources whose owner read is recorded
		evaluated bool
	}{
		{name: "update moving a record to another patient", method: "PUT", path: "/fhir/Observation/ob", headers: jsonCT,
			body: fmt.Sprintf(obsA, "ob"), resolver: owners, status: 200, patients: []string{"A", "B"}, lookups: []string{"Observation/ob"}, evaluated: true},
		{name: "JSON Patch moving a record", method: "PATCH", path: "/fhir/Observation/ob", headers: jsonPatch, body: moveToA,
			resolver: owners, status: 200, patients: []string{"A", "B"}, lookups: []string{"Observation/ob"}, evaluated: true},
		{name: "delete", method: "DELETE", path: "/fhir/Observation/ob", resolver: owners, status: 200,
			patients: []string{"B"}, lookups: []string{"Observation/ob"}, evaluated: true},
		{name: "instance operation", method: "GET", path: "/fhir/Observation/ob/$meta", resolver: owners, status: 200,
			patients: []string{"B"}, lookups: []string{"Observation/ob"}, evaluated: true},
		{name: "update that creates", method: "PUT", path: "/fhir/Observation/new", headers: jsonCT, body: fmt.Sprintf(obsA, "new"),
			resolver: owners, status: 200, patients: []string{"A"}, lookups: []string{"Observation/new"}, evaluated: true},
		{name: "delete of a missing resource reads as all patients", method: "DELETE", path: "/fhir/Observation/gone",
			resolver: owners, status: 200, patients: []string{}, all: true, lookups: []string{"Observation/gone"}, evaluated: true},
		{name: "owner lookup fails", method: "PUT", path: "/fhir/Observation/broken", headers: jsonCT, body: fmt.Sprintf(obsA, "broken"),
			resolver: owners, status: 503, lookups: []string{"Observation/broken"}},
		{name: "a resource owned by a crowd reads as all patients", method: "DELETE", path: "/fhir/Group/g", resolver: owners, status: 200,
			patients: []string{}, all: true, lookups: []string{"Group/g"}, evaluated: true},
		{name: "no resolver configured", method: "DELETE", path: "/fhir/Observation/ob", status: 503},
		{name: "write to a type that is not patient data", method: "PUT", path: "/fhir/Practitioner/p1", headers: jsonCT,
			body: `{"resourceType":"Practitioner","id":"p1"}`, status: 200, patients: []string{}, evaluated: true},
		{name: "a Patient owns itself", method: "DELETE", path: "/fhir/Patient/A", status: 200, patients: []string{"A"}, evaluated: true},
		{name: "transaction entry", method: "POST", path: "/fhir", headers: jsonCT, body: txn, resolver: owners, status: 200,
			patients: []string{"B", "C", "D"}, lookups: []string{"Condition/cb"}, evaluated: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, rec := &echoEvaluator{}, &keptRecorder{}
			a := NewAuthorizer(Options{Verifier: fixedVerifier{}, Parser: newTestParser(t), Evaluator: ev, Recorder: rec, Owners: tc.resolver})
			h := map[string]string{"authorization": "Bearer t"}
			for k, v := range tc.headers {
				h[k] = v
			}
			_, d, _ := a.Authorize(t.Context(), &CheckInput{ID: "r1", Method: tc.method, Path: tc.path, Headers: h, Body: []byte(tc.body)})
			if d.Status != tc.status {
				t.Fatalf("status = %d, want %d (reason %s)", d.Status, tc.status, d.Reason)
			}
			if (ev.seen != nil) != tc.evaluated {
				t.Fatalf("evaluated = %v, want %v", ev.seen != nil, tc.evaluated)
			}
			if ev.seen != nil {
				if f := ev.seen.FHIR; !slices.Equal(f.Patients, tc.patients) || f.AllPatients != tc.all {
					t.Fatalf("policy saw patients %q all=%v, want %q all=%v", f.Patients, f.AllPatients, tc.patients, tc.all)
				}
			}
			var looked []string
			for i, r := range rec.reqs {
				if rec.ds[i].Reason == "owner-lookup" || strings.HasPrefix(rec.ds[i].Reason, "owner-lookup.") {
					if r.FHIR.Interaction != "read" || r.Identity.Subject != "doc-1" || r.ID != "r1" || r.Method != "GET" {
						t.Fatalf("owner lookup recorded as %+v", r)
					}
					if i == len(rec.reqs)-1 {
						t.Fatal("owner lookup recorded after the decision")
					}
					if len(r.FHIR.Patients) > maxOwners {
						t.Fatalf("owner lookup record lists %d patients", len(r.FHIR.Patients))
					}
					looked = append(looked, r.FHIR.ResourceType+"/"+r.FHIR.ID)
				}
			}
			if !slices.Equal(looked, tc.lookups) {
				t.Fatalf("owner lookups recorded %q, want %q", looked, tc.lookups)
			}
		})
	}
}

// A recorder that cannot keep the owner lookup stops the write.
type failingRecorder struct{}

func (failingRecorder) Record(context.Context, *Request, *Decision) error {
	return errors.New("disk full")
}

func TestAuthorizeOwnerLookupUnrecorded(t *testing.T) {
	ev := &echoEvaluator{}
	a := NewAuthorizer(Options{Verifier: fixedVerifier{}, Parser: newTestParser(t), Evaluator: ev, Recorder: failingRecorder{},
		Owners: storedOwners{"Observation/ob": {"B"}}})
	_, d, _ := a.Authorize(t.Context(), &CheckInput{Method: "DELETE", Path: "/fhir/Observation/ob", Headers: map[string]string{"authorization": "Bearer t"}})
	if d.Allow || ev.seen != nil {
		t.Fatalf("allowed %v, evaluated %v; want a denial before the policy", d.Allow, ev.seen != nil)
	}
}

// patientRefs is a hand-written extractor: every "Patient/<id>" token in
// the body.
func patientRefs(body []byte) ([]string, error) {
	if !strings.HasPrefix(string(body), "{") {
		return nil, errors.New("not JSON")
	}
	var ids []string
	for _, f := range strings.FieldsFunc(string(body), func(r rune) bool { return r == '"' }) {
		if id, ok := strings.CutPrefix(f, "Patient/"); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func TestUpstreamOwners(t *testing.T) {
	// The handler may still run after the client gave up (the slow case),
	// so what it saw is read under a lock.
	var (
		mu                   sync.Mutex
		seenAccept, seenPath string
	)
	seen := func() (string, string) {
		mu.Lock()
		defer mu.Unlock()
		return seenAccept, seenPath
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seenAccept, seenPath = r.Header.Get("accept"), r.URL.Path
		mu.Unlock()
		switch strings.TrimPrefix(r.URL.Path, "/fhir/Observation/") {
		case "ob":
			fmt.Fprint(w, `{"resourceType":"Observation","id":"ob","subject":{"reference":"Patient/B"}}`)
		case "gone":
			w.WriteHeader(http.StatusGone)
		case "missing":
			w.WriteHeader(http.StatusNotFound)
		case "broken":
			w.WriteHeader(http.StatusInternalServerError)
		case "slow":
			time.Sleep(300 * time.Millisecond)
			fmt.Fprint(w, `{"resourceType":"Observation","id":"slow"}`)
		case "huge":
			fmt.Fprint(w, `{"resourceType":"Observation","id":"huge","note":"`+strings.Repeat("x", 5000)+`"}`)
		case "swapped":
			fmt.Fprint(w, `{"resourceType":"Observation","id":"someone-else","subject":{"reference":"Patient/Z"}}`)
		case "garbage":
			fmt.Fprint(w, `<html>`)
		case "moved":
			http.Redirect(w, r, "/fhir/Observation/ob", http.StatusFound)
		}
	}))
	t.Cleanup(up.Close)
	o, err := NewUpstreamOwners(OwnerConfig{Upstream: up.URL, Timeout: 100 * time.Millisecond, MaxBody: 1024}, "/fhir", patientRefs)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id     string
		owners []string
		code   Code
	}{
		{"ob", []string{"B"}, ""},
		{"missing", nil, CodeNotFound},
		{"gone", nil, CodeNotFound},
		{"broken", nil, CodeOwnerUnresolved},
		{"slow", nil, CodeOwnerUnresolved},
		{"huge", nil, CodeOwnerUnresolved},
		{"swapped", nil, CodeOwnerUnresolved},
		{"garbage", nil, CodeOwnerUnresolved},
		{"moved", nil, CodeOwnerUnresolved},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			got, err := o.Owners(t.Context(), "Observation", tc.id)
			if CodeOf(err) != tc.code {
				t.Fatalf("err = %v, want code %q", err, tc.code)
			}
			if !slices.Equal(got, tc.owners) {
				t.Fatalf("owners %q, want %q", got, tc.owners)
			}
			if err != nil && (strings.Contains(err.Error(), "Patient/") || strings.Contains(err.Error(), tc.id)) {
				t.Fatalf("error %q carries a request or resource value", err)
			}
			if accept, path := seen(); accept != "application/fhir+json" || path != "/fhir/Observation/"+tc.id {
				t.Fatalf("upstream saw accept %q path %q", accept, path)
			}
		})
	}
	if _, err := o.Owners(t.Context(), "Observation", "a/b"); CodeOf(err) != CodeOwnerUnresolved {
		t.Fatalf("invalid id: err = %v", err)
	}
}

func TestOwnerConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   OwnerConfig
		field string
	}{
		{"disabled", OwnerConfig{}, ""},
		{"upstream", OwnerConfig{Upstream: "http://127.0.0.1:8080"}, ""},
		{"not a URL", OwnerConfig{Upstream: "127.0.0.1:8080"}, "owners.upstream"},
		{"with a path", OwnerConfig{Upstream: "http://h/x"}, "owners.upstream"},
		{"with a query", OwnerConfig{Upstream: "http://h?x=1"}, "owners.upstream"},
		{"negative timeout", OwnerConfig{Upstream: "http://h", Timeout: -1}, "owners.timeout"},
		{"negative body", OwnerConfig{Upstream: "http://h", MaxBody: -1}, "owners.max_body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil || tc.cfg.Timeout != DefaultOwnerTimeout || tc.cfg.MaxBody != DefaultOwnerMaxBody {
					t.Fatalf("err %v cfg %+v", err, tc.cfg)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
				t.Fatalf("err = %v, want it to start with %s", err, tc.field)
			}
		})
	}
}

// Patch bodies name patients in their values; conditional writes are
// searches, If-None-Exist included.
func TestParseWriteBodiesAndConditions(t *testing.T) {
	jsonPatch := map[string]string{"content-type": "application/json-patch+json"}
	fhirPatch := map[string]string{"content-type": "application/fhir+json"}
	tests := []struct {
		name     string
		method   string
		path     string
		headers  map[string]string
		body     string
		code     Code
		patients []string
		all      bool
	}{
		{name: "JSON Patch value reference", method: "PATCH", path: "/fhir/Observation/o1", headers: jsonPatch,
			body: `[{"op":"replace","path":"/subject/reference","value":"Patient/A"}]`, patients: []string{"A"}},
		{name: "JSON Patch object value", method: "PATCH", path: "/fhir/Observation/o1", headers: jsonPatch,
			body: `[{"op":"add","path":"/performer/-","value":{"reference":"Patient/B"}},{"op":"test","path":"/status","value":"final"}]`, patients: []string{"B"}},
		{name: "JSON Patch conditional reference", method: "PATCH", path: "/fhir/Observation/o1", headers: jsonPatch,
			body: `[{"op":"replace","path":"/subject/reference","value":"Patient?identifier=x"}]`, patients: []string{}, all: true},
		{name: "JSON Patch as application/json", method: "PATCH", path: "/fhir/Observation/o1", headers: map[string]string{"content-type": "application/json"},
			body: `[{"op":"replace","path":"/subject","value":{"reference":"Patient/A"}}]`, patients: []string{"A"}},
		{name: "FHIRPath Patch", method: "PATCH", path: "/fhir/Observation/o1", headers: fhirPatch,
			body: `{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"replace"},` +
				`{"name":"path","valueString":"Observation.subject"},{"name":"value","valueReference":{"reference":"Patient/A"}}]}]}`, patients: []string{"A"}},
		{name: "FHIRPath Patch string value", method: "PATCH", path: "/fhir/Observation/o1", headers: fhirPatch,
			body: `{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"replace"},` +
				`{"name":"path","valueString":"Observation.subject.reference"},{"name":"value","valueString":"Patient/C"}]}]}`, patients: []string{"C"}},
		{name: "JSON Patch that is not an array", method: "PATCH", path: "/fhir/Observation/o1", headers: jsonPatch, body: `{"op":"x"}`, code: CodeAmbiguous},
		{name: "JSON Patch operation without op", method: "PATCH", path: "/fhir/Observation/o1", headers: jsonPatch, body: `[{"path":"/x"}]`, code: CodeAmbiguous},
		{name: "JSON Patch unknown op", method: "PATCH", path: "/fhir/Observation/o1", headers: jsonPatch, body: `[{"op":"merge","path":"/x"}]`, code: CodeAmbiguous},
		{name: "FHIRPath Patch that is not Parameters", method: "PATCH", path: "/fhir/Observation/o1", headers: fhirPatch,
			body: `{"resourceType":"Observation","id":"o1"}`, code: CodeAmbiguous},
		{name: "unparseable patch", method: "PATCH", path: "/fhir/Observation/o1", headers: jsonPatch, body: `[{"op":`, code: CodeAmbiguous},
		{name: "conditional create pinned", method: "POST", path: "/fhir/Observation",
			headers: map[string]string{"content-type": "application/fhir+json", "if-none-exist": "patient=B&code=x"},
			body:    `{"resourceType":"Observation","subject":{"reference":"Patient/A"}}`, patients: []string{"A", "B"}},
		{name: "conditional create unpinned", method: "POST", path: "/fhir/Observation",
			headers: map[string]string{"content-type": "application/fhir+json", "if-none-exist": "identifier=x"},
			body:    `{"resourceType":"Observation","subject":{"reference":"Patient/A"}}`, patients: []string{"A"}, all: true},
		{name: "conditional create with a chained criterion", method: "POST", path: "/fhir/Observation",
			headers: map[string]string{"content-type": "application/fhir+json", "if-none-exist": "patient._id=B"},
			body:    `{"resourceType":"Observation","subject":{"reference":"Patient/A"}}`, patients: []string{"A", "B"}, all: true},
		{name: "conditional create with a bad criterion", method: "POST", path: "/fhir/Observation",
			headers: map[string]string{"content-type": "application/fhir+json", "if-none-exist": "patient=1;patient=2"},
			body:    `{"resourceType":"Observation"}`, code: CodeAmbiguous},
		{name: "conditional update unpinned", method: "PUT", path: "/fhir/Observation?identifier=x", headers: jsonCT,
			body: `{"resourceType":"Observation","subject":{"reference":"Patient/A"}}`, patients: []string{"A"}, all: true},
		{name: "conditional patch pinned", method: "PATCH", path: "/fhir/Observation?patient=B", headers: jsonPatch,
			body: `[{"op":"replace","path":"/subject/reference","value":"Patient/A"}]`, patients: []string{"A", "B"}},
		{name: "conditional delete unpinned", method: "DELETE", path: "/fhir/Observation?code=x", patients: []string{}, all: true},
		{name: "transaction entry ifNoneExist", method: "POST", path: "/fhir", headers: jsonCT,
			body: `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Observation"},` +
				`"request":{"method":"POST","url":"Observation","ifNoneExist":"patient=B"}}]}`, patients: []string{"B"}},
		{name: "transaction entry ifNoneExist unpinned", method: "POST", path: "/fhir", headers: jsonCT,
			body: `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Observation"},` +
				`"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=x"}}]}`, patients: []string{}, all: true},
	}
	p := newTestParser(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := p.Parse(&CheckInput{Method: tc.method, Path: tc.path, Headers: tc.headers, Body: []byte(tc.body)})
			if got := CodeOf(err); got != tc.code {
				t.Fatalf("code = %q, want %q (err %v)", got, tc.code, err)
			}
			if err != nil {
				return
			}
			if f := req.FHIR; !slices.Equal(f.Patients, tc.patients) || f.AllPatients != tc.all {
				t.Fatalf("patients %q all=%v, want %q all=%v", f.Patients, f.AllPatients, tc.patients, tc.all)
			}
		})
	}
}
