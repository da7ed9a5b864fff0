package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
)

// TestPolicySiteModule: a site's own module under package phigate.ext.*
// is collected by the library without an edit to it, through the real
// engine: policy check accepts the directory, and policy eval denies with
// the site's reason where its rule holds and allows where it does not.
func TestPolicySiteModule(t *testing.T) {
	dir := t.TempDir()
	stacktest.CopyLibrary(t, dir)
	site := `package phigate.ext.ward

# Reads sent from ward 7's terminals are closed for the day.
deny contains "ext.ward.closed" if {
	input.fhir.interaction == "read"
	input.headers["x-site-ward"] == "7"
}
`
	if err := os.WriteFile(filepath.Join(dir, "ward.rego"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	// The decision cache key follows what the site's rule reads, so a
	// decision is never reused across wards.
	if code, out := run(t, "policy", "check", dir); code != 0 || !strings.Contains(out, "ok (revision") ||
		!strings.Contains(out, "input.headers.x-site-ward") {
		t.Fatalf("policy check with a site module: exit %d, want ok and the ward header in the cache key\n%s", code, out)
	}
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "phigate.yaml")
	body := "listen: {grpc: 127.0.0.1:0}\njwt: {issuer: " + demokeys.DefaultIssuer + ", audiences: [" + demokeys.DefaultAudience +
		"], jwks_file: " + keys.JWKSPath() + "}\naudit: {dir: " + t.TempDir() + "}\npolicy: {dir: " + dir + ", eval_timeout: 30s}\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := keys.Mint(stacktest.Physician(1)) // cares for pat-0001
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, ward string
		allow      bool
		reason     string
	}{
		{"/fhir/Patient/pat-0001", "7", false, "ext.ward.closed"},
		{"/fhir/Patient/pat-0001", "6", true, "allow"},
		{"/fhir/Patient/pat-0002", "7", false, "relationship.not_on_care_team"},
	} {
		code, out := run(t, "policy", "eval", "--config", cfg, "--request", "GET "+tc.path, "--token", tok, "-H", "x-site-ward:"+tc.ward)
		if code != 0 {
			t.Fatalf("policy eval: exit %d\n%s", code, out)
		}
		var got struct {
			Decision struct {
				Allow  bool   `json:"allow"`
				Reason string `json:"reason"`
			} `json:"decision"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("eval output is not JSON: %v\n%s", err, out)
		}
		if got.Decision.Allow != tc.allow || got.Decision.Reason != tc.reason {
			t.Errorf("%s: allow=%v reason=%q, want %v %q", tc.path, got.Decision.Allow, got.Decision.Reason, tc.allow, tc.reason)
		}
	}
}
