package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/store"
)

// tokens is the verifier at the seam: a token names an identity.
type tokens map[string]authz.Identity

func (v tokens) Verify(_ context.Context, tok string) (authz.Identity, error) {
	id, ok := v[tok]
	if !ok {
		return authz.Identity{}, errors.New("unknown token")
	}
	id.Authenticated = true
	return id, nil
}

type adminFixture struct {
	t     *testing.T
	mux   *http.ServeMux
	st    *store.Memory
	trail *audit.Log
	dir   string
}

func newAdminFixture(t *testing.T) *adminFixture {
	t.Helper()
	cfg := audit.Config{Dir: t.TempDir()}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	trail, err := audit.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = trail.Close() })
	st := store.NewMemory(0)
	t.Cleanup(func() { _ = st.Close() })
	c := ApprovalsConfig{Operations: []string{"export"}, ApproverRole: "privacy-officer",
		Elevation: ElevationConfig{Roles: []string{"physician"}}}
	if err := c.Validate(nil); err != nil {
		t.Fatal(err)
	}
	v := tokens{
		"nurse":   {Subject: "nurse-1", Roles: []string{"nurse"}},
		"nurse2":  {Subject: "nurse-2", Roles: []string{"nurse"}},
		"doc":     {Subject: "doc-1", Roles: []string{"physician"}},
		"officer": {Subject: "po-1", Roles: []string{"privacy-officer"}, MFA: true},
		"weak":    {Subject: "po-2", Roles: []string{"privacy-officer"}},
		"svc":     {Subject: "spiffe://x", Roles: []string{"privacy-officer"}, MFA: true, Service: true},
	}
	adm := &approvalAdmin{cfg: c, st: st, verifier: v, trail: trail, log: zap.NewNop(), now: time.Now}
	mux := http.NewServeMux()
	adm.register(mux)
	return &adminFixture{t: t, mux: mux, st: st, trail: trail, dir: cfg.Dir}
}

func (f *adminFixture) call(method, path, token, body string) (int, map[string]any) {
	f.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, req)
	var out map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, out
}

func TestApprovalAdmin(t *testing.T) {
	f := newAdminFixture(t)
	st, body := f.call("POST", "/elevations", "nurse", `{"role":"physician","reason":"covering ward 7","duration":"30m"}`)
	if st != 201 {
		t.Fatalf("request: %d %v", st, body)
	}
	id := body["id"].(string)
	if st, again := f.call("POST", "/elevations", "nurse", `{"role":"physician","reason":"covering ward 7","duration":"30m"}`); st != 200 || again["id"] != id {
		t.Fatalf("a repeated request: %d %v, want the pending %s", st, again, id)
	}
	for _, c := range []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"no token", "GET", "/approvals", "", "", 401, "unauthenticated"},
		{"unknown token", "GET", "/approvals", "forged", "", 401, "unauthenticated"},
		{"not an approver", "GET", "/approvals", "nurse", "", 403, "not_an_approver"},
		{"approver without a second factor", "GET", "/approvals", "weak", "", 403, "mfa_required"},
		{"a workload", "GET", "/approvals", "svc", "", 401, "unauthenticated"},
		{"unknown state", "GET", "/approvals?state=open", "officer", "", 400, "unknown_state"},
		{"another user's request", "GET", "/approvals/" + id, "nurse2", "", 404, "not_found"},
		{"a role already held", "POST", "/elevations", "doc", `{"role":"physician","reason":"x","duration":"1m"}`, 409, "role_held"},
		{"malformed body", "POST", "/elevations", "nurse", `{"role":`, 400, "malformed_body"},
		{"unknown id", "POST", "/approvals/ffff/approve", "officer", "", 404, "not_found"},
		{"self-approval by a non-approver", "POST", "/approvals/" + id + "/approve", "nurse", "", 403, "not_an_approver"},
	} {
		if st, body := f.call(c.method, c.path, c.token, c.body); st != c.status || body["error"] != c.code {
			t.Errorf("%s: %d %v, want %d %s", c.name, st, body, c.status, c.code)
		}
	}
	if st, own := f.call("GET", "/approvals/"+id, "nurse", ""); st != 200 || own["state"] != "pending" {
		t.Errorf("the requester reading their own request: %d %v", st, own)
	}

	// A step the trail cannot record is not taken.
	g := newAdminFixture(t)
	_, b := g.call("POST", "/elevations", "nurse", `{"role":"physician","reason":"x","duration":"30m"}`)
	gid := b["id"].(string)
	_ = g.trail.Close()
	if st, body := g.call("POST", "/approvals/"+gid+"/approve", "officer", ""); st != 503 || body["error"] != "audit_unavailable" {
		t.Fatalf("approval with the trail closed: %d %v", st, body)
	}
	if a, _ := g.st.GetApproval(t.Context(), gid); a.State != store.ApprovalPending {
		t.Fatalf("the approval was given without its record: %+v", a)
	}
	if es, _ := g.st.Elevations(t.Context(), "nurse-1", time.Now()); len(es) != 0 {
		t.Fatalf("elevated without a record: %+v", es)
	}

	if st, d := f.call("POST", "/approvals/"+id+"/deny", "officer", ""); st != 200 || d["state"] != "denied" {
		t.Fatalf("deny: %d %v", st, d)
	}
	if st, d := f.call("POST", "/approvals/"+id+"/approve", "officer", ""); st != 409 || d["error"] != "not_pending" {
		t.Fatalf("approve after deny: %d %v", st, d)
	}
	if es, _ := f.st.Elevations(t.Context(), "nurse-1", time.Now()); len(es) != 0 {
		t.Fatalf("a denied request elevated: %+v", es)
	}
	if st, r := f.call("POST", "/reviews", "officer", `{"decision_id":"dec-1","note":"appropriate"}`); st != 200 || r["reviewer"] != "po-1" {
		t.Fatalf("review: %d %v", st, r)
	}
	if st, r := f.call("POST", "/reviews", "nurse", `{"decision_id":"dec-2"}`); st != 403 {
		t.Fatalf("review by a non-approver: %d %v", st, r)
	}
	if rs, _ := f.st.Reviews(t.Context()); len(rs) != 1 || rs[0].DecisionID != "dec-1" {
		t.Fatalf("reviews %+v", rs)
	}

	_ = f.trail.Close()
	es, err := audit.Query(f.dir, audit.Filter{Kind: audit.KindWorkflow}, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, e := range es {
		steps = append(steps, e.Event.OutcomeDesc)
	}
	want := []string{"approval-requested", "approval-refused: not_found", "approval-refused: not_an_approver",
		"approval-denied", "approval-refused: not_pending", "break-glass-reviewed"}
	if strings.Join(steps, "|") != strings.Join(want, "|") {
		t.Fatalf("workflow records %v, want %v", steps, want)
	}
}
