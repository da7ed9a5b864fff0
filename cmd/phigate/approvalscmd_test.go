package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// TestApprovalCommands drives the workflow with the commands against a
// running phigate: a user asks for an elevation, the list shows it to an
// approver, the user cannot approve it, the approver can, and the token
// is read from a file or the environment, never a flag.
func TestApprovalCommands(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		c.Approvals = server.ApprovalsConfig{Operations: []string{"export"}, ApproverRole: "privacy-officer",
			Elevation: server.ElevationConfig{Roles: []string{"physician"}}}
	}})
	dir := t.TempDir()
	tokenFile := func(name string, spec demokeys.TokenSpec) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s.Token(spec)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	nurse := tokenFile("nurse", demokeys.TokenSpec{Subject: "nurse-1", Roles: []string{"nurse"}})
	officer := tokenFile("officer", demokeys.TokenSpec{Subject: "po-1", Roles: []string{"privacy-officer"}, AMR: []string{"pwd", "otp"}})
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(t.Context(), args, &out, &errb)
		return code, out.String(), errb.String()
	}
	adminAddr := s.Phigate.AdminAddr()

	code, out, errs := run("elevation", "request", "--admin", adminAddr, "--token-file", nurse,
		"--role", "physician", "--reason", "covering ward 7", "--duration", "30m", "--json")
	if code != 0 {
		t.Fatalf("elevation request: %d %s", code, errs)
	}
	i := strings.Index(out, `"id": "`)
	if i < 0 {
		t.Fatalf("no id in %s", out)
	}
	id := out[i+7 : i+7+32]

	if code, out, _ := run("approvals", "list", "--admin", adminAddr, "--token-file", officer); code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "pending") {
		t.Fatalf("approvals list: %d\n%s", code, out)
	}
	if code, _, errs := run("approvals", "list", "--admin", adminAddr, "--token-file", nurse); code != 1 || !strings.Contains(errs, "not_an_approver") {
		t.Fatalf("approvals list by a non-approver: %d %s", code, errs)
	}
	if code, _, errs := run("elevation", "approve", "--admin", adminAddr, "--token-file", nurse, id); code != 1 || !strings.Contains(errs, "not_an_approver") {
		t.Fatalf("self-approval: %d %s", code, errs)
	}
	if code, _, errs := run("approvals", "approve", "--admin", adminAddr, id); code != 2 || !strings.Contains(errs, "no token") {
		t.Fatalf("without a token: %d %s", code, errs)
	}
	t.Setenv("PHIGATE_TOKEN", strings.TrimSpace(readFile(t, officer)))
	code, out, errs = run("elevation", "approve", "--admin", adminAddr, id)
	if code != 0 || !strings.Contains(out, "approved") || !strings.Contains(out, "po-1") {
		t.Fatalf("approve: %d %s %s", code, out, errs)
	}
	if code, _, errs := run("approvals", "deny", "--admin", adminAddr, id); code != 1 || !strings.Contains(errs, "not_pending") {
		t.Fatalf("deny after approval: %d %s", code, errs)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAuditReviewCommand: a break-glass access through Envoy is listed by
// audit review until an approver marks it reviewed through the admin
// listener; the seeded sample is the same on every run.
func TestAuditReviewCommand(t *testing.T) {
	var dir string
	withKey := stacktest.WithTokenKey(t)
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		withKey(c)
		dir = c.Audit.Dir
		c.Approvals = server.ApprovalsConfig{Operations: []string{"export"}, ApproverRole: "privacy-officer"}
	}})
	emergency := stacktest.Physician(1)
	emergency.AMR = []string{"pwd", "otp"}
	doc := s.Token(emergency)
	for _, p := range []string{"/fhir/Patient/pat-0001", "/fhir/Observation?patient=pat-0001", "/fhir/Patient/pat-0002"} {
		s.Do("GET", p, doc, nil, nil)
	}
	bg := s.Do("GET", "/fhir/Patient/pat-0005", doc, map[string]string{"x-break-glass": "trauma bay"}, nil)
	id := bg.Header.Get("x-phigate-decision-id")
	if bg.Status != 200 || id == "" {
		t.Fatalf("break-glass read: %d, decision %q", bg.Status, id)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(t.Context(), args, &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, errs := run("audit", "review", dir, "--json"); code != 0 || !strings.Contains(out, id) {
		t.Fatalf("review before the mark: %d %s\n%s", code, errs, out)
	}
	officer := filepath.Join(t.TempDir(), "officer")
	if err := os.WriteFile(officer, []byte(s.Token(demokeys.TokenSpec{Subject: "po-1", Roles: []string{"privacy-officer"}, AMR: []string{"otp"}})), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := run("audit", "mark-reviewed", id, "--note", "trauma, appropriate", "--admin", s.Phigate.AdminAddr(), "--token-file", officer); code != 0 || !strings.Contains(out, "po-1") {
		t.Fatalf("mark-reviewed: %d %s %s", code, out, errs)
	}
	code, out, errs := run("audit", "review", dir, "--admin", s.Phigate.AdminAddr(), "--token-file", officer, "--sample", "2", "--seed", "42", "--as-of", "2030-01-01T00:00:00Z")
	if code != 0 || strings.Contains(out, id) || !strings.Contains(out, "Break-glass accesses not reviewed (0)") {
		t.Fatalf("review after the mark: %d %s\n%s", code, errs, out)
	}
	if _, again, _ := run("audit", "review", dir, "--admin", s.Phigate.AdminAddr(), "--token-file", officer, "--sample", "2", "--seed", "42", "--as-of", "2030-01-01T00:00:00Z"); again != out {
		t.Fatalf("the same seed printed two reviews:\n%s\n%s", out, again)
	}
	if code, _, errs := run("audit", "review", dir, "--unused-days", "0"); code != 2 || errs == "" {
		t.Fatalf("--unused-days 0: %d %s", code, errs)
	}
}

// TestConfigCheckApprovals: config check reports every bad field of the
// approvals section by its YAML name, and accepts a good one.
func TestConfigCheckApprovals(t *testing.T) {
	dir, good := stacktest.ValidConfig(t)
	write := func(extra string) string {
		p := filepath.Join(dir, "phigate.yaml")
		if err := os.WriteFile(p, []byte(good+extra), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := `request:
  legacy_routes:
    - {method: GET, pattern: "/bulkstatus/{job}", kind: export-status}
approvals:
  operations: [export]
  status_kinds: [export-status]
  approver_role: privacy-officer
  ttl: 1h
  elevation:
    roles: [physician]
`
	var out, errb bytes.Buffer
	if code := dispatch(t.Context(), []string{"config", "check", write(ok)}, &out, &errb); code != 0 {
		t.Fatalf("a good approvals section: %d %s", code, errb.String())
	}
	// The example in docs/approvals.md is a configuration that checks.
	doc, err := os.ReadFile("../../docs/approvals.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, _ := strings.Cut(string(doc), "```yaml\n")
	block, _, _ = strings.Cut(block, "```")
	if !strings.Contains(block, "approvals:") {
		t.Fatalf("no approvals example in docs/approvals.md")
	}
	if code := dispatch(t.Context(), []string{"config", "check", write(block)}, &out, &errb); code != 0 {
		t.Fatalf("the example in docs/approvals.md: %d %s", code, errb.String())
	}
	bad := `approvals:
  operations: [$export]
  file_kinds: [export-file]
  ttl: 720h
  elevation:
    roles: [privacy-officer]
`
	out.Reset()
	errb.Reset()
	if code := dispatch(t.Context(), []string{"config", "check", write(bad)}, &out, &errb); code != 1 {
		t.Fatalf("a bad approvals section: exit %d", code)
	}
	for _, want := range []string{"approvals.operations", "approvals.file_kinds", "approvals.ttl", "approvals.approver_role"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("config check does not name %s:\n%s", want, errb.String())
		}
	}
}
