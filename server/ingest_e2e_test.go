package server_test

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/internal/pgtest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
	"github.com/phigate/phigate/store"
)

// TestADTFeedOpensAndClosesAccess, through the real Envoy: an ADT A01
// over MLLP naming prac-001 attending for pat-0100 (not on its static
// care team) lets prac-001 read the patient; an A03 ends that once the
// discharge grace (one second here) has passed. With the embedded store,
// and with PostgreSQL.
func TestADTFeedOpensAndClosesAccess(t *testing.T) {
	for _, backend := range []string{"memory", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var dsnFile, auditDir string
			if backend == "postgres" {
				dsn := pgtest.Start(t)
				if _, err := store.Migrate(t.Context(), dsn); err != nil {
					t.Fatal(err)
				}
				dsnFile = filepath.Join(t.TempDir(), "dsn")
				if err := os.WriteFile(dsnFile, []byte(dsn), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
				c.Ingest.MLLP.Listen = "127.0.0.1:0"
				c.Ingest.MLLP.DischargeGrace = time.Second
				c.Store.PostgresDSNFile = dsnFile
				auditDir = c.Audit.Dir
			}})
			tok := s.Token(stacktest.Physician(1))
			read := func() int { return s.Do("GET", "/fhir/Patient/pat-0100", tok, nil, nil).Status }
			if got := read(); got != http.StatusForbidden {
				t.Fatalf("before the admission: %d, want 403", got)
			}
			conn, err := net.Dial("tcp", s.Phigate.MLLPAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			send := func(event, id string) string {
				t.Helper()
				ts := time.Now().UTC().Format("20060102150405.0000-0700")
				msg := "MSH|^~\\&|ADT|HOSP|PHIGATE|HOSP|" + ts + "||ADT^" + event + "|" + id + "|P|2.5\r" +
					"EVN|" + event + "|" + ts + "\rPID|1||pat-0100^^^HOSP^MR||Doe^Jane\rPV1|1|I|W1||||prac-001^House\r"
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := conn.Write([]byte("\x0b" + msg + "\x1c\r")); err != nil {
					t.Fatal(err)
				}
				ack, err := r.ReadString(0x1c)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := r.ReadByte(); err != nil { // the frame's CR
					t.Fatal(err)
				}
				return ack
			}
			if ack := send("A01", "E2E-1"); !strings.Contains(ack, "MSA|AA|E2E-1") {
				t.Fatalf("A01 ACK %q", ack)
			}
			waitStatus(t, s, tok, "/fhir/Patient/pat-0100", http.StatusOK, 3*time.Second)
			if ack := send("A03", "E2E-2"); !strings.Contains(ack, "MSA|AA|E2E-2") {
				t.Fatalf("A03 ACK %q", ack)
			}
			discharged := time.Now()
			if got := read(); got != http.StatusOK {
				t.Fatalf("within the grace: %d, want 200", got)
			}
			waitStatus(t, s, tok, "/fhir/Patient/pat-0100", http.StatusForbidden, 5*time.Second)
			t.Logf("%s: access ended %v after the discharge (grace 1s)", backend, time.Since(discharged).Round(10*time.Millisecond))

			s.StopPhigate()
			recs, err := audit.Query(auditDir, audit.Filter{Kind: audit.KindIngest, Patient: "pat-0100"}, audit.QueryOptions{})
			if err != nil || len(recs) != 2 {
				t.Fatalf("ingest audit records: %d, %v; want the A01 and the A03", len(recs), err)
			}
		})
	}
}
