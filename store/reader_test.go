package store

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
)

// flaky is a Memory whose reads fail while away is set: the store going
// away under a replica.
type flaky struct {
	*Memory
	away  atomic.Bool
	reads atomic.Int64
}

var errAway = errors.New("store away")

func (f *flaky) read() error {
	f.reads.Add(1)
	if f.away.Load() {
		return errAway
	}
	return nil
}

func (f *flaky) Consents(ctx context.Context, p string, now time.Time) ([]Consent, error) {
	if err := f.read(); err != nil {
		return nil, err
	}
	return f.Memory.Consents(ctx, p, now)
}

func (f *flaky) Elevations(ctx context.Context, s string, now time.Time) ([]Elevation, error) {
	if err := f.read(); err != nil {
		return nil, err
	}
	return f.Memory.Elevations(ctx, s, now)
}

func (f *flaky) Ping(context.Context) error {
	if f.away.Load() {
		return errAway
	}
	return nil
}

// waitFor polls cond for up to two seconds: the feed is asynchronous.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 2s", what)
}

func TestReaderConsentsAndElevations(t *testing.T) {
	f := &flaky{Memory: NewMemory(0)}
	defer f.Close()
	r := NewReader(f, time.Hour) // only the feed invalidates here
	ctx, now := t.Context(), time.Now()
	if cs, err := r.ConsentDirectives(ctx, "p1", now); err != nil || len(cs) != 0 {
		t.Fatalf("no consent yet: %v %v", cs, err)
	}
	if err := f.PutConsent(ctx, Consent{ID: "c1", Patient: "p1", Effect: EffectDeny, Purpose: "HRESCH", From: now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	want := authz.ConsentDirective{Patient: "p1", Effect: "deny", Purpose: "HRESCH"}
	waitFor(t, "the cached empty answer is dropped by the feed", func() bool {
		cs, err := r.ConsentDirectives(ctx, "p1", now)
		return err == nil && len(cs) == 1 && cs[0] == want
	})
	exp := now.Add(time.Hour)
	if err := f.PutElevation(ctx, Elevation{Subject: "u1", Role: "physician", Reason: "cover", GrantedBy: "boss", Expires: exp}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "elevation", func() bool {
		es, err := r.Elevations(ctx, "u1", now)
		return err == nil && len(es) == 1 && es[0] == authz.Elevation{Role: "physician", ExpiresNS: exp.UnixNano()}
	})
	// A cached answer is served without a read.
	n := f.reads.Load()
	if _, err := r.Elevations(ctx, "u1", now); err != nil || f.reads.Load() != n {
		t.Fatalf("cached elevation read the store again (%v)", err)
	}
}

// An answer younger than MaxAge outlives the store; an older one does not,
// and health follows the store there and back.
func TestReaderFreshEnoughOnly(t *testing.T) {
	f := &flaky{Memory: NewMemory(0)}
	defer f.Close()
	const maxAge = 200 * time.Millisecond
	r := NewReader(f, maxAge)
	ctx, now := t.Context(), time.Now()
	if _, err := r.ConsentDirectives(ctx, "p1", now); err != nil {
		t.Fatal(err)
	}
	read := time.Now()
	f.away.Store(true)
	if _, err := r.ConsentDirectives(ctx, "p1", now); err != nil && time.Since(read) < maxAge {
		t.Fatalf("a fresh answer refused while the store is away: %v", err)
	}
	time.Sleep(maxAge)
	if _, err := r.ConsentDirectives(ctx, "p1", now); !errors.Is(err, errAway) {
		t.Fatalf("an answer older than MaxAge served while the store is away (err %v)", err)
	}
	if r.Health().Up() || r.Health().DownSince().IsZero() || r.Health().Failures() == 0 {
		t.Fatalf("health after a failed read: up %v since %v", r.Health().Up(), r.Health().DownSince())
	}
	f.away.Store(false)
	waitFor(t, "the probe sees the store back", func() bool { return r.Health().Up() })
	if _, err := r.ConsentDirectives(ctx, "p1", now); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

// A grant written through the reader is seen by its next lookup, and an
// expired cached grant is not served.
func TestReaderGrants(t *testing.T) {
	m := NewMemory(0)
	defer m.Close()
	r := NewReader(m, time.Hour)
	ctx, now := t.Context(), time.Now()
	if gs, err := r.Active(ctx, "u1", now); err != nil || len(gs) != 0 {
		t.Fatalf("%v %v", gs, err)
	}
	g := authz.Grant{Patient: "p1", Reason: "ED", ExpiresNS: now.Add(time.Minute).UnixNano()}
	if err := r.Put(ctx, "u1", g); err != nil {
		t.Fatal(err)
	}
	if gs, err := r.Active(ctx, "u1", now); err != nil || len(gs) != 1 {
		t.Fatalf("after Put: %v %v", gs, err)
	}
	if gs, err := r.Active(ctx, "u1", now.Add(2*time.Minute)); err != nil || len(gs) != 0 {
		t.Fatalf("an expired grant served from the cache: %v %v", gs, err)
	}
}
