package audit

import (
	"testing"
	"time"
)

// TestWorkflowRecords: workflow steps land in the chained trail beside
// decisions, verify, and one approval's records are found by its id,
// decisions taken under it included.
func TestWorkflowRecords(t *testing.T) {
	l, cfg := openTest(t, nil)
	ctx := t.Context()
	exp := time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)
	steps := []WorkflowEvent{
		{Action: WorkflowRefused, ApprovalID: "a1", Kind: "operation", Requester: "u1", Actor: "u1", Reason: "self_approval"},
		{Action: WorkflowApproved, ApprovalID: "a1", Kind: "operation", Requester: "u1", Actor: "po-1", Expires: exp},
		{Action: WorkflowRequested, ApprovalID: "e1", Kind: "elevation", Requester: "u2", Actor: "u2", Role: "physician"},
	}
	for _, s := range steps {
		if err := l.RecordWorkflow(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	req := testRequest(1, "u1", "p1")
	req.Approval.Required, req.Approval.ID = true, "a1"
	if err := l.Record(ctx, req, testDecision(1, true)); err != nil {
		t.Fatal(err)
	}
	fill(t, l, 2, 3)
	pub := l.PublicKey()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(cfg.Dir, pub, VerifyOptions{})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.Records < 7 {
		t.Fatalf("verified %d records, want at least 7", rep.Records)
	}
	got, err := Query(cfg.Dir, Filter{Approval: "a1"}, QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range got {
		kinds = append(kinds, e.Kind+":"+e.Event.Subtype[0].Code)
	}
	if len(got) != 3 || got[0].Kind != KindWorkflow || got[1].Event.Outcome != OutcomeSuccess || got[2].Kind != KindDecision {
		t.Fatalf("records of approval a1: %v, want the refusal, the approval and the decision under it", kinds)
	}
	if got[0].Event.Outcome != OutcomeMinor {
		t.Errorf("a refused step recorded with outcome %q", got[0].Event.Outcome)
	}
	if sub, _ := got[1].Event.User(); sub != "po-1" {
		t.Errorf("approval's actor %q, want po-1", sub)
	}
}
