package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/audit"
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

// TestAuditQueryIngest: audit query finds the feed messages' records by
// kind and patient.
func TestAuditQueryIngest(t *testing.T) {
	cfg := audit.Config{Dir: filepath.Join(t.TempDir(), "audit")}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	trail, err := audit.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := trail.RecordIngest(t.Context(), audit.IngestEvent{Source: "adt", Event: "ADT^A01", MessageID: "M-1",
		Sender: "ADT^HOSP", Patient: "pat-0100", Outcome: audit.IngestApplied, Put: []string{"Practitioner/prac-001 attending"}}); err != nil {
		t.Fatal(err)
	}
	if err := trail.Close(); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, "audit", "query", cfg.Dir, "--kind", "ingest", "--patient", "pat-0100", "--json")
	if code != 0 || !strings.Contains(stdout, `"code":"ingest:adt"`) || !strings.Contains(stdout, "M-1") {
		t.Fatalf("audit query --kind ingest: exit %d, stdout %.300s, stderr %s", code, stdout, stderr)
	}
}
