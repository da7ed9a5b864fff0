package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

func TestEndToEndSpine(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	good := s.Token(stacktest.Physician(1))
	billing := s.Token(demokeys.TokenSpec{Subject: "billing-1", Roles: []string{"billing"}, Purpose: "HPAYMT"})

	t.Run("allowed read reaches the legacy service with phigate's header", func(t *testing.T) {
		s.Up.Reset()
		r := s.Do("GET", "/fhir/Patient/pat-0001", good, nil, nil)
		if r.Status != 200 {
			t.Fatalf("status = %d, want 200; body %s", r.Status, r.Body)
		}
		seen := s.Up.Requests()
		if len(seen) != 1 || seen[0].Path != "/fhir/Patient/pat-0001" {
			t.Fatalf("legacy service saw %+v, want exactly the one read", seen)
		}
		if seen[0].Headers.Get(envoy.DecisionHeader) == "" {
			t.Errorf("legacy service request lacks %s; headers %v", envoy.DecisionHeader, seen[0].Headers)
		}
		if r.Header.Get(envoy.DecisionHeader) == "" && seen[0].Headers.Get(envoy.DecisionHeader) == "" {
			t.Error("no decision id anywhere")
		}
	})

	denials := []struct {
		name   string
		method string
		path   string
		token  string
		status int
	}{
		{"no token", "GET", "/fhir/Patient/pat-0001", "", 401},
		{"garbage token", "GET", "/fhir/Patient/pat-0001", "not.a.jwt", 401},
		{"wrong role for the interaction", "DELETE", "/fhir/Patient/pat-0001", billing, 403},
		{"patient outside the care team", "GET", "/fhir/Patient/pat-0002", good, 403},
		{"encoded slash", "GET", "/fhir/Patient%2Fpat-0001", good, 400},
		{"dot segment", "GET", "/fhir/Observation/../Patient/pat-0002", good, 400},
	}
	for _, tc := range denials {
		t.Run(tc.name, func(t *testing.T) {
			s.Up.Reset()
			r := s.Do(tc.method, tc.path, tc.token, nil, nil)
			if r.Status != tc.status {
				t.Fatalf("status = %d, want %d; body %s", r.Status, tc.status, r.Body)
			}
			if !stacktest.IsOutcome(r) {
				t.Fatalf("body is not a minimal OperationOutcome: %s", r.Body)
			}
			for _, leak := range []string{"pat-0001", "pat-0002", "care_team", "rbac", "policy", "billing-1"} {
				if strings.Contains(string(r.Body), leak) {
					t.Errorf("denial body reveals %q: %s", leak, r.Body)
				}
			}
			if seen := s.Up.Requests(); len(seen) != 0 {
				t.Fatalf("legacy service saw %d requests of a denied call", len(seen))
			}
		})
	}

	t.Run("fail closed with phigate stopped", func(t *testing.T) {
		s.StopPhigate()
		s.Up.Reset()
		r := s.Do("GET", "/fhir/Patient/pat-0001", good, nil, nil)
		if r.Status < 500 {
			t.Fatalf("status = %d with phigate down, want an error status", r.Status)
		}
		if seen := s.Up.Requests(); len(seen) != 0 {
			t.Fatalf("legacy service saw %d requests with phigate down", len(seen))
		}
	})
}

// TestEndToEndUnixSocket runs the sidecar with phigate on a Unix socket
// only: the same allow and deny answers, and fail closed when it stops.
func TestEndToEndUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "phigate.sock")
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) { c.Listen.GRPC, c.Listen.GRPCUnix = "", sock }})
	good := s.Token(stacktest.Physician(1))
	for _, tc := range []struct {
		path  string
		token string
		want  int
	}{
		{"/fhir/Patient/pat-0001", good, 200},
		{"/fhir/Patient/pat-0002", good, 403},
		{"/fhir/Patient/pat-0001", "", 401},
	} {
		if r := s.Do("GET", tc.path, tc.token, nil, nil); r.Status != tc.want {
			t.Errorf("GET %s: status %d, want %d", tc.path, r.Status, tc.want)
		}
	}
	s.StopPhigate()
	s.Up.Reset()
	if r := s.Do("GET", "/fhir/Patient/pat-0001", good, nil, nil); r.Status < 500 || len(s.Up.Requests()) != 0 {
		t.Fatalf("with phigate stopped: status %d, legacy saw %d requests", r.Status, len(s.Up.Requests()))
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket %s left behind after shutdown", sock)
	}
}
