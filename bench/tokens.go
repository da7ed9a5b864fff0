package bench

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Signer mints the bench's bearer tokens with an ES256 key whose public
// half the target is configured to trust, and forges tokens with a second
// key that claims the same key id, so a verifier must check the signature,
// not just the kid.
type Signer struct {
	key      jwk.Key
	forger   jwk.Key
	issuer   string
	audience string
}

// Claims is what a bench token says about its holder.
type Claims struct {
	Subject  string
	Roles    []string
	Scope    string // space separated
	FHIRUser string // e.g. "Practitioner/prac-001"
	Purpose  string // purpose_of_use
	AMR      []string
}

// NewSigner loads the private JWK in keyFile, or creates it (mode 0600)
// when the file does not exist; keyFile "" gives an ephemeral key.
func NewSigner(keyFile, issuer, audience string) (*Signer, error) {
	var key jwk.Key
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		switch {
		case err == nil:
			key, err = jwk.ParseKey(b)
			if err != nil {
				return nil, wrapErr(CodeKey, "parse key file", err)
			}
			if _, ok := key.(jwk.ECDSAPrivateKey); !ok {
				return nil, fieldErr(CodeKey, "KeyFile", "not an EC private JWK")
			}
		case errors.Is(err, fs.ErrNotExist):
		default:
			return nil, wrapErr(CodeKey, "read key file", err)
		}
	}
	if key == nil {
		var err error
		if key, err = newES256(); err != nil {
			return nil, err
		}
		if keyFile != "" {
			b, err := json.Marshal(key)
			if err != nil {
				return nil, wrapErr(CodeKey, "encode key", err)
			}
			if err := os.WriteFile(keyFile, b, 0o600); err != nil {
				return nil, wrapErr(CodeKey, "write key file", err)
			}
		}
	}
	forger, err := newES256()
	if err != nil {
		return nil, err
	}
	_ = forger.Set(jwk.KeyIDKey, key.KeyID())
	return &Signer{key: key, forger: forger, issuer: issuer, audience: audience}, nil
}

func newES256() (jwk.Key, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, wrapErr(CodeKey, "generate", err)
	}
	k, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, wrapErr(CodeKey, "wrap key", err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, wrapErr(CodeKey, "public key", err)
	}
	// The kid is the RFC 7638 thumbprint, so the same key always has the same id.
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, wrapErr(CodeKey, "thumbprint", err)
	}
	_ = k.Set(jwk.KeyIDKey, base64.RawURLEncoding.EncodeToString(tp))
	_ = k.Set(jwk.AlgorithmKey, jwa.ES256)
	_ = k.Set(jwk.KeyUsageKey, "sig")
	return k, nil
}

// JWKS returns the public key set the target must trust.
func (s *Signer) JWKS() ([]byte, error) {
	pub, err := s.key.PublicKey()
	if err != nil {
		return nil, wrapErr(CodeKey, "public key", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, wrapErr(CodeKey, "key set", err)
	}
	b, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return nil, wrapErr(CodeKey, "encode key set", err)
	}
	return b, nil
}

// WriteJWKS writes JWKS() to path.
func (s *Signer) WriteJWKS(path string) error {
	b, err := s.JWKS()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return wrapErr(CodeKey, "write JWKS", err)
	}
	return nil
}

// Mint signs a token valid from now for ttl. A negative ttl gives a token
// that has already expired (issued 2×|ttl| ago).
func (s *Signer) Mint(c Claims, now time.Time, ttl time.Duration) (string, error) {
	return s.sign(s.key, c, now, ttl)
}

// Forge signs a well-formed token with a key the target does not trust.
func (s *Signer) Forge(c Claims, now time.Time, ttl time.Duration) (string, error) {
	return s.sign(s.forger, c, now, ttl)
}

func (s *Signer) sign(key jwk.Key, c Claims, now time.Time, ttl time.Duration) (string, error) {
	iat := now
	if ttl < 0 {
		iat = now.Add(2 * ttl)
	}
	tok, err := jwt.NewBuilder().
		Issuer(s.issuer).Subject(c.Subject).Audience([]string{s.audience}).
		IssuedAt(iat.Truncate(time.Second)).Expiration(iat.Add(abs(ttl)).Truncate(time.Second)).
		Claim("roles", c.Roles).Claim("scope", c.Scope).Claim("fhirUser", c.FHIRUser).
		Claim("purpose_of_use", c.Purpose).Claim("amr", c.AMR).
		Build()
	if err != nil {
		return "", wrapErr(CodeKey, "build token", err)
	}
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, key))
	if err != nil {
		return "", wrapErr(CodeKey, "sign token", err)
	}
	return string(b), nil
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
