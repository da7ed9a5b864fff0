package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// selfSignedPEM is a certificate with serial and its key, PEM-encoded.
func selfSignedPEM(t *testing.T, serial int64) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "phigate.local"},
		DNSNames: []string{"phigate.local"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// replace puts b at path by a rename, as a rotation does.
func replace(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestTLSFilesReload: a changed pair is served once the interval has
// passed; a pair that does not load (mismatched, missing, a CA file with
// no certificate) leaves the last good one serving; and the served
// configuration always requires TLS 1.2 and, with a client CA, a client
// certificate.
func TestTLSFilesReload(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath, caPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.pem")
	c1, k1 := selfSignedPEM(t, 1)
	replace(t, certPath, c1)
	replace(t, keyPath, k1)
	replace(t, caPath, c1)
	core, logs := observer.New(zap.InfoLevel)
	f, err := newTLSFiles(TLSConfig{Cert: certPath, Key: keyPath, ClientCA: caPath}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	serve := func() *tls.Config {
		t.Helper()
		clock = clock.Add(tlsCheckInterval)
		f.refresh(clock)
		return f.cur.Load().conf
	}
	serial := func() int64 { return serve().Certificates[0].Leaf.SerialNumber.Int64() }

	c2, k2 := selfSignedPEM(t, 2)
	c3, k3 := selfSignedPEM(t, 3)
	steps := []struct {
		name   string
		change func()
		want   int64
	}{
		{"unchanged", func() {}, 1},
		{"rotated pair", func() { replace(t, certPath, c2); replace(t, keyPath, k2) }, 2},
		{"certificate without its key", func() { replace(t, certPath, c3) }, 2},
		{"its key arrives", func() { replace(t, keyPath, k3) }, 3},
		{"certificate removed", func() { _ = os.Remove(certPath) }, 3},
		{"certificate back", func() { replace(t, certPath, c3) }, 3},
		{"CA file without a certificate", func() { replace(t, caPath, []byte("not pem")); replace(t, certPath, c1); replace(t, keyPath, k1) }, 3},
		{"CA fixed", func() { replace(t, caPath, c2) }, 1},
	}
	for _, st := range steps {
		st.change()
		if got := serial(); got != st.want {
			t.Errorf("%s: serving serial %d, want %d", st.name, got, st.want)
		}
		// Looking again at a set that failed says nothing more.
		if got := serial(); got != st.want {
			t.Errorf("%s, looked at again: serving serial %d, want %d", st.name, got, st.want)
		}
	}
	if n := logs.FilterMessageSnippet("do not load").Len(); n != 3 {
		t.Errorf("%d warnings for the three failed loads, want 3: %v", n, logs.All())
	}
	conf := serve()
	if conf.MinVersion != tls.VersionTLS12 || conf.ClientAuth != tls.RequireAndVerifyClientCert || conf.ClientCAs == nil {
		t.Errorf("served config: min version %x, client auth %v", conf.MinVersion, conf.ClientAuth)
	}

	// Within the interval the files are not looked at.
	replace(t, certPath, c2)
	replace(t, keyPath, k2)
	f.refresh(clock.Add(tlsCheckInterval / 2))
	if got := f.cur.Load().conf.Certificates[0].Leaf.SerialNumber.Int64(); got != 1 {
		t.Errorf("reloaded within the interval: serial %d", got)
	}
}

func TestTLSFilesStartupErrors(t *testing.T) {
	dir := t.TempDir()
	c1, k1 := selfSignedPEM(t, 1)
	_, k2 := selfSignedPEM(t, 2)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		replace(t, p, b)
		return p
	}
	cert, key, other := write("c.pem", c1), write("k.pem", k1), write("k2.pem", k2)
	junk := write("junk.pem", []byte("junk"))
	for name, c := range map[string]TLSConfig{
		"mismatched key":    {Cert: cert, Key: other},
		"missing cert":      {Cert: filepath.Join(dir, "none"), Key: key},
		"client CA not PEM": {Cert: cert, Key: key, ClientCA: junk},
		"client CA missing": {Cert: cert, Key: key, ClientCA: filepath.Join(dir, "none")},
	} {
		if _, err := newTLSFiles(c, zap.NewNop()); err == nil {
			t.Errorf("%s: started", name)
		}
	}
}
