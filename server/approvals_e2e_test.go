package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/pgtest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
	"github.com/phigate/phigate/store"
)

// approvalTTL is short so the test sees an approval end.
const approvalTTL = 3 * time.Second

func withApprovals(c *server.Config) {
	c.Request.LegacyRoutes = append(c.Request.LegacyRoutes,
		authz.LegacyRoute{Method: "GET", Pattern: "/bulkstatus/{job}", Kind: "export-status"},
		authz.LegacyRoute{Method: "GET", Pattern: "/bulkfiles/{file}", Kind: "export-file"})
	c.Approvals = server.ApprovalsConfig{
		Operations: []string{"export"}, StatusKinds: []string{"export-status"}, FileKinds: []string{"export-file"},
		ApproverRole: "privacy-officer", TTL: approvalTTL,
		Elevation: server.ElevationConfig{Roles: []string{"physician"}, MaxDuration: time.Hour},
	}
}

// admin calls one of the workflow endpoints on a replica's admin listener.
func admin(t *testing.T, s *stacktest.Stack, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	st, raw := adminCall(t, s, method, path, token, body)
	var out map[string]any
	_ = json.Unmarshal([]byte(raw), &out)
	return st, out
}

// adminRaw is admin for an answer that is not an object (a list).
func adminRaw(t *testing.T, s *stacktest.Stack, method, path, token string) (int, string) {
	t.Helper()
	return adminCall(t, s, method, path, token, "")
}

func adminCall(t *testing.T, s *stacktest.Stack, method, path, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+s.Phigate.AdminAddr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func approvalRef(t *testing.T, r stacktest.Response) string {
	t.Helper()
	ref := r.Header.Get("x-phigate-approval")
	if r.Status != 403 || len(ref) != 32 {
		t.Fatalf("kick-off without approval: %d, approval reference %q; want 403 with a reference", r.Status, ref)
	}
	if !strings.Contains(string(r.Body), "Approval reference: "+ref) || r.Outcome["resourceType"] != "OperationOutcome" {
		t.Fatalf("the OperationOutcome does not carry the reference: %s", r.Body)
	}
	return ref
}

// TestExportApprovalEndToEnd: through two replicas (each a real Envoy in
// front of its phigate) on one PostgreSQL store, a bulk export kick-off
// without an approval is refused with a reference and never reaches the
// upstream; the requester cannot approve it; an approver on the other
// replica does; the retried kick-off passes there, and its status poll
// and file download pass on the first replica for the requester only;
// once the approval ends they are refused; every step is in the trail of
// the replica that took it, joined by the approval's id, and the central
// trail both replicas ship to answers the approval with exactly the
// records of the two trails.
func TestExportApprovalEndToEnd(t *testing.T) {
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
	var dirs []string
	replicas := []string{"edge-a", "edge-b"}
	opts := stacktest.Options{Keys: keys, Mutate: func(c *server.Config) {
		c.Store.PostgresDSNFile = dsnFile
		withApprovals(c)
		c.Audit.ReplicaID = replicas[len(dirs)]
		dirs = append(dirs, c.Audit.Dir)
	}}
	a, b := stacktest.Start(t, opts), stacktest.Start(t, opts)
	a.Up.BulkExport()
	b.Up.BulkExport()
	mfa := []string{"pwd", "otp"}
	requester := a.Token(demokeys.TokenSpec{Subject: "admin-1", Roles: []string{"admin"}, AMR: mfa})
	selfApprover := a.Token(demokeys.TokenSpec{Subject: "admin-1", Roles: []string{"admin", "privacy-officer"}, AMR: mfa})
	officerNoMFA := a.Token(demokeys.TokenSpec{Subject: "po-1", Roles: []string{"privacy-officer"}})
	officer := a.Token(demokeys.TokenSpec{Subject: "po-1", Roles: []string{"privacy-officer"}, AMR: mfa})
	other := a.Token(demokeys.TokenSpec{Subject: "admin-2", Roles: []string{"admin"}, AMR: mfa})
	const kickoff = "/fhir/$export?_type=Patient,Observation"

	r := a.Do("GET", kickoff, requester, nil, nil)
	ref := approvalRef(t, r)
	if n := len(a.Up.Requests()); n != 0 {
		t.Fatalf("the refused kick-off reached the upstream (%d requests)", n)
	}
	if again := approvalRef(t, b.Do("GET", "/fhir/$export?_type=Observation&_type=Patient", requester, nil, nil)); again != ref {
		t.Fatalf("the same export asked again on the other replica got reference %s, want %s", again, ref)
	}

	if st, body := admin(t, b, "POST", "/approvals/"+ref+"/approve", requester, ""); st != 403 || body["error"] != "not_an_approver" {
		t.Fatalf("approval without the approver role: %d %v", st, body)
	}
	if st, body := admin(t, b, "POST", "/approvals/"+ref+"/approve", selfApprover, ""); st != 403 || body["error"] != "self_approval" {
		t.Fatalf("approval by the requester: %d %v, want 403 self_approval", st, body)
	}
	if st, body := admin(t, b, "POST", "/approvals/"+ref+"/approve", officerNoMFA, ""); st != 403 || body["error"] != "mfa_required" {
		t.Fatalf("approval without a second factor: %d %v", st, body)
	}
	if st, _ := admin(t, b, "POST", "/approvals/"+ref+"/approve", "", ""); st != 401 {
		t.Fatalf("approval without a token: %d", st)
	}
	if r := a.Do("GET", kickoff, requester, nil, nil); r.Status != 403 {
		t.Fatalf("kick-off after refused approvals: %d, want 403", r.Status)
	}
	if st, raw := adminRaw(t, a, "GET", "/approvals?state=pending", officer); st != 200 || !strings.Contains(raw, `"id":"`+ref+`"`) {
		t.Fatalf("pending list on the first replica: %d %s, want %s in it", st, raw, ref)
	}
	st, body := admin(t, b, "POST", "/approvals/"+ref+"/approve", officer, "")
	if st != 200 || body["state"] != "approved" || body["approver"] != "po-1" {
		t.Fatalf("approval by po-1: %d %v", st, body)
	}
	approvedAt := time.Now()

	a.Up.Reset()
	b.Up.Reset()
	if r := b.Do("GET", "/fhir/$export?_type=Observation,Patient", requester, nil, nil); r.Status != 202 {
		t.Fatalf("kick-off after approval, on the other replica: %d %s, want 202", r.Status, r.Body)
	} else if loc := r.Header.Get("content-location"); !strings.HasSuffix(loc, "/bulkstatus/job-1") {
		t.Fatalf("kick-off's Content-Location %q", loc)
	}
	if n := len(b.Up.Requests()); n != 1 {
		t.Fatalf("the upstream saw %d kick-offs, want 1", n)
	}
	if r := b.Do("GET", "/fhir/$export?_type=Patient", requester, nil, nil); r.Status != 403 || r.Header.Get("x-phigate-approval") == ref {
		t.Fatalf("another export under the approval: %d (reference %q), want 403 with a new request", r.Status, r.Header.Get("x-phigate-approval"))
	}
	if r := a.Do("GET", kickoff, other, nil, nil); r.Status != 403 {
		t.Fatalf("the same export by another user: %d, want 403", r.Status)
	}

	for _, p := range []string{"/bulkstatus/job-1", "/bulkfiles/job-1-Patient.ndjson"} {
		if r := a.Do("GET", p, requester, nil, nil); r.Status != 200 {
			t.Fatalf("%s by the requester: %d %s, want 200", p, r.Status, r.Body)
		}
		if r := a.Do("GET", p, other, nil, nil); r.Status != 403 {
			t.Fatalf("%s by another user: %d, want 403", p, r.Status)
		}
	}
	if r := a.Do("GET", "/bulkfiles/job-1-Patient.ndjson", requester, nil, nil); !strings.Contains(string(r.Body), `"Patient"`) {
		t.Fatalf("the file's body did not come through: %s", r.Body)
	}

	time.Sleep(time.Until(approvedAt.Add(approvalTTL + 500*time.Millisecond)))
	if r := a.Do("GET", "/bulkstatus/job-1", requester, nil, nil); r.Status != 403 {
		t.Fatalf("status poll after the approval ended: %d, want 403", r.Status)
	}
	if r := b.Do("GET", kickoff, requester, nil, nil); r.Status != 403 || r.Header.Get("x-phigate-approval") == ref {
		t.Fatalf("kick-off after the approval ended: %d (reference %q), want 403 with a new request", r.Status, r.Header.Get("x-phigate-approval"))
	}

	wantSteps := []string{
		"decision:kickoff:approval.required",
		"decision:kickoff:allow",
		"decision:status:allow",
		"decision:file:allow",
		"workflow:approval-approved",
		"workflow:approval-refused: self_approval",
		"workflow:approval-refused: not_an_approver",
	}
	// Both replicas ship to the centre: one query there returns the
	// approval's whole workflow, each step from the replica that took it.
	centre, err := store.OpenAuditCentre(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer centre.Close()
	var central []audit.Entry
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if central, err = audit.QueryCentral(t.Context(), centre, audit.Filter{Approval: ref}, audit.QueryOptions{}); err != nil {
			t.Fatal(err)
		}
		if len(missingSteps(approvalSteps(central), wantSteps)) == 0 || time.Now().After(deadline) {
			break
		}
	}

	a.StopPhigate()
	b.StopPhigate()
	var local []audit.Entry
	byReplica := map[string][]string{}
	for i, dir := range dirs {
		es, err := audit.Query(dir, audit.Filter{Approval: ref}, audit.QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for j := range es {
			es[j].Replica = replicas[i]
		}
		byReplica[replicas[i]] = approvalSteps(es)
		local = append(local, es...)
	}
	steps := approvalSteps(local)
	t.Logf("records of approval %s: %v", ref, byReplica)
	for _, want := range missingSteps(steps, wantSteps) {
		t.Errorf("no record %q of approval %s among %v", want, ref, steps)
	}
	for _, r := range replicas {
		if len(byReplica[r]) == 0 {
			t.Errorf("replica %s recorded no step of approval %s: the workflow did not span both", r, ref)
		}
	}
	// What the centre answers is what the two trails hold, record for record.
	key := func(es []audit.Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Replica+"/"+strconv.FormatUint(e.Seq, 10)+"/"+approvalSteps([]audit.Entry{e})[0])
		}
		slices.Sort(out)
		return out
	}
	if got, want := key(central), key(local); !slices.Equal(got, want) {
		t.Errorf("the centre's records of approval %s:\n%v\nthe replicas' trails:\n%v", ref, got, want)
	}
}

// approvalSteps names the steps of an approval's records, sorted: the
// workflow record's outcome, or a decision's stage and outcome.
func approvalSteps(es []audit.Entry) []string {
	var steps []string
	for _, e := range es {
		step := e.Kind + ":" + e.Event.OutcomeDesc
		if e.Kind == audit.KindDecision {
			var in struct {
				Approval authz.ApprovalInput `json:"approval"`
			}
			_ = json.Unmarshal(e.Input, &in)
			step = e.Kind + ":" + in.Approval.Stage + ":" + e.Event.OutcomeDesc
		}
		steps = append(steps, step)
	}
	slices.Sort(steps)
	return steps
}

// missingSteps returns the wanted steps no record begins with.
func missingSteps(steps, want []string) []string {
	var out []string
	for _, w := range want {
		if !slices.ContainsFunc(steps, func(s string) bool { return strings.HasPrefix(s, w) }) {
			out = append(out, w)
		}
	}
	return out
}
