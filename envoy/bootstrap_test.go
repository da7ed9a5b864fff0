package envoy_test

import (
	"strings"
	"testing"

	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/envoy/envoytest"
)

func TestBootstrapValidatesWithEnvoy(t *testing.T) {
	// TLS to phigate is validated by a real Envoy in the end-to-end mTLS
	// test, which has real certificates.
	cases := []struct {
		name string
		cfg  envoy.BootstrapConfig
	}{
		{"tcp", envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", Phigate: "127.0.0.1:9191"}},
		{"unix socket and gzip", envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", Phigate: "unix:///tmp/phigate.sock", Compress: true}},
		{"no authz baseline", envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", NoAuthz: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y, err := envoy.Bootstrap(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := envoytest.Validate(y); err != nil {
				t.Fatalf("envoy rejects the bootstrap: %v\n%s", err, y)
			}
			hasAuthz := strings.Contains(string(y), "failure_mode_allow: false")
			if hasAuthz == tc.cfg.NoAuthz {
				t.Errorf("fail-closed ext_authz present = %v, want %v", hasAuthz, !tc.cfg.NoAuthz)
			}
		})
	}
}

func TestBootstrapConfigErrors(t *testing.T) {
	cases := []struct {
		name  string
		cfg   envoy.BootstrapConfig
		field string
	}{
		{"missing upstream", envoy.BootstrapConfig{Phigate: "127.0.0.1:9191"}, "envoy.upstream"},
		{"upstream by name", envoy.BootstrapConfig{Upstream: "legacy:8080", Phigate: "127.0.0.1:9191"}, "envoy.upstream"},
		{"admin off loopback", envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "127.0.0.1:2", Admin: "0.0.0.0:9901"}, "envoy.admin"},
		{"no phigate", envoy.BootstrapConfig{Upstream: "127.0.0.1:1"}, "envoy.phigate"},
		{"bad phigate port", envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "127.0.0.1:x"}, "envoy.phigate"},
		{"tls over a unix socket", envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "unix:///s",
			PhigateTLS: &envoy.UpstreamTLS{CA: "ca", ServerName: "p"}}, "envoy.phigate_tls"},
		{"tls without a ca", envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "127.0.0.1:2",
			PhigateTLS: &envoy.UpstreamTLS{ServerName: "p"}}, "envoy.phigate_tls"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := envoy.Bootstrap(tc.cfg)
			if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
}
