package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/internal/stacktest"
)

// TestConfigCheckOPAEnvoy: config check validates policy.opa_envoy, names
// the bad field, compiles the OPA-Envoy policy and finds its decision.
func TestConfigCheckOPAEnvoy(t *testing.T) {
	_, good := stacktest.ValidConfig(t)
	pdir, err := filepath.Abs("../../policy/testdata/opaenvoy")
	if err != nil {
		t.Fatal(err)
	}
	plan := "    response:\n      enforce: {patients: request, resource_types: ['*']}\n      redact: [{path: Patient.telecom, action: remove}]\n"
	for _, tc := range []struct {
		name, section string
		code          int
		want          string
	}{
		{"documented policy", "    path: envoy/authz/allow\n" + plan, 0, "ok (policy revision"},
		{"object result by query", "    query: data.envoy.authz.result\n    skip_request_body_parse: true\n" + plan, 0, "ok (policy revision"},
		{"no such decision", "    path: envoy/authz/deny\n" + plan, 1, "no rule defines data.envoy.authz.deny"},
		{"path and query", "    path: envoy/authz/allow\n    query: data.envoy.authz.allow\n" + plan, 1, "policy.opa_envoy.query"},
		{"no response plan", "    path: envoy/authz/allow\n", 1, "policy.opa_envoy.response.enforce: required"},
		{"bad directive", "    response:\n      enforce: {patients: any}\n      redact: [{path: Patient.telecom, action: shred}]\n", 1, "policy.opa_envoy.response.redact"},
		{"misspelt field", "    qeury: data.x\n" + plan, 1, "policy.opa_envoy: unknown field qeury"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "phigate.yaml")
			body := good + "policy:\n  dir: " + pdir + "\n  opa_envoy:\n" + tc.section
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out := run(t, "config", "check", cfg)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d; output does not say %q:\n%s", code, tc.code, tc.want, out)
			}
		})
	}
}
