package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestUnderscoreHeadersRefused: servers in the CGI, WSGI and PHP style read
// x_phigate_user as x-phigate-user, so a client could smuggle a header
// phigate owns past the policy beside the real one. Envoy must refuse the
// request (over HTTP/1 it closes the connection without an answer) before
// it reaches phigate or the upstream.
func TestUnderscoreHeadersRefused(t *testing.T) {
	s := startStack(t, stackOptions{})
	good := s.token(physician(1))
	for _, name := range []string{"x_phigate_user", "X_Phigate_Roles", "x_forwarded_for"} {
		t.Run(name, func(t *testing.T) {
			s.up.reset()
			req, err := http.NewRequest("GET", s.envoy.URL("/fhir/Patient/pat-0001"), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("authorization", "Bearer "+good)
			req.Header.Set(name, "admin")
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != 400 {
					t.Errorf("status = %d, want 400 or a closed connection", resp.StatusCode)
				}
			}
			for _, seen := range s.up.requests() {
				for k := range seen.headers {
					if strings.Contains(k, "_") {
						t.Errorf("upstream received header %q", k)
					}
				}
			}
			if n := len(s.up.requests()); n != 0 {
				t.Errorf("upstream saw %d requests, want 0", n)
			}
		})
	}
	t.Run("the same request without the header passes", func(t *testing.T) {
		if r := s.do("GET", "/fhir/Patient/pat-0001", good, nil, nil); r.status != 200 {
			t.Errorf("status = %d, want 200", r.status)
		}
	})
}
