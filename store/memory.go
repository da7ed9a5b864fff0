package store

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/phigate/phigate/authz"
)

// Memory is the embedded Store of a single node: everything in process,
// bounded in grant subjects, gone at exit.
type Memory struct {
	mu         sync.Mutex
	grants     map[string][]authz.Grant
	max        int
	rels       map[string][]Relationship       // by practitioner
	consents   map[string]map[string]Consent   // by patient, then id
	elevations map[string]map[string]Elevation // by subject, then role
	alerts     []Alert                         // in the order raised
	approvals  map[string]Approval             // by id (approvals_memory.go)
	reviews    map[string]Review               // by decision id
	feed       feed
	closed     bool

	// The feeds' applied message ids and per-subject state (ingest.go).
	ingested    map[ingestKey]time.Time // when received
	ingestState map[stateKey]IngestState
}

var _ Store = (*Memory)(nil)

// ErrFull means the store holds grants for its maximum number of subjects.
var ErrFull = errors.New("store: grant store full")

// ErrClosed is returned by a store after Close.
var ErrClosed = errors.New("store: closed")

// NewMemory returns a store holding grants for at most maxSubjects subjects.
func NewMemory(maxSubjects int) *Memory {
	if maxSubjects <= 0 {
		maxSubjects = 100000
	}
	return &Memory{
		grants: map[string][]authz.Grant{}, max: maxSubjects,
		rels: map[string][]Relationship{}, consents: map[string]map[string]Consent{},
		elevations: map[string]map[string]Elevation{}, feed: newFeed(),
	}
}

// Active returns the subject's unexpired grants.
func (m *Memory) Active(_ context.Context, subject string, now time.Time) ([]authz.Grant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	gs := live(m.grants[subject], now)
	if len(gs) == 0 {
		delete(m.grants, subject)
		return nil, nil
	}
	m.grants[subject] = gs
	return append([]authz.Grant(nil), gs...), nil
}

// Put adds or extends the subject's grant for g.Patient.
func (m *Memory) Put(_ context.Context, subject string, g authz.Grant) error {
	if err := validGrant(subject, g); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	now := time.Now()
	gs, ok := m.grants[subject]
	if !ok && len(m.grants) >= m.max {
		m.prune(now)
		if len(m.grants) >= m.max {
			return ErrFull
		}
	}
	defer m.feed.send(Change{Kind: KindGrant, Subject: subject, Patient: g.Patient})
	gs = live(gs, now)
	for i := range gs {
		if gs[i].Patient == g.Patient {
			if g.ExpiresNS > gs[i].ExpiresNS {
				gs[i] = g
			}
			m.grants[subject] = gs
			return nil
		}
	}
	m.grants[subject] = append(gs, g)
	return nil
}

func (m *Memory) prune(now time.Time) {
	for s, gs := range m.grants {
		if gs = live(gs, now); len(gs) == 0 {
			delete(m.grants, s)
		} else {
			m.grants[s] = gs
		}
	}
}

func live(gs []authz.Grant, now time.Time) []authz.Grant {
	n := now.UnixNano()
	out := gs[:0]
	for _, g := range gs {
		if g.ExpiresNS > n {
			out = append(out, g)
		}
	}
	return out
}

// PutRelationship implements Store.
func (m *Memory) PutRelationship(_ context.Context, r Relationship) error {
	if err := r.validate(); err != nil {
		return err
	}
	r.From, r.Until = r.From.UTC(), r.Until.UTC()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.putRelationship(r)
	return nil
}

// putRelationship writes a validated r; m.mu is held.
func (m *Memory) putRelationship(r Relationship) {
	r.From, r.Until = r.From.UTC(), r.Until.UTC()
	rs := m.rels[r.Practitioner]
	if i := slices.IndexFunc(rs, func(x Relationship) bool { return x.RelationshipKey == r.RelationshipKey }); i >= 0 {
		rs[i] = r
	} else {
		m.rels[r.Practitioner] = append(rs, r)
	}
	m.feed.send(Change{Kind: KindRelationship, Subject: r.Practitioner, Patient: r.Patient})
}

// EndRelationship implements Store.
func (m *Memory) EndRelationship(_ context.Context, k RelationshipKey, at time.Time) error {
	if err := k.validate(); err != nil {
		return err
	}
	if at.IsZero() {
		return invalid("the end time is required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.endRelationship(k, at)
	return nil
}

// endRelationship closes a validated k at at; m.mu is held.
func (m *Memory) endRelationship(k RelationshipKey, at time.Time) {
	rs := m.rels[k.Practitioner]
	i := slices.IndexFunc(rs, func(x Relationship) bool { return x.RelationshipKey == k })
	if i < 0 {
		return
	}
	if !at.After(rs[i].From) {
		at = rs[i].From // ended before it began: never in force
	}
	rs[i].Until = at.UTC()
	m.feed.send(Change{Kind: KindRelationship, Subject: k.Practitioner, Patient: k.Patient})
}

// Relationships implements Store.
func (m *Memory) Relationships(_ context.Context, practitioner string, now time.Time) ([]Relationship, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Relationship
	for _, r := range m.rels[practitioner] {
		if active(r.From, r.Until, now) {
			out = append(out, r)
		}
	}
	sortRelationships(out)
	return out, nil
}

// PutConsent implements Store.
func (m *Memory) PutConsent(_ context.Context, c Consent) error {
	if err := c.validate(); err != nil {
		return err
	}
	c.From, c.Until = c.From.UTC(), c.Until.UTC()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	// An id names one directive: moving it to another patient removes it
	// from the first.
	for p, cs := range m.consents {
		if old, ok := cs[c.ID]; ok && p != c.Patient {
			delete(cs, c.ID)
			m.feed.send(Change{Kind: KindConsent, Patient: old.Patient})
		}
	}
	if m.consents[c.Patient] == nil {
		m.consents[c.Patient] = map[string]Consent{}
	}
	m.consents[c.Patient][c.ID] = c
	m.feed.send(Change{Kind: KindConsent, Patient: c.Patient})
	return nil
}

// Consents implements Store.
func (m *Memory) Consents(_ context.Context, patient string, now time.Time) ([]Consent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Consent
	for _, c := range m.consents[patient] {
		if active(c.From, c.Until, now) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Consent) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// PutElevation implements Store.
func (m *Memory) PutElevation(_ context.Context, e Elevation) error {
	if err := e.validate(); err != nil {
		return err
	}
	e.Expires = e.Expires.UTC()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.elevations[e.Subject] == nil {
		m.elevations[e.Subject] = map[string]Elevation{}
	}
	m.elevations[e.Subject][e.Role] = e
	m.feed.send(Change{Kind: KindElevation, Subject: e.Subject})
	return nil
}

// Elevations implements Store.
func (m *Memory) Elevations(_ context.Context, subject string, now time.Time) ([]Elevation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Elevation
	for _, e := range m.elevations[subject] {
		if now.Before(e.Expires) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Elevation) int { return cmp.Compare(a.Role, b.Role) })
	return out, nil
}

// Changes implements Store.
func (m *Memory) Changes() <-chan Change { return m.feed.ch }

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		m.feed.close()
	}
	return nil
}
