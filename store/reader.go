package store

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phigate/phigate/authz"
)

// Reader is a replica's view of the store for the decision path: it
// answers authz's seams (care relationships, consents, elevations and
// break-glass grants) from a cache that keeps each answer for at most
// MaxAge and drops it as soon as the change feed names its key (or
// resets). A write on any replica therefore reaches this one's next
// decision within the feed's delay, and a validity window that passes
// takes effect within MaxAge even without a write.
//
// When the store cannot answer, an answer younger than MaxAge is still
// served: it is as fresh as the feed would keep it anyway. An older one
// is not, and the lookup fails, which the authorizer turns into a refusal.
type Reader struct {
	st     Store
	maxAge time.Duration
	care   cache[authz.CareRelationship]
	cons   cache[authz.ConsentDirective]
	elevs  cache[authz.Elevation]
	grants cache[authz.Grant]
	alerts cache[authz.Alert]
	health Health
	done   chan struct{}
	// cleared is called with a subject whose alerts no longer hold
	// anything open, after a change to them.
	cleared atomic.Pointer[func(subject string)]
}

// OnAlertsCleared registers f to be called, in its own goroutine, for a
// subject left with no open alert after a change to its alerts (made on
// any replica).
func (r *Reader) OnAlertsCleared(f func(subject string)) { r.cleared.Store(&f) }

func (r *Reader) alertsChanged(subject string) {
	f := r.cleared.Load()
	if f == nil || subject == "" {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), LookupTimeout)
		defer cancel()
		as, err := r.st.ListAlerts(ctx, subject, "", 1)
		if err == nil && len(as) == 0 {
			(*f)(subject)
		}
	}()
}

var (
	_ authz.CareSource      = (*Reader)(nil)
	_ authz.ConsentSource   = (*Reader)(nil)
	_ authz.ElevationSource = (*Reader)(nil)
	_ authz.GrantStore      = (*Reader)(nil)
	_ authz.AlertSource     = (*Reader)(nil)
)

// DefaultMaxAge bounds how long a validity window may take to pass, and
// how long a cached answer outlives the store.
const DefaultMaxAge = time.Second

// LookupTimeout bounds one read or write of the store on the decision
// path: a store that does not answer in time is away, and the request is
// refused promptly instead of waiting out the proxy's own timeout.
const LookupTimeout = 250 * time.Millisecond

// NewReader reads st and consumes its Changes until st is closed. It must
// be the only consumer of st.Changes().
func NewReader(st Store, maxAge time.Duration) *Reader {
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	r := &Reader{st: st, maxAge: maxAge, done: make(chan struct{})}
	for _, c := range []interface{ init() }{&r.care, &r.cons, &r.elevs, &r.grants, &r.alerts} {
		c.init()
	}
	go r.follow()
	if p, ok := st.(pinger); ok {
		go r.probe(p)
	}
	return r
}

// pinger is a store that can say whether it is reachable without a
// lookup, so that an idle replica's health is known too.
type pinger interface {
	Ping(ctx context.Context) error
}

// probeEvery is how often an idle replica asks the store whether it is
// there.
const probeEvery = time.Second

func (r *Reader) probe(p pinger) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), probeEvery)
			r.health.observe(p.Ping(ctx))
			cancel()
		}
	}
}

// Health says whether the store answered its last lookup or write.
func (r *Reader) Health() *Health { return &r.health }

func (r *Reader) follow() {
	defer close(r.done)
	for ch := range r.st.Changes() {
		switch ch.Kind {
		case KindReset:
			r.care.reset()
			r.cons.reset()
			r.elevs.reset()
			r.grants.reset()
			r.alerts.reset()
		case KindAlert:
			r.alerts.drop(ch.Subject)
			r.alertsChanged(ch.Subject)
		case KindRelationship:
			r.care.drop(ch.Subject)
		case KindConsent:
			r.cons.drop(ch.Patient)
		case KindElevation:
			r.elevs.drop(ch.Subject)
		case KindGrant:
			r.grants.drop(ch.Subject)
		}
	}
}

// CareRelationships implements authz.CareSource.
func (r *Reader) CareRelationships(ctx context.Context, practitioner string, now time.Time) ([]authz.CareRelationship, error) {
	return get(ctx, r, &r.care, practitioner, func(ctx context.Context) ([]authz.CareRelationship, error) {
		rs, err := r.st.Relationships(ctx, practitioner, now)
		out := make([]authz.CareRelationship, len(rs))
		for i, x := range rs {
			out[i] = authz.CareRelationship{Patient: x.Patient, Role: x.Role, Source: x.Source}
		}
		return out, err
	})
}

// ConsentDirectives implements authz.ConsentSource.
func (r *Reader) ConsentDirectives(ctx context.Context, patient string, now time.Time) ([]authz.ConsentDirective, error) {
	return get(ctx, r, &r.cons, patient, func(ctx context.Context) ([]authz.ConsentDirective, error) {
		cs, err := r.st.Consents(ctx, patient, now)
		out := make([]authz.ConsentDirective, len(cs))
		for i, c := range cs {
			out[i] = authz.ConsentDirective{Patient: c.Patient, Effect: c.Effect, Purpose: c.Purpose, Label: c.Label}
		}
		return out, err
	})
}

// Elevations implements authz.ElevationSource.
func (r *Reader) Elevations(ctx context.Context, subject string, now time.Time) ([]authz.Elevation, error) {
	return get(ctx, r, &r.elevs, subject, func(ctx context.Context) ([]authz.Elevation, error) {
		es, err := r.st.Elevations(ctx, subject, now)
		out := make([]authz.Elevation, len(es))
		for i, e := range es {
			out[i] = authz.Elevation{Role: e.Role, ExpiresNS: e.Expires.UnixNano()}
		}
		return out, err
	})
}

// OpenAlerts implements authz.AlertSource.
func (r *Reader) OpenAlerts(ctx context.Context, subject string) ([]authz.Alert, error) {
	return get(ctx, r, &r.alerts, subject, func(ctx context.Context) ([]authz.Alert, error) {
		as, err := r.st.ListAlerts(ctx, subject, "", 100)
		out := make([]authz.Alert, len(as))
		for i, a := range as {
			out[i] = authz.Alert{Kind: a.Kind, RaisedNS: a.RaisedAt.UnixNano()}
		}
		return out, err
	})
}

// RaiseAlert writes an alert through to the store (abuse.AlertSink).
func (r *Reader) RaiseAlert(ctx context.Context, subject, kind string, at time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	err := r.st.RaiseAlert(ctx, subject, kind, at)
	r.health.observe(err)
	if err == nil {
		r.alerts.drop(subject)
	}
	return err
}

// Active implements authz.GrantStore. A cached grant list still drops
// grants that have expired since it was read.
func (r *Reader) Active(ctx context.Context, subject string, now time.Time) ([]authz.Grant, error) {
	gs, err := get(ctx, r, &r.grants, subject, func(ctx context.Context) ([]authz.Grant, error) {
		return r.st.Active(ctx, subject, now)
	})
	if err != nil {
		return nil, err
	}
	// The cached slice is shared: a copy drops the expired, and only when
	// there is one.
	ns := now.UnixNano()
	expired := func(g authz.Grant) bool { return g.ExpiresNS <= ns }
	if !slices.ContainsFunc(gs, expired) {
		return gs, nil
	}
	return slices.DeleteFunc(slices.Clone(gs), expired), nil
}

// Put implements authz.GrantStore: it writes through to the store.
func (r *Reader) Put(ctx context.Context, subject string, g authz.Grant) error {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	err := r.st.Put(ctx, subject, g)
	r.health.observe(err)
	if err == nil {
		r.grants.drop(subject)
	}
	return err
}

// get answers key from c, or reads it with load and caches the answer
// unless a change raced the read. A failed read falls back to a cached
// answer younger than MaxAge.
func get[T any](ctx context.Context, r *Reader, c *cache[T], key string, load func(context.Context) ([]T, error)) ([]T, error) {
	e, gen, ok := c.lookup(key)
	if ok && time.Since(e.at) < r.maxAge {
		return e.vals, nil
	}
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	vals, err := load(ctx)
	r.health.observe(err)
	if err != nil {
		return nil, err
	}
	c.put(key, gen, vals)
	return vals, nil
}

type cache[T any] struct {
	mu sync.Mutex
	m  map[string]entry[T]
	// gen counts invalidations, so a read that raced a change does not
	// put its stale answer back.
	gen uint64
}

type entry[T any] struct {
	vals []T
	at   time.Time // when read from the store
}

func (c *cache[T]) init() { c.m = map[string]entry[T]{} }

func (c *cache[T]) lookup(key string) (entry[T], uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	return e, c.gen, ok
}

func (c *cache[T]) put(key string, gen uint64, vals []T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.m[key] = entry[T]{vals: vals, at: time.Now()}
	}
}

func (c *cache[T]) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, key)
}

func (c *cache[T]) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
}

// Health is whether the store answered the decision path's last request
// to it, and since when it has not.
type Health struct {
	down     atomic.Bool
	since    atomic.Int64 // unix ns of the first failure in a row
	failures atomic.Uint64
}

func (h *Health) observe(err error) {
	if err == nil {
		h.down.Store(false)
		return
	}
	h.failures.Add(1)
	if !h.down.Swap(true) {
		h.since.Store(time.Now().UnixNano())
	}
}

// Up reports whether the store's last answer was a success.
func (h *Health) Up() bool { return !h.down.Load() }

// DownSince is when the current run of failures began (zero when up).
func (h *Health) DownSince() time.Time {
	if h.Up() {
		return time.Time{}
	}
	return time.Unix(0, h.since.Load())
}

// Failures counts failed lookups and writes since start.
func (h *Health) Failures() uint64 { return h.failures.Load() }
