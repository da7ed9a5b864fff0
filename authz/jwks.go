package authz

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"go.uber.org/zap"
)

const (
	maxJWKSBytes  = 1 << 20
	minRSABits    = 2048
	jwksFetchTime = 10 * time.Second
)

// verifyKey is one public key usable for signatures, reduced to its raw
// crypto type so that its kind, not a JSON field, decides which algorithms
// it can verify.
type verifyKey struct {
	kid string
	alg string // from the JWK; "" means any algorithm the key type supports
	raw any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// keySet is an immutable snapshot of the JWKS.
type keySet struct {
	byKid map[string][]verifyKey
	all   []verifyKey
	sum   [32]byte // of the source bytes, to notice change
}

// keySource loads the key set from a file or URL and swaps snapshots
// atomically; verifiers read the current snapshot without locking.
type keySource struct {
	file, url string
	minGap    time.Duration
	every     time.Duration
	log       *zap.Logger
	client    *http.Client
	changed   func()
	metrics   *identityMetrics // nil in tests that build a source alone

	cur  atomic.Pointer[keySet]
	mu   sync.Mutex // serializes loads
	last atomicTime // time of the last load attempt
}

func newKeySource(cfg JWTConfig, log *zap.Logger, changed func()) *keySource {
	return &keySource{
		file: cfg.JWKSFile, url: cfg.JWKSURL, minGap: cfg.MinRefreshInterval,
		every: cfg.RefreshInterval, log: log.Named("jwks"), changed: changed,
		client: &http.Client{Timeout: jwksFetchTime, CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("redirects are not followed for key sets")
		}},
	}
}

// find returns the keys that may verify a token with this kid and alg.
// Without a kid every key is a candidate.
func (s *keySource) find(kid, alg string) []verifyKey {
	ks := s.cur.Load()
	if ks == nil {
		return nil
	}
	cands := ks.all
	if kid != "" {
		cands = ks.byKid[kid]
	}
	// The common case, one key of the right kind, allocates nothing.
	if len(cands) == 1 && keyFits(cands[0], alg) {
		return cands
	}
	var out []verifyKey
	for _, k := range cands {
		if keyFits(k, alg) {
			out = append(out, k)
		}
	}
	return out
}

// keyFits is the guard against algorithm confusion: the token header's alg
// must be one the key's own type implements, and must equal the JWK's alg
// when the JWK declares one.
func keyFits(k verifyKey, alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch pk := k.raw.(type) {
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256":
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return pk.Curve == elliptic.P256()
		case "ES384":
			return pk.Curve == elliptic.P384()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// refreshForUnknownKid reloads the keys when the last load is older than
// the minimum gap. It reports whether a reload happened.
func (s *keySource) refreshForUnknownKid(ctx context.Context) bool {
	if time.Since(s.last.Load()) < s.minGap {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Another request may have reloaded while this one waited.
	if time.Since(s.last.Load()) < s.minGap {
		return true
	}
	if err := s.loadLocked(ctx, "unknown_kid"); err != nil {
		s.log.Warn("key set reload for unknown kid failed; keeping current keys", zap.Error(err))
		return false
	}
	return true
}

func (s *keySource) refreshLoop(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.loadAs(ctx, "interval"); err != nil {
				s.log.Warn("key set refresh failed; keeping current keys", zap.Error(err))
			}
		}
	}
}

func (s *keySource) load(ctx context.Context) error { return s.loadAs(ctx, "start") }

func (s *keySource) loadAs(ctx context.Context, trigger string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadLocked(ctx, trigger)
}

func (s *keySource) loadLocked(ctx context.Context, trigger string) error {
	result := "error"
	defer func() {
		if s.metrics != nil {
			s.metrics.refreshes.WithLabelValues(trigger, result).Inc()
		}
	}()
	s.last.Store(time.Now())
	raw, err := s.fetch(ctx)
	if err != nil {
		return err
	}
	ks, err := parseKeySet(raw)
	if err != nil {
		return err
	}
	if s.metrics != nil {
		s.metrics.lastRefresh.Set(float64(time.Now().UnixNano()) / 1e9)
		s.metrics.keys.Set(float64(len(ks.all)))
	}
	old := s.cur.Load()
	if old != nil && old.sum == ks.sum {
		result = "unchanged"
		return nil
	}
	result = "changed"
	s.cur.Store(ks)
	if old != nil {
		s.log.Info("key set changed", zap.Int("keys", len(ks.all)))
		if s.changed != nil {
			s.changed()
		}
	}
	return nil
}

func (s *keySource) fetch(ctx context.Context) ([]byte, error) {
	if s.file != "" {
		f, err := os.Open(s.file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readLimited(f)
	}
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTime)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("key set fetch: status %d", resp.StatusCode)
	}
	return readLimited(resp.Body)
}

func readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJWKSBytes {
		return nil, errors.New("key set larger than 1 MiB")
	}
	return b, nil
}

// parseKeySet keeps the signature keys of a JWKS. Symmetric ("oct") keys
// and encryption keys are dropped: an HMAC secret in the set would let
// anyone holding it mint tokens, and no allowed algorithm uses one. Private
// keys are reduced to their public half. An empty result is an error, so a
// truncated file is refused and the last good set keeps serving.
func parseKeySet(raw []byte) (*keySet, error) {
	set, err := jwk.Parse(bytes.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("key set: %w", err)
	}
	ks := &keySet{byKid: map[string][]verifyKey{}, sum: sha256.Sum256(raw)}
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if u := k.KeyUsage(); u != "" && u != "sig" {
			continue
		}
		pub, err := jwk.PublicRawKeyOf(k)
		if err != nil {
			continue
		}
		vk := verifyKey{kid: k.KeyID(), raw: pub}
		if a := k.Algorithm(); a != nil {
			vk.alg = a.String()
		}
		switch p := pub.(type) {
		case *rsa.PublicKey:
			if p.N.BitLen() < minRSABits {
				continue
			}
		case *ecdsa.PublicKey:
		case ed25519.PublicKey:
		default:
			continue
		}
		ks.all = append(ks.all, vk)
		ks.byKid[vk.kid] = append(ks.byKid[vk.kid], vk)
	}
	if len(ks.all) == 0 {
		return nil, errors.New("key set holds no usable signature key")
	}
	return ks, nil
}
