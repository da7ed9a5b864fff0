package authz

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"go.uber.org/zap"
)

const (
	testIssuer   = "https://issuer.test.phigate.local"
	testAudience = "phigate-test"
)

// testKey is a signing key with its public JWK.
type testKey struct {
	alg  jwa.SignatureAlgorithm
	priv jwk.Key
	pub  jwk.Key
}

func newTestKey(t testing.TB, kid string, alg jwa.SignatureAlgorithm) testKey {
	t.Helper()
	var raw any
	var err error
	switch alg {
	case jwa.RS256, jwa.PS256:
		raw, err = rsa.GenerateKey(rand.Reader, 2048)
	case jwa.ES256:
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.EdDSA:
		_, raw, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("no key type for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	priv, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	_ = priv.Set(jwk.KeyIDKey, kid)
	_ = priv.Set(jwk.AlgorithmKey, alg)
	pub, err := priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return testKey{alg: alg, priv: priv, pub: pub}
}

func writeJWKS(t testing.TB, path string, keys ...testKey) {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		_ = set.AddKey(k.pub)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// claims are the defaults of a valid token; tests override fields.
func baseClaims(now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": []string{testAudience}, "sub": "user-1",
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		"roles": []string{"clinician"}, "scope": "openid patient/Observation.read user/Patient.rs",
		"fhirUser": "Practitioner/p1", "patient": "123", "purpose_of_use": "TREAT",
		"client_id": "ehr-app", "amr": []string{"pwd", "otp"},
	}
}

func mint(t testing.TB, k testKey, claims map[string]any) string {
	t.Helper()
	tok := jwt.New()
	for n, v := range claims {
		if err := tok.Set(n, v); err != nil {
			t.Fatal(err)
		}
	}
	b, err := jwt.Sign(tok, jwt.WithKey(k.alg, k.priv))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func newVerifier(t testing.TB, jwksPath string, mod func(*JWTConfig)) *JWTVerifier {
	t.Helper()
	cfg := JWTConfig{Issuer: testIssuer, Audiences: []string{"other", testAudience}, JWKSFile: jwksPath,
		MinRefreshInterval: time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	v, err := NewJWTVerifier(t.Context(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

func TestJWTVerify(t *testing.T) {
	dir := t.TempDir()
	jwks := filepath.Join(dir, "jwks.json")
	rsaKey := newTestKey(t, "k-rsa", jwa.RS256)
	ecKey := newTestKey(t, "k-ec", jwa.ES256)
	edKey := newTestKey(t, "k-ed", jwa.EdDSA)
	stranger := newTestKey(t, "k-rsa", jwa.RS256) // same kid, different key
	writeJWKS(t, jwks, rsaKey, ecKey, edKey)
	v := newVerifier(t, jwks, nil)
	now := time.Now()

	with := func(k string, val any) map[string]any {
		c := baseClaims(now)
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	// An HS256 token whose secret is the RSA public key bytes: the classic
	// algorithm-confusion forgery.
	var rsaRaw rsa.PublicKey
	if err := rsaKey.pub.Raw(&rsaRaw); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&rsaRaw)
	hsTok := func() string {
		tok := jwt.New()
		for n, val := range baseClaims(now) {
			_ = tok.Set(n, val)
		}
		hdr := jws.NewHeaders()
		_ = hdr.Set(jws.KeyIDKey, "k-rsa")
		b, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256, der, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}()
	noneTok := func() string {
		// {"alg":"none","kid":"k-rsa"} with the claims of a valid token.
		tok := mint(t, rsaKey, baseClaims(now))
		parts := strings.Split(tok, ".")
		return "eyJhbGciOiJub25lIiwia2lkIjoiay1yc2EifQ." + parts[1] + "."
	}()

	tests := []struct {
		name  string
		token string
		want  Code
	}{
		{"valid RS256", mint(t, rsaKey, baseClaims(now)), ""},
		{"valid ES256", mint(t, ecKey, baseClaims(now)), ""},
		{"valid EdDSA", mint(t, edKey, baseClaims(now)), ""},
		{"empty", "", CodeMissingToken},
		{"garbage", "not.a.jwt", CodeInvalidToken},
		{"expired", mint(t, rsaKey, with("exp", now.Add(-time.Minute).Unix())), CodeExpiredToken},
		{"expired within skew", mint(t, rsaKey, with("exp", now.Add(-10*time.Second).Unix())), ""},
		{"no exp", mint(t, rsaKey, with("exp", nil)), CodeInvalidToken},
		{"nbf in the future", mint(t, rsaKey, with("nbf", now.Add(5*time.Minute).Unix())), CodeInvalidToken},
		{"iat in the future", mint(t, rsaKey, with("iat", now.Add(5*time.Minute).Unix())), CodeInvalidToken},
		{"wrong issuer", mint(t, rsaKey, with("iss", "https://evil.example")), CodeInvalidToken},
		{"wrong audience", mint(t, rsaKey, with("aud", []string{"someone-else"})), CodeInvalidToken},
		{"alg none", noneTok, CodeInvalidToken},
		{"HS256 with the public key as secret", hsTok, CodeInvalidToken},
		{"signed by a stranger with a known kid", mint(t, stranger, baseClaims(now)), CodeInvalidToken},
		{"unknown kid", mint(t, newTestKey(t, "k-unknown", jwa.RS256), baseClaims(now)), CodeInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(t.Context(), tc.token)
			if got := CodeOf(err); got != tc.want {
				t.Fatalf("code = %q, want %q (err %v)", got, tc.want, err)
			}
			if tc.want != "" {
				if id.Authenticated {
					t.Fatal("failed verification returned an authenticated identity")
				}
				if !errors.Is(err, &Error{Code: tc.want}) {
					t.Fatalf("errors.Is(%v, %s) = false", err, tc.want)
				}
				if len(tc.token) > 20 && strings.Contains(err.Error(), tc.token[len(tc.token)-20:]) {
					t.Fatal("error echoes the token")
				}
				return
			}
			if !id.Authenticated || id.Subject != "user-1" || id.Issuer != testIssuer {
				t.Fatalf("identity = %+v", id)
			}
		})
	}
}

func TestJWTClaimsMapping(t *testing.T) {
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	k := newTestKey(t, "k1", jwa.RS256)
	writeJWKS(t, jwks, k)
	v := newVerifier(t, jwks, nil)
	now := time.Now()
	tests := []struct {
		name   string
		mod    map[string]any
		check  func(Identity) bool
		expect string
	}{
		{"roles array", map[string]any{"roles": []string{"a", "b"}},
			func(id Identity) bool { return slices.Equal(id.Roles, []string{"a", "b"}) }, "roles a,b"},
		{"roles space string", map[string]any{"roles": "a b"},
			func(id Identity) bool { return slices.Equal(id.Roles, []string{"a", "b"}) }, "roles a,b"},
		{"scopes v1 and v2, non-resource dropped", nil, func(id Identity) bool {
			return len(id.Scopes) == 2 && id.Scopes[0].Permissions == "rs" && id.Scopes[1].Resource == "Patient"
		}, "two resource scopes"},
		{"client id falls back to azp", map[string]any{"client_id": nil, "azp": "azp-app"},
			func(id Identity) bool { return id.ClientID == "azp-app" }, "client azp-app"},
		{"amr otp is MFA", nil, func(id Identity) bool { return id.MFA }, "MFA"},
		{"amr pwd only is not MFA", map[string]any{"amr": []string{"pwd"}},
			func(id Identity) bool { return !id.MFA }, "no MFA"},
		{"acr aal2 is MFA", map[string]any{"amr": nil, "acr": "http://idmanagement.gov/ns/assurance/aal/2"},
			func(id Identity) bool { return id.MFA && id.ACR != "" }, "MFA from acr"},
		{"launch patient, fhirUser, purpose", nil, func(id Identity) bool {
			return id.Patient == "123" && id.FHIRUser == "Practitioner/p1" && id.Purpose == "TREAT"
		}, "launch context"},
		{"iat and exp", nil, func(id Identity) bool { return id.IssuedAt == now.Unix() && id.Expires > now.Unix() }, "times"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := baseClaims(now)
			for n, val := range tc.mod {
				if val == nil {
					delete(c, n)
				} else {
					c[n] = val
				}
			}
			id, err := v.Verify(t.Context(), mint(t, k, c))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(id) {
				t.Fatalf("want %s, identity = %+v", tc.expect, id)
			}
		})
	}
}

func TestJWTCacheAndRotation(t *testing.T) {
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	k1 := newTestKey(t, "k1", jwa.RS256)
	k2 := newTestKey(t, "k2", jwa.ES256)
	writeJWKS(t, jwks, k1)
	v := newVerifier(t, jwks, nil)
	now := time.Now()

	tok1 := mint(t, k1, baseClaims(now))
	if _, err := v.Verify(t.Context(), tok1); err != nil {
		t.Fatal(err)
	}
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache entries = %d, want 1", n)
	}
	// A cache hit must still respect exp: move the clock past it.
	v.now = func() time.Time { return now.Add(11 * time.Minute) }
	if _, err := v.Verify(t.Context(), tok1); CodeOf(err) != CodeExpiredToken {
		t.Fatalf("cached token after exp: err = %v, want expired", err)
	}
	v.now = time.Now

	// Rotation: k2 appears in the file; a token naming it triggers a reload.
	tok2 := mint(t, k2, baseClaims(now))
	if _, err := v.Verify(t.Context(), tok2); err == nil {
		t.Fatal("token of a key not yet published verified")
	}
	time.Sleep(2 * time.Millisecond)
	writeJWKS(t, jwks, k2)
	time.Sleep(2 * time.Millisecond)
	if _, err := v.Verify(t.Context(), tok2); err != nil {
		t.Fatalf("rotated key not picked up: %v", err)
	}
	// k1 was removed: its cached token must stop verifying.
	if _, err := v.Verify(t.Context(), tok1); err == nil {
		t.Fatal("token of a removed key still verifies (stale cache)")
	}
}

func TestJWKSURLRefresh(t *testing.T) {
	k1 := newTestKey(t, "k1", jwa.RS256)
	k2 := newTestKey(t, "k2", jwa.RS256)
	var current atomic.Pointer[[]byte]
	setKeys := func(keys ...testKey) {
		set := jwk.NewSet()
		for _, k := range keys {
			_ = set.AddKey(k.pub)
		}
		b, _ := json.Marshal(set)
		current.Store(&b)
	}
	setKeys(k1)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write(*current.Load())
	}))
	t.Cleanup(srv.Close)
	v := newVerifier(t, "", func(c *JWTConfig) {
		c.JWKSURL = srv.URL + "/jwks"
		c.RefreshInterval = 20 * time.Millisecond
		c.MinRefreshInterval = time.Hour // only the background refresh may pick up k2
	})
	tok2 := mint(t, k2, baseClaims(time.Now()))
	if _, err := v.Verify(t.Context(), tok2); err == nil {
		t.Fatal("unpublished key verified")
	}
	setKeys(k2)
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := v.Verify(t.Context(), tok2); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background refresh did not pick up the new key (fetches: %d)", hits.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJWTConfigValidate(t *testing.T) {
	ok := func() JWTConfig {
		return JWTConfig{Issuer: testIssuer, Audiences: []string{testAudience}, JWKSFile: "/x"}
	}
	tests := []struct {
		name  string
		mod   func(*JWTConfig)
		field string
	}{
		{"valid", func(*JWTConfig) {}, ""},
		{"no issuer", func(c *JWTConfig) { c.Issuer = "" }, "jwt.issuer"},
		{"no audience", func(c *JWTConfig) { c.Audiences = nil }, "jwt.audiences"},
		{"no key source", func(c *JWTConfig) { c.JWKSFile = "" }, "jwt.jwks_file"},
		{"both key sources", func(c *JWTConfig) { c.JWKSURL = "https://x/jwks" }, "jwt.jwks_url"},
		{"plain http url", func(c *JWTConfig) { c.JWKSFile, c.JWKSURL = "", "http://idp.example/jwks" }, "jwt.jwks_url"},
		{"HS256", func(c *JWTConfig) { c.Algorithms = []string{"RS256", "HS256"} }, "jwt.algorithms[1]"},
		{"none", func(c *JWTConfig) { c.Algorithms = []string{"none"} }, "jwt.algorithms[0]"},
		{"skew too large", func(c *JWTConfig) { c.ClockSkew = time.Hour }, "jwt.clock_skew"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.mod(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil || c.ClockSkew != DefaultClockSkew || c.Claims.Roles != "roles" {
					t.Fatalf("err = %v, defaults %+v", err, c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want it to name %s", err, tc.field)
			}
		})
	}
}

func TestParseScope(t *testing.T) {
	tests := []struct {
		raw  string
		ok   bool
		want Scope
	}{
		{"patient/Observation.read", true, Scope{"patient/Observation.read", "patient", "Observation", "rs"}},
		{"user/*.write", true, Scope{"user/*.write", "user", "*", "cud"}},
		{"system/*.*", true, Scope{"system/*.*", "system", "*", "cruds"}},
		{"patient/Observation.rs", true, Scope{"patient/Observation.rs", "patient", "Observation", "rs"}},
		{"user/Patient.cruds", true, Scope{"user/Patient.cruds", "user", "Patient", "cruds"}},
		{"patient/Observation.rs?category=laboratory", true,
			Scope{"patient/Observation.rs?category=laboratory", "patient", "Observation", "rs"}},
		{"patient/Observation.sr", false, Scope{}},
		{"patient/Observation.rr", false, Scope{}},
		{"patient/observation.read", false, Scope{}},
		{"admin/Observation.read", false, Scope{}},
		{"openid", false, Scope{}},
		{"launch/patient", false, Scope{}},
		{"patient/Observation.", false, Scope{}},
	}
	for _, tc := range tests {
		t.Run(tc.raw, func(t *testing.T) {
			got, ok := ParseScope(tc.raw)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("ParseScope(%q) = %+v, %v; want %+v, %v", tc.raw, got, ok, tc.want, tc.ok)
			}
		})
	}
}
