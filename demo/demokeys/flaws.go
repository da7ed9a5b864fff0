package demokeys

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Flaw is one way a token can be wrong. Every flawed token must be refused
// by a verifier configured with the demo JWKS, issuer and audience.
type Flaw string

const (
	// FlawExpired: exp an hour in the past (beyond any reasonable skew).
	FlawExpired Flaw = "expired"
	// FlawNotYetValid: nbf and iat an hour in the future.
	FlawNotYetValid Flaw = "not_yet_valid"
	// FlawWrongAudience: aud is another service.
	FlawWrongAudience Flaw = "wrong_audience"
	// FlawWrongIssuer: iss is another issuer.
	FlawWrongIssuer Flaw = "wrong_issuer"
	// FlawAlgNone: an unsigned token with "alg":"none" and the demo kid.
	FlawAlgNone Flaw = "alg_none"
	// FlawForeignKey: signed by a fresh key that claims the demo kid.
	FlawForeignKey Flaw = "foreign_key"
	// FlawUnknownKID: signed by a fresh key under a kid the JWKS lacks.
	FlawUnknownKID Flaw = "unknown_kid"
	// FlawTampered: a valid token whose payload was changed after signing
	// (roles raised to admin), keeping the original signature.
	FlawTampered Flaw = "tampered"
	// FlawHS256Confusion: HS256 with the public key's JSON as the HMAC
	// secret, the classic algorithm-confusion attack.
	FlawHS256Confusion Flaw = "hs256_confusion"
)

// Flaws lists every Flaw, for table-driven tests.
func Flaws() []Flaw {
	return []Flaw{FlawExpired, FlawNotYetValid, FlawWrongAudience, FlawWrongIssuer,
		FlawAlgNone, FlawForeignKey, FlawUnknownKID, FlawTampered, FlawHS256Confusion}
}

// MintFlawed mints spec with the given flaw. Apart from the flaw the token is
// what Mint would produce, so a verifier's refusal can only be due to it.
func (k *Keys) MintFlawed(spec TokenSpec, flaw Flaw) (string, error) {
	now := spec.IssuedAt
	if now.IsZero() {
		now = time.Now()
	}
	switch flaw {
	case FlawExpired:
		spec.IssuedAt, spec.TTL = now.Add(-2*time.Hour), time.Hour
		return k.Mint(spec)
	case FlawNotYetValid:
		spec.IssuedAt = now.Add(time.Hour)
		return k.Mint(spec)
	case FlawWrongAudience:
		spec.Audience = "some-other-service"
		return k.Mint(spec)
	case FlawWrongIssuer:
		spec.Issuer = "https://issuer.attacker.example"
		return k.Mint(spec)
	case FlawAlgNone:
		tok, err := spec.build()
		if err != nil {
			return "", err
		}
		payload, err := json.Marshal(tok)
		if err != nil {
			return "", fmt.Errorf("demokeys: %w", err)
		}
		// Built by hand: jwx refuses to produce alg none without ceremony,
		// and the point is a token exactly as an attacker would send it.
		header := fmt.Sprintf(`{"alg":"none","kid":%q,"typ":"JWT"}`, k.KeyID())
		return b64(header) + "." + base64.RawURLEncoding.EncodeToString(payload) + ".", nil
	case FlawForeignKey, FlawUnknownKID:
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", fmt.Errorf("demokeys: %w", err)
		}
		ok, err := jwk.FromRaw(other)
		if err != nil {
			return "", fmt.Errorf("demokeys: %w", err)
		}
		kid := k.KeyID()
		if flaw == FlawUnknownKID {
			kid = "unknown-" + kid[:8]
		}
		if err := ok.Set(jwk.KeyIDKey, kid); err != nil {
			return "", fmt.Errorf("demokeys: %w", err)
		}
		tok, err := spec.build()
		if err != nil {
			return "", err
		}
		signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, ok))
		if err != nil {
			return "", fmt.Errorf("demokeys: sign: %w", err)
		}
		return string(signed), nil
	case FlawTampered:
		good, err := k.Mint(spec)
		if err != nil {
			return "", err
		}
		parts := strings.Split(good, ".")
		raw, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			return "", fmt.Errorf("demokeys: %w", err)
		}
		var claims map[string]any
		if err := json.Unmarshal(raw, &claims); err != nil {
			return "", fmt.Errorf("demokeys: %w", err)
		}
		claims[ClaimRoles] = []string{"admin"}
		raw, err = json.Marshal(claims)
		if err != nil {
			return "", fmt.Errorf("demokeys: %w", err)
		}
		parts[1] = base64.RawURLEncoding.EncodeToString(raw)
		return strings.Join(parts, "."), nil
	case FlawHS256Confusion:
		tok, err := spec.build()
		if err != nil {
			return "", err
		}
		pub, _ := k.public.Key(0)
		secret, err := json.Marshal(pub)
		if err != nil {
			return "", fmt.Errorf("demokeys: %w", err)
		}
		hdr := jws.NewHeaders()
		if err := hdr.Set(jws.KeyIDKey, k.KeyID()); err != nil {
			return "", fmt.Errorf("demokeys: %w", err)
		}
		signed, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256, secret, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			return "", fmt.Errorf("demokeys: sign: %w", err)
		}
		return string(signed), nil
	default:
		return "", fmt.Errorf("demokeys: unknown flaw %q", flaw)
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
