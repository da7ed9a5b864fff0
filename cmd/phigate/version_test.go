package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionCommand builds the binary stamped as `make build` stamps it
// and reads its version back.
func TestVersionCommand(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "phigate")
	const rev = "0123456789abcdef0123456789abcdef01234567"
	ld := "-X main.version=v9.8.7-test -X main.revision=" + rev
	if out, err := exec.Command("go", "build", "-ldflags", ld, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || lines[0] != "phigate v9.8.7-test" || !strings.HasPrefix(lines[1], "revision "+rev) ||
		!strings.HasPrefix(lines[2], "go1.") {
		t.Fatalf("version output:\n%s", out)
	}
	if code, _, stderr := runCmd(t, "version", "extra"); code != 2 || !strings.Contains(stderr, "usage: phigate version") {
		t.Errorf("version with an argument: exit %d, stderr %q", code, stderr)
	}
}
