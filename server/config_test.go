package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

func TestConfigValidation(t *testing.T) {
	dir, good := stacktest.ValidConfig(t)
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
		{"plan metadata version unknown", func(s string) string { return s + "filters:\n  plan_metadata_version: 3\n" }, "filters.plan_metadata_version"},
		{"plan metadata version 1", func(s string) string { return s + "filters:\n  plan_metadata_version: 1\n" }, ""},
		{"collector too eager", func(s string) string { return s + "runtime:\n  gc_percent: 5\n" }, "runtime.gc_percent"},
		{"negative grace", func(s string) string { return s + "shutdown:\n  grace: -1s\n" }, "shutdown.grace"},
		{"shipping tuned", func(s string) string { return s + "  replica_id: ward-3\n  ship: {batch: 100, interval: 500ms}\n" }, ""},
		{"replica id with a space", func(s string) string { return s + "  replica_id: ward 3\n" }, "replica_id"},
		{"ship batch negative", func(s string) string { return s + "  ship: {batch: -5}\n" }, "ship.batch"},
		{"ship backoff below interval", func(s string) string { return s + "  ship: {interval: 2s, max_backoff: 1s}\n" }, "ship.max_backoff"},
		{"ship field misspelt", func(s string) string { return s + "  ship: {batches: 5}\n" }, "audit.ship: unknown field batches"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "phigate.yaml")
			if err := os.WriteFile(path, []byte(tc.edit(good)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := server.LoadConfig(path)
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
