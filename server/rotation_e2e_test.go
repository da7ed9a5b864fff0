package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// servedSerial connects to addr and returns the serial of the
// certificate the server presented.
func servedSerial(t *testing.T, addr string, cfg *tls.Config) int64 {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// waitSerial polls new connections until the server presents want.
func waitSerial(t *testing.T, addr string, cfg *tls.Config, want int64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := servedSerial(t, addr, cfg)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still serves serial %d, want %d", addr, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRotatedCertificatesServed: replacing a listener's certificate files
// (a secret volume's swap) is picked up by new connections, without a
// restart, on Envoy's listener and on phigate's gRPC listener, and
// requests keep being decided through both.
func TestRotatedCertificatesServed(t *testing.T) {
	ts := startTLSStack(t)
	workload := ts.pki.clientCert(t, 500, reminders)
	envoyClient := ts.clientConfig(ts.envoyName, workload)
	phigateClient := ts.clientConfig(ts.phigateName, workload)
	phigateClient.NextProtos = []string{"h2"}
	if got := servedSerial(t, ts.Envoy.Listen, envoyClient); got != 100 {
		t.Fatalf("Envoy serves serial %d, want 100", got)
	}
	if got := servedSerial(t, ts.Phigate.GRPCAddr(), phigateClient); got != 200 {
		t.Fatalf("phigate serves serial %d, want 200", got)
	}

	ts.envoyVol.put(t, ts.pki.leafPair(t, 101, ts.envoyName, x509.ExtKeyUsageServerAuth))
	waitSerial(t, ts.Envoy.Listen, envoyClient, 101)
	ts.phigateVol.put(t, ts.pki.leafPair(t, 201, ts.phigateName, x509.ExtKeyUsageServerAuth))
	waitSerial(t, ts.Phigate.GRPCAddr(), phigateClient, 201)

	// Envoy's connections to phigate were made with the old certificate;
	// a new one sees the new and verifies it. Either way requests are
	// decided.
	if resp, body, err := ts.get(t, envoyClient, "/fhir/Patient/pat-0001"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after rotation: %v %v %.200s", err, resp, body)
	}

	// A pair that does not match (a key from another certificate) is not
	// served: each listener keeps the last good certificate.
	mismatched := func(serial int64, name string) pemPair {
		good := ts.pki.leafPair(t, serial, name, x509.ExtKeyUsageServerAuth)
		other := ts.pki.leafPair(t, serial+1, name, x509.ExtKeyUsageServerAuth)
		return pemPair{good.cert, other.key}
	}
	ts.envoyVol.put(t, mismatched(102, ts.envoyName))
	ts.phigateVol.put(t, mismatched(202, ts.phigateName))
	time.Sleep(2500 * time.Millisecond)
	if got := servedSerial(t, ts.Envoy.Listen, envoyClient); got != 101 {
		t.Errorf("after a mismatched pair Envoy serves serial %d, want 101", got)
	}
	if got := servedSerial(t, ts.Phigate.GRPCAddr(), phigateClient); got != 201 {
		t.Errorf("after a mismatched pair phigate serves serial %d, want 201", got)
	}
	if resp, body, err := ts.get(t, envoyClient, "/fhir/Patient/pat-0001"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after a mismatched pair: %v %v %.200s", err, resp, body)
	}
}
