package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/internal/stacktest"
)

// TestBrokenPolicyExitsNonZero starts the real binary with a policy that
// does not compile: a clear error, and no server.
func TestBrokenPolicyExitsNonZero(t *testing.T) {
	dir, good := stacktest.ValidConfig(t)
	pdir := filepath.Join(dir, "policy")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pdir, "authz.rego"), []byte("package phigate.authz\n\ndecision := {\"allow\": input.nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "phigate.yaml")
	if err := os.WriteFile(cfg, []byte(good+"policy:\n  dir: "+pdir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"serve", "--config", cfg}, {"config", "check", cfg}, {"policy", "check", pdir}} {
		var out bytes.Buffer
		cmd := exec.Command(binary(t), args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Fatalf("%v: exit %v, want non-zero; output %s", args, err, out.String())
		}
		if !strings.Contains(out.String(), "authz.rego") {
			t.Errorf("%v: error does not name the broken file: %s", args, out.String())
		}
	}
}

// TestConfigFromEnvironment: phigate.yaml's values may name environment
// variables, as a Kubernetes or systemd unit fills them in; config check
// and serve read them, and an unset one is refused by name.
func TestConfigFromEnvironment(t *testing.T) {
	dir, good := stacktest.ValidConfig(t)
	withEnv := strings.Replace(good, "grpc: 127.0.0.1:9191", "grpc: ${PHIGATE_TEST_IP}:${PHIGATE_TEST_PORT:-9191}", 1)
	withEnv = strings.Replace(withEnv, "level: info", "level: ${PHIGATE_TEST_LEVEL}", 1)
	cfg := filepath.Join(dir, "phigate.yaml")
	if err := os.WriteFile(cfg, []byte(withEnv), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(env ...string) (string, error) {
		var out bytes.Buffer
		cmd := exec.Command(binary(t), "config", "check", cfg)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	if out, err := run("PHIGATE_TEST_IP=127.0.0.1", "PHIGATE_TEST_LEVEL=debug"); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("with the variables set: %v %s", err, out)
	}
	if out, err := run("PHIGATE_TEST_IP=127.0.0.1", "PHIGATE_TEST_LEVEL=loud"); err == nil || !strings.Contains(out, "log.level") {
		t.Fatalf("a bad value from the environment is judged as written: %v %s", err, out)
	}
	out, err := run("PHIGATE_TEST_LEVEL=debug")
	if err == nil || !strings.Contains(out, "environment variable PHIGATE_TEST_IP is not set") {
		t.Fatalf("an unset variable: %v %s", err, out)
	}
}
