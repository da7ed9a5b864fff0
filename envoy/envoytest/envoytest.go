// Package envoytest runs a real Envoy binary for end-to-end tests: it
// generates a bootstrap with phigate's generator, starts Envoy on free
// loopback ports, waits until Envoy reports ready, and stops it when the
// test ends.
package envoytest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/phigate/phigate/envoy"
)

// FreePort returns a loopback address with a port that was free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Envoy is a running Envoy process.
type Envoy struct {
	*envoy.Process
	Listen string // client address, host:port
	TLS    bool   // the listener speaks TLS
	logs   *syncBuffer
}

// URL returns the URL of path on the Envoy listener: https when the
// listener speaks TLS.
func (e *Envoy) URL(path string) string {
	if e.TLS {
		return "https://" + e.Listen + path
	}
	return "http://" + e.Listen + path
}

// Logs returns what Envoy printed so far.
func (e *Envoy) Logs() string { return e.logs.String() }

// Start writes a bootstrap for cfg (free loopback ports where Listen and
// Admin are empty), starts Envoy and waits for it to be ready. The process
// is stopped when the test ends; its log is printed if the test failed.
func Start(t testing.TB, cfg envoy.BootstrapConfig) *Envoy {
	t.Helper()
	// A free port found here can be taken by another process before Envoy
	// binds it (tests run in parallel binaries); ports this function chose
	// are chosen again when Envoy reports the address in use.
	pickListen, pickAdmin := cfg.Listen == "", cfg.Admin == ""
	for attempt := 1; ; attempt++ {
		if pickListen {
			cfg.Listen = FreePort(t)
		}
		if pickAdmin {
			cfg.Admin = FreePort(t)
		}
		e, err := start(t, cfg)
		if err == nil {
			t.Cleanup(func() {
				e.Stop()
				if t.Failed() {
					t.Logf("envoy log:\n%s", e.Logs())
				}
			})
			return e
		}
		if attempt < 5 && (pickListen || pickAdmin) && strings.Contains(e.Logs(), "Address already in use") {
			continue
		}
		t.Fatalf("start envoy: %v\n%s", err, e.Logs())
	}
}

func start(t testing.TB, cfg envoy.BootstrapConfig) (*Envoy, error) {
	t.Helper()
	dir := t.TempDir()
	if cfg.SecretsDir == "" && (cfg.ListenTLS != nil || cfg.PhigateTLS != nil) {
		cfg.SecretsDir = filepath.Join(dir, "sds")
	}
	yaml, err := envoy.Bootstrap(cfg)
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if err := envoy.WriteSecretFiles(cfg); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	path := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(path, yaml, 0o600); err != nil {
		t.Fatal(err)
	}
	e := &Envoy{Listen: cfg.Listen, TLS: cfg.ListenTLS != nil, logs: &syncBuffer{}}
	e.Process, err = envoy.StartProcess(t.Context(), path, cfg.Admin, e.logs)
	return e, err
}

// Validate runs `envoy --mode validate` over a bootstrap.
func Validate(yaml []byte) error {
	bin, err := envoy.FindBinary()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "envoy-validate")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(path, yaml, 0o600); err != nil {
		return err
	}
	out, err := exec.Command(bin, "--mode", "validate", "-c", path, "--disable-hot-restart").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	// A deprecated field works today and is removed in a later Envoy: the
	// generated bootstrap must not lean on one.
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.Contains(line, "Deprecated field") || strings.Contains(line, "deprecated option") {
			return fmt.Errorf("bootstrap uses a deprecated field: %s", line)
		}
	}
	return nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
