package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
)

func run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := dispatch(t.Context(), args, &out, &out)
	return code, out.String()
}

func TestPolicyCommands(t *testing.T) {
	lib := t.TempDir()
	stacktest.CopyLibrary(t, lib)
	if code, out := run(t, "policy", "test", lib); code != 0 || !strings.Contains(out, "0 failed") {
		t.Fatalf("policy test on the shipped library: exit %d\n%s", code, out)
	}
	if code, out := run(t, "policy", "check", lib); code != 0 || !strings.Contains(out, "ok (revision") ||
		!strings.Contains(out, "input.identity.roles") || strings.Contains(out, "input.time_ns") {
		t.Fatalf("policy check on the shipped library: exit %d, want ok and a cache key with roles and without the time\n%s", code, out)
	}

	broken := t.TempDir()
	stacktest.CopyLibrary(t, broken)
	f := filepath.Join(broken, "rbac.rego")
	src, _ := os.ReadFile(f)
	if err := os.WriteFile(f, append(src, []byte("\nbad_rule := x if { x := input.y\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := run(t, "policy", "check", broken); code == 0 || !strings.Contains(out, "rbac.rego") {
		t.Fatalf("policy check on a broken library: exit %d, want non-zero naming rbac.rego\n%s", code, out)
	}

	// A test that now fails makes policy test fail, naming it.
	failing := t.TempDir()
	stacktest.CopyLibrary(t, failing)
	extra := "package phigate.extra_test\n\nimport data.phigate.authz\n\n# Deliberately wrong: a physician may read their own patient.\ntest_wrong if {\n\tnot authz.decision.allow with input as {\"identity\": {\"authenticated\": false}}\n\tfalse\n}\n"
	if err := os.WriteFile(filepath.Join(failing, "extra_test.rego"), []byte(extra), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := run(t, "policy", "test", failing); code == 0 || !strings.Contains(out, "test_wrong") {
		t.Fatalf("policy test with a failing test: exit %d\n%s", code, out)
	}

	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "phigate.yaml")
	body := "listen: {grpc: 127.0.0.1:0}\njwt: {issuer: " + demokeys.DefaultIssuer + ", audiences: [" + demokeys.DefaultAudience + "], jwks_file: " + keys.JWKSPath() + "}\naudit: {dir: " + t.TempDir() + "}\n" +
		// A loaded test machine can take longer than the default bound.
		"policy: {eval_timeout: 30s}\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := keys.Mint(stacktest.Physician(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path   string
		allow  bool
		reason string
	}{
		{"/fhir/Patient/pat-0001", true, "allow"},
		{"/fhir/Patient/pat-0002", false, "relationship.not_on_care_team"},
	} {
		code, out := run(t, "policy", "eval", "--config", cfg, "--request", "GET "+tc.path, "--token", tok, "--explain=full")
		if code != 0 {
			t.Fatalf("policy eval: exit %d\n%s", code, out)
		}
		head, trace, _ := strings.Cut(out, "\nrules that decided:")
		var got struct {
			Decision struct {
				Allow  bool   `json:"allow"`
				Reason string `json:"reason"`
			} `json:"decision"`
		}
		if err := json.Unmarshal([]byte(head), &got); err != nil {
			t.Fatalf("eval output is not JSON: %v\n%s", err, head)
		}
		if got.Decision.Allow != tc.allow || got.Decision.Reason != tc.reason {
			t.Errorf("%s: allow=%v reason=%q, want %v %q", tc.path, got.Decision.Allow, got.Decision.Reason, tc.allow, tc.reason)
		}
		if !strings.Contains(trace, "Enter data.phigate.authz.decision") {
			t.Errorf("--explain=full printed no trace of the decision rule:\n%.500s", trace)
		}
		// The summary: the rules that held with file and line, the
		// comparisons that failed with the values compared, the cache.
		code, out = run(t, "policy", "eval", "--config", cfg, "--request", "GET "+tc.path, "--token", tok, "--explain")
		_, summary, _ := strings.Cut(out, "\nrules that decided:")
		if code != 0 || !strings.Contains(summary, "rules that held:") || !strings.Contains(summary, "authz.rego:") ||
			!strings.Contains(summary, "comparisons that failed:") || !strings.Contains(summary, "cache.until_ns:") ||
			strings.Contains(summary, "Enter data.phigate") {
			t.Errorf("--explain summary:\n%.800s", summary)
		}
		if n := strings.Count(summary, "\n"); n > 400 {
			t.Errorf("--explain summary is %d lines", n)
		}
		if !tc.allow && !regexp.MustCompile(`relationship\.rego:\d+  internal\.member_2\("pat-0002", \[`).MatchString(summary) {
			t.Errorf("--explain does not show the care-team comparison that failed:\n%.1500s", summary)
		}
	}
}
