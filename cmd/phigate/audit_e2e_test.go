package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// TestAuditEndToEnd sends allowed, denied, break-glass and redacted requests
// through a real Envoy and requires that each left exactly the records the
// trail promises: one decision record per request, a linked filtering
// record for a redacted response, and the break-glass access flagged with
// DICOM "Emergency Override Started". The command-line tools then find the
// break-glass access and verify the closed trail.
func TestAuditEndToEnd(t *testing.T) {
	var dir string
	tokenKey := stacktest.WithTokenKey(t)
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		tokenKey(c)
		dir = c.Audit.Dir
	}})
	doc := s.Token(stacktest.Physician(1))
	emergency := stacktest.Physician(1)
	emergency.AMR = []string{"pwd", "otp"}
	bgDoc := s.Token(emergency)
	billing := s.Token(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})

	cases := []struct {
		name       string
		method     string
		path       string
		token      string
		headers    map[string]string
		status     int
		outcome    string
		breakGlass bool
		filtered   bool // a linked filtering record follows
		patient    string
	}{
		{name: "allowed read", method: "GET", path: "/fhir/Patient/pat-0001", token: doc, status: 200, outcome: audit.OutcomeSuccess, patient: "pat-0001"},
		{name: "no token", method: "GET", path: "/fhir/Patient/pat-0001", status: 401, outcome: audit.OutcomeMinor, patient: "pat-0001"},
		{name: "wrong role", method: "DELETE", path: "/fhir/Patient/pat-0001", token: billing, status: 403, outcome: audit.OutcomeMinor, patient: "pat-0001"},
		{name: "outside the care team", method: "GET", path: "/fhir/Patient/pat-0002", token: doc, status: 403, outcome: audit.OutcomeMinor, patient: "pat-0002"},
		{name: "ambiguous path", method: "GET", path: "/fhir/Patient%2Fpat-0001", token: doc, status: 400, outcome: audit.OutcomeMinor},
		{name: "break glass", method: "GET", path: "/fhir/Patient/pat-0002", token: bgDoc,
			headers: map[string]string{"x-break-glass": "patient unconscious in ED"}, status: 200, outcome: audit.OutcomeSuccess, breakGlass: true, patient: "pat-0002"},
		{name: "redacted for billing", method: "GET", path: "/fhir/Patient/pat-0001", token: billing, status: 200, outcome: audit.OutcomeSuccess, filtered: true, patient: "pat-0001"},
	}
	ids := make([]string, len(cases))
	for i, tc := range cases {
		s.Up.Reset()
		r := s.Do(tc.method, tc.path, tc.token, tc.headers, nil)
		if r.Status != tc.status {
			t.Fatalf("%s: status = %d, want %d; body %.300s", tc.name, r.Status, tc.status, r.Body)
		}
		// Denials carry the decision id to the client; allowed requests
		// carry it to the legacy service.
		ids[i] = r.Header.Get(envoy.DecisionHeader)
		if seen := s.Up.Requests(); ids[i] == "" && len(seen) == 1 {
			ids[i] = seen[0].Headers.Get(envoy.DecisionHeader)
		}
		if ids[i] == "" {
			t.Fatalf("%s: no decision id in the response or at the legacy service", tc.name)
		}
	}

	// The first request again, until the decision cache answers it (a
	// request on the far side of a minute boundary is evaluated afresh,
	// since the demo policy's shift windows end decisions there): its
	// record must say the decision was reused and when it was evaluated.
	rev := s.Phigate.Policy().Status().Revision
	var reusedID string
	var repeats []string
	for range 3 {
		hits := s.Phigate.Policy().CacheCounts().Hits
		s.Up.Reset()
		r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil)
		seen := s.Up.Requests()
		if r.Status != 200 || len(seen) != 1 {
			t.Fatalf("repeated read: status %d, %d requests upstream", r.Status, len(seen))
		}
		repeats = append(repeats, seen[0].Headers.Get(envoy.DecisionHeader))
		if s.Phigate.Policy().CacheCounts().Hits > hits {
			reusedID = repeats[len(repeats)-1]
			break
		}
	}
	if reusedID == "" {
		t.Fatal("three identical reads in a row were never answered from the decision cache")
	}

	t.Run("audit query finds the break-glass access while phigate runs", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "audit", "query", dir, "--patient", "pat-0002", "--json")
		if code != 0 {
			t.Fatalf("exit %d; stderr %s", code, stderr)
		}
		var found []string
		for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
			var ev audit.AuditEvent
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("not an AuditEvent: %v: %s", err, line)
			}
			if ev.BreakGlass() {
				found = append(found, ev.ID)
			}
		}
		if len(found) != 1 || found[0] != ids[5] {
			t.Fatalf("break-glass records for pat-0002 = %v, want [%s]; output:\n%s", found, ids[5], stdout)
		}
		code, table, _ := runCmd(t, "audit", "query", dir, "--patient", "pat-0002", "--break-glass")
		if code != 0 || !strings.Contains(table, "prac-001") || !strings.Contains(table, ids[5]) {
			t.Errorf("table answer (exit %d) does not name the user and decision:\n%s", code, table)
		}
	})

	s.StopPhigate()
	entries, err := audit.Query(dir, audit.Filter{}, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byDecision := map[string][]audit.Entry{}
	for _, e := range entries {
		byDecision[e.Event.DecisionID()] = append(byDecision[e.Event.DecisionID()], e)
	}
	want := 0
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := byDecision[ids[i]]
			var decisions, filterings, notifications []audit.Entry
			for _, e := range got {
				switch e.Kind {
				case audit.KindDecision:
					decisions = append(decisions, e)
				case audit.KindFiltering:
					filterings = append(filterings, e)
				case audit.KindNotification:
					notifications = append(notifications, e)
				}
			}
			// The break-glass obligation names the privacy office, which
			// this configuration has no sink for: audited as a failure.
			if wantN := map[bool]int{true: 1, false: 0}[tc.breakGlass]; len(notifications) != wantN {
				t.Errorf("%d notification records, want %d", len(notifications), wantN)
			} else if wantN == 1 && !hasDetail(notifications[0].Event, audit.DetailOutcome, "unknown_sink") {
				t.Errorf("notification record %+v, want outcome unknown_sink", notifications[0].Event.Entity)
			}
			if len(decisions) != 1 {
				t.Fatalf("%d decision records for %s, want 1", len(decisions), ids[i])
			}
			ev := decisions[0].Event
			if ev.ID != ids[i] || ev.Outcome != tc.outcome {
				t.Errorf("record id %s outcome %s, want %s outcome %s", ev.ID, ev.Outcome, ids[i], tc.outcome)
			}
			if d := decisions[0].Decision; d == nil || d.Status != tc.status {
				t.Errorf("recorded decision %+v, want status %d", d, tc.status)
			}
			// The policy decided everything but the unparseable request and
			// the unauthenticated one, which are refused before it runs.
			if wantRev := map[bool]string{true: rev, false: ""}[tc.status != 400 && tc.status != 401]; ev.PolicyRevision() != wantRev {
				t.Errorf("policy revision %q in the record, want %q", ev.PolicyRevision(), wantRev)
			}
			if tc.patient != "" && !strings.Contains(strings.Join(ev.Patients(), ","), tc.patient) {
				t.Errorf("record patients %v lack %s", ev.Patients(), tc.patient)
			}
			if ev.BreakGlass() != tc.breakGlass {
				t.Errorf("break-glass flag = %v, want %v; subtype %+v", ev.BreakGlass(), tc.breakGlass, ev.Subtype)
			}
			if tc.breakGlass {
				if !hasCoding(ev.Subtype, audit.SystemDCM, audit.CodeOverrideStarted) {
					t.Errorf("subtype %+v lacks DCM %s", ev.Subtype, audit.CodeOverrideStarted)
				}
				var btg bool
				for _, p := range ev.PurposeOfEvent {
					btg = btg || hasCoding(p.Coding, audit.SystemActReason, "BTG") && p.Text == "patient unconscious in ED"
				}
				if !btg {
					t.Errorf("purposeOfEvent %+v lacks BTG with the stated reason", ev.PurposeOfEvent)
				}
			}
			if tc.filtered {
				if len(filterings) != 1 {
					t.Fatalf("%d filtering records, want 1", len(filterings))
				}
				f := filterings[0]
				if f.Seq <= decisions[0].Seq || f.Event.ID != ids[i]+"-f" {
					t.Errorf("filtering record seq %d id %s does not follow decision seq %d", f.Seq, f.Event.ID, decisions[0].Seq)
				}
				if !hasDetail(f.Event, "removed", "Patient.telecom") {
					t.Errorf("filtering record does not name Patient.telecom as removed: %+v", f.Event.Entity)
				}
			} else if len(filterings) != 0 {
				t.Errorf("%d filtering records for an unfiltered response", len(filterings))
			}
		})
		want++
		if tc.filtered || tc.breakGlass {
			want++
		}
	}
	t.Run("a decision reused from the cache", func(t *testing.T) {
		got := byDecision[reusedID]
		if len(got) != 1 {
			t.Fatalf("%d records for the reused decision %s, want 1", len(got), reusedID)
		}
		ev := got[0].Event
		if ev.PolicyRevision() != rev || !hasDetail(ev, audit.DetailReusedFrom, "") {
			t.Fatalf("record of a reused decision lacks its provenance: %+v", ev.Entity)
		}
		for _, en := range ev.Entity {
			for _, d := range en.Detail {
				if d.Type != audit.DetailReusedFrom {
					continue
				}
				evaluated, err1 := time.Parse(time.RFC3339Nano, d.ValueString)
				recorded, err2 := time.Parse(time.RFC3339Nano, ev.Recorded)
				if err1 != nil || err2 != nil || !evaluated.Before(recorded) || recorded.Sub(evaluated) > time.Minute {
					t.Errorf("reused-from %q against recorded %q: want an earlier evaluation within the minute", d.ValueString, ev.Recorded)
				}
			}
		}
		// The first read was evaluated, and so was any repeat before the hit.
		for _, id := range append([]string{ids[0]}, repeats[:len(repeats)-1]...) {
			if rec := byDecision[id]; len(rec) != 1 || hasDetail(rec[0].Event, audit.DetailReusedFrom, "") {
				t.Errorf("decision %s: %d records, or marked reused though evaluated", id, len(rec))
			}
		}
	})
	want += len(repeats) // one decision record each, none filtered
	if len(entries) != want {
		t.Errorf("trail holds %d records, want exactly %d (one per decision, one per filtered response, one per notification)", len(entries), want)
		for _, e := range entries {
			t.Logf("seq %d %s %s %s", e.Seq, e.Kind, e.Event.ID, e.Event.OutcomeDesc)
		}
	}

	code, stdout, stderr := runCmd(t, "audit", "verify", dir, "--require-checkpointed",
		"--trusted-keys", audit.PublicKeyPath(audit.DefaultSigningKeyFile(dir)), "--witness", audit.DefaultWitnessFile(dir))
	if code != 0 {
		t.Fatalf("audit verify exit %d: %s %s", code, stdout, stderr)
	}
	if !strings.HasPrefix(stdout, "OK ") {
		t.Errorf("verify output %q", stdout)
	}
}

func hasCoding(cs []audit.Coding, system, code string) bool {
	for _, c := range cs {
		if c.System == system && c.Code == code {
			return true
		}
	}
	return false
}

func hasDetail(ev *audit.AuditEvent, typ, prefix string) bool {
	for _, en := range ev.Entity {
		for _, d := range en.Detail {
			if d.Type == typ && strings.HasPrefix(d.ValueString, prefix) {
				return true
			}
		}
	}
	return false
}
