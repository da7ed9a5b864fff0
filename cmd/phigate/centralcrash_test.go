package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy/envoytest"
	"github.com/phigate/phigate/internal/pgtest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/store"
)

// TestCentralShippingSurvivesSIGKILL runs phigate as a process on a
// PostgreSQL store, kills it with SIGKILL under a steady stream of Checks
// (shipping midway), restarts it on the same trail and stops it cleanly:
// the centre then holds every record of the trail exactly once, counted
// by sequence, and verify --central passes.
func TestCentralShippingSurvivesSIGKILL(t *testing.T) {
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
	grpcAddr, adminAddr := envoytest.FreePort(t), envoytest.FreePort(t)
	auditDir := filepath.Join(t.TempDir(), "audit")
	cfgPath := filepath.Join(t.TempDir(), "phigate.yaml")
	cfg := fmt.Sprintf(`listen:
  grpc: %s
  admin: %s
jwt:
  issuer: %s
  audiences: [%s]
  jwks_file: %s
store:
  postgres_dsn_file: %s
audit:
  dir: %s
  checkpoint_every: 50
  replica_id: crash-1
  ship: {batch: 20, interval: 50ms}
shutdown:
  drain_delay: 0s
  grace: 5s
log:
  level: warn
`, grpcAddr, adminAddr, demokeys.DefaultIssuer, demokeys.DefaultAudience, keys.JWKSPath(), dsnFile, auditDir)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := keys.Mint(stacktest.Physician(1))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	// load sends Checks from two goroutines until stop is closed.
	load := func(stop chan struct{}) *sync.WaitGroup {
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
					_, _ = client.Check(ctx, stacktest.CheckRequest("GET", "/fhir/Patient/pat-0001", tok))
					cancel()
				}
			}()
		}
		return &wg
	}
	pg, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	counts := func() (rows, distinct, top int64) {
		t.Helper()
		if err := pg.QueryRow(t.Context(), "SELECT count(*), count(DISTINCT seq), COALESCE(max(seq), 0) FROM phigate_audit_records WHERE replica = 'crash-1'").
			Scan(&rows, &distinct, &top); err != nil {
			t.Fatal(err)
		}
		return rows, distinct, top
	}

	first := startPhigateProc(t, cfgPath, adminAddr)
	stop := make(chan struct{})
	wg := load(stop)
	deadline := time.Now().Add(60 * time.Second)
	for rows, _, _ := counts(); rows < 100; rows, _, _ = counts() {
		if time.Now().After(deadline) {
			t.Fatalf("the centre holds %d records after 30s of load", rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Hold the shipper's next insert behind a lock, so records pile up on
	// the replica and a batch is in flight when the kill lands.
	locker, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(context.Background())
	lock, err := locker.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(t.Context(), "LOCK TABLE phigate_audit_records IN SHARE ROW EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	lagRe := regexp.MustCompile(`(?m)^phigate_audit_ship_lag_records (\S+)$`)
	for lag := 0.0; lag < 40; {
		if time.Now().After(deadline) {
			t.Fatalf("the shipping lag reached only %v records", lag)
		}
		time.Sleep(20 * time.Millisecond)
		if m := lagRe.FindStringSubmatch(getBody(t, "http://"+adminAddr+"/metrics")); m != nil {
			lag, _ = strconv.ParseFloat(m[1], 64)
		}
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	close(stop)
	wg.Wait()
	if err := lock.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	atKill, _, _ := counts()
	pub := audit.PublicKeyPath(audit.DefaultSigningKeyFile(auditDir))
	killed, _ := audit.VerifyKeyFile(auditDir, pub, audit.VerifyOptions{}) // what the trail had at the kill
	if uint64(atKill)+40 > killed.Records {
		t.Fatalf("the kill did not land midway: the centre held %d records, the trail %d", atKill, killed.Records)
	}

	second := startPhigateProc(t, cfgPath, adminAddr)
	stop = make(chan struct{})
	wg = load(stop)
	for rows, _, _ := counts(); uint64(rows) <= killed.Records; rows, _, _ = counts() {
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the centre holds %d records, the trail had %d at the kill", rows, killed.Records)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-second.exited:
		if err != nil {
			t.Fatalf("restarted phigate exited with %v; log:\n%s", err, second.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("restarted phigate did not stop")
	}

	rep, err := audit.VerifyKeyFile(auditDir, pub, audit.VerifyOptions{})
	if err != nil {
		t.Fatalf("local verify: %v", err)
	}
	rows, distinct, top := counts()
	t.Logf("the trail had %d records at the kill, the centre %d; after the restart and a clean stop the trail holds %d, the centre %d rows (%d distinct, highest %d)",
		killed.Records, atKill, rep.Records, rows, distinct, top)
	if uint64(rows) != rep.Records || distinct != rows || uint64(top) != rep.Records {
		t.Fatalf("the centre holds %d rows, %d distinct, highest %d; the trail %d records", rows, distinct, top, rep.Records)
	}
	code, stdout, stderr := runCmd(t, "audit", "verify", "--central", "--dsn-file", dsnFile, "--trusted-keys", pub)
	if code != 0 || !strings.Contains(stdout, "OK: 1 replicas verified") {
		t.Fatalf("verify --central: exit %d\n%s\n%s", code, stdout, stderr)
	}
	t.Log(strings.TrimSpace(stdout))
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	_, body := stacktest.GetBody(t, url)
	return body
}
