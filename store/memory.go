package store

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/phigate/phigate/authz"
)

// Memory is an in-process authz.GrantStore, bounded in subjects.
type Memory struct {
	mu     sync.Mutex
	grants map[string][]authz.Grant
	max    int
}

var _ authz.GrantStore = (*Memory)(nil)

// ErrFull means the store holds grants for its maximum number of subjects.
var ErrFull = errors.New("store: grant store full")

// NewMemory returns a store holding grants for at most maxSubjects subjects.
func NewMemory(maxSubjects int) *Memory {
	if maxSubjects <= 0 {
		maxSubjects = 100000
	}
	return &Memory{grants: map[string][]authz.Grant{}, max: maxSubjects}
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
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	gs, ok := m.grants[subject]
	if !ok && len(m.grants) >= m.max {
		m.prune(now)
		if len(m.grants) >= m.max {
			return ErrFull
		}
	}
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
