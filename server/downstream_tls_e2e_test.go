package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// A workload the default policy data lets read three patients.
const reminders = "spiffe://phigate.local/ns/portal/sa/reminders"

// secretVolume lays out certificate files the way a Kubernetes secret
// volume does: name.pem and name-key.pem are links through ..data to a
// versioned directory, and a rotation swaps ..data with one rename, so
// certificate and key change together.
type secretVolume struct {
	dir     string
	version int
}

func newSecretVolume(t *testing.T) *secretVolume {
	t.Helper()
	return &secretVolume{dir: t.TempDir()}
}

// put installs a certificate and key (PEM) as the volume's current pair
// and returns the paths a configuration names.
func (v *secretVolume) put(t *testing.T, pair pemPair) (cert, key string) {
	t.Helper()
	certPEM, keyPEM := pair.cert, pair.key
	v.version++
	ver := fmt.Sprintf("..v%d", v.version)
	if err := os.Mkdir(filepath.Join(v.dir, ver), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(v.dir, ver, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ver, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(v.dir, "tls.crt"), filepath.Join(v.dir, "tls.key")
	if v.version == 1 {
		for name, p := range map[string]string{"tls.crt": cert, "tls.key": key} {
			if err := os.Symlink(filepath.Join("..data", name), p); err != nil {
				t.Fatal(err)
			}
		}
	}
	return cert, key
}

// leaf issues a certificate from p's CA, returned as PEM with its key.
func (p *pki) leaf(t *testing.T, serial int64, dns, uri string, usage x509.ExtKeyUsage) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprintf("leaf %d", serial)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	if dns != "" {
		tmpl.DNSNames = []string{dns}
	}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
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
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	return pool
}

// clientCert is a workload certificate for a client's tls.Config.
func (p *pki) clientCert(t *testing.T, serial int64, uri string) tls.Certificate {
	t.Helper()
	c, k := p.leaf(t, serial, "", uri, x509.ExtKeyUsageClientAuth)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// tlsStack is phigate between a real Envoy whose listener requires client
// certificates from the test's CA and the legacy service; phigate's own
// gRPC listener is TLS too, each listener's certificate in a secret
// volume the test can rotate.
type tlsStack struct {
	*stacktest.Stack
	pki           *pki
	envoyVol      *secretVolume
	phigateVol    *secretVolume
	dir           string // phigate's audit trail
	envoyName     string // DNS name in Envoy's listener certificate
	phigateName   string
	clientCAPath  string
	phigateCAPath string
}

func startTLSStack(t *testing.T) *tlsStack {
	t.Helper()
	p := newPKI(t)
	ts := &tlsStack{pki: p, envoyVol: newSecretVolume(t), phigateVol: newSecretVolume(t),
		envoyName: "ehr.phigate.local", phigateName: "phigate.local"}
	ts.clientCAPath = filepath.Join(p.dir, "ca.pem")
	ts.phigateCAPath = ts.clientCAPath
	envoyCert, envoyKey := ts.envoyVol.put(t, p.leafPair(t, 100, ts.envoyName, x509.ExtKeyUsageServerAuth))
	phigateCert, phigateKey := ts.phigateVol.put(t, p.leafPair(t, 200, ts.phigateName, x509.ExtKeyUsageServerAuth))
	sidecarCert, sidecarKey := p.issue(t, "sidecar", 300, "", "spiffe://phigate.local/ns/mesh/sa/envoy", x509.ExtKeyUsageClientAuth)
	ts.Stack = stacktest.Start(t, stacktest.Options{
		Mutate: func(c *server.Config) {
			c.Listen.TLS = server.TLSConfig{Cert: phigateCert, Key: phigateKey, ClientCA: ts.clientCAPath}
			c.Services = authz.ServiceAccounts{reminders: {"service"}}
			ts.dir = c.Audit.Dir
		},
		PhigateTLS: &envoy.UpstreamTLS{CA: ts.phigateCAPath, Cert: sidecarCert, Key: sidecarKey, ServerName: ts.phigateName},
		ListenTLS:  &envoy.DownstreamTLS{Cert: envoyCert, Key: envoyKey, ClientCA: ts.clientCAPath},
	})
	return ts
}

// pemPair is a certificate and its key, PEM-encoded.
type pemPair struct{ cert, key []byte }

func (p *pki) leafPair(t *testing.T, serial int64, dns string, usage x509.ExtKeyUsage) pemPair {
	t.Helper()
	c, k := p.leaf(t, serial, dns, "", usage)
	return pemPair{c, k}
}

// clientConfig trusts the test CA for name and presents certs.
func (ts *tlsStack) clientConfig(name string, certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: ts.pki.pool(), ServerName: name, Certificates: certs, MinVersion: tls.VersionTLS12}
}

// get sends a GET through Envoy's TLS listener with tc, without a token.
func (ts *tlsStack) get(t *testing.T, tc *tls.Config, path string) (*http.Response, string, error) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	resp, err := client.Get(ts.Envoy.URL(path))
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// TestDownstreamMutualTLS: a workload certificate whose SPIFFE ID is in
// service_accounts is the caller, without a token: Envoy forwards the
// ID as the source principal, phigate gives it the account's roles, and
// the policy decides on them; the decision's record names it. A
// certificate from the same CA with an ID nobody listed is not a caller.
func TestDownstreamMutualTLS(t *testing.T) {
	ts := startTLSStack(t)
	workload := ts.pki.clientCert(t, 400, reminders)
	stranger := ts.pki.clientCert(t, 401, "spiffe://phigate.local/ns/other/sa/unknown")
	cases := []struct {
		name    string
		cert    tls.Certificate
		version uint16
		path    string
		want    int
	}{
		{"listed workload reads a patient it serves", workload, 0, "/fhir/Patient/pat-0001", 200},
		{"listed workload over TLS 1.2", workload, tls.VersionTLS12, "/fhir/Patient/pat-0002", 200},
		{"listed workload reaches for another patient", workload, 0, "/fhir/Patient/pat-0009", 403},
		{"unlisted workload has no identity", stranger, 0, "/fhir/Patient/pat-0001", 401},
	}
	ids := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts.Up.Reset()
			cfg := ts.clientConfig(ts.envoyName, tc.cert)
			cfg.MaxVersion = tc.version
			resp, body, err := ts.get(t, cfg, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d; %.300s", resp.StatusCode, tc.want, body)
			}
			if tc.version != 0 && resp.TLS.Version != tc.version {
				t.Errorf("negotiated %s, want %s", tls.VersionName(resp.TLS.Version), tls.VersionName(tc.version))
			}
			id := resp.Header.Get(envoy.DecisionHeader)
			if seen := ts.Up.Requests(); len(seen) == 1 {
				id = seen[0].Headers.Get(envoy.DecisionHeader)
			} else if tc.want == 200 {
				t.Fatalf("legacy saw %d requests, want 1", len(seen))
			}
			ids[tc.name] = id
		})
	}

	entries, err := audit.Query(ts.dir, audit.Filter{Kind: audit.KindDecision}, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases[:3] {
		t.Run("recorded: "+tc.name, func(t *testing.T) {
			var found *audit.Entry
			for i := range entries {
				if entries[i].Event.DecisionID() == ids[tc.name] {
					found = &entries[i]
				}
			}
			if found == nil {
				t.Fatalf("no decision record %q", ids[tc.name])
			}
			if sub, _ := found.Event.User(); sub != reminders {
				t.Errorf("recorded user %q, want %q", sub, reminders)
			}
			var in struct {
				Source struct {
					Principal string `json:"principal"`
				} `json:"source"`
				Identity struct {
					Subject string   `json:"subject"`
					Roles   []string `json:"roles"`
				} `json:"identity"`
			}
			if err := json.Unmarshal(found.Input, &in); err != nil {
				t.Fatalf("policy input: %v", err)
			}
			if in.Source.Principal != reminders {
				t.Errorf("policy input source.principal %q, want %q", in.Source.Principal, reminders)
			}
			if strings.Join(in.Identity.Roles, ",") != "service" {
				t.Errorf("policy input roles %v, want [service]", in.Identity.Roles)
			}
		})
	}
}

// TestDownstreamRefusesAtHandshake: a client without a certificate, or
// with one from a CA the listener does not trust, or offering nothing
// newer than TLS 1.1, never gets a request through. Under TLS 1.3 the
// client's handshake completes before the server has checked the client's
// certificate, so the refusal arrives as the alert on the first read.
func TestDownstreamRefusesAtHandshake(t *testing.T) {
	ts := startTLSStack(t)
	other := newPKI(t)
	cases := []struct {
		name string
		cfg  func() *tls.Config
		want string // in the client's error
	}{
		{"no certificate, TLS 1.3", func() *tls.Config { return ts.clientConfig(ts.envoyName) }, "certificate required"},
		{"no certificate, TLS 1.2", func() *tls.Config {
			c := ts.clientConfig(ts.envoyName)
			c.MaxVersion = tls.VersionTLS12
			return c
		}, "handshake failure"},
		{"certificate from another CA", func() *tls.Config {
			return ts.clientConfig(ts.envoyName, other.clientCert(t, 5, reminders))
		}, "unknown certificate authority"},
		{"TLS 1.1", func() *tls.Config {
			c := ts.clientConfig(ts.envoyName, ts.pki.clientCert(t, 6, reminders))
			c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			return c
		}, "protocol version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts.Up.Reset()
			err := handshakeAndRead(ts.Envoy.Listen, tc.cfg())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if n := len(ts.Up.Requests()); n != 0 {
				t.Fatalf("legacy saw %d requests", n)
			}
		})
	}
	t.Run("phigate's gRPC listener refuses TLS 1.1", func(t *testing.T) {
		c := ts.clientConfig(ts.phigateName, ts.pki.clientCert(t, 7, reminders))
		c.MinVersion, c.MaxVersion, c.NextProtos = tls.VersionTLS10, tls.VersionTLS11, []string{"h2"}
		if err := handshakeAndRead(ts.Phigate.GRPCAddr(), c); err == nil || !strings.Contains(err.Error(), "protocol version") {
			t.Fatalf("got %v, want a protocol version alert", err)
		}
	})
}

// handshakeAndRead completes a handshake with addr, sends a request and
// returns the first error, which is the server's refusal if there is one.
func handshakeAndRead(addr string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// The server may have sent its alert and closed before the write:
	// the alert, still to be read, is the answer then.
	_, werr := io.WriteString(conn, "GET /fhir/Patient/pat-0001 HTTP/1.1\r\nHost: x\r\n\r\n")
	_, err = conn.Read(make([]byte, 1))
	switch {
	case err != nil && (werr == nil || strings.Contains(err.Error(), "remote error")):
		return err
	case werr != nil:
		return werr
	}
	return fmt.Errorf("the server answered")
}
