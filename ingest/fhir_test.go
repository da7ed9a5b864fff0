package ingest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/store"
)

const testToken = "0123456789abcdef0123456789abcdef"

func newFHIR(t *testing.T) (*FHIR, *store.Memory, *recorder, *httptest.Server) {
	t.Helper()
	cfg := Config{}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	st := store.NewMemory(0)
	t.Cleanup(func() { _ = st.Close() })
	rec := &recorder{}
	h := NewFHIR(st, rec, cfg.FHIR, []byte(testToken), zap.NewNop(), NewMetrics(nil))
	h.now = func() time.Time { return day.Add(48 * time.Hour) }
	srv := httptest.NewServer(h.Handler())
	t.Cleanup(srv.Close)
	return h, st, rec, srv
}

func put(t *testing.T, srv *httptest.Server, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("PUT", srv.URL+path, strings.NewReader(body))
	req.Header.Set("content-type", "application/fhir+json")
	if token != "" {
		req.Header.Set("authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var oo map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&oo)
	return resp.StatusCode, oo
}

func relatedAt(t *testing.T, st *store.Memory, prac string, at time.Time) []store.Relationship {
	t.Helper()
	rs, err := st.Relationships(t.Context(), prac, at)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func careTeam(version, updated, status, members string) string {
	return `{"resourceType":"CareTeam","id":"ct1","meta":{"versionId":"` + version + `","lastUpdated":"` + updated + `"},` +
		`"status":"` + status + `","subject":{"reference":"Patient/pat-0100"},"period":{"start":"2026-12-04T01:00:00Z"},` +
		`"participant":[` + members + `]}`
}

// TestFHIRCareTeam: a CareTeam's members are related to its subject;
// a new version replaces them; the same version again, or an older one,
// changes nothing; bad input is 400/422 and changes nothing; no token is
// 401.
func TestFHIRCareTeam(t *testing.T) {
	_, st, rec, srv := newFHIR(t)
	x := `{"member":{"reference":"Practitioner/prac-001"},"role":[{"coding":[{"code":"nurse"}]}]}`
	y := `{"member":{"reference":"Practitioner/prac-002"}},{"member":{"reference":"Organization/o1"}}`
	at := day.Add(3 * time.Hour)
	if code, _ := put(t, srv, "/fhir/CareTeam/ct1", testToken, careTeam("1", "2026-12-04T02:00:00Z", "active", x)); code != http.StatusCreated {
		t.Fatalf("first version: %d, want 201", code)
	}
	if rs := relatedAt(t, st, "Practitioner/prac-001", at); len(rs) != 1 || rs[0].Role != "nurse" || rs[0].Source != SourceCareTeam || rs[0].Patient != "pat-0100" {
		t.Fatalf("relationships %+v", rs)
	}
	if code, _ := put(t, srv, "/fhir/CareTeam/ct1", testToken, careTeam("2", "2026-12-04T04:00:00Z", "active", y)); code != http.StatusOK {
		t.Fatalf("second version: %d", code)
	}
	later := day.Add(5 * time.Hour)
	if len(relatedAt(t, st, "Practitioner/prac-001", later)) != 0 || len(relatedAt(t, st, "Practitioner/prac-002", later)) != 1 {
		t.Fatal("the second version did not replace the members")
	}
	for _, v := range []string{careTeam("1", "2026-12-04T02:00:00Z", "active", x), careTeam("0", "2026-12-04T01:30:00Z", "active", x)} {
		if code, _ := put(t, srv, "/fhir/CareTeam/ct1", testToken, v); code != http.StatusOK {
			t.Fatalf("old version: %d", code)
		}
		if len(relatedAt(t, st, "Practitioner/prac-001", later)) != 0 {
			t.Fatal("an old version brought back a replaced member")
		}
	}
	if o := rec.last().Outcome; o != audit.IngestStale {
		t.Fatalf("older version recorded as %s", o)
	}
	n := len(rec.evs)
	if code, _ := put(t, srv, "/fhir/CareTeam/ct1", "", careTeam("3", "2026-12-04T06:00:00Z", "inactive", y)); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := put(t, srv, "/fhir/CareTeam/ct1", "wrong-token-wrong-token-wrong-token", careTeam("3", "2026-12-04T06:00:00Z", "inactive", y)); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
	for name, c := range map[string]struct {
		path, body string
		want       int
	}{
		"not JSON":          {"/fhir/CareTeam/ct1", "{", 400},
		"wrong type":        {"/fhir/CareTeam/ct1", `{"resourceType":"Patient","id":"ct1"}`, 400},
		"id mismatch":       {"/fhir/CareTeam/other", careTeam("3", "2026-12-04T06:00:00Z", "inactive", y), 422},
		"no subject":        {"/fhir/CareTeam/ct1", `{"resourceType":"CareTeam","id":"ct1","status":"active"}`, 422},
		"bad status":        {"/fhir/CareTeam/ct1", careTeam("3", "2026-12-04T06:00:00Z", "finished", y), 422},
		"bad member":        {"/fhir/CareTeam/ct1", careTeam("3", "2026-12-04T06:00:00Z", "active", `{"member":{"reference":"Practitioner/a b"}}`), 422},
		"bad lastUpdated":   {"/fhir/CareTeam/ct1", careTeam("3", "yesterday", "active", y), 422},
		"trailing document": {"/fhir/CareTeam/ct1", careTeam("3", "2026-12-04T06:00:00Z", "inactive", y) + "{}", 400},
		"duplicate key":     {"/fhir/CareTeam/ct1", strings.Replace(careTeam("3", "2026-12-04T06:00:00Z", "inactive", y), `"status"`, `"Status":"active","status"`, 1), 400},
		"a scalar":          {"/fhir/CareTeam/ct1", `"CareTeam"`, 400},
	} {
		code, oo := put(t, srv, c.path, testToken, c.body)
		if code != c.want || oo["resourceType"] != "OperationOutcome" {
			t.Errorf("%s: %d %v, want %d with an OperationOutcome", name, code, oo, c.want)
		}
		if strings.Contains(oo["issue"].([]any)[0].(map[string]any)["diagnostics"].(string), "pat-0100") {
			t.Errorf("%s: the answer names the patient", name)
		}
	}
	if len(relatedAt(t, st, "Practitioner/prac-002", later)) != 1 {
		t.Fatal("a refused resource changed the relationships")
	}
	if got := len(rec.evs) - n; got != 10 {
		t.Fatalf("%d refusals recorded, want 10 (unauthenticated calls are not)", got)
	}
	// Inactive ends the team at its time.
	if code, _ := put(t, srv, "/fhir/CareTeam/ct1", testToken, careTeam("3", "2026-12-04T06:00:00Z", "inactive", y)); code != http.StatusOK {
		t.Fatalf("inactive: %d", code)
	}
	if len(relatedAt(t, st, "Practitioner/prac-002", day.Add(7*time.Hour))) != 0 || len(relatedAt(t, st, "Practitioner/prac-002", later)) != 1 {
		t.Fatal("inactive did not end the team at its lastUpdated")
	}
}

// TestFHIREncounter: participants of an Encounter are related with the
// ADT roles; finished ends them after the grace; cancelled voids them.
func TestFHIREncounter(t *testing.T) {
	_, st, _, srv := newFHIR(t)
	enc := func(v, status, end string) string {
		p := `"period":{"start":"2026-12-04T01:00:00Z"` + end + `}`
		return `{"resourceType":"Encounter","id":"e1","meta":{"versionId":"` + v + `"},"status":"` + status + `","subject":{"reference":"Patient/pat-0100"},` + p +
			`,"participant":[{"type":[{"coding":[{"code":"ATND"}]}],"individual":{"reference":"Practitioner/prac-001"}}]}`
	}
	if code, _ := put(t, srv, "/fhir/Encounter/e1", testToken, enc("1", "in-progress", "")); code != http.StatusCreated {
		t.Fatalf("in-progress: %d", code)
	}
	if rs := relatedAt(t, st, "Practitioner/prac-001", day.Add(2*time.Hour)); len(rs) != 1 || rs[0].Role != "attending" || rs[0].Source != SourceEncounter {
		t.Fatalf("relationships %+v", rs)
	}
	if code, _ := put(t, srv, "/fhir/Encounter/e1", testToken, enc("2", "finished", `,"end":"2026-12-04T05:00:00Z"`)); code != http.StatusOK {
		t.Fatalf("finished: %d", code)
	}
	if len(relatedAt(t, st, "Practitioner/prac-001", day.Add(8*time.Hour+59*time.Minute))) != 1 || len(relatedAt(t, st, "Practitioner/prac-001", day.Add(9*time.Hour+time.Minute))) != 0 {
		t.Fatal("finished: not ended at end + 4h")
	}
	if code, _ := put(t, srv, "/fhir/Encounter/e1", testToken, enc("3", "cancelled", "")); code != http.StatusOK {
		t.Fatalf("cancelled: %d", code)
	}
	if len(relatedAt(t, st, "Practitioner/prac-001", day.Add(2*time.Hour))) != 0 {
		t.Fatal("cancelled: the encounter's participant is still related")
	}
}

func TestCheckJSON(t *testing.T) {
	for in, ok := range map[string]bool{
		`{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`: true,
		`{"a":1,"A":2}`:         false,
		`{"a":{"b":1,"b":2}}`:   false,
		`{"a":[{"b":1,"b":2}]}`: false,
		`{"a":1} {"b":2}`:       false,
		`{"a":1`:                false,
		strings.Repeat("[", 70) + strings.Repeat("]", 70): false,
	} {
		if err := checkJSON([]byte(in)); (err == nil) != ok {
			t.Errorf("checkJSON(%.40q) = %v, want ok %v", in, err, ok)
		}
	}
}
