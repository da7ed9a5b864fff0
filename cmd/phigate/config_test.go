package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/demo/demokeys"
)

// validConfig is a complete configuration; each case below breaks one field.
func validConfig(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	keys, err := demokeys.LoadOrCreate(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, `listen:
  grpc: 127.0.0.1:9191
  admin: 127.0.0.1:9902
log:
  level: info
jwt:
  issuer: https://issuer.example.org
  audiences: [phigate]
  jwks_file: ` + keys.JWKSPath() + `
audit:
  dir: ` + filepath.Join(dir, "audit") + `
`
}

func TestConfigValidation(t *testing.T) {
	dir, good := validConfig(t)
	cases := []struct {
		name  string
		edit  func(string) string
		field string // the error must name this field
	}{
		{"valid", func(s string) string { return s }, ""},
		{"no grpc listener", func(s string) string { return strings.Replace(s, "  grpc: 127.0.0.1:9191\n", "", 1) }, "listen.grpc"},
		{"grpc not host:port", func(s string) string { return strings.Replace(s, "grpc: 127.0.0.1:9191", "grpc: nowhere", 1) }, "listen.grpc"},
		{"admin not host:port", func(s string) string { return strings.Replace(s, "admin: 127.0.0.1:9902", "admin: x", 1) }, "listen.admin"},
		{"bad log level", func(s string) string { return strings.Replace(s, "level: info", "level: loud", 1) }, "log.level"},
		{"no issuer", func(s string) string { return strings.Replace(s, "  issuer: https://issuer.example.org\n", "", 1) }, "jwt.issuer"},
		{"no audience", func(s string) string { return strings.Replace(s, "audiences: [phigate]", "audiences: []", 1) }, "jwt.audiences"},
		{"hmac algorithm", func(s string) string {
			return strings.Replace(s, "audiences: [phigate]", "audiences: [phigate]\n  algorithms: [HS256]", 1)
		}, "jwt.algorithms"},
		{"unknown section", func(s string) string { return s + "jwt_extra: 1\n" }, "jwt_extra"},
		{"misspelt field", func(s string) string { return strings.Replace(s, "level: info", "levle: info", 1) }, "levle"},
		{"no audit dir", func(s string) string { return s[:strings.Index(s, "audit:")] }, "audit"},
		{"tls key without cert", func(s string) string {
			return strings.Replace(s, "  admin: 127.0.0.1:9902\n", "  admin: 127.0.0.1:9902\n  tls:\n    key: /k.pem\n", 1)
		}, "listen.tls"},
		{"policy dir and bundle", func(s string) string { return s + "policy:\n  dir: " + dir + "\n  bundle: /b.tar.gz\n" }, "policy"},
		{"policy dir missing", func(s string) string { return s + "policy:\n  dir: /no/such/dir\n" }, "policy.dir"},
		{"reload too often", func(s string) string { return s + "policy:\n  dir: " + dir + "\n  reload_interval: 1ms\n" }, "policy.reload_interval"},
		{"request base relative", func(s string) string { return s + "request:\n  base: fhir\n" }, "base"},
		{"token key file missing", func(s string) string { return s + "filters:\n  token_keys:\n    k1: /no/such/key\n" }, "filters.token_keys"},
		{"collector too eager", func(s string) string { return s + "runtime:\n  gc_percent: 5\n" }, "runtime.gc_percent"},
		{"negative grace", func(s string) string { return s + "shutdown:\n  grace: -1s\n" }, "shutdown.grace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "phigate.yaml")
			if err := os.WriteFile(path, []byte(tc.edit(good)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(path)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("config accepted, want an error naming %s", tc.field)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
		})
	}
}

// TestBrokenPolicyExitsNonZero starts the real binary with a policy that
// does not compile: a clear error, and no server.
func TestBrokenPolicyExitsNonZero(t *testing.T) {
	dir, good := validConfig(t)
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
