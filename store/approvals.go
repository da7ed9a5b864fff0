package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"
)

// ApprovalStore keeps the requests that need a second person: an
// operation (a bulk export) one user asks for and another approves, and a
// just-in-time role a user asks for and an approver grants. Both backends
// implement it; every write is announced on Changes as KindApproval with
// the requester as subject, and a granted elevation as KindElevation too.
//
// The store enforces what does not depend on who the callers are: the
// approver is not the requester, only a pending request that has not
// lapsed is decided, and an approved request lasts its TTL from the
// moment it was approved. Whether the approver holds the approver role is
// the caller's to check (it verified the approver's token).
type ApprovalStore interface {
	// RequestApproval records a pending request, or returns the live one
	// (pending, or approved and unexpired) with the same kind, requester
	// and scope; created says which.
	RequestApproval(ctx context.Context, a Approval, now time.Time) (_ Approval, created bool, _ error)
	// DecideApproval approves or denies a pending request at now.
	DecideApproval(ctx context.Context, id, approver string, approve bool, now time.Time) (Approval, error)
	// MarkApprovalUsed records the first use of an approved request.
	MarkApprovalUsed(ctx context.Context, id string, now time.Time) error
	// GetApproval reads one request.
	GetApproval(ctx context.Context, id string) (Approval, error)
	// ListApprovals lists requests, newest first: those in state (all
	// when state is ""); a pending request that lapsed by now is listed
	// as ApprovalLapsed.
	ListApprovals(ctx context.Context, state string, now time.Time) ([]Approval, error)
	// ApprovedFor lists the requester's approved requests of kind
	// unexpired at now, newest approval first.
	ApprovedFor(ctx context.Context, kind, requester string, now time.Time) ([]Approval, error)
	// EndedBetween lists the approved requests of kind whose approval
	// ended in [from, to), oldest end first.
	EndedBetween(ctx context.Context, kind string, from, to time.Time) ([]Approval, error)

	// MarkReviewed records that a reviewer looked at an audited decision
	// (a break-glass access); marking it again replaces the review.
	MarkReviewed(ctx context.Context, r Review) error
	// Reviews lists every review, by decision id.
	Reviews(ctx context.Context) ([]Review, error)
}

// Approval kinds.
const (
	// ApprovalOperation: an operation (a bulk export kick-off) that a
	// second person must approve; Scope is its canonical form.
	ApprovalOperation = "operation"
	// ApprovalElevation: a role for a while; Scope is the role.
	ApprovalElevation = "elevation"
)

// Approval states.
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
	ApprovalDenied   = "denied"
	// ApprovalLapsed is a pending request nobody decided in time; it is
	// reported, never stored.
	ApprovalLapsed = "lapsed"
)

// KindApproval is the Change kind of every approval write.
const KindApproval = "approval"

// Approval is one request for a second person's approval.
type Approval struct {
	// ID is an opaque random reference, safe to give the requester and to
	// write in logs: it names no patient and no parameter.
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Requester string `json:"requester"`
	// Scope is what exactly is approved: the canonical operation
	// (ApprovalOperation) or the role (ApprovalElevation).
	Scope string `json:"scope"`
	// Reason is the requester's stated reason (elevations); free text,
	// never logged.
	Reason string `json:"reason,omitempty"`
	// TTL is how long the approval lasts once given.
	TTL      time.Duration `json:"ttl_ns"`
	State    string        `json:"state"`
	Approver string        `json:"approver,omitempty"`
	Created  time.Time     `json:"created"`
	Decided  time.Time     `json:"decided,omitzero"`
	// Expires is when a pending request lapses, and, once approved, when
	// the approval ends.
	Expires time.Time `json:"expires"`
	// Used is the first use of an approved operation.
	Used time.Time `json:"used,omitzero"`
}

// Review is a reviewer's mark on an audited decision.
type Review struct {
	DecisionID string    `json:"decision_id"`
	Reviewer   string    `json:"reviewer"`
	Note       string    `json:"note,omitempty"`
	At         time.Time `json:"at"`
}

// Errors of the approval workflow, for errors.Is; an unknown id is
// ErrNotFound.
var (
	// ErrSelfApproval: the approver is the requester.
	ErrSelfApproval = errors.New("store: the requester cannot approve their own request")
	// ErrNotPending: the request was decided already, or lapsed.
	ErrNotPending = errors.New("store: the request is not pending")
)

// maxTTL bounds how long an approval or an elevation may last.
const maxTTL = 7 * 24 * time.Hour

func (a Approval) validate() error {
	if a.Kind != ApprovalOperation && a.Kind != ApprovalElevation {
		return invalid("kind is not %s or %s", ApprovalOperation, ApprovalElevation)
	}
	if err := checkID("requester", a.Requester); err != nil {
		return err
	}
	if a.Scope == "" || len(a.Scope) > maxText {
		return invalid("scope is required, at most %d bytes", maxText)
	}
	if a.Kind == ApprovalElevation {
		if err := checkID("role", a.Scope); err != nil {
			return err
		}
		if a.Reason == "" {
			return invalid("reason is required for an elevation")
		}
	}
	if len(a.Reason) > maxText {
		return invalid("reason is longer than %d bytes", maxText)
	}
	if a.TTL <= 0 || a.TTL > maxTTL {
		return invalid("ttl must be positive and at most %v", maxTTL)
	}
	if a.Expires.IsZero() {
		return invalid("expires (when the pending request lapses) is required")
	}
	return nil
}

func (r Review) validate() error {
	if err := checkID("decision_id", r.DecisionID); err != nil {
		return err
	}
	if err := checkID("reviewer", r.Reviewer); err != nil {
		return err
	}
	if len(r.Note) > maxText {
		return invalid("note is longer than %d bytes", maxText)
	}
	if r.At.IsZero() {
		return invalid("at is required")
	}
	return nil
}

func checkDecider(id, approver string) error {
	if err := checkID("id", id); err != nil {
		return err
	}
	return checkID("approver", approver)
}

// newApprovalID is 128 random bits in hex.
func newApprovalID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// live reports whether a stored request still counts at now: pending and
// not lapsed, or approved and unexpired.
func (a Approval) live(now time.Time) bool {
	return (a.State == ApprovalPending || a.State == ApprovalApproved) && now.Before(a.Expires)
}

// Reported is a as listed at now: a pending request that lapsed is
// ApprovalLapsed.
func (a Approval) Reported(now time.Time) Approval {
	if a.State == ApprovalPending && !now.Before(a.Expires) {
		a.State = ApprovalLapsed
	}
	return a
}

// decide applies a decision to a pending request, or says why it cannot.
func (a Approval) decide(approver string, approve bool, now time.Time) (Approval, error) {
	if a.State != ApprovalPending || !now.Before(a.Expires) {
		return a, ErrNotPending
	}
	if approver == a.Requester {
		return a, ErrSelfApproval
	}
	a.Approver, a.Decided = approver, now.UTC()
	if approve {
		a.State, a.Expires = ApprovalApproved, now.Add(a.TTL).UTC()
	} else {
		a.State = ApprovalDenied
	}
	return a, nil
}

// elevationOf is the elevation an approved elevation request grants.
func (a Approval) elevationOf() Elevation {
	return Elevation{Subject: a.Requester, Role: a.Scope, Reason: a.Reason, GrantedBy: a.Approver, Expires: a.Expires}
}

var _ ApprovalStore = (*Memory)(nil)
var _ ApprovalStore = (*Postgres)(nil)
