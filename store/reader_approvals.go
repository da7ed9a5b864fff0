package store

import (
	"context"
	"errors"
	"time"

	"github.com/phigate/phigate/authz"
)

// ApprovalSource is the decision path's view of the approvals: uncached,
// since only the few requests that need an approval read them, and an
// approval given on one replica must count on the next request to any.
// Every call is bounded by LookupTimeout and counts toward Health.
type ApprovalSource struct {
	st     ApprovalStore
	health *Health
	ttl    time.Duration
	lapse  time.Duration
}

var _ authz.ApprovalSource = (*ApprovalSource)(nil)

// ErrNoApprovals means the backend keeps no approvals.
var ErrNoApprovals = errors.New("store: this backend keeps no approvals")

// Approvals returns the decision path's view of the replica's approvals:
// an approved operation lasts ttl, a request nobody decides lapses after
// lapse.
func (r *Reader) Approvals(ttl, lapse time.Duration) (*ApprovalSource, error) {
	as, ok := r.st.(ApprovalStore)
	if !ok {
		return nil, ErrNoApprovals
	}
	return &ApprovalSource{st: as, health: &r.health, ttl: ttl, lapse: lapse}, nil
}

func toInput(a Approval) authz.ApprovalInput {
	return authz.ApprovalInput{ID: a.ID, State: a.State, Requester: a.Requester, Approver: a.Approver, ExpiresNS: a.Expires.UnixNano()}
}

// Live implements authz.ApprovalSource: the requester's approved,
// unexpired approval of exactly scope.
func (s *ApprovalSource) Live(ctx context.Context, requester, scope string, now time.Time) (authz.ApprovalInput, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	as, err := s.st.ApprovedFor(ctx, ApprovalOperation, requester, now)
	s.health.observe(err)
	if err != nil {
		return authz.ApprovalInput{}, false, err
	}
	for _, a := range as {
		if a.Scope == scope {
			return toInput(a), true, nil
		}
	}
	return authz.ApprovalInput{}, false, nil
}

// Started implements authz.ApprovalSource.
func (s *ApprovalSource) Started(ctx context.Context, requester string, now time.Time) (authz.ApprovalInput, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	as, err := s.st.ApprovedFor(ctx, ApprovalOperation, requester, now)
	s.health.observe(err)
	if err != nil {
		return authz.ApprovalInput{}, false, err
	}
	for _, a := range as {
		if !a.Used.IsZero() {
			return toInput(a), true, nil
		}
	}
	return authz.ApprovalInput{}, false, nil
}

// Request implements authz.ApprovalSource.
func (s *ApprovalSource) Request(ctx context.Context, requester, scope string, now time.Time) (authz.ApprovalInput, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	a, _, err := s.st.RequestApproval(ctx, Approval{Kind: ApprovalOperation, Requester: requester, Scope: scope,
		TTL: s.ttl, Expires: now.Add(s.lapse)}, now)
	s.health.observe(err)
	if err != nil {
		return authz.ApprovalInput{}, err
	}
	return toInput(a), nil
}

// Used implements authz.ApprovalSource.
func (s *ApprovalSource) Used(ctx context.Context, id string, now time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	err := s.st.MarkApprovalUsed(ctx, id, now)
	s.health.observe(err)
	return err
}
