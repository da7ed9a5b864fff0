package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/envoy/envoytest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: t.TempDir(), caCert: cert, caKey: key}
	p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue writes a leaf certificate and key; it returns their paths.
func (p *pki) issue(t *testing.T, name string, serial int64, dns string, uri string, usage x509.ExtKeyUsage) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	if dns != "" {
		tmpl.DNSNames = []string{dns}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "PRIVATE KEY", kder)
}

// TestEndToEndMutualTLS puts phigate's gRPC listener behind mTLS: Envoy with
// its client certificate is answered; an Envoy without one never gets an
// answer, so nothing reaches the legacy service.
func TestEndToEndMutualTLS(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.issue(t, "phigate", 2, "phigate.local", "", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := p.issue(t, "envoy", 3, "", "spiffe://test/ns/mesh/sa/envoy", x509.ExtKeyUsageClientAuth)
	ca := filepath.Join(p.dir, "ca.pem")
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		c.Listen.TLS = server.TLSConfig{Cert: srvCert, Key: srvKey, ClientCA: ca}
	}, PhigateTLS: &envoy.UpstreamTLS{CA: ca, Cert: cliCert, Key: cliKey, ServerName: "phigate.local"}})
	good := s.Token(stacktest.Physician(1))
	if r := s.Do("GET", "/fhir/Patient/pat-0001", good, nil, nil); r.Status != 200 {
		t.Fatalf("over mTLS: status %d, want 200; %.200s", r.Status, r.Body)
	}
	if r := s.Do("GET", "/fhir/Patient/pat-0002", good, nil, nil); r.Status != 403 {
		t.Fatalf("over mTLS: status %d, want 403", r.Status)
	}

	// The same phigate, reached by an Envoy that has no client certificate.
	anon := envoytest.Start(t, envoy.BootstrapConfig{Upstream: s.Up.Addr, Phigate: s.Phigate.GRPCAddr(),
		PhigateTLS: &envoy.UpstreamTLS{CA: ca, ServerName: "phigate.local"}})
	s.Up.Reset()
	resp := stacktest.DoURL(t, anon.URL("/fhir/Patient/pat-0001"), good)
	if resp < 500 || len(s.Up.Requests()) != 0 {
		t.Fatalf("without a client certificate: status %d, legacy saw %d requests; want an error and nothing through", resp, len(s.Up.Requests()))
	}
	_, m := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics")
	if !regexp.MustCompile(`phigate_tls_handshake_failures_total\{listener="grpc"\} [1-9]`).MatchString(m) {
		t.Errorf("the refused handshake is not counted in phigate_tls_handshake_failures_total")
	}
}
