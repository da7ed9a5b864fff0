package store

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// RequestApproval implements ApprovalStore.
func (m *Memory) RequestApproval(_ context.Context, a Approval, now time.Time) (Approval, bool, error) {
	if err := a.validate(); err != nil {
		return Approval{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Approval{}, false, ErrClosed
	}
	if m.approvals == nil {
		m.approvals = map[string]Approval{}
	}
	if old, ok := m.liveLocked(a.Kind, a.Requester, a.Scope, now); ok {
		return old, false, nil
	}
	a.ID, a.State, a.Approver = newApprovalID(), ApprovalPending, ""
	a.Created, a.Expires, a.Decided, a.Used = now.UTC(), a.Expires.UTC(), time.Time{}, time.Time{}
	m.approvals[a.ID] = a
	m.feed.send(Change{Kind: KindApproval, Subject: a.Requester})
	return a, true, nil
}

// liveLocked finds the live request for a scope, an approved one first.
func (m *Memory) liveLocked(kind, requester, scope string, now time.Time) (Approval, bool) {
	var found Approval
	ok := false
	for _, x := range m.approvals {
		if x.Kind != kind || x.Requester != requester || x.Scope != scope || !x.live(now) {
			continue
		}
		better := x.State == ApprovalApproved && found.State != ApprovalApproved ||
			x.State == found.State && x.Created.After(found.Created)
		if !ok || better {
			found, ok = x, true
		}
	}
	return found, ok
}

// DecideApproval implements ApprovalStore.
func (m *Memory) DecideApproval(_ context.Context, id, approver string, approve bool, now time.Time) (Approval, error) {
	if err := checkDecider(id, approver); err != nil {
		return Approval{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Approval{}, ErrClosed
	}
	a, ok := m.approvals[id]
	if !ok {
		return Approval{}, ErrNotFound
	}
	a, err := a.decide(approver, approve, now)
	if err != nil {
		return a.Reported(now), err
	}
	m.approvals[id] = a
	m.feed.send(Change{Kind: KindApproval, Subject: a.Requester})
	if a.Kind == ApprovalElevation && a.State == ApprovalApproved {
		e := a.elevationOf()
		if m.elevations[e.Subject] == nil {
			m.elevations[e.Subject] = map[string]Elevation{}
		}
		m.elevations[e.Subject][e.Role] = e
		m.feed.send(Change{Kind: KindElevation, Subject: e.Subject})
	}
	return a, nil
}

// MarkApprovalUsed implements ApprovalStore.
func (m *Memory) MarkApprovalUsed(_ context.Context, id string, now time.Time) error {
	if err := checkID("id", id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	a, ok := m.approvals[id]
	if !ok {
		return ErrNotFound
	}
	if a.Used.IsZero() {
		a.Used = now.UTC()
		m.approvals[id] = a
		m.feed.send(Change{Kind: KindApproval, Subject: a.Requester})
	}
	return nil
}

// GetApproval implements ApprovalStore.
func (m *Memory) GetApproval(_ context.Context, id string) (Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.approvals[id]
	if !ok {
		return Approval{}, ErrNotFound
	}
	return a, nil
}

// ListApprovals implements ApprovalStore.
func (m *Memory) ListApprovals(_ context.Context, state string, now time.Time) ([]Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Approval
	for _, a := range m.approvals {
		if a = a.Reported(now); state == "" || a.State == state {
			out = append(out, a)
		}
	}
	sortApprovals(out)
	return out, nil
}

// ApprovedFor implements ApprovalStore.
func (m *Memory) ApprovedFor(_ context.Context, kind, requester string, now time.Time) ([]Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Approval
	for _, a := range m.approvals {
		if a.Kind == kind && a.Requester == requester && a.State == ApprovalApproved && now.Before(a.Expires) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b Approval) int { return cmp.Or(b.Decided.Compare(a.Decided), cmp.Compare(a.ID, b.ID)) })
	return out, nil
}

// EndedBetween implements ApprovalStore.
func (m *Memory) EndedBetween(_ context.Context, kind string, from, to time.Time) ([]Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Approval
	for _, a := range m.approvals {
		if a.Kind == kind && a.State == ApprovalApproved && !a.Expires.Before(from) && a.Expires.Before(to) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b Approval) int { return cmp.Or(a.Expires.Compare(b.Expires), cmp.Compare(a.ID, b.ID)) })
	return out, nil
}

// MarkReviewed implements ApprovalStore.
func (m *Memory) MarkReviewed(_ context.Context, r Review) error {
	if err := r.validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.reviews == nil {
		m.reviews = map[string]Review{}
	}
	r.At = r.At.UTC()
	m.reviews[r.DecisionID] = r
	return nil
}

// Reviews implements ApprovalStore.
func (m *Memory) Reviews(_ context.Context) ([]Review, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Review, 0, len(m.reviews))
	for _, r := range m.reviews {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Review) int { return cmp.Compare(a.DecisionID, b.DecisionID) })
	return out, nil
}

func sortApprovals(as []Approval) {
	slices.SortFunc(as, func(a, b Approval) int { return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(a.ID, b.ID)) })
}
