package authz

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A token whose verification is under way when its key leaves the set must
// not land in the cache after the cache was emptied for that change: the
// next use would be answered from the cache, signed by a key no longer
// trusted. The hook removes the key exactly between verification and the
// cache insert.
func TestJWTCacheRefusesInsertAcrossKeyRemoval(t *testing.T) {
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	k1 := newTestKey(t, "k1", jwa.ES256)
	k2 := newTestKey(t, "k2", jwa.ES256)
	writeJWKS(t, jwks, k1, k2)
	v := newVerifier(t, jwks, nil)
	tok1 := mint(t, k1, baseClaims(time.Now()))

	removed := false
	v.beforeCachePut = func() {
		if removed {
			return
		}
		removed = true
		writeJWKS(t, jwks, k2)
		if err := v.keys.load(t.Context()); err != nil {
			t.Errorf("reload: %v", err)
		}
	}
	// This call began while k1 was trusted; its own answer may stand.
	if _, err := v.Verify(t.Context(), tok1); err != nil {
		t.Fatalf("first Verify: %v", err)
	}
	if !removed {
		t.Fatal("the hook did not run: nothing was tested")
	}
	if n := v.cache.len(); n != 0 {
		t.Fatalf("cache holds %d entries after the key set changed under a verification, want 0", n)
	}
	// Every later use is verified afresh, and k1 is gone.
	for i := range 3 {
		if _, err := v.Verify(t.Context(), tok1); CodeOf(err) != CodeInvalidToken {
			t.Fatalf("Verify %d after k1 was removed: err = %v, want %s", i, err, CodeInvalidToken)
		}
	}
	// The cache still works for the keys that stayed.
	tok2 := mint(t, k2, baseClaims(time.Now()))
	for range 2 {
		if _, err := v.Verify(t.Context(), tok2); err != nil {
			t.Fatalf("token of the remaining key: %v", err)
		}
	}
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache entries = %d, want 1 (the remaining key's token)", n)
	}
}

// Many callers verify, and reuse, tokens of a sequence of keys while the
// set moves forward one key at a time and never brings a key back. A call
// that begins after the reload removing a key has returned must refuse
// that key's tokens, from the cache or otherwise.
func TestJWTCacheKeyRotationStress(t *testing.T) {
	const (
		nKeys     = 12
		perKey    = 3
		verifiers = 16
	)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	keys := make([]testKey, nKeys)
	for i := range keys {
		keys[i] = newTestKey(t, fmt.Sprintf("k%d", i), jwa.ES256)
	}
	now := time.Now()
	tokens := make([][]string, nKeys)
	for i := range keys {
		for j := range perKey {
			c := baseClaims(now)
			c["sub"] = fmt.Sprintf("user-%d-%d", i, j)
			tokens[i] = append(tokens[i], mint(t, keys[i], c))
		}
	}
	// Set i holds keys i and i+1; moving to set i+1 removes key i.
	writeJWKS(t, jwks, keys[0], keys[1])
	v := newVerifier(t, jwks, func(c *JWTConfig) { c.MinRefreshInterval = time.Hour })

	var removedBelow atomic.Int64 // keys with a lower index are gone, and their reload returned
	var accepted, refused atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range verifiers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Mostly the live keys, so the cache fills; sometimes the
				// one just removed, which is what a stale entry would serve.
				lo := max(int(removedBelow.Load())-1, 0)
				k := min(lo+r.IntN(3), nKeys-1)
				gone := int64(k) < removedBelow.Load()
				_, err := v.Verify(t.Context(), tokens[k][r.IntN(perKey)])
				switch {
				case err == nil && gone:
					t.Errorf("token of key %d accepted after its removal completed", k)
					return
				case err == nil:
					accepted.Add(1)
				default:
					refused.Add(1)
				}
			}
		}()
	}
	for i := 1; i < nKeys-1; i++ {
		time.Sleep(5 * time.Millisecond)
		writeJWKS(t, jwks, keys[i], keys[i+1])
		if err := v.keys.load(t.Context()); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		removedBelow.Store(int64(i))
	}
	time.Sleep(5 * time.Millisecond)
	close(stop)
	wg.Wait()
	if accepted.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("accepted %d, refused %d: the run did not exercise both", accepted.Load(), refused.Load())
	}
	t.Logf("%d accepted, %d refused across %d rotations", accepted.Load(), refused.Load(), nKeys-2)
}

// A refusal no later instant can undo is remembered for the same token and
// key set: a forged or expired token presented again is refused from the
// cache, counted under its refusal code each time; a key set change
// forgets it; a refusal that time may undo (nbf) is never remembered; and
// made-up tokens cannot evict the identities of good ones.
func TestJWTCacheRemembersFinalRefusals(t *testing.T) {
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	k1 := newTestKey(t, "k1", jwa.ES256)
	forger := newTestKey(t, "k1", jwa.ES256) // same kid, another key
	writeJWKS(t, jwks, k1)
	v := newVerifier(t, jwks, func(c *JWTConfig) { c.CacheSize = 100 })
	now := time.Now()
	v.now = func() time.Time { return now }
	refused := func() int {
		v.cache.mu.RLock()
		defer v.cache.mu.RUnlock()
		return len(v.cache.refused)
	}

	forged := mint(t, forger, baseClaims(now))
	for i := range 3 {
		if _, err := v.Verify(t.Context(), forged); CodeOf(err) != CodeInvalidToken {
			t.Fatalf("forged token, try %d: %v", i, err)
		}
	}
	if n := refused(); n != 1 {
		t.Fatalf("%d refusals remembered after one forged token, want 1", n)
	}
	if got := testutil.ToFloat64(v.metrics.verifications.WithLabelValues(string(CodeInvalidToken))); got != 3 {
		t.Fatalf("invalid_token counted %v times, want 3 (a remembered refusal still counts)", got)
	}

	// An expired token is refused from the cache even when the clock goes
	// back: it was not verified again. A key set change forgets it.
	old := baseClaims(now.Add(-time.Hour))
	expired := mint(t, k1, old)
	if _, err := v.Verify(t.Context(), expired); CodeOf(err) != CodeExpiredToken {
		t.Fatalf("expired token: %v", err)
	}
	now = now.Add(-55 * time.Minute)
	if _, err := v.Verify(t.Context(), expired); CodeOf(err) != CodeExpiredToken {
		t.Fatalf("expired token, remembered: %v", err)
	}
	v.onKeysChanged()
	if n := refused(); n != 0 {
		t.Fatalf("%d refusals survive a key set change", n)
	}
	if _, err := v.Verify(t.Context(), expired); err != nil {
		t.Fatalf("verified afresh after the key set changed (clock an hour back): %v", err)
	}
	now = now.Add(55 * time.Minute)

	// Not yet valid: refused now, never remembered, valid once nbf passes.
	early := baseClaims(now)
	early["nbf"] = now.Add(5 * time.Minute).Unix()
	notYet := mint(t, k1, early)
	if _, err := v.Verify(t.Context(), notYet); CodeOf(err) != CodeInvalidToken {
		t.Fatalf("token before nbf: %v", err)
	}
	if n := refused(); n != 0 {
		t.Fatalf("a refusal time can undo was remembered (%d)", n)
	}
	now = now.Add(6 * time.Minute)
	if _, err := v.Verify(t.Context(), notYet); err != nil {
		t.Fatalf("token after nbf: %v", err)
	}

	// A flood of distinct forged tokens stays within a tenth of the cache
	// and leaves the good token's identity where it was.
	good := mint(t, k1, baseClaims(now))
	if _, err := v.Verify(t.Context(), good); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		c := baseClaims(now)
		c["jti"] = fmt.Sprint("forged-", i)
		if _, err := v.Verify(t.Context(), mint(t, forger, c)); CodeOf(err) != CodeInvalidToken {
			t.Fatalf("forged %d: %v", i, err)
		}
	}
	if n := refused(); n > 10 {
		t.Fatalf("%d refusals held, bound 10", n)
	}
	if _, _, ok := v.cache.get(sha256.Sum256([]byte(good)), now); !ok {
		t.Fatal("the good token's identity was evicted by forged ones")
	}
}
