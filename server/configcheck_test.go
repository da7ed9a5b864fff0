package server

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/policy"
	"github.com/phigate/phigate/policy/decisionlog"
)

// TestValidateReportsEveryProblem: config check names every problem of a
// configuration at once, including the files serve could not use, and
// says ok only for one serve would start with.
func TestValidateReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "a-file")
	if err := os.WriteFile(blocker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Config{
		Listen: ListenConfig{GRPC: "127.0.0.1:9191", TLS: TLSConfig{Cert: filepath.Join(dir, "missing.crt"), Key: filepath.Join(dir, "missing.key")}},
		Log:    LogConfig{Level: "loud", Format: "xml"},
	}
	c.JWT.Issuer, c.JWT.Audiences, c.JWT.JWKSFile = "https://issuer", []string{"a"}, filepath.Join(dir, "no-jwks.json")
	c.Audit.Dir = filepath.Join(blocker, "audit") // under a file: cannot be created
	c.Audit.EncryptionKeyFile = filepath.Join(dir, "no-such.key")
	err := c.Validate()
	if err == nil {
		t.Fatal("validated")
	}
	for _, want := range []string{"log.level", "log.format", "listen.tls", "audit.encryption_key_file", "audit.dir", "jwt.jwks_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %s:\n%v", want, err)
		}
	}
	if c.validated {
		t.Error("a configuration with problems is marked validated")
	}
}

// TestConfigErrorsNameYAML: a misspelt field is named by its place in
// phigate.yaml, never by a Go type.
func TestConfigErrorsNameYAML(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"listen: {grpc: 127.0.0.1:1}\nlog: {colour: red}\n", "log: unknown field colour"},
		{"listen: {grpc: 127.0.0.1:1, tls: {certificate: x}}\n", "listen.tls: unknown field certificate"},
		{"listn: {grpc: 127.0.0.1:1}\n", "the top level: unknown field listn"},
		{"audit: {checkpoint_every: many}\n", "line 1: cannot unmarshal"},
		{"decision_logs: {colour: red}\n", "decision_logs: unknown field colour"},
		{"decision_logs: {reporting: {buffer: 1}}\n", "decision_logs.reporting: unknown field buffer"},
		{"policy: {bundle_server: {polling: {min_delay_seconds: 1}}}\n", "policy.bundle_server.polling: unknown field min_delay_seconds"},
		{"decision_logs: {credentials: {token: x}}\n", "decision_logs.credentials: unknown field token"},
	} {
		p := filepath.Join(t.TempDir(), "phigate.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || goTypeName.MatchString(err.Error()) || strings.Contains(err.Error(), "audit.Config") {
			t.Errorf("%q: %v, want it to name %q and no Go type", tc.yaml, err, tc.want)
		}
	}
}

// goTypeName matches a Go type of this package (server.LogConfig), not a
// YAML path that happens to contain "server." (policy.bundle_server.url).
var goTypeName = regexp.MustCompile(`\bserver\.[A-Z]`)

// TestWarnings: plaintext listeners beyond loopback are warned of.
func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want int
	}{
		{Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191", Admin: "127.0.0.1:9902"}}, 0},
		{Config{Listen: ListenConfig{GRPC: "[::1]:9191", Admin: "localhost:9902"}}, 0},
		{Config{Listen: ListenConfig{GRPC: "0.0.0.0:9191", Admin: "127.0.0.1:9902"}}, 1},
		{Config{Listen: ListenConfig{GRPC: "0.0.0.0:9191", Admin: "0.0.0.0:9902", TLS: TLSConfig{Cert: "c", Key: "k"}}}, 1},
		{Config{Listen: ListenConfig{GRPC: "10.0.0.5:9191", Admin: "10.0.0.5:9902"}}, 2},
		{Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191"}, Policy: policy.Config{BundleServer: policy.BundleServerConfig{URL: "https://bundles.example"}}}, 1},
		{Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191"}, Policy: policy.Config{BundleServer: policy.BundleServerConfig{URL: "http://bundles.example"}}}, 2},
		{Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191"}, DecisionLogs: decisionlog.Config{URL: "http://logs.example"}}, 1},
		{Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191"}, DecisionLogs: decisionlog.Config{URL: "https://logs.example"}}, 0},
		{Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191", Admin: "127.0.0.1:9902"}, Filters: FiltersConfig{PlanMetadataVersion: 1}}, 1},
		{Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191", Admin: "127.0.0.1:9902"}, Filters: FiltersConfig{PlanMetadataVersion: 2}}, 0},
		{Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191", Admin: "127.0.0.1:9902"}, Audit: audit.Config{ReplicaID: "ward-3"}}, 1},
		{Config{Listen: ListenConfig{GRPC: "127.0.0.1:9191", Admin: "127.0.0.1:9902"}, Audit: audit.Config{ReplicaID: "ward-3"},
			Store: StoreConfig{PostgresDSNEnv: "PG"}}, 0},
	} {
		if got := tc.c.Warnings(); len(got) != tc.want {
			t.Errorf("%+v: warnings %q, want %d", tc.c.Listen, got, tc.want)
		}
	}
}
