package authz

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
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
