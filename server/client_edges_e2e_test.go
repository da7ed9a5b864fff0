package server_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/phigate/phigate/internal/stacktest"
)

// TestClientEdges: through the real Envoy, a 401 carries the RFC 6750
// Bearer challenge, an allowed response carries the decision id so
// support can find its audit record, and a path that is neither FHIR nor
// a legacy route is a 404, not a 400.
func TestClientEdges(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	get := func(path, token string) *http.Response {
		t.Helper()
		req, err := http.NewRequest("GET", s.Envoy.URL(path), nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("authorization", "Bearer "+token)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	doc := s.Token(stacktest.Physician(1))
	if r := get("/fhir/Patient/pat-0001", doc); r.StatusCode != 200 || len(r.Header.Get("x-phigate-decision-id")) < 8 {
		t.Errorf("allowed: %d, decision id %q", r.StatusCode, r.Header.Get("x-phigate-decision-id"))
	}
	if r := get("/fhir/Patient/pat-0001", ""); r.StatusCode != 401 || r.Header.Get("www-authenticate") != `Bearer realm="phigate"` {
		t.Errorf("no token: %d %q", r.StatusCode, r.Header.Get("www-authenticate"))
	}
	if r := get("/fhir/Patient/pat-0001", "not-a-jwt"); r.StatusCode != 401 ||
		r.Header.Get("www-authenticate") != `Bearer realm="phigate", error="invalid_token"` {
		t.Errorf("bad token: %d %q", r.StatusCode, r.Header.Get("www-authenticate"))
	}
	s.Up.Reset()
	if r := get("/admin/users", doc); r.StatusCode != 404 || r.Header.Get("content-type") != "application/fhir+json" {
		t.Errorf("unknown route: %d %q, want 404 with an OperationOutcome", r.StatusCode, r.Header.Get("content-type"))
	}
	if n := len(s.Up.Requests()); n != 0 {
		t.Errorf("upstream saw %d requests for an unknown route", n)
	}
}
