// Package stacktest runs phigate between a real Envoy and the demo's
// legacy FHIR service, for the end-to-end tests of the server and of the
// commands that read what it wrote. It is imported by tests only, so the
// production binary never carries the demo service.
package stacktest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/envoy/envoytest"
	regolib "github.com/phigate/phigate/rego"
	"github.com/phigate/phigate/server"
)

// Stack is the demo stack for one test: the legacy service, phigate
// in-process, and a real Envoy in front of both.
type Stack struct {
	t       *testing.T
	Keys    *demokeys.Keys
	Up      *Legacy
	Phigate *server.Server
	Envoy   *envoytest.Envoy
	stop    context.CancelFunc
	stopped chan struct{}
}

// Options shape one Stack: Mutate edits the configuration before it is
// validated.
type Options struct {
	Compress   bool
	MaxBody    int
	Mutate     func(*server.Config)
	PhigateTLS *envoy.UpstreamTLS
	// ListenTLS puts TLS (mTLS with a client CA) on Envoy's listener;
	// Do then needs a client that trusts it, so tests dial themselves.
	ListenTLS *envoy.DownstreamTLS
	// Logger is phigate's operational log; nil discards it.
	Logger *zap.Logger
	// LocalRateLimit puts Envoy's first wall in front of phigate.
	LocalRateLimit *envoy.LocalRateLimit
	// Keys are the token keys phigate trusts; nil makes new ones. Stacks
	// that share them accept each other's tokens, as a fleet's replicas do.
	Keys *demokeys.Keys
}

// ServerConfig is a loopback configuration that trusts keys, with the
// audit trail in a temporary directory; it is not yet validated.
func ServerConfig(t *testing.T, keys *demokeys.Keys) *server.Config {
	t.Helper()
	cfg := &server.Config{
		Listen: server.ListenConfig{GRPC: "127.0.0.1:0", Admin: "127.0.0.1:0"},
		JWT: authz.JWTConfig{
			Issuer: demokeys.DefaultIssuer, Audiences: []string{demokeys.DefaultAudience},
			JWKSFile: keys.JWKSPath(),
		},
	}
	cfg.Audit.Dir = t.TempDir()
	return cfg
}

// Start runs a Stack for t and stops it when t ends.
func Start(t *testing.T, o Options) *Stack {
	t.Helper()
	keys, err := o.Keys, error(nil)
	if keys == nil {
		if keys, err = demokeys.LoadOrCreate(t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	s := &Stack{t: t, Keys: keys, Up: StartLegacy(t), stopped: make(chan struct{})}
	cfg := ServerConfig(t, keys)
	// Writes are decided on the stored resource's owners, read from the
	// legacy service itself.
	cfg.Owners.Upstream = "http://" + s.Up.Addr
	if o.Mutate != nil {
		o.Mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	s.Phigate, err = server.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { _ = s.Phigate.Run(ctx); close(s.stopped) }()
	t.Cleanup(s.StopPhigate)
	target := s.Phigate.GRPCAddr()
	if cfg.Listen.GRPC == "" {
		target = "unix://" + cfg.Listen.GRPCUnix
	}
	s.Envoy = envoytest.Start(t, envoy.BootstrapConfig{
		Upstream: s.Up.Addr, Phigate: target, Compress: o.Compress, MaxResponseBody: o.MaxBody, PhigateTLS: o.PhigateTLS,
		ListenTLS: o.ListenTLS, LocalRateLimit: o.LocalRateLimit,
	})
	return s
}

// StopPhigate stops phigate and waits for it, so a test can show that
// Envoy then fails closed.
func (s *Stack) StopPhigate() {
	s.stop()
	select {
	case <-s.stopped:
	case <-time.After(10 * time.Second):
		s.t.Error("phigate did not stop within 10s")
	}
}

// Token mints a token the stack trusts.
func (s *Stack) Token(spec demokeys.TokenSpec) string {
	s.t.Helper()
	tok, err := s.Keys.Mint(spec)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// Physician is the demo population's physician prac-00n, on the
// treatment purpose.
func Physician(n int) demokeys.TokenSpec {
	id := fmt.Sprintf("prac-%03d", n)
	return demokeys.TokenSpec{Subject: id, Roles: []string{"physician"}, FHIRUser: "Practitioner/" + id, Purpose: "TREAT"}
}

// Response is what a client got through Envoy; Outcome is the decoded
// body of an error answer.
type Response struct {
	Status  int
	Header  http.Header
	Body    []byte
	Outcome map[string]any
}

// DoURL sends a GET with a bearer token and returns the status.
func DoURL(t *testing.T, url, token string) int {
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

// GetBody fetches url directly and returns its status and body.
func GetBody(t *testing.T, url string) (int, string) {
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

// Do sends one request through Envoy.
func (s *Stack) Do(method, path, token string, headers map[string]string, body io.Reader) Response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.Envoy.URL(path), body)
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
	r := Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	if resp.StatusCode >= 400 {
		_ = json.Unmarshal(raw, &r.Outcome)
	}
	return r
}

// IsOutcome reports whether the body is a FHIR OperationOutcome that
// reveals nothing but a reference.
func IsOutcome(r Response) bool {
	if r.Outcome["resourceType"] != "OperationOutcome" {
		return false
	}
	issues, _ := r.Outcome["issue"].([]any)
	return len(issues) == 1
}

// WithTokenKey configures the tokenization key the default policy names.
func WithTokenKey(t *testing.T) func(*server.Config) {
	return func(c *server.Config) {
		p := filepath.Join(t.TempDir(), "demo-1.key")
		if err := os.WriteFile(p, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.Filters.TokenKeys = map[string]string{"demo-1": p}
	}
}

// ValidConfig is a complete configuration file's text and the directory
// its files live in; a test breaks one field of it at a time.
func ValidConfig(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	keys, err := demokeys.LoadOrCreate(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, `listen:
  grpc: 127.0.0.1:9191
  admin: 127.0.0.1:9902
log:
  level: info
jwt:
  issuer: https://issuer.example.org
  audiences: [phigate]
  jwks_file: ` + keys.JWKSPath() + `
audit:
  dir: ` + filepath.Join(dir, "audit") + `
`
}

// CopyLibrary writes the shipped policy library into dir, tests excluded.
func CopyLibrary(t *testing.T, dir string) {
	t.Helper()
	err := fs.WalkDir(regolib.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(regolib.FS, p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, p), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// CheckRequest is the ext_authz request Envoy sends for an HTTP request
// with a bearer token.
func CheckRequest(method, path, token string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "drain", Method: method, Path: path, Host: "127.0.0.1", Scheme: "http", Protocol: "HTTP/1.1",
			Headers: map[string]string{":method": method, ":path": path, ":authority": "127.0.0.1",
				"authorization": "Bearer " + token},
		}},
	}}
}

// Serve validates cfg, starts a phigate with it (log nil discards its
// log) and stops it when t ends: a replica without an Envoy of its own.
func Serve(t *testing.T, cfg *server.Config, log *zap.Logger) *server.Server {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv
}
