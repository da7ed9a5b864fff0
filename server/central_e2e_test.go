package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/internal/pgtest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
	"github.com/phigate/phigate/store"
)

// TestReplicasShipAuditCentrally: a phigate behind the real Envoy and a
// second replica, both on one PostgreSQL store, ship their trails there.
// Requests through Envoy and Checks on the second replica all reach the
// centre under the configured replica ids; the shipping metrics are on
// /metrics; the centre answers one query across both and verifies both
// chains against their pinned keys.
func TestReplicasShipAuditCentrally(t *testing.T) {
	dsn := pgtest.Start(t)
	if _, err := store.Migrate(t.Context(), dsn); err != nil {
		t.Fatal(err)
	}
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	var keyFiles []string
	s := stacktest.Start(t, stacktest.Options{Mutate: func(cfg *server.Config) {
		cfg.Store.PostgresDSNFile = dsnFile
		cfg.Audit.ReplicaID = "edge-a"
		keyFiles = append(keyFiles, audit.DefaultSigningKeyFile(cfg.Audit.Dir))
	}})
	doc := s.Token(stacktest.Physician(1))
	for _, p := range []string{"/fhir/Patient/pat-0001", "/fhir/Patient/pat-0002", "/fhir/Patient/pat-0001"} {
		s.Do("GET", p, doc, nil, nil)
	}

	cfg := stacktest.ServerConfig(t, s.Keys)
	cfg.Store.PostgresDSNFile = dsnFile
	cfg.Audit.ReplicaID = "edge-b"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	keyFiles = append(keyFiles, cfg.Audit.SigningKeyFile)
	core, logs := observer.New(zap.DebugLevel)
	b := stacktest.Serve(t, cfg, zap.New(core))
	conn, err := grpc.NewClient(b.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	for range 4 {
		if _, err := client.Check(t.Context(), stacktest.CheckRequest("GET", "/fhir/Patient/pat-0001", doc)); err != nil {
			t.Fatal(err)
		}
	}

	centre, err := store.OpenAuditCentre(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer centre.Close()
	want := map[string]int{"edge-a": 2, "edge-b": 4} // pat-0001 reads on each
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := audit.QueryCentral(t.Context(), centre, audit.Filter{Patient: "pat-0001", Kind: audit.KindDecision}, audit.QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		by := map[string]int{}
		for _, e := range got {
			by[e.Replica]++
		}
		if by["edge-a"] == want["edge-a"] && by["edge-b"] == want["edge-b"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the centre holds %v decisions about pat-0001, want %v", by, want)
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, addr := range []string{s.Phigate.AdminAddr(), b.AdminAddr()} {
		_, body := stacktest.GetBody(t, "http://"+addr+"/metrics")
		for _, m := range []string{"phigate_audit_ship_lag_records", "phigate_audit_ship_lag_seconds", "phigate_audit_ship_records_total",
			"phigate_audit_ship_checkpoints_total", "phigate_audit_ship_errors_total", "phigate_audit_ship_halted"} {
			if !regexp.MustCompile(`(?m)^# TYPE ` + m + ` `).MatchString(body) {
				t.Errorf("%s does not expose %s", addr, m)
			}
		}
		shipped := regexp.MustCompile(`(?m)^phigate_audit_ship_records_total (\S+)$`).FindStringSubmatch(body)
		if len(shipped) < 2 {
			t.Errorf("%s: no phigate_audit_ship_records_total sample", addr)
		} else if n, _ := strconv.ParseFloat(shipped[1], 64); n < 3 {
			t.Errorf("%s shipped %v records, want at least 3", addr, n)
		}
	}

	// Shipping names replicas, sequences and counts; never a patient or a user.
	if logs.FilterLoggerName("audit_ship").FilterMessage("audit shipping").Len() == 0 {
		t.Error("the shipper logged nothing to look at")
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += fmt.Sprintf(" %s=%v", k, v)
		}
		if strings.Contains(line, "pat-0001") || strings.Contains(line, "prac-001") {
			t.Errorf("log entry carries PHI: %s", line)
		}
	}
	for _, addr := range []string{s.Phigate.AdminAddr(), b.AdminAddr()} {
		if _, body := stacktest.GetBody(t, "http://"+addr+"/metrics"); strings.Contains(body, "pat-0001") || strings.Contains(body, "prac-001") {
			t.Errorf("%s metrics carry PHI", addr)
		}
	}

	pubs := audit.KeySet{}
	for _, f := range keyFiles {
		ks, err := audit.LoadTrustedKeys(audit.PublicKeyPath(f))
		if err != nil {
			t.Fatal(err)
		}
		for id, k := range ks {
			pubs[id] = k
		}
	}
	reps, err := audit.VerifyCentral(t.Context(), centre, pubs, audit.CentralVerifyOptions{})
	if err != nil || len(reps) != 2 {
		t.Fatalf("verify --central: %v, %+v", err, reps)
	}
}
