package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/abuse"
	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/pgtest"
	"github.com/phigate/phigate/internal/redistest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
	"github.com/phigate/phigate/store"
)

// sharedCounters points c's abuse counters at the test's Redis.
func sharedCounters(t *testing.T) func(c *server.Config) {
	t.Helper()
	addr, prefix := redistest.Start(t)
	key := filepath.Join(t.TempDir(), "member.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("m", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *server.Config) {
		c.Abuse.Redis = abuse.RedisConfig{Addr: addr, KeyPrefix: prefix, MemberKeyFile: key}
	}
}

// TestThrottleThroughEnvoy: a per-identity bucket on reads, shared by two
// replicas through Redis. Its burst passes on either replica; the next
// read on either gets 429 with Retry-After and an OperationOutcome, and
// never reaches the upstream; another identity is not throttled.
func TestThrottleThroughEnvoy(t *testing.T) {
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	counters := sharedCounters(t)
	opts := stacktest.Options{Keys: keys, Mutate: func(c *server.Config) {
		counters(c)
		c.Abuse.Buckets = []abuse.BucketConfig{{Name: "reads", Per: "identity", Route: "read", Rate: 0.2, Burst: 4}}
	}}
	a, b := stacktest.Start(t, opts), stacktest.Start(t, opts)
	doc := a.Token(stacktest.Physician(1))
	for i, s := range []*stacktest.Stack{a, b, a, b} {
		if r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil); r.Status != 200 {
			t.Fatalf("read %d of the burst: %d", i, r.Status)
		}
	}
	seen := len(a.Up.Requests()) + len(b.Up.Requests())
	for _, s := range []*stacktest.Stack{b, a} {
		r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil)
		if r.Status != 429 || r.Header.Get("Retry-After") == "" || !stacktest.IsOutcome(r) {
			t.Fatalf("over the burst: %d, Retry-After %q, body %s", r.Status, r.Header.Get("Retry-After"), r.Body)
		}
		if !strings.Contains(string(r.Body), `"code":"throttled"`) {
			t.Errorf("the outcome does not say throttled: %s", r.Body)
		}
	}
	if n := len(a.Up.Requests()) + len(b.Up.Requests()); n != seen {
		t.Fatalf("throttled requests reached the upstream: %d, want %d", n, seen)
	}
	if r := b.Do("GET", "/fhir/Patient/pat-0002", a.Token(stacktest.Physician(2)), nil, nil); r.Status != 200 {
		t.Fatalf("another identity: %d", r.Status)
	}
	if n := deniedFor(t, a, "throttle.reads"); n == "0" {
		t.Errorf("no decision denied as throttle.reads on replica a")
	}
}

// TestBulkReadStoppedAndAlerted: a clinician reading 200 distinct
// patients in a minute, through two replicas that share their counters
// (Redis) and state (PostgreSQL), is stopped at the limit (100 for a
// physician in the library's data) and alerted; every later request of
// theirs is refused on both replicas until a person clears the alert.
// Another reading one patient 200 times is never stopped.
func TestBulkReadStoppedAndAlerted(t *testing.T) {
	f := startFleet(t, pgtest.Start(t), sharedCounters(t))
	a, b, writer := f.a, f.b, f.writer
	// prac-001 is related to 200 patients (an admitting ward's worth).
	patient := func(i int) string { return fmt.Sprintf("pat-%04d", 300+i) }
	for i := range 200 {
		k := store.RelationshipKey{Practitioner: "Practitioner/prac-001", Patient: patient(i), Role: "attending", Source: "adt"}
		if err := writer.PutRelationship(t.Context(), store.Relationship{RelationshipKey: k, From: time.Now().Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	bulk := a.Token(stacktest.Physician(1))
	steady := a.Token(stacktest.Physician(2)) // pat-0002 is on prac-002's care team
	stoppedAt := -1
	for i := range 200 {
		s := []*stacktest.Stack{a, b}[i%2]
		r := s.Do("GET", "/fhir/Patient/"+patient(i), bulk, nil, nil)
		if r.Status != 200 {
			if r.Status != 403 {
				t.Fatalf("read %d: %d", i, r.Status)
			}
			if stoppedAt < 0 {
				stoppedAt = i
			}
		} else if stoppedAt >= 0 {
			t.Fatalf("read %d allowed after the stop at %d", i, stoppedAt)
		}
		if r := []*stacktest.Stack{b, a}[i%2].Do("GET", "/fhir/Patient/pat-0002", steady, nil, nil); r.Status != 200 {
			t.Fatalf("the same patient, read %d: %d", i, r.Status)
		}
	}
	if stoppedAt != 100 {
		t.Fatalf("stopped at distinct patient %d, want 100 (the 101st)", stoppedAt)
	}
	alerts, err := writer.ListAlerts(t.Context(), "", "", 0)
	if err != nil || len(alerts) != 1 || alerts[0].Subject != "prac-001" || alerts[0].Kind != "bulk_read.distinct_patients" {
		t.Fatalf("open alerts %+v %v, want one on prac-001", alerts, err)
	}
	// Held on both replicas: even the first patient, read before the stop.
	for _, s := range []*stacktest.Stack{a, b} {
		if r := s.Do("GET", "/fhir/Patient/"+patient(0), bulk, nil, nil); r.Status != 403 {
			t.Fatalf("a held identity's read: %d", r.Status)
		}
	}
	if deniedFor(t, a, "bulk_read.distinct_patients") == "0" && deniedFor(t, b, "bulk_read.distinct_patients") == "0" {
		t.Error("no decision denied as bulk_read.distinct_patients")
	}
	if deniedFor(t, a, "abuse.alert_open") == "0" || deniedFor(t, b, "abuse.alert_open") == "0" {
		t.Error("a replica refused no request as abuse.alert_open")
	}
	for _, s := range []*stacktest.Stack{a, b} {
		if _, m := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics"); !strings.Contains(m, "phigate_bulk_read_alerts_total") {
			t.Error("phigate_bulk_read_alerts_total not exposed")
		}
	}
	// A person clears it: the clinician goes on, on both replicas.
	if err := writer.ResolveAlert(t.Context(), alerts[0].ID, store.AlertCleared, "officer-1", "mass casualty incident", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*stacktest.Stack{a, b} {
		waitStatus(t, s, bulk, "/fhir/Patient/"+patient(150), 200, 2*time.Second)
	}
}

// TestEnvoyFirstWall: the generated bootstrap's local rate limit answers
// 429 with an OperationOutcome and Retry-After once its bucket is empty,
// before phigate is asked.
func TestEnvoyFirstWall(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{LocalRateLimit: &envoy.LocalRateLimit{MaxTokens: 3, TokensPerFill: 1, FillInterval: time.Hour}})
	doc := s.Token(stacktest.Physician(1))
	for i := range 3 {
		if r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil); r.Status != 200 {
			t.Fatalf("request %d: %d", i, r.Status)
		}
	}
	before := decisionsTotal(t, s)
	r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil)
	if r.Status != 429 || !stacktest.IsOutcome(r) || r.Header.Get("Retry-After") != "3600" {
		t.Fatalf("over the first wall: %d, Retry-After %q, body %s", r.Status, r.Header.Get("Retry-After"), r.Body)
	}
	if after := decisionsTotal(t, s); after != before {
		t.Fatalf("phigate decided a request the first wall refused: %v -> %v", before, after)
	}
}

// decisionsTotal sums phigate_decisions_total over its series.
func decisionsTotal(t *testing.T, s *stacktest.Stack) float64 {
	t.Helper()
	_, body := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics")
	var sum float64
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, "phigate_decisions_total{") {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			sum += v
		}
	}
	return sum
}

// TestReleasedResourcesLimit: the response side counts what it releases
// to an identity. With a limit of 3 resources a minute, a search is
// counted by its entries: the response that would go over is refused
// (403, nothing of it released) and raises an alert that holds the
// identity; another identity counts on its own, and its search of more
// results than the limit is refused whole.
func TestReleasedResourcesLimit(t *testing.T) {
	policyDir := t.TempDir()
	stacktest.CopyLibrary(t, policyDir)
	setRoleThresholds(t, filepath.Join(policyDir, "data.json"), "physician", map[string]any{"released_resources": 3})
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) { c.Policy.Source.Dir = policyDir }})
	doc := s.Token(stacktest.Physician(1))
	other := s.Token(stacktest.Physician(2))
	for _, p := range []string{"pat-0001", "pat-0061", "pat-0121"} {
		if r := s.Do("GET", "/fhir/Patient/"+p, doc, nil, nil); r.Status != 200 {
			t.Fatalf("read %s: %d", p, r.Status)
		}
	}
	r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil)
	if r.Status != 403 || !stacktest.IsOutcome(r) || strings.Contains(string(r.Body), "pat-0001") {
		t.Fatalf("the fourth resource: %d %s", r.Status, r.Body)
	}
	if r := s.Do("GET", "/fhir/Patient/pat-0181", doc, nil, nil); r.Status != 403 {
		t.Fatalf("held by the alert: %d", r.Status)
	}
	if deniedFor(t, s, "abuse.alert_open") == "0" {
		t.Error("the held identity's request was not refused as abuse.alert_open")
	}
	if r := s.Do("GET", "/fhir/Patient/pat-0002", other, nil, nil); r.Status != 200 {
		t.Fatalf("another identity: %d", r.Status)
	}
	// A search counts its entries: one that returns more than the limit
	// at once is refused as a whole.
	if r := s.Do("GET", "/fhir/Observation?patient=pat-0002", other, nil, nil); r.Status != 403 {
		t.Fatalf("a search of more than 3 results: %d", r.Status)
	}
	es, err := audit.Query(s.Phigate.AuditDir(), audit.Filter{Kind: audit.KindFiltering}, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range es {
		found = found || strings.Contains(e.Event.OutcomeDesc, "usage_limit")
	}
	if !found {
		t.Error("no filtering record says the response was refused for the usage limit")
	}
	_, m := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics")
	if !strings.Contains(m, `phigate_bulk_read_alerts_total{kind="bulk_read.released_resources"} 2`) {
		t.Error("phigate_bulk_read_alerts_total for released_resources is not 2")
	}
}

// TestExportVolumeLimit: the bytes released to an identity count too,
// export files included, which pass unfiltered. With an admin's limit at
// 300 bytes a minute, the approved export's file is downloaded until the
// next download would go over: that one and every later one is refused
// (403, none of it released), and an alert is raised.
func TestExportVolumeLimit(t *testing.T) {
	policyDir := t.TempDir()
	stacktest.CopyLibrary(t, policyDir)
	setRoleThresholds(t, filepath.Join(policyDir, "data.json"), "admin", map[string]any{"released_bytes": 300})
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
		c.Policy.Source.Dir = policyDir
		withApprovals(c)
		c.Approvals.TTL = time.Hour
	}})
	s.Up.BulkExport()
	mfa := []string{"pwd", "otp"}
	requester := s.Token(demokeys.TokenSpec{Subject: "admin-1", Roles: []string{"admin"}, AMR: mfa})
	officer := s.Token(demokeys.TokenSpec{Subject: "po-1", Roles: []string{"privacy-officer"}, AMR: mfa})
	const kickoff = "/fhir/$export?_type=Patient"
	ref := approvalRef(t, s.Do("GET", kickoff, requester, nil, nil))
	if st, body := admin(t, s, "POST", "/approvals/"+ref+"/approve", officer, ""); st != 200 {
		t.Fatalf("approval: %d %v", st, body)
	}
	if r := s.Do("GET", kickoff, requester, nil, nil); r.Status != 202 {
		t.Fatalf("the approved kick-off: %d", r.Status)
	}
	released, refused := 0, 0
	for range 12 {
		r := s.Do("GET", "/bulkfiles/job-1-Patient.ndjson", requester, nil, nil)
		switch r.Status {
		case 200:
			released += len(r.Body)
			if refused > 0 {
				t.Fatalf("a file released after the refusal")
			}
		case 403:
			refused++
			if strings.Contains(string(r.Body), `"Patient"`) {
				t.Fatalf("the refused file's body came through")
			}
		default:
			t.Fatalf("file: %d %s", r.Status, r.Body)
		}
	}
	if refused == 0 || released > 300 {
		t.Fatalf("released %d bytes, %d downloads refused; want the limit of 300 held", released, refused)
	}
	_, m := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics")
	if !strings.Contains(m, `phigate_bulk_read_alerts_total{kind="bulk_read.released_bytes"} 1`) {
		t.Error("phigate_bulk_read_alerts_total for released_bytes is not 1")
	}
	t.Logf("released %d bytes of export files before the limit; %d downloads refused", released, refused)
}
