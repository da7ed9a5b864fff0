package server_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/envoy/envoytest"
	"github.com/phigate/phigate/internal/stacktest"
)

// TestBootstrapNamesAndOutage, through the real Envoy: the upstream and
// phigate may be named by DNS (here localhost, as a Kubernetes service
// would be), and when phigate cannot be reached the client gets a 503
// with a minimal OperationOutcome rather than an empty reply.
func TestBootstrapNamesAndOutage(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	byName := func(addr string) string {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		return "localhost:" + port
	}
	get := func(e *envoytest.Envoy, path, token string) (int, []byte, http.Header) {
		t.Helper()
		req, err := http.NewRequest("GET", e.URL(path), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("authorization", "Bearer "+token)
		resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body, resp.Header
	}
	doc := s.Token(stacktest.Physician(1))

	t.Run("by name", func(t *testing.T) {
		e := envoytest.Start(t, envoy.BootstrapConfig{Upstream: byName(s.Up.Addr), Phigate: byName(s.Phigate.GRPCAddr())})
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body, _ := get(e, "/fhir/Patient/pat-0001", doc)
			if code == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("status %d body %.200s, want 200 once the names resolve", code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code, _, _ := get(e, "/fhir/Patient/pat-0002", doc); code != 403 {
			t.Errorf("another physician's patient: %d, want 403", code)
		}
	})

	t.Run("phigate unreachable", func(t *testing.T) {
		dead := envoytest.FreePort(t) // nothing listens there
		e := envoytest.Start(t, envoy.BootstrapConfig{Upstream: s.Up.Addr, Phigate: dead})
		s.Up.Reset()
		code, body, h := get(e, "/fhir/Patient/pat-0001", doc)
		var oo struct{ ResourceType string }
		if code != 503 || json.Unmarshal(body, &oo) != nil || oo.ResourceType != "OperationOutcome" ||
			h.Get("content-type") != "application/fhir+json" {
			t.Errorf("status %d, content type %q, body %.200s; want 503 with an OperationOutcome", code, h.Get("content-type"), body)
		}
		if n := len(s.Up.Requests()); n != 0 {
			t.Errorf("upstream saw %d requests while phigate was unreachable", n)
		}
	})
}
