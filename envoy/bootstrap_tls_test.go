package envoy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/envoy/envoytest"
)

// selfSigned writes a certificate and key Envoy can load, and returns
// their paths.
func selfSigned(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, DNSNames: []string{"phigate.local"},
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for p, b := range map[string][]byte{
		cert:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPath: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, keyPath
}

// TestBootstrapTLS: the listener's TLS and the TLS to phigate take their
// certificates from SDS files (so Envoy reloads them), require TLS 1.2 at
// least, and with a client CA the listener refuses clients without a
// certificate. A real Envoy accepts the result.
func TestBootstrapTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	c := envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", Phigate: "127.0.0.1:9191",
		ListenTLS:  &envoy.DownstreamTLS{Cert: cert, Key: key, ClientCA: cert},
		PhigateTLS: &envoy.UpstreamTLS{CA: cert, Cert: cert, Key: key, ServerName: "phigate.local"},
		SecretsDir: filepath.Join(dir, "sds")}
	y, err := envoy.Bootstrap(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := envoy.WriteSecretFiles(c); err != nil {
		t.Fatal(err)
	}
	if err := envoytest.Validate(y); err != nil {
		t.Fatalf("envoy rejects the bootstrap: %v\n%s", err, y)
	}
	b := typedBootstrap(t, y)

	var down tlsv3.DownstreamTlsContext
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&down); err != nil {
		t.Fatalf("listener transport socket: %v", err)
	}
	if !down.GetRequireClientCertificate().GetValue() {
		t.Error("require_client_certificate is not set with a client CA")
	}
	var up tlsv3.UpstreamTlsContext
	for _, cl := range b.GetStaticResources().GetClusters() {
		if cl.GetName() == "phigate" {
			if err := cl.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
				t.Fatalf("phigate cluster transport socket: %v", err)
			}
		}
	}
	for name, ctx := range map[string]*tlsv3.CommonTlsContext{"listener": down.GetCommonTlsContext(), "phigate": up.GetCommonTlsContext()} {
		if v := ctx.GetTlsParams().GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLSv1_2 {
			t.Errorf("%s: tls_minimum_protocol_version %v, want TLSv1_2", name, v)
		}
		if len(ctx.GetTlsCertificates()) != 0 || ctx.GetValidationContext() != nil {
			t.Errorf("%s: certificates inline, which Envoy never reloads", name)
		}
		if len(ctx.GetTlsCertificateSdsSecretConfigs()) != 1 {
			t.Errorf("%s: %d certificate SDS configs, want 1", name, len(ctx.GetTlsCertificateSdsSecretConfigs()))
		}
	}
	if got := up.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames(); len(got) != 1 ||
		got[0].GetMatcher().GetExact() != "phigate.local" {
		t.Errorf("phigate's certificate is not held to its name: %v", got)
	}

	files, err := envoy.SecretFiles(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 4 {
		t.Fatalf("%d SDS files, want 4", len(files))
	}
	for name, content := range files {
		var doc any
		if err := yaml.Unmarshal(content, &doc); err != nil {
			t.Fatal(err)
		}
		j, _ := json.Marshal(doc)
		var resp discoveryv3.DiscoveryResponse
		if err := protojson.Unmarshal(j, &resp); err != nil {
			t.Fatalf("%s does not decode: %v", name, err)
		}
		var s tlsv3.Secret
		if len(resp.GetResources()) != 1 || resp.GetResources()[0].UnmarshalTo(&s) != nil || s.GetName()+".yaml" != name {
			t.Fatalf("%s: not one Secret named for its file: %s", name, content)
		}
		if !strings.Contains(string(content), cert) {
			t.Errorf("%s does not name the certificate files", name)
		}
	}
}

func TestBootstrapTLSErrors(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	missing := filepath.Join(dir, "missing.pem")
	base := func(l *envoy.DownstreamTLS, u *envoy.UpstreamTLS) envoy.BootstrapConfig {
		return envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "127.0.0.1:2", ListenTLS: l, PhigateTLS: u, SecretsDir: dir}
	}
	cases := []struct {
		name  string
		cfg   envoy.BootstrapConfig
		field string
	}{
		{"listener cert without key", base(&envoy.DownstreamTLS{Cert: cert}, nil), "envoy.listen_tls"},
		{"listener key without cert", base(&envoy.DownstreamTLS{Key: key}, nil), "envoy.listen_tls"},
		{"listener cert missing", base(&envoy.DownstreamTLS{Cert: missing, Key: key}, nil), "envoy.listen_tls.cert"},
		{"client CA missing", base(&envoy.DownstreamTLS{Cert: cert, Key: key, ClientCA: missing}, nil), "envoy.listen_tls.client_ca"},
		{"client CA a directory", base(&envoy.DownstreamTLS{Cert: cert, Key: key, ClientCA: dir}, nil), "envoy.listen_tls.client_ca"},
		{"phigate CA missing", base(nil, &envoy.UpstreamTLS{CA: missing, ServerName: "p"}), "envoy.phigate_tls.ca"},
		{"phigate client key missing", base(nil, &envoy.UpstreamTLS{CA: cert, Cert: cert, Key: missing, ServerName: "p"}), "envoy.phigate_tls.key"},
		{"no secrets dir", envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "127.0.0.1:2",
			ListenTLS: &envoy.DownstreamTLS{Cert: cert, Key: key}}, "envoy.secrets_dir"},
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
