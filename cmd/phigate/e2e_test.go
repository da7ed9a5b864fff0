package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/envoy/envoytest"
)

// stack is the demo stack for one test: the legacy service, phigate
// in-process, and a real Envoy in front of both.
type stack struct {
	t       *testing.T
	keys    *demokeys.Keys
	up      *legacy
	phigate *server
	envoy   *envoytest.Envoy
	stop    context.CancelFunc
	stopped chan struct{}
}

type stackOptions struct {
	compress   bool
	maxBody    int
	mutate     func(*Config)
	phigateTLS *envoy.UpstreamTLS
}

func testConfig(t *testing.T, keys *demokeys.Keys) *Config {
	t.Helper()
	cfg := &Config{
		Listen: ListenConfig{GRPC: "127.0.0.1:0", Admin: "127.0.0.1:0"},
		JWT: authz.JWTConfig{
			Issuer: demokeys.DefaultIssuer, Audiences: []string{demokeys.DefaultAudience},
			JWKSFile: keys.JWKSPath(),
		},
	}
	cfg.Audit.Dir = t.TempDir()
	return cfg
}

func startStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, keys: keys, up: startLegacy(t), stopped: make(chan struct{})}
	cfg := testConfig(t, keys)
	// Writes are decided on the stored resource's owners, read from the
	// legacy service itself.
	cfg.Owners.Upstream = "http://" + s.up.addr
	if o.mutate != nil {
		o.mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.phigate, err = newServer(ctx, cfg, zap.NewNop())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { _ = s.phigate.run(ctx); close(s.stopped) }()
	t.Cleanup(s.stopPhigate)
	target := s.phigate.GRPCAddr
	if cfg.Listen.GRPC == "" {
		target = "unix://" + cfg.Listen.GRPCUnix
	}
	s.envoy = envoytest.Start(t, envoy.BootstrapConfig{
		Upstream: s.up.addr, Phigate: target, Compress: o.compress, MaxResponseBody: o.maxBody, PhigateTLS: o.phigateTLS,
	})
	return s
}

func (s *stack) stopPhigate() {
	s.stop()
	select {
	case <-s.stopped:
	case <-time.After(10 * time.Second):
		s.t.Error("phigate did not stop within 10s")
	}
}

func (s *stack) token(spec demokeys.TokenSpec) string {
	s.t.Helper()
	tok, err := s.keys.Mint(spec)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

func physician(n int) demokeys.TokenSpec {
	id := fmt.Sprintf("prac-%03d", n)
	return demokeys.TokenSpec{Subject: id, Roles: []string{"physician"}, FHIRUser: "Practitioner/" + id, Purpose: "TREAT"}
}

type response struct {
	status  int
	header  http.Header
	body    []byte
	outcome map[string]any
}

// doURL sends a GET with a bearer token and returns the status.
func doURL(t *testing.T, url, token string) int {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// getBody fetches url directly and returns its status and body.
func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func (s *stack) do(method, path, token string, headers map[string]string, body io.Reader) response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.envoy.URL(path), body)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: raw}
	if resp.StatusCode >= 400 {
		_ = json.Unmarshal(raw, &r.outcome)
	}
	return r
}

// isOutcome reports whether the body is a FHIR OperationOutcome that
// reveals nothing but a reference.
func isOutcome(r response) bool {
	if r.outcome["resourceType"] != "OperationOutcome" {
		return false
	}
	issues, _ := r.outcome["issue"].([]any)
	return len(issues) == 1
}

func TestEndToEndSpine(t *testing.T) {
	s := startStack(t, stackOptions{})
	good := s.token(physician(1))
	billing := s.token(demokeys.TokenSpec{Subject: "billing-1", Roles: []string{"billing"}, Purpose: "HPAYMT"})

	t.Run("allowed read reaches the legacy service with phigate's header", func(t *testing.T) {
		s.up.reset()
		r := s.do("GET", "/fhir/Patient/pat-0001", good, nil, nil)
		if r.status != 200 {
			t.Fatalf("status = %d, want 200; body %s", r.status, r.body)
		}
		seen := s.up.requests()
		if len(seen) != 1 || seen[0].path != "/fhir/Patient/pat-0001" {
			t.Fatalf("legacy service saw %+v, want exactly the one read", seen)
		}
		if seen[0].headers.Get(envoy.DecisionHeader) == "" {
			t.Errorf("legacy service request lacks %s; headers %v", envoy.DecisionHeader, seen[0].headers)
		}
		if r.header.Get(envoy.DecisionHeader) == "" && seen[0].headers.Get(envoy.DecisionHeader) == "" {
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
			s.up.reset()
			r := s.do(tc.method, tc.path, tc.token, nil, nil)
			if r.status != tc.status {
				t.Fatalf("status = %d, want %d; body %s", r.status, tc.status, r.body)
			}
			if !isOutcome(r) {
				t.Fatalf("body is not a minimal OperationOutcome: %s", r.body)
			}
			for _, leak := range []string{"pat-0001", "pat-0002", "care_team", "rbac", "policy", "billing-1"} {
				if strings.Contains(string(r.body), leak) {
					t.Errorf("denial body reveals %q: %s", leak, r.body)
				}
			}
			if seen := s.up.requests(); len(seen) != 0 {
				t.Fatalf("legacy service saw %d requests of a denied call", len(seen))
			}
		})
	}

	t.Run("fail closed with phigate stopped", func(t *testing.T) {
		s.stopPhigate()
		s.up.reset()
		r := s.do("GET", "/fhir/Patient/pat-0001", good, nil, nil)
		if r.status < 500 {
			t.Fatalf("status = %d with phigate down, want an error status", r.status)
		}
		if seen := s.up.requests(); len(seen) != 0 {
			t.Fatalf("legacy service saw %d requests with phigate down", len(seen))
		}
	})
}

// TestEndToEndUnixSocket runs the sidecar with phigate on a Unix socket
// only: the same allow and deny answers, and fail closed when it stops.
func TestEndToEndUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "phigate.sock")
	s := startStack(t, stackOptions{mutate: func(c *Config) { c.Listen.GRPC, c.Listen.GRPCUnix = "", sock }})
	good := s.token(physician(1))
	for _, tc := range []struct {
		path  string
		token string
		want  int
	}{
		{"/fhir/Patient/pat-0001", good, 200},
		{"/fhir/Patient/pat-0002", good, 403},
		{"/fhir/Patient/pat-0001", "", 401},
	} {
		if r := s.do("GET", tc.path, tc.token, nil, nil); r.status != tc.want {
			t.Errorf("GET %s: status %d, want %d", tc.path, r.status, tc.want)
		}
	}
	s.stopPhigate()
	s.up.reset()
	if r := s.do("GET", "/fhir/Patient/pat-0001", good, nil, nil); r.status < 500 || len(s.up.requests()) != 0 {
		t.Fatalf("with phigate stopped: status %d, legacy saw %d requests", r.status, len(s.up.requests()))
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket %s left behind after shutdown", sock)
	}
}
