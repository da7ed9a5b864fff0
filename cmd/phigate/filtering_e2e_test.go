package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// TestFilteringRecordNamesUserAndPatient: a response redacted through the
// real Envoy leaves a filtering record that names who asked and whose data
// it was, and "audit query --patient" and "--user" list it. With the plan
// metadata at version 1 (a fleet mid-upgrade) the stored record names
// neither, and audit query takes them from the decision record, saying so.
func TestFilteringRecordNamesUserAndPatient(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int
		joined  bool
	}{
		{"metadata version 2", 2, false},
		{"metadata version 1", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dir string
			tokenKey := stacktest.WithTokenKey(t)
			s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
				tokenKey(c)
				c.Filters.PlanMetadataVersion = tc.version
				dir = c.Audit.Dir
			}})
			billing := s.Token(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})
			r := s.Do("GET", "/fhir/Patient/pat-0001", billing, nil, nil)
			if r.Status != 200 {
				t.Fatalf("status %d; body %.300s", r.Status, r.Body)
			}
			id := r.Header.Get(envoy.DecisionHeader)
			if id == "" {
				t.Fatal("no decision id")
			}
			// A record is joined only when the stored one names neither
			// the user nor a patient: the joined detail tells what is
			// stored from what the query added.
			for _, q := range [][]string{{"--patient", "pat-0001"}, {"--patient", "Patient/pat-0001"}, {"--user", "billing-01"}} {
				args := append([]string{"audit", "query", dir, "--kind", "filtering", "--json"}, q...)
				code, stdout, stderr := runCmd(t, args...)
				if code != 0 {
					t.Fatalf("%v: exit %d; %s", q, code, stderr)
				}
				lines := strings.Split(strings.TrimSpace(stdout), "\n")
				if len(lines) != 1 || lines[0] == "" {
					t.Fatalf("%v: %d filtering records, want 1:\n%s", q, len(lines), stdout)
				}
				var ev audit.AuditEvent
				if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
					t.Fatal(err)
				}
				sub, _ := ev.User()
				if ev.DecisionID() != id || sub != "billing-01" || !slices.Equal(ev.Patients(), []string{"pat-0001"}) {
					t.Errorf("%v: record of decision %s, user %q, patients %v; want %s, billing-01, [pat-0001]", q, ev.DecisionID(), sub, ev.Patients(), id)
				}
				if got := joinedFrom(&ev); (got == id) != tc.joined {
					t.Errorf("%v: joined from %q, want joined %v", q, got, tc.joined)
				}
			}
			code, table, _ := runCmd(t, "audit", "query", dir, "--patient", "pat-0001")
			if code != 0 || !strings.Contains(table, "filtering  billing-01") {
				t.Errorf("table (exit %d) does not list the filtering record with its user:\n%s", code, table)
			}
		})
	}
}

func joinedFrom(ev *audit.AuditEvent) string {
	for _, en := range ev.Entity {
		for _, d := range en.Detail {
			if d.Type == audit.DetailJoined {
				return d.ValueString
			}
		}
	}
	return ""
}
