package server_test

import (
	"testing"

	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// TestUpstreamHeaders: through the real Envoy, the upstream receives
// phigate's identity headers but neither the break-glass reason (free
// text a clinician typed, which may name a patient and would land in the
// upstream's logs) nor, unless upstream.forward_authorization, the
// client's bearer token.
func TestUpstreamHeaders(t *testing.T) {
	emergency := stacktest.Physician(1)
	emergency.AMR = []string{"pwd", "otp"}
	reason := map[string]string{"x-break-glass": "unconscious, brought in by daughter"}
	for _, forward := range []bool{false, true} {
		name := "default"
		if forward {
			name = "forward_authorization"
		}
		t.Run(name, func(t *testing.T) {
			s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) { c.Upstream.ForwardAuthorization = forward }})
			doc := s.Token(emergency)
			for _, c := range []struct {
				path    string
				headers map[string]string
				bg      bool
			}{
				{"/fhir/Patient/pat-0001", nil, false},
				{"/fhir/Patient/pat-0005", reason, true}, // outside the care team: break-glass
			} {
				s.Up.Reset()
				if r := s.Do("GET", c.path, doc, c.headers, nil); r.Status != 200 {
					t.Fatalf("GET %s: status %d", c.path, r.Status)
				}
				seen := s.Up.Requests()
				if len(seen) != 1 {
					t.Fatalf("upstream saw %d requests", len(seen))
				}
				h := seen[0].Headers
				if h.Get("x-phigate-user") == "" {
					t.Errorf("%s: no x-phigate-user upstream", c.path)
				}
				if got := h.Get("x-break-glass"); got != "" {
					t.Errorf("%s: upstream received the break-glass reason %q", c.path, got)
				}
				if c.bg && h.Get("x-phigate-break-glass") != "true" {
					t.Errorf("%s: upstream not told of the break-glass", c.path)
				}
				if got := h.Get("authorization") != ""; got != forward {
					t.Errorf("%s: upstream received authorization = %v, want %v", c.path, got, forward)
				}
			}
		})
	}
}
