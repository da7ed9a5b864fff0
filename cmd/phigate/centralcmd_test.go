package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/internal/pgtest"
	"github.com/phigate/phigate/store"
)

// shipFixture ships a written trail to the centre at dsn, as a replica
// would after a restart, and returns its replica id.
func shipFixture(t *testing.T, fx *trailFixture, dsn string) string {
	t.Helper()
	l, err := audit.Open(fx.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	centre, err := store.OpenAuditCentre(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer centre.Close()
	s, err := audit.StartShipper(l, centre)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	deadline := time.Now().Add(60 * time.Second)
	for s.Shipped() == 0 || s.LagRecords() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("shipping did not catch up: %d shipped, lag %d", s.Shipped(), s.LagRecords())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the checkpoints follow their records in the same round
	return s.ReplicaID()
}

// TestAuditCentralCommands: two replicas' trails shipped to PostgreSQL;
// query --central answers across both what the two local queries answer;
// verify --central passes with both pinned keys, and after a central
// record is deleted and another edited, exits as the local verify would
// (13 for the gap, which it names by replica and range; 10 for the edit).
func TestAuditCentralCommands(t *testing.T) {
	dsn := pgtest.Start(t)
	if _, err := store.Migrate(t.Context(), dsn); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PHIGATE_TEST_CENTRAL_DSN", dsn)
	central := []string{"--central", "--dsn-env", "PHIGATE_TEST_CENTRAL_DSN"}
	fa, fb := writeTrail(t, false), writeTrail(t, false)
	ida, idb := shipFixture(t, fa, dsn), shipFixture(t, fb, dsn)

	code, out, errOut := runCmd(t, append([]string{"audit", "query"}, central...)...)
	if code != 0 || !strings.HasPrefix(out, "REPLICA") || !strings.Contains(out, ida) || !strings.Contains(out, idb) {
		t.Fatalf("query --central: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, sel := range [][]string{{"--patient", "pat-0001"}, {"--outcome", "deny"}, {"--break-glass"}, {"--user", "Practitioner/prac-001"}} {
		want := 0
		for _, fx := range []*trailFixture{fa, fb} {
			_, local, _ := runCmd(t, append([]string{"audit", "query", fx.dir, "--json"}, sel...)...)
			want += strings.Count(local, "\n")
		}
		code, out, _ := runCmd(t, append(append([]string{"audit", "query", "--json"}, central...), sel...)...)
		if got := strings.Count(out, "\n"); code != 0 || got != want || want == 0 {
			t.Errorf("query --central %v: exit %d, %d events; the local queries give %d", sel, code, got, want)
		}
	}
	if _, out, _ := runCmd(t, append(append([]string{"audit", "query", "--json"}, central...), "--replica", ida)...); strings.Count(out, "\n") != len(trailCalls) {
		t.Errorf("query --central --replica: %d events, want %d", strings.Count(out, "\n"), len(trailCalls))
	}

	trusted := filepath.Join(t.TempDir(), "trusted.pem")
	var pem []byte
	for _, fx := range []*trailFixture{fa, fb} {
		b, err := os.ReadFile(fx.pub)
		if err != nil {
			t.Fatal(err)
		}
		pem = append(pem, b...)
	}
	if err := os.WriteFile(trusted, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	verify := append(append([]string{"audit", "verify"}, central...), "--trusted-keys", trusted)
	if code, out, errOut := runCmd(t, verify...); code != 0 || !strings.Contains(out, "OK: 2 replicas verified") {
		t.Fatalf("verify --central: exit %d\n%s\n%s", code, out, errOut)
	}
	// Only one replica's key pinned: the other's checkpoints are refused.
	if code, _, _ := runCmd(t, append(append([]string{"audit", "verify"}, central...), "--trusted-keys", fa.pub)...); code != audit.ExitSignature {
		t.Errorf("verify --central with one key: exit %d, want %d", code, audit.ExitSignature)
	}

	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), "DELETE FROM phigate_audit_records WHERE replica = $1 AND seq = 3", idb); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCmd(t, verify...)
	if code != audit.ExitTruncated || !strings.Contains(out, "gap: replica "+idb+" records 3-3 missing") {
		t.Fatalf("verify --central after a deletion: exit %d\n%s", code, out)
	}
	t.Logf("verify --central after deleting record 3 of %s: exit %d\n%s", idb, code, out)
	if _, err := conn.Exec(t.Context(), "UPDATE phigate_audit_records SET frame = set_byte(frame, 70, get_byte(frame, 70) # 1) WHERE replica = $1 AND seq = 2", ida); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCmd(t, append(verify, "--json")...)
	if code != audit.ExitChainBroken || !strings.Contains(out, `"code":"chain_broken"`) || !strings.Contains(out, `"from":3,"to":3`) {
		t.Fatalf("verify --central --json after an edit: exit %d\n%s", code, out)
	}
	if code, _, _ := runCmd(t, append(verify, "--replica", idb)...); code != audit.ExitTruncated {
		t.Errorf("verify --central --replica %s: exit %d, want %d (the edit is the other replica's)", idb, code, audit.ExitTruncated)
	}
}

func TestAuditCentralFlagErrors(t *testing.T) {
	fx := writeTrail(t, false)
	t.Setenv("PHIGATE_TEST_NOWHERE_DSN", "host=127.0.0.1 port=1 user=phigate dbname=x sslmode=disable connect_timeout=5")
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"audit", "query", fx.dir, "--central"}, 2},
		{[]string{"audit", "query", fx.dir, "--dsn-env", "X"}, 2},
		{[]string{"audit", "query", "--replica", "r1"}, 2},
		{[]string{"audit", "verify", "--central", "--trust-on-first-use"}, 2},
		{[]string{"audit", "verify", "--central", "--trusted-keys", fx.pub, "--witness", fx.witness}, 2},
		{[]string{"audit", "verify", "--central"}, audit.ExitConfig},
		{[]string{"audit", "verify", "--central", "--trusted-keys", fx.pub, "--dsn-env", "PHIGATE_TEST_UNSET_DSN"}, audit.ExitConfig},
		{[]string{"audit", "verify", "--central", "--trusted-keys", fx.pub, "--dsn-env", "PHIGATE_TEST_NOWHERE_DSN"}, audit.ExitIO},
		{[]string{"audit", "query", "--central", "--dsn-env", "PHIGATE_TEST_NOWHERE_DSN"}, audit.ExitIO},
	} {
		if code, _, errOut := runCmd(t, tc.args...); code != tc.want {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.want, errOut)
		}
	}
}
