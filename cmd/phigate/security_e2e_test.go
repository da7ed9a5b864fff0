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

// TestEmergencyPurposeNeedsBreakGlass: a physician whose token names no
// purpose sends X-Purpose-Of-Use: ETREAT. Without an activated break-glass
// the emergency purpose must open nothing: no PSY-labelled Condition, and
// nothing flagged as break-glass either.
func TestEmergencyPurposeNeedsBreakGlass(t *testing.T) {
	s := startStack(t, stackOptions{})
	spec := physician(1)
	spec.Purpose = ""
	doc := s.token(spec)
	psy := "cond-pat-0001-psy"

	t.Run("ETREAT header alone", func(t *testing.T) {
		r := s.do("GET", "/fhir/Condition/"+psy, doc, map[string]string{"x-purpose-of-use": "ETREAT"}, nil)
		if r.status != 403 || strings.Contains(string(r.body), "PSY") {
			t.Fatalf("status %d body %.200s, want 403 without the label", r.status, r.body)
		}
		r = s.do("GET", "/fhir/Condition?patient=pat-0001", doc, map[string]string{"x-purpose-of-use": "ETREAT"}, nil)
		if strings.Contains(string(r.body), psy) {
			t.Fatalf("search under ETREAT returned the PSY condition (status %d)", r.status)
		}
	})
	t.Run("ETREAT inside an activated break-glass", func(t *testing.T) {
		spec := spec
		spec.AMR = []string{"pwd", "otp"}
		mfa := s.token(spec)
		// Break-glass opens exactly one named patient.
		r := s.do("GET", "/fhir/Condition?patient=pat-0001", mfa, map[string]string{
			"x-purpose-of-use": "ETREAT", "x-break-glass": "unconscious in ED"}, nil)
		if r.status != 200 || !strings.Contains(string(r.body), psy) {
			t.Fatalf("status %d body %.200s, want 200 with the condition", r.status, r.body)
		}
	})
}
