package main

import (
	"net/http"
	"testing"
	"time"
)

// TestClientEdges: through the real Envoy, a 401 carries the RFC 6750
// Bearer challenge, and an allowed response carries the decision id so
// support can find its audit record.
func TestClientEdges(t *testing.T) {
	s := startStack(t, stackOptions{})
	get := func(token string) *http.Response {
		t.Helper()
		req, err := http.NewRequest("GET", s.envoy.URL("/fhir/Patient/pat-0001"), nil)
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
	if r := get(""); r.StatusCode != 401 || r.Header.Get("www-authenticate") != `Bearer realm="phigate"` {
		t.Errorf("no token: %d %q", r.StatusCode, r.Header.Get("www-authenticate"))
	}
	if r := get("not-a-jwt"); r.StatusCode != 401 || r.Header.Get("www-authenticate") != `Bearer realm="phigate", error="invalid_token"` {
		t.Errorf("bad token: %d %q", r.StatusCode, r.Header.Get("www-authenticate"))
	}
	r := get(s.token(physician(1)))
	if r.StatusCode != 200 || len(r.Header.Get("x-phigate-decision-id")) < 8 {
		t.Errorf("allowed: %d, decision id %q", r.StatusCode, r.Header.Get("x-phigate-decision-id"))
	}
}
