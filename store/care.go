package store

import (
	"context"
	"sync"
	"time"

	"github.com/phigate/phigate/authz"
)

// CareReader answers authz.CareSource from a Store, keeping each
// practitioner's relationships for at most MaxAge and dropping them as
// soon as the store's change feed names that practitioner (or resets):
// a revocation on any replica reaches this one's next decision within
// the feed's delay, and a validity window that passes takes effect
// within MaxAge even without a write.
type CareReader struct {
	st     Store
	maxAge time.Duration
	mu     sync.Mutex
	byPrac map[string]careEntry
	// gen counts invalidations, so a read that raced a change does not
	// put its stale answer back into the cache.
	gen  uint64
	done chan struct{}
}

type careEntry struct {
	rels []authz.CareRelationship
	at   time.Time // when read from the store
}

// DefaultCareMaxAge bounds how long a validity window may take to pass.
const DefaultCareMaxAge = time.Second

var _ authz.CareSource = (*CareReader)(nil)

// NewCareReader reads st and consumes its Changes until st is closed. It
// must be the only consumer of st.Changes().
func NewCareReader(st Store, maxAge time.Duration) *CareReader {
	if maxAge <= 0 {
		maxAge = DefaultCareMaxAge
	}
	c := &CareReader{st: st, maxAge: maxAge, byPrac: map[string]careEntry{}, done: make(chan struct{})}
	go c.follow()
	return c
}

func (c *CareReader) follow() {
	defer close(c.done)
	for ch := range c.st.Changes() {
		if ch.Kind != KindReset && ch.Kind != KindRelationship {
			continue // grants, consents and elevations are not cached here
		}
		c.mu.Lock()
		c.gen++
		if ch.Kind == KindReset {
			clear(c.byPrac)
		} else {
			delete(c.byPrac, ch.Subject)
		}
		c.mu.Unlock()
	}
}

// CareRelationships implements authz.CareSource.
func (c *CareReader) CareRelationships(ctx context.Context, practitioner string, now time.Time) ([]authz.CareRelationship, error) {
	c.mu.Lock()
	e, ok := c.byPrac[practitioner]
	gen := c.gen
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.maxAge {
		return e.rels, nil
	}
	rs, err := c.st.Relationships(ctx, practitioner, now)
	if err != nil {
		return nil, err
	}
	out := make([]authz.CareRelationship, len(rs))
	for i, r := range rs {
		out[i] = authz.CareRelationship{Patient: r.Patient, Role: r.Role, Source: r.Source}
	}
	c.mu.Lock()
	if c.gen == gen {
		c.byPrac[practitioner] = careEntry{rels: out, at: time.Now()}
	}
	c.mu.Unlock()
	return out, nil
}
