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
