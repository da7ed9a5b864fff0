package server

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/ingest"
)

// TestIngestConfig: every bad ingest field is named by its YAML path,
// the FHIR listener is never open without authentication nor plaintext
// beyond loopback, a plaintext MLLP listener beyond loopback is warned
// of, and the defaults are filled.
func TestIngestConfig(t *testing.T) {
	dir := t.TempDir()
	c := &Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191"}}
	c.JWT.Issuer, c.JWT.Audiences = "https://issuer", []string{"a"}
	c.Ingest = ingest.Config{
		MLLP: ingest.MLLPConfig{Listen: "nowhere", ReadTimeout: -time.Second, Timezone: "Mars/Olympus",
			TLS: ingest.TLSFiles{Cert: filepath.Join(dir, "no.crt"), Key: filepath.Join(dir, "no.key")}},
		FHIR: ingest.FHIRConfig{Listen: "0.0.0.0:8443", TokenFile: filepath.Join(dir, "no-token")},
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("validated")
	}
	for _, want := range []string{"ingest.mllp.listen", "ingest.mllp.read_timeout", "ingest.mllp.timezone", "ingest.mllp.tls",
		"ingest.fhir.tls.cert", "ingest.fhir.token_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %s:\n%v", want, err)
		}
	}

	c = &Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191"}}
	c.JWT.Issuer, c.JWT.Audiences = "https://issuer", []string{"a"}
	c.Ingest.FHIR.Listen = "127.0.0.1:8080"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "ingest.fhir.token_file") {
		t.Fatalf("FHIR listener without authentication: %v", err)
	}
	c.Ingest.FHIR.Listen = ""
	c.Ingest.MLLP.Listen = "0.0.0.0:2575"
	if err := c.Validate(); err != nil && strings.Contains(err.Error(), "ingest.") {
		t.Fatal(err) // the rest of this configuration is not the test's
	}
	if m := c.Ingest.MLLP; m.DischargeGrace != 4*time.Hour || m.MaxMessageBytes != 1<<20 || m.MaxConnections != 64 {
		t.Errorf("defaults not filled: %+v", m)
	}
	if w := strings.Join(c.Warnings(), "\n"); !strings.Contains(w, "ingest.mllp.listen") {
		t.Errorf("no warning of a plaintext MLLP listener beyond loopback: %q", w)
	}
}
