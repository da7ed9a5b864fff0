package audit

import (
	"context"
	"encoding/json"
	"time"
)

// KindWorkflow records a step of an approval workflow: an elevation
// asked for, an approval given or refused, an elevation that ended. The
// decisions taken under an approval are ordinary decision records whose
// input carries input.approval.id; Entry.ApprovalID joins them.
const KindWorkflow = "workflow"

// SystemApprovalID identifies an approval (store.Approval.ID).
const SystemApprovalID = "urn:phigate:approval-id"

// Workflow actions, the record's subtype code.
const (
	WorkflowRequested = "approval-requested"
	WorkflowApproved  = "approval-approved"
	WorkflowDenied    = "approval-denied"
	WorkflowRefused   = "approval-refused" // a decision attempt refused (self-approval, no approver role, not pending)
	WorkflowExpired   = "elevation-expired"
	WorkflowReviewed  = "break-glass-reviewed"
)

// WorkflowEvent is one step. Actor is who acted (the requester, the
// approver, the reviewer; "" for phigate itself, as on expiry); Requester
// is whose request it is. Kind is the approval's kind (operation,
// elevation), Role the elevated role, Reason the refusal's code. No
// reason text, scope or patient is recorded here: the approval's id
// leads to them in the store.
type WorkflowEvent struct {
	Action     string
	ApprovalID string
	Kind       string
	Requester  string
	Actor      string
	Role       string
	Expires    time.Time
	Reason     string
	// DecisionID is the decision a review is about.
	DecisionID string
}

// Workflow builds the record of one workflow step.
func (b Builder) Workflow(we WorkflowEvent, recorded time.Time) *AuditEvent {
	ev := &AuditEvent{
		ResourceType: "AuditEvent",
		Type:         Coding{System: SystemDCM, Code: "110136", Display: "Security Roles Changed"},
		Subtype:      []Coding{{System: SystemPhigateEvent, Code: we.Action}},
		Action:       "U",
		Recorded:     recorded.UTC().Format(time.RFC3339Nano),
		Outcome:      OutcomeSuccess,
		OutcomeDesc:  we.Action,
		Source:       Source{Site: b.Site, Observer: Reference{Display: b.Server}, Type: []Coding{sourceApplicationServer}},
	}
	if we.Action == WorkflowRefused {
		ev.Outcome = OutcomeMinor
		if we.Reason != "" {
			ev.OutcomeDesc += ": " + we.Reason
		}
	}
	if we.Actor != "" {
		ev.Agent = append(ev.Agent, Agent{Who: &Reference{Identifier: &Identifier{Value: we.Actor}}, Requestor: true})
	} else {
		ev.Agent = append(ev.Agent, Agent{Type: &CodeableConcept{Coding: []Coding{agentSource}}, Who: &Reference{Display: b.Server}})
	}
	ent := Entity{Type: ptr(entitySystem), Role: ptr(roleJob), Description: "approval"}
	if we.ApprovalID != "" {
		ent.What = &Reference{Identifier: &Identifier{System: SystemApprovalID, Value: we.ApprovalID}}
	}
	for _, d := range []EntityDetail{{"kind", we.Kind}, {"requester", we.Requester}, {"role", we.Role}, {DetailReason, we.Reason}} {
		if d.ValueString != "" {
			ent.Detail = append(ent.Detail, d)
		}
	}
	if !we.Expires.IsZero() {
		ent.Detail = append(ent.Detail, EntityDetail{"expires", we.Expires.UTC().Format(time.RFC3339Nano)})
	}
	ev.Entity = append(ev.Entity, ent)
	if we.DecisionID != "" {
		ev.Entity = append(ev.Entity, Entity{Type: ptr(entitySystem), Description: "reviewed decision",
			What: &Reference{Identifier: &Identifier{System: SystemDecisionID, Value: we.DecisionID}}})
	}
	return ev
}

// RecordWorkflow appends the record of one workflow step.
func (l *Log) RecordWorkflow(ctx context.Context, we WorkflowEvent) error {
	ev := l.builder.Workflow(we, l.now())
	dst := append(getPayloadBuf(), `{"v":1,"kind":"workflow","event":`...)
	dst = appendEvent(dst, ev)
	return l.append(ctx, append(dst, '}'), ev)
}

// ApprovalID returns the approval an entry is about: a workflow record's
// approval, or the approval a decision ran under or asked for
// (input.approval.id); "" for none.
func (e *Entry) ApprovalID() string {
	if e.Event != nil {
		for _, en := range e.Event.Entity {
			if en.What != nil && en.What.Identifier != nil && en.What.Identifier.System == SystemApprovalID {
				return en.What.Identifier.Value
			}
		}
	}
	if len(e.Input) == 0 {
		return ""
	}
	var in struct {
		Approval struct {
			ID string `json:"id"`
		} `json:"approval"`
	}
	if json.Unmarshal(e.Input, &in) != nil {
		return ""
	}
	return in.Approval.ID
}
