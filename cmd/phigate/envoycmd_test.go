package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnvoyBootstrapTLSFlags(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for _, name := range []string{"cert", "key", "ca"} {
		files[name] = filepath.Join(dir, name+".pem")
		// Generation only checks that the files exist; Envoy reads them.
		if err := os.WriteFile(files[name], []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "envoy", "envoy.yaml")
	if err := os.Mkdir(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	tlsFlags := []string{"--listen-cert", files["cert"], "--listen-key", files["key"], "--listen-client-ca", files["ca"]}
	cases := []struct {
		name    string
		args    []string
		code    int
		wantErr string
		sds     []string // files written beside the output, under sds/
	}{
		{"mTLS listener written beside the output", append(tlsFlags, "-o", out), 0, "",
			[]string{"listen-cert.yaml", "listen-client-ca.yaml"}},
		{"to stdout without a secrets dir", tlsFlags, 1, "envoy.secrets_dir", nil},
		{"cert without key", []string{"--listen-cert", files["cert"], "--secrets-dir", dir}, 1, "envoy.listen_tls", nil},
		{"missing key file", []string{"--listen-cert", files["cert"], "--listen-key", filepath.Join(dir, "nope"), "--secrets-dir", dir}, 1, "envoy.listen_tls.key", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, append([]string{"envoy", "bootstrap"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.wantErr) {
				t.Fatalf("exit %d, stderr %q; want exit %d naming %q", code, stderr, tc.code, tc.wantErr)
			}
			for _, name := range tc.sds {
				p := filepath.Join(filepath.Dir(out), "sds", name)
				if _, err := os.Stat(p); err != nil {
					t.Errorf("SDS file: %v", err)
				}
				y, _ := os.ReadFile(out)
				if !strings.Contains(string(y), p) {
					t.Errorf("the bootstrap does not name %s", p)
				}
			}
		})
	}
}
