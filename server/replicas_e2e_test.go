package server_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/pgtest"
	"github.com/phigate/phigate/internal/redistest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(redistest.Wrap(m))) }

// TestReplicasShareCareRelationships: two phigate replicas on one
// PostgreSQL store. A care relationship written to the store opens a
// patient on replica B; revoked through another replica's store handle,
// it is refused on B within a second, although B had just decided (and
// might have cached) the same request. The delay from the revocation's
// commit to B's first denial is measured and reported.
func TestReplicasShareCareRelationships(t *testing.T) {
	dsn := pgtest.Start(t)
	if _, err := store.Migrate(t.Context(), dsn); err != nil {
		t.Fatal(err)
	}
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	replica := func() authv3.AuthorizationClient {
		cfg := stacktest.ServerConfig(t, keys)
		cfg.Store.PostgresDSNFile = dsnFile
		srv := stacktest.Serve(t, cfg, nil)
		conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return authv3.NewAuthorizationClient(conn)
	}
	_ = replica() // replica A serves too; the writes below go through its store's database
	b := replica()
	writer, err := store.OpenPostgres(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()

	tok, err := keys.Mint(stacktest.Physician(1)) // Practitioner/prac-001; pat-0100 is not on its static care team
	if err != nil {
		t.Fatal(err)
	}
	decide := func() codes.Code {
		t.Helper()
		r, err := b.Check(t.Context(), stacktest.CheckRequest("GET", "/fhir/Patient/pat-0100", tok))
		if err != nil {
			t.Fatal(err)
		}
		return codes.Code(r.GetStatus().GetCode())
	}
	if c := decide(); c != codes.PermissionDenied {
		t.Fatalf("before any relationship: %v, want denied", c)
	}
	k := store.RelationshipKey{Practitioner: "Practitioner/prac-001", Patient: "pat-0100", Role: "attending", Source: "adt"}
	var delays []time.Duration
	for round := range 10 {
		if err := writer.PutRelationship(t.Context(), store.Relationship{RelationshipKey: k, From: time.Now().Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, decide, codes.OK, 2*time.Second, "admission")
		for range 3 { // decided again, and cacheable
			if c := decide(); c != codes.OK {
				t.Fatalf("round %d: allowed then %v", round, c)
			}
		}
		start := time.Now()
		if err := writer.EndRelationship(t.Context(), k, time.Now()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, decide, codes.PermissionDenied, time.Second, "revocation")
		delays = append(delays, time.Since(start))
	}
	slices.Sort(delays)
	t.Logf("revocation through another replica refused on replica b: median %v, max %v over %d (bound 1s)",
		delays[len(delays)/2], delays[len(delays)-1], len(delays))
}

func waitFor(t *testing.T, decide func() codes.Code, want codes.Code, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c := decide()
		if c == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %v, want %v", what, c, within, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
