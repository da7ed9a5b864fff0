package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/internal/stacktest"
)

// TestConfigCheckIngest: config check accepts an ingest section serve
// would start with, warns of a plaintext MLLP listener beyond loopback,
// and names every bad ingest field by its path.
func TestConfigCheckIngest(t *testing.T) {
	dir, good := stacktest.ValidConfig(t)
	write := func(extra string) string {
		p := filepath.Join(dir, "phigate.yaml")
		if err := os.WriteFile(p, []byte(good+extra), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	code, stdout, stderr := runCmd(t, "config", "check", write("ingest:\n  mllp:\n    listen: 0.0.0.0:2575\n    discharge_grace: 2h\n"))
	if code != 0 || !strings.Contains(stdout, "ok") || !strings.Contains(stderr, "warning: ingest.mllp.listen") {
		t.Fatalf("good ingest section: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = runCmd(t, "config", "check", write("ingest:\n  mllp:\n    listen: 2575\n    timezone: Nowhere/Else\n  fhir:\n    listen: 127.0.0.1:8081\n"))
	if code != 1 {
		t.Fatalf("bad ingest section: exit %d", code)
	}
	for _, want := range []string{"ingest.mllp.listen", "ingest.mllp.timezone", "ingest.fhir.token_file"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("config check does not name %s: %s", want, stderr)
		}
	}
	if code, _, stderr := runCmd(t, "config", "check", write("ingest:\n  mllp:\n    lisen: x\n")); code != 1 || !strings.Contains(stderr, "ingest.mllp: unknown field lisen") {
		t.Errorf("misspelt ingest field: exit %d, %s", code, stderr)
	}
}
