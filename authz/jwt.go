package authz

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"go.uber.org/zap"
)

// Limits and defaults of JWTConfig. The skew bound exists because a large
// skew silently extends every token's lifetime.
const (
	DefaultClockSkew          = 30 * time.Second
	MaxClockSkew              = 5 * time.Minute
	DefaultRefreshInterval    = 5 * time.Minute
	DefaultMinRefreshInterval = 10 * time.Second
	DefaultTokenCacheSize     = 10000
	maxTokenBytes             = 16 << 10
)

// allowedAlgorithms are the only signature algorithms a JWTConfig may name.
// All are asymmetric: a verifier that accepted HS* could be handed a token
// "signed" with the public key bytes as an HMAC secret.
var allowedAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"}

// ClaimNames says which token claims carry what. Empty fields take the
// defaults shown in DefaultClaimNames.
type ClaimNames struct {
	Roles    string `json:"roles" yaml:"roles"`
	Scope    string `json:"scope" yaml:"scope"`
	FHIRUser string `json:"fhir_user" yaml:"fhir_user"`
	Patient  string `json:"patient" yaml:"patient"`
	Purpose  string `json:"purpose" yaml:"purpose"`
	// ClientID falls back to the standard "azp" claim when absent.
	ClientID string `json:"client_id" yaml:"client_id"`
	AMR      string `json:"amr" yaml:"amr"`
	ACR      string `json:"acr" yaml:"acr"`
}

// DefaultClaimNames are the SMART on FHIR / OIDC names.
var DefaultClaimNames = ClaimNames{
	Roles: "roles", Scope: "scope", FHIRUser: "fhirUser", Patient: "patient",
	Purpose: "purpose_of_use", ClientID: "client_id", AMR: "amr", ACR: "acr",
}

// JWTConfig configures a JWTVerifier. Exactly one of JWKSFile and JWKSURL is set.
type JWTConfig struct {
	Issuer    string   `json:"issuer" yaml:"issuer"`
	Audiences []string `json:"audiences" yaml:"audiences"` // a token must name at least one
	JWKSFile  string   `json:"jwks_file,omitempty" yaml:"jwks_file,omitempty"`
	// JWKSURL must be https, except on a loopback host.
	JWKSURL    string        `json:"jwks_url,omitempty" yaml:"jwks_url,omitempty"`
	Algorithms []string      `json:"algorithms,omitempty" yaml:"algorithms,omitempty"` // default: all allowed
	ClockSkew  time.Duration `json:"clock_skew,omitempty" yaml:"clock_skew,omitempty"`
	// MaxTokenAge, when set, refuses tokens whose iat is older than this
	// (and then requires iat).
	MaxTokenAge time.Duration `json:"max_token_age,omitempty" yaml:"max_token_age,omitempty"`
	// RefreshInterval is how often keys are reloaded in the background.
	RefreshInterval time.Duration `json:"refresh_interval,omitempty" yaml:"refresh_interval,omitempty"`
	// MinRefreshInterval bounds reloads triggered by tokens naming an
	// unknown kid, so a flood of forged kids cannot hammer the key source.
	MinRefreshInterval time.Duration `json:"min_refresh_interval,omitempty" yaml:"min_refresh_interval,omitempty"`
	// CacheSize bounds the verified-token cache; negative disables it. A
	// tenth of it more holds refusals no later instant can undo (a bad
	// signature, an expired token), so a replayed one costs a hash.
	CacheSize int        `json:"cache_size,omitempty" yaml:"cache_size,omitempty"`
	Claims    ClaimNames `json:"claims" yaml:"claims"`
	// MFAACRValues are acr values, in addition to the built-in list, that
	// mean the user authenticated with more than one factor.
	MFAACRValues []string `json:"mfa_acr_values,omitempty" yaml:"mfa_acr_values,omitempty"`
}

// Validate fills defaults and names the first bad field.
func (c *JWTConfig) Validate() error {
	if c.Issuer == "" {
		return errors.New("jwt.issuer: required")
	}
	if len(c.Audiences) == 0 {
		return errors.New("jwt.audiences: at least one audience is required")
	}
	for i, a := range c.Audiences {
		if a == "" {
			return fmt.Errorf("jwt.audiences[%d]: empty", i)
		}
	}
	switch {
	case c.JWKSFile == "" && c.JWKSURL == "":
		return errors.New("jwt.jwks_file: one of jwks_file or jwks_url is required")
	case c.JWKSFile != "" && c.JWKSURL != "":
		return errors.New("jwt.jwks_url: set only one of jwks_file and jwks_url")
	case c.JWKSURL != "":
		u, err := url.Parse(c.JWKSURL)
		if err != nil || u.Host == "" {
			return errors.New("jwt.jwks_url: not an absolute URL")
		}
		if u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())) {
			return errors.New("jwt.jwks_url: must be https (http only on a loopback host)")
		}
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = slices.Clone(allowedAlgorithms)
	}
	for i, a := range c.Algorithms {
		if !slices.Contains(allowedAlgorithms, a) {
			return fmt.Errorf("jwt.algorithms[%d]: %q is not allowed (allowed: %s)", i, a, strings.Join(allowedAlgorithms, ", "))
		}
	}
	switch {
	case c.ClockSkew == 0:
		c.ClockSkew = DefaultClockSkew
	case c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew:
		return fmt.Errorf("jwt.clock_skew: must be between 0 and %s", MaxClockSkew)
	}
	if c.MaxTokenAge < 0 {
		return errors.New("jwt.max_token_age: negative")
	}
	switch {
	case c.RefreshInterval == 0:
		c.RefreshInterval = DefaultRefreshInterval
	case c.RefreshInterval < 0:
		return errors.New("jwt.refresh_interval: negative")
	}
	switch {
	case c.MinRefreshInterval == 0:
		c.MinRefreshInterval = DefaultMinRefreshInterval
	case c.MinRefreshInterval < 0:
		return errors.New("jwt.min_refresh_interval: negative")
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultTokenCacheSize
	}
	d := DefaultClaimNames
	for _, f := range []struct {
		v   *string
		def string
	}{
		{&c.Claims.Roles, d.Roles}, {&c.Claims.Scope, d.Scope}, {&c.Claims.FHIRUser, d.FHIRUser},
		{&c.Claims.Patient, d.Patient}, {&c.Claims.Purpose, d.Purpose}, {&c.Claims.ClientID, d.ClientID},
		{&c.Claims.AMR, d.AMR}, {&c.Claims.ACR, d.ACR},
	} {
		if *f.v == "" {
			*f.v = f.def
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// JWTVerifier verifies bearer JWTs against a JWKS and maps their claims into
// an Identity. It is safe for concurrent use; Close stops its background
// key refresh.
type JWTVerifier struct {
	cfg    JWTConfig
	log    *zap.Logger
	keys   *keySource
	cache  *tokenCache
	mfaACR map[string]bool
	now    func() time.Time // tests move the clock
	// beforeCachePut, when set, runs between a verification and its cache
	// insert, the moment a key set change can slip between them (tests).
	beforeCachePut func()
	metrics        *identityMetrics

	cancel context.CancelFunc
	done   chan struct{}
}

var _ Verifier = (*JWTVerifier)(nil)

// NewJWTVerifier validates cfg, loads the key set (failing when it cannot)
// and starts the background refresh, which runs until Close or ctx ends.
func NewJWTVerifier(ctx context.Context, cfg JWTConfig, log *zap.Logger) (*JWTVerifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	v := &JWTVerifier{cfg: cfg, log: log, now: time.Now, mfaACR: map[string]bool{}, metrics: newIdentityMetrics()}
	for _, a := range append(slices.Clone(defaultMFAACR), cfg.MFAACRValues...) {
		v.mfaACR[a] = true
	}
	if cfg.CacheSize > 0 {
		v.cache = newTokenCache(cfg.CacheSize)
	}
	v.keys = newKeySource(cfg, log, v.onKeysChanged)
	v.keys.metrics = v.metrics
	if err := v.keys.load(ctx); err != nil {
		return nil, fmt.Errorf("jwt: loading keys: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v.cancel, v.done = cancel, make(chan struct{})
	go func() {
		defer close(v.done)
		// The parent's cancellation also stops the refresh.
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
		v.keys.refreshLoop(rctx)
	}()
	return v, nil
}

// Close stops the background refresh and waits for it.
func (v *JWTVerifier) Close() error {
	v.cancel()
	<-v.done
	return nil
}

// onKeysChanged empties the cache and moves it to a new generation: a key
// removed from the set must stop vouching for tokens it signed, cached or
// not, including tokens whose verification with it is still under way and
// would be inserted after the clear.
func (v *JWTVerifier) onKeysChanged() {
	if v.cache != nil {
		v.cache.invalidate()
	}
}

// Verify implements Verifier. A token seen before and still valid costs a
// SHA-256 and a map lookup. The Identity's slices are shared with the cache:
// callers must not modify them.
func (v *JWTVerifier) Verify(ctx context.Context, token string) (Identity, error) {
	id, cached, err := v.verifyToken(ctx, token)
	if cached {
		v.metrics.cached.Inc()
	} else {
		v.metrics.verified(err)
	}
	return id, err
}

// verifyToken is Verify; cached says the answer came from the cache.
func (v *JWTVerifier) verifyToken(ctx context.Context, token string) (Identity, bool, error) {
	if token == "" {
		return Identity{}, false, &Error{Code: CodeMissingToken}
	}
	if len(token) > maxTokenBytes {
		return Identity{}, false, Errorf(CodeInvalidToken, "token too large")
	}
	now := v.now()
	var sum [32]byte
	if v.cache != nil {
		sum = sha256.Sum256([]byte(token))
		if id, err, ok := v.cache.get(sum, now); ok {
			// A refusal seen again is counted as the refusal it is.
			return id, err == nil, err
		}
	}
	id, until, gen, err := v.verify(ctx, token, now)
	if v.cache != nil && (err == nil || !until.IsZero()) {
		if v.beforeCachePut != nil {
			v.beforeCachePut()
		}
		v.cache.put(sum, id, err, until, gen)
	}
	if err != nil {
		return Identity{}, false, err
	}
	return id, false, nil
}

// refusalHolds is how long a refusal that no later instant can undo (a
// bad signature or encoding, a wrong issuer or audience, an expired
// token) is remembered for the same token under the same key set. A
// client replaying such a token then costs a hash, not a signature check;
// a key set change forgets every refusal at once.
const refusalHolds = 10 * time.Minute

type jwsHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

// verify checks token against the current key set. It also returns the
// cache generation it read before reading the key set: any key set change
// after that bumps the generation, and the cache then refuses the result.
// For a refusal, the time returned is how long it holds for this token and
// key set, zero when a later instant or a key set refresh may undo it (an
// unknown kid, a token not yet valid).
func (v *JWTVerifier) verify(ctx context.Context, token string, now time.Time) (Identity, time.Time, uint64, error) {
	var zero time.Time
	// The generation is read before the key set: a key set is stored
	// before its change bumps the generation, so a result verified with a
	// key since removed always carries an older generation than the cache.
	gen := v.cacheGeneration()
	holds := now.Add(refusalHolds)
	h, err := decodeHeader(token)
	if err != nil {
		return Identity{}, holds, gen, err
	}
	if !slices.Contains(v.cfg.Algorithms, h.Alg) {
		// Covers "none" and every HS*: they are never in the list.
		return Identity{}, holds, gen, Errorf(CodeInvalidToken, "algorithm not allowed")
	}
	if len(h.Crit) > 0 {
		return Identity{}, holds, gen, Errorf(CodeInvalidToken, "critical header extensions are not supported")
	}
	keys := v.keys.find(h.Kid, h.Alg)
	if len(keys) == 0 && h.Kid != "" && v.keys.refreshForUnknownKid(ctx) {
		gen = v.cacheGeneration()
		keys = v.keys.find(h.Kid, h.Alg)
	}
	if len(keys) == 0 {
		return Identity{}, zero, 0, Errorf(CodeInvalidToken, "no key for the token's kid and algorithm")
	}
	var tok jwt.Token
	for _, k := range keys {
		tok, err = jwt.Parse([]byte(token), jwt.WithKey(jwa.SignatureAlgorithm(h.Alg), k.raw), jwt.WithValidate(false))
		if err == nil {
			break
		}
	}
	if err != nil {
		// jwx's message is not passed on: it may quote token contents.
		return Identity{}, holds, gen, Errorf(CodeInvalidToken, "signature or encoding")
	}
	until, final, err := v.checkClaims(tok, now)
	if err != nil {
		if final {
			return Identity{}, holds, gen, err
		}
		return Identity{}, zero, 0, err
	}
	return v.identity(tok), until, gen, nil
}

func (v *JWTVerifier) cacheGeneration() uint64 {
	if v.cache == nil {
		return 0
	}
	return v.cache.generation()
}

func decodeHeader(token string) (jwsHeader, error) {
	var h jwsHeader
	enc, _, ok := strings.Cut(token, ".")
	if !ok || strings.Count(token, ".") != 2 {
		return h, Errorf(CodeInvalidToken, "not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return h, Errorf(CodeInvalidToken, "header encoding")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&h); err != nil {
		return h, Errorf(CodeInvalidToken, "header json")
	}
	return h, nil
}

// checkClaims applies iss, aud, exp, nbf, iat with the configured skew and
// returns how long the verified result may be cached. On a refusal, final
// says no later instant can undo it (only nbf and a future iat can pass
// later).
func (v *JWTVerifier) checkClaims(tok jwt.Token, now time.Time) (_ time.Time, final bool, _ error) {
	skew := v.cfg.ClockSkew
	if tok.Issuer() != v.cfg.Issuer {
		return time.Time{}, true, Errorf(CodeInvalidToken, "issuer")
	}
	audOK := false
	for _, a := range tok.Audience() {
		if slices.Contains(v.cfg.Audiences, a) {
			audOK = true
			break
		}
	}
	if !audOK {
		return time.Time{}, true, Errorf(CodeInvalidToken, "audience")
	}
	exp := tok.Expiration()
	if exp.IsZero() {
		return time.Time{}, true, Errorf(CodeInvalidToken, "exp missing")
	}
	if !now.Before(exp.Add(skew)) {
		return time.Time{}, true, Errorf(CodeExpiredToken, "expired")
	}
	if nbf := tok.NotBefore(); !nbf.IsZero() && now.Add(skew).Before(nbf) {
		return time.Time{}, false, Errorf(CodeInvalidToken, "not yet valid")
	}
	until := exp
	iat := tok.IssuedAt()
	if !iat.IsZero() && now.Add(skew).Before(iat) {
		return time.Time{}, false, Errorf(CodeInvalidToken, "issued in the future")
	}
	if v.cfg.MaxTokenAge > 0 {
		if iat.IsZero() {
			return time.Time{}, true, Errorf(CodeInvalidToken, "iat missing")
		}
		limit := iat.Add(v.cfg.MaxTokenAge)
		if !now.Before(limit.Add(skew)) {
			return time.Time{}, true, Errorf(CodeExpiredToken, "older than max token age")
		}
		if limit.Before(until) {
			until = limit
		}
	}
	return until, false, nil
}

// defaultMFAACR are acr values that name a multi-factor level: the OpenID
// PAPE multi-factor policies, NIST 800-63 AAL2/AAL3 (as URIs used by
// login.gov and others, and the bare words), eIDAS substantial/high,
// and the "phr"/"phrh" phishing-resistant values of OpenID iGov.
var defaultMFAACR = []string{
	"http://schemas.openid.net/pape/policies/2007/06/multi-factor",
	"http://schemas.openid.net/pape/policies/2007/06/multi-factor-physical",
	"http://idmanagement.gov/ns/assurance/aal/2",
	"http://idmanagement.gov/ns/assurance/aal/3",
	"urn:gov:gsa:ac:classes:sp:PasswordProtectedTransport:duo",
	"aal2", "aal3", "AAL2", "AAL3",
	"http://eidas.europa.eu/LoA/substantial", "http://eidas.europa.eu/LoA/high",
	"phr", "phrh", "mfa",
}

// mfaAMR are RFC 8176 amr values that mean more than a password was used:
// "mfa"/"mca" say so directly; the others are possession factors an
// identity provider only reports as a second factor in practice (one-time
// code, hardware or software key, SMS, telephone, smart card, proof of
// possession).
var mfaAMR = map[string]bool{"mfa": true, "mca": true, "otp": true, "hwk": true, "swk": true,
	"sms": true, "tel": true, "sc": true, "pop": true}

func (v *JWTVerifier) identity(tok jwt.Token) Identity {
	c := v.cfg.Claims
	id := Identity{
		Authenticated: true,
		Subject:       tok.Subject(),
		Issuer:        tok.Issuer(),
		IssuedAt:      unixOrZero(tok.IssuedAt()),
		Expires:       tok.Expiration().Unix(),
	}
	get := func(name string) any {
		x, _ := tok.Get(name)
		return x
	}
	id.FHIRUser = claimString(get(c.FHIRUser))
	id.Patient = claimString(get(c.Patient))
	id.Purpose = claimString(get(c.Purpose))
	id.ClientID = claimString(get(c.ClientID))
	if id.ClientID == "" {
		id.ClientID = claimString(get("azp"))
	}
	id.ACR = claimString(get(c.ACR))
	id.Roles = claimList(get(c.Roles))
	id.AMR = claimList(get(c.AMR))
	id.Scopes = ParseScopes(claimList(get(c.Scope)))
	for _, m := range id.AMR {
		if mfaAMR[m] {
			id.MFA = true
		}
	}
	if v.mfaACR[id.ACR] {
		id.MFA = true
	}
	if id.Roles == nil {
		id.Roles = []string{}
	}
	return id
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// claimString reads a string claim; a one-element array is accepted, any
// other shape reads as absent.
func claimString(x any) string {
	switch t := x.(type) {
	case string:
		return t
	case []any:
		if len(t) == 1 {
			s, _ := t[0].(string)
			return s
		}
	case []string:
		if len(t) == 1 {
			return t[0]
		}
	}
	return ""
}

// claimList reads an array of strings or a space-separated string.
func claimList(x any) []string {
	switch t := x.(type) {
	case string:
		return strings.Fields(t)
	case []string:
		return slices.Clone(t)
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// tokenCache holds verified identities keyed by the token's SHA-256. It is
// bounded: when full, an expired entry is dropped if one is found among a
// few probed, otherwise an arbitrary one (Go's map iteration order is
// randomized, which makes eviction cheap and unpredictable to an attacker).
//
// gen counts key set changes. An insert names the generation its
// verification started in and is dropped when that is no longer current,
// so a verification that overlapped a change cannot refill the cache with
// a key the change removed.
//
// Refusals that hold for the key set are kept apart, in refused, bounded
// to a tenth of the size: tokens an attacker makes up at will must not
// evict the identities of the clients that present good ones.
type tokenCache struct {
	mu         sync.RWMutex
	max        int
	maxRefused int
	gen        uint64
	m          map[[32]byte]cacheEntry
	refused    map[[32]byte]cacheEntry
}

type cacheEntry struct {
	id    Identity
	err   error // refused: the refusal
	until time.Time
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{max: size, maxRefused: max(size/10, 1),
		m: make(map[[32]byte]cacheEntry, min(size, 1024)), refused: map[[32]byte]cacheEntry{}}
}

// get returns the identity verified for k, or the refusal remembered for
// it; ok is false when neither holds at now.
func (c *tokenCache) get(k [32]byte, now time.Time) (_ Identity, _ error, ok bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	if !ok {
		e, ok = c.refused[k]
	}
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return Identity{}, nil, false
	}
	return e.id, e.err, true
}

func (c *tokenCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// put inserts the result of a verification that started in generation gen
// (an identity, or a refusal when err is set), unless the key set has
// changed since.
func (c *tokenCache) put(k [32]byte, id Identity, err error, until time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	m, limit := c.m, c.max
	if err != nil {
		m, limit = c.refused, c.maxRefused
	}
	if _, ok := m[k]; !ok && len(m) >= limit {
		now := time.Now()
		var victim [32]byte
		probes := 0
		for key, e := range m {
			victim = key
			if !now.Before(e.until) || probes >= 8 {
				break
			}
			probes++
		}
		delete(m, victim)
	}
	m[k] = cacheEntry{id: id, err: err, until: until}
}

// invalidate starts a new generation and drops every entry, in one step
// under the lock, so no insert of the old generation can follow it.
func (c *tokenCache) invalidate() {
	c.mu.Lock()
	c.gen++
	clear(c.m)
	clear(c.refused)
	c.mu.Unlock()
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// atomicTime is a time readable without a lock.
type atomicTime struct{ ns atomic.Int64 }

func (a *atomicTime) Load() time.Time   { return time.Unix(0, a.ns.Load()) }
func (a *atomicTime) Store(t time.Time) { a.ns.Store(t.UnixNano()) }
