package server_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/ingest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// TestFeedsOverTLSAndToken, through the real Envoy: the MLLP listener
// behind mTLS acknowledges a hospital holding a certificate of its CA and
// never answers one without; the FHIR listener refuses a CareTeam without
// its bearer token and, with it, stores one that opens a patient to its
// member.
func TestFeedsOverTLSAndToken(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.issue(t, "phigate-mllp", 2, "phigate.local", "", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := p.issue(t, "hospital-adt", 3, "", "", x509.ExtKeyUsageClientAuth)
	ca := filepath.Join(p.dir, "ca.pem")
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "feedfacefeedfacefeedfacefeedface"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		c.Ingest.MLLP.Listen = "127.0.0.1:0"
		c.Ingest.MLLP.TLS = ingest.TLSFiles{Cert: srvCert, Key: srvKey, ClientCA: ca}
		c.Ingest.FHIR.Listen = "127.0.0.1:0"
		c.Ingest.FHIR.TokenFile = tokenFile
	}})

	msg := "MSH|^~\\&|ADT|HOSP|PHIGATE|HOSP|" + time.Now().UTC().Format("20060102150405-0700") + "||ADT^A01|TLS-1|P|2.5\r" +
		"EVN|A01\rPID|1||pat-0101\rPV1|1|I|W1||||prac-002\r"
	roots := x509.NewCertPool()
	pemCA, _ := os.ReadFile(ca)
	roots.AppendCertsFromPEM(pemCA)
	pair, err := tls.LoadX509KeyPair(cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	exchange := func(certs []tls.Certificate) (string, error) {
		c, err := tls.Dial("tcp", s.Phigate.MLLPAddr(), &tls.Config{RootCAs: roots, ServerName: "phigate.local", Certificates: certs})
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("\x0b" + msg + "\x1c\r")); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString(0x1c)
	}
	doc2 := s.Token(stacktest.Physician(2))
	if r := s.Do("GET", "/fhir/Patient/pat-0101", doc2, nil, nil); r.Status != http.StatusForbidden {
		t.Fatalf("before the admission: %d, want 403", r.Status)
	}
	if ack, err := exchange(nil); err == nil {
		t.Fatalf("without a client certificate: answered %q", ack)
	}
	ack, err := exchange([]tls.Certificate{pair})
	if err != nil || !strings.Contains(ack, "MSA|AA|TLS-1") {
		t.Fatalf("with a client certificate: %q, %v", ack, err)
	}
	waitStatus(t, s, doc2, "/fhir/Patient/pat-0101", http.StatusOK, 3*time.Second)

	doc3 := s.Token(stacktest.Physician(3))
	if r := s.Do("GET", "/fhir/Patient/pat-0102", doc3, nil, nil); r.Status != http.StatusForbidden {
		t.Fatalf("before the CareTeam: %d, want 403", r.Status)
	}
	team := `{"resourceType":"CareTeam","id":"team-1","meta":{"versionId":"1"},"status":"active",` +
		`"subject":{"reference":"Patient/pat-0102"},"participant":[{"member":{"reference":"Practitioner/prac-003"}}]}`
	putTeam := func(tok string) int {
		req, _ := http.NewRequest("PUT", "http://"+s.Phigate.FHIRIngestAddr()+"/fhir/CareTeam/team-1", strings.NewReader(team))
		req.Header.Set("content-type", "application/fhir+json")
		if tok != "" {
			req.Header.Set("authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := putTeam(""); code != http.StatusUnauthorized {
		t.Fatalf("CareTeam without the token: %d, want 401", code)
	}
	if r := s.Do("GET", "/fhir/Patient/pat-0102", doc3, nil, nil); r.Status != http.StatusForbidden {
		t.Fatalf("after a refused CareTeam: %d, want 403", r.Status)
	}
	if code := putTeam(token); code != http.StatusCreated {
		t.Fatalf("CareTeam: %d, want 201", code)
	}
	waitStatus(t, s, doc3, "/fhir/Patient/pat-0102", http.StatusOK, 3*time.Second)
	if code := putTeam(token); code != http.StatusOK {
		t.Fatalf("the same version again: %d, want 200", code)
	}
}
