package authz

import (
	"context"
	"errors"
	"testing"
	"time"
)

// approvalsFake is the approvals store at the seam, written by hand:
// what it holds, what it was asked, and a switch to fail.
type approvalsFake struct {
	live, started *ApprovalInput
	down          bool
	requested     []string // scopes
	used          []string // ids
}

func (f *approvalsFake) Live(_ context.Context, _, _ string, _ time.Time) (ApprovalInput, bool, error) {
	if f.down {
		return ApprovalInput{}, false, errAway
	}
	if f.live == nil {
		return ApprovalInput{}, false, nil
	}
	return *f.live, true, nil
}

func (f *approvalsFake) Started(context.Context, string, time.Time) (ApprovalInput, bool, error) {
	if f.down {
		return ApprovalInput{}, false, errAway
	}
	if f.started == nil {
		return ApprovalInput{}, false, nil
	}
	return *f.started, true, nil
}

func (f *approvalsFake) Request(_ context.Context, requester, scope string, _ time.Time) (ApprovalInput, error) {
	if f.down {
		return ApprovalInput{}, errAway
	}
	f.requested = append(f.requested, scope)
	return ApprovalInput{ID: "ref-1", State: ApprovalPending, Requester: requester}, nil
}

func (f *approvalsFake) Used(_ context.Context, id string, _ time.Time) error {
	if f.down {
		return errAway
	}
	f.used = append(f.used, id)
	return nil
}

// approvalPolicy stands in for rego/approval.rego at the evaluator seam.
var approvalPolicy = policyFunc(func(r *Request) Decision {
	if r.Approval.Required && r.Approval.State != ApprovalApproved {
		return Decision{Status: 403, Reason: ReasonApprovalRequired}
	}
	return Decision{Allow: true}
})

func authorizeApproval(t *testing.T, f *approvalsFake, path string) (*Request, Decision, error) {
	t.Helper()
	p, err := NewRequestParser(RequestConfig{Base: "/fhir", LegacyRoutes: []LegacyRoute{
		{Method: "GET", Pattern: "/bulkstatus/{job}", Kind: "export-status"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	a := NewAuthorizer(Options{Verifier: practitionerVerifier{}, Parser: p, Evaluator: approvalPolicy,
		Approvals: Approvals{Operations: []string{"export"}, StatusKinds: []string{"export-status"}, Source: f}})
	return a.Authorize(t.Context(), &CheckInput{Method: "GET", Path: path,
		Headers: map[string]string{"authorization": "Bearer x"}, Source: Peer{Address: "127.0.0.1:1"}})
}

func TestApprovalKickoff(t *testing.T) {
	approved := &ApprovalInput{ID: "ok-1", State: ApprovalApproved, Requester: "u1", Approver: "po", ExpiresNS: 1}
	cases := []struct {
		name          string
		f             approvalsFake
		path          string
		allow         bool
		reason        string
		ref           string
		requested     int
		used          int
		required      bool
		inputApproval string // input.approval.id recorded
	}{
		{name: "not configured", path: "/fhir/Patient/p1", allow: true},
		{name: "no approval: a request is made", path: "/fhir/$export?_type=Patient", reason: ReasonApprovalRequired,
			ref: "ref-1", requested: 1, required: true, inputApproval: "ref-1"},
		{name: "approved: marked used", f: approvalsFake{live: approved}, path: "/fhir/Group/g1/$export",
			allow: true, used: 1, required: true, inputApproval: "ok-1"},
		{name: "store down: refused, nothing asked", f: approvalsFake{down: true}, path: "/fhir/$export",
			reason: string(CodeStoreUnavailable), required: true},
		{name: "status poll under a started approval", f: approvalsFake{started: approved}, path: "/bulkstatus/j1",
			allow: true, required: true, inputApproval: "ok-1"},
		{name: "status poll without one", path: "/bulkstatus/j1", reason: ReasonApprovalRequired, required: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, d, _ := authorizeApproval(t, &c.f, c.path)
			if d.Allow != c.allow || (!c.allow && d.Reason != c.reason) {
				t.Fatalf("allow=%v reason=%q, want allow=%v reason=%q", d.Allow, d.Reason, c.allow, c.reason)
			}
			if d.ApprovalRef != c.ref {
				t.Errorf("reference %q, want %q", d.ApprovalRef, c.ref)
			}
			if len(c.f.requested) != c.requested || len(c.f.used) != c.used {
				t.Errorf("requested %v used %v, want %d and %d", c.f.requested, c.f.used, c.requested, c.used)
			}
			if req.Approval.Required != c.required || req.Approval.ID != c.inputApproval {
				t.Errorf("input.approval %+v, want required=%v id=%q", req.Approval, c.required, c.inputApproval)
			}
		})
	}
}

// A kick-off that is allowed but whose use cannot be recorded is refused:
// its polls would otherwise find no started approval.
func TestApprovalUseNotRecorded(t *testing.T) {
	f := &approvalsFake{live: &ApprovalInput{ID: "ok-1", State: ApprovalApproved}}
	a := NewAuthorizer(Options{Verifier: practitionerVerifier{}, Parser: newTestParser(t),
		Evaluator: policyFunc(func(r *Request) Decision { f.down = true; return Decision{Allow: true} }),
		Approvals: Approvals{Operations: []string{"export"}, Source: f}})
	_, d, err := a.Authorize(t.Context(), &CheckInput{Method: "GET", Path: "/fhir/$export",
		Headers: map[string]string{"authorization": "Bearer x"}})
	if d.Allow || !errors.Is(err, &Error{Code: CodeStoreUnavailable}) {
		t.Fatalf("allow=%v err=%v, want a store refusal", d.Allow, err)
	}
}

func TestApprovalScope(t *testing.T) {
	p := newTestParser(t)
	scope := func(path string) string {
		req, err := p.Parse(&CheckInput{Method: "GET", Path: path, Headers: map[string]string{}})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return ApprovalScope(req)
	}
	same := [][2]string{
		{"/fhir/$export?_type=Patient,Observation", "/fhir/$export?_type=Observation&_type=Patient"},
		{"/fhir/$export?_type=Observation,Patient,Patient", "/fhir/$export?_type=Patient,Observation"},
		{"/fhir/$export?_since=2026-01-01T01:00:00%2B01:00", "/fhir/$export?_since=2026-01-01T00:00:00Z"},
		{"/fhir/$export?_outputFormat=ndjson&_type=Patient", "/fhir/$export?_type=Patient&_outputFormat=ndjson"},
	}
	for _, s := range same {
		if a, b := scope(s[0]), scope(s[1]); a != b {
			t.Errorf("%s and %s: scopes %q and %q differ", s[0], s[1], a, b)
		}
	}
	differ := [][2]string{
		{"/fhir/$export", "/fhir/Patient/$export"},
		{"/fhir/Group/g1/$export", "/fhir/Group/g2/$export"},
		{"/fhir/$export?_type=Patient", "/fhir/$export?_type=Observation"},
		{"/fhir/$export?_since=2026-01-01T00:00:00Z", "/fhir/$export?_since=2026-01-02T00:00:00Z"},
		{"/fhir/$export", "/fhir/$export?_type=Patient"},
	}
	for _, s := range differ {
		if a, b := scope(s[0]), scope(s[1]); a == b {
			t.Errorf("%s and %s share the scope %q", s[0], s[1], a)
		}
	}
	if got, want := scope("/fhir/Group/g1/$export?_type=Patient,Observation&_since=2026-01-01T00:00:00Z"),
		"GET Group/g1/$export?_since=2026-01-01T00%3A00%3A00Z&_type=Observation%2CPatient"; got != want {
		t.Errorf("scope %q, want %q", got, want)
	}
}
