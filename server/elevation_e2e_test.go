package server_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// within retries f until it holds or the generous bound passes: a write
// reaches the decision path through the change feed, not at once.
func within(t *testing.T, d time.Duration, f func() bool) bool {
	t.Helper()
	end := time.Now().Add(d)
	for {
		if f() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestElevationEndToEnd: a billing clerk asks for the physician role with
// their own token, cannot grant it to themselves, an approver grants it; a
// read for treatment only a physician may make then passes through Envoy,
// its record lists the elevation in input.elevations; once the elevation
// ends the read is refused again, and the trail has the request, the grant
// and the end.
func TestElevationEndToEnd(t *testing.T) {
	var dir string
	withKey := stacktest.WithTokenKey(t) // the physician's redaction tokenizes
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		withKey(c)
		withApprovals(c)
		dir = c.Audit.Dir
	}})
	mfa := []string{"pwd", "otp"}
	// A billing clerk covering a shift as a physician: billing may not
	// read for treatment; a physician on the care team may.
	clerk := s.Token(demokeys.TokenSpec{Subject: "clerk-1", Roles: []string{"billing"}, FHIRUser: "Practitioner/prac-001", Purpose: "TREAT"})
	approver := s.Token(demokeys.TokenSpec{Subject: "charge-1", Roles: []string{"privacy-officer"}, AMR: mfa})
	const read = "/fhir/Patient/pat-0001"

	if r := s.Do("GET", read, clerk, nil, nil); r.Status != 403 {
		t.Fatalf("the clerk before elevation: %d, want 403", r.Status)
	}
	for _, bad := range []string{
		`{"role":"admin","reason":"x","duration":"1m"}`,           // not requestable
		`{"role":"physician","reason":"","duration":"1m"}`,        // no reason
		`{"role":"physician","reason":"x","duration":"9h"}`,       // over max_duration
		`{"role":"physician","reason":"x","duration":"1m","z":1}`, // unknown field
	} {
		if st, body := admin(t, s, "POST", "/elevations", clerk, bad); st < 400 || st >= 500 {
			t.Fatalf("elevation request %s: %d %v, want a refusal", bad, st, body)
		}
	}
	st, req := admin(t, s, "POST", "/elevations", clerk, `{"role":"physician","reason":"covering ward 7","duration":"3s"}`)
	if st != 201 || req["state"] != "pending" {
		t.Fatalf("elevation request: %d %v", st, req)
	}
	ref, _ := req["id"].(string)
	if st, body := admin(t, s, "POST", "/approvals/"+ref+"/approve", clerk, ""); st != 403 || body["error"] != "not_an_approver" {
		t.Fatalf("the clerk granting themselves: %d %v", st, body)
	}
	if r := s.Do("GET", read, clerk, nil, nil); r.Status != 403 {
		t.Fatalf("the clerk with a pending request: %d, want 403", r.Status)
	}
	st, granted := admin(t, s, "POST", "/approvals/"+ref+"/approve", approver, "")
	if st != 200 || granted["state"] != "approved" {
		t.Fatalf("grant: %d %v", st, granted)
	}
	grantedAt := time.Now()
	s.Up.Reset()
	var last stacktest.Response
	if !within(t, 2*time.Second, func() bool { last = s.Do("GET", read, clerk, nil, nil); return last.Status != 403 }) {
		t.Fatal("the elevated clerk is still refused")
	}
	if last.Status != 200 {
		t.Fatalf("the elevated read: %d %s", last.Status, last.Body)
	}
	if n := len(s.Up.Requests()); n == 0 {
		t.Fatal("the elevated request did not reach the upstream")
	}
	// The elevation ends by itself: its time, then the reader's bound.
	time.Sleep(time.Until(grantedAt.Add(3*time.Second + 100*time.Millisecond)))
	if !within(t, 2*time.Second, func() bool { return s.Do("GET", read, clerk, nil, nil).Status == 403 }) {
		t.Fatal("the elevation outlived its duration")
	}
	// The end is recorded within a tick of the expiry watcher.
	time.Sleep(1500 * time.Millisecond)
	s.StopPhigate()

	es, err := audit.Query(dir, audit.Filter{Approval: ref}, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, e := range es {
		steps = append(steps, e.Event.OutcomeDesc)
	}
	for _, want := range []string{audit.WorkflowRequested, "approval-refused: not_an_approver", audit.WorkflowApproved, audit.WorkflowExpired} {
		if !slices.Contains(steps, want) {
			t.Errorf("no %q record of elevation %s among %v", want, ref, steps)
		}
	}
	ds, err := audit.Query(dir, audit.Filter{User: "clerk-1", Kind: audit.KindDecision}, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	used := false
	for _, e := range ds {
		var in struct {
			Elevations []authz.Elevation `json:"elevations"`
		}
		_ = json.Unmarshal(e.Input, &in)
		if len(in.Elevations) == 1 && in.Elevations[0].Role == "physician" && strings.HasPrefix(e.Event.OutcomeDesc, "allow") {
			used = true
		}
	}
	if !used {
		t.Error("no allowed decision of clerk-1 lists the physician elevation in input.elevations")
	}
}
