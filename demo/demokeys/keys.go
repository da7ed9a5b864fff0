// Package demokeys is the demo's token issuer: one ES256 signing key kept in
// a directory, the matching public JWKS beside it, and functions that mint
// JWTs carrying the claims phigate reads by default. It also mints
// deliberately broken tokens so tests can prove each one is refused.
//
// The key stays on disk so a demo restarted later keeps accepting tokens it
// already handed out, and so phigate (configured with the jwks.json file or
// the JWKSHandler URL) and the token minter agree without coordination.
// It is a demo issuer: there is no rotation, and the private key is only as
// safe as the directory it lives in.
package demokeys

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// File names inside the key directory.
const (
	PrivateKeyFile = "signing-key.pem"
	JWKSFile       = "jwks.json"
)

// Demo defaults, which are also phigate's demo configuration.
const (
	DefaultIssuer   = "https://issuer.demo.phigate.local"
	DefaultAudience = "phigate-demo"
	DefaultTTL      = time.Hour
)

// Keys is the demo issuer's key pair.
type Keys struct {
	dir     string
	private jwk.Key
	public  jwk.Set
	jwks    []byte
}

// LoadOrCreate reads the signing key from dir, creating dir and a new P-256
// key (mode 0600) when none exists, and (re)writes dir/jwks.json so it always
// matches the key. Two processes racing on an empty dir end up with the same
// key: the key file is published with a hard link, which fails if the other
// process won.
func LoadOrCreate(dir string) (*Keys, error) {
	if dir == "" {
		return nil, errors.New("demokeys: key directory is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("demokeys: create key directory: %w", err)
	}
	keyPath := filepath.Join(dir, PrivateKeyFile)
	raw, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		raw, err = create(keyPath)
	}
	if err != nil {
		return nil, err
	}
	priv, err := parsePrivate(raw)
	if err != nil {
		return nil, fmt.Errorf("demokeys: %s: %w", keyPath, err)
	}
	k, err := fromPrivate(priv)
	if err != nil {
		return nil, err
	}
	k.dir = dir
	jwksPath := filepath.Join(dir, JWKSFile)
	if cur, err := os.ReadFile(jwksPath); err != nil || string(cur) != string(k.jwks) {
		if err := writeAtomic(jwksPath, k.jwks, 0o644); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func create(keyPath string) ([]byte, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("demokeys: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("demokeys: encode key: %w", err)
	}
	raw := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tmp, err := os.CreateTemp(filepath.Dir(keyPath), ".key-*")
	if err != nil {
		return nil, fmt.Errorf("demokeys: write key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("demokeys: write key: %w", err)
	}
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("demokeys: write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("demokeys: write key: %w", err)
	}
	if err := os.Link(tmp.Name(), keyPath); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process created the key first; use theirs.
			return os.ReadFile(keyPath)
		}
		return nil, fmt.Errorf("demokeys: publish key: %w", err)
	}
	return raw, nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("demokeys: write %s: %w", filepath.Base(path), err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("demokeys: write %s: %w", filepath.Base(path), err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("demokeys: write %s: %w", filepath.Base(path), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("demokeys: write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("demokeys: write %s: %w", filepath.Base(path), err)
	}
	return nil
}

func parsePrivate(raw []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PRIVATE KEY")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("not a P-256 ECDSA key")
	}
	return ec, nil
}

// fromPrivate builds the JWK pair; the kid is the RFC 7638 thumbprint, so it
// is stable across restarts without being stored.
func fromPrivate(priv *ecdsa.PrivateKey) (*Keys, error) {
	pk, err := jwk.FromRaw(priv)
	if err != nil {
		return nil, fmt.Errorf("demokeys: %w", err)
	}
	if err := jwk.AssignKeyID(pk); err != nil {
		return nil, fmt.Errorf("demokeys: %w", err)
	}
	if err := pk.Set(jwk.AlgorithmKey, jwa.ES256); err != nil {
		return nil, fmt.Errorf("demokeys: %w", err)
	}
	pub, err := pk.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("demokeys: %w", err)
	}
	if err := pub.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
		return nil, fmt.Errorf("demokeys: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, fmt.Errorf("demokeys: %w", err)
	}
	b, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("demokeys: %w", err)
	}
	return &Keys{private: pk, public: set, jwks: append(b, '\n')}, nil
}

// KeyID is the kid of the signing key (its RFC 7638 thumbprint).
func (k *Keys) KeyID() string { return k.private.KeyID() }

// Dir is the directory the key lives in.
func (k *Keys) Dir() string { return k.dir }

// JWKSPath is the path of the public jwks.json.
func (k *Keys) JWKSPath() string { return filepath.Join(k.dir, JWKSFile) }

// PublicSet is the public JWKS, for verifiers in the same process.
func (k *Keys) PublicSet() jwk.Set { return k.public }

// JWKS is the public JWKS document as written to jwks.json.
func (k *Keys) JWKS() []byte { return append([]byte(nil), k.jwks...) }

// JWKSHandler serves the public JWKS (any path), for verifiers that fetch
// keys over HTTP.
func (k *Keys) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(k.jwks)
	})
}

// TokenSpec describes a token to mint. Zero fields take the demo defaults
// (Issuer, Audience, TTL) or are left out of the token.
type TokenSpec struct {
	Subject  string
	Roles    []string // claim "roles"
	Scopes   []string // claim "scope", space-separated
	Purpose  string   // claim "purpose_of_use", e.g. TREAT, ETREAT, HPAYMT
	FHIRUser string   // claim "fhirUser", e.g. "Practitioner/prac-001"
	Patient  string   // claim "patient" (SMART launch context)
	ClientID string   // claim "client_id"
	AMR      []string // claim "amr", e.g. ["pwd", "otp"]
	TTL      time.Duration
	Issuer   string
	Audience string
	// IssuedAt defaults to now; set it for reproducible tokens.
	IssuedAt time.Time
	// ID is the jti; a random one is used when empty.
	ID string
	// Extra claims are added last and may override anything above, which
	// is how a test builds a token with an odd claim type.
	Extra map[string]any
}

// Claim names, phigate's defaults.
const (
	ClaimRoles    = "roles"
	ClaimScope    = "scope"
	ClaimFHIRUser = "fhirUser"
	ClaimPatient  = "patient"
	ClaimPurpose  = "purpose_of_use"
	ClaimClientID = "client_id"
	ClaimAMR      = "amr"
)

func (s TokenSpec) build() (jwt.Token, error) {
	iat := s.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	iat = iat.Truncate(time.Second)
	ttl := s.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	iss := s.Issuer
	if iss == "" {
		iss = DefaultIssuer
	}
	aud := s.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	jti := s.ID
	if jti == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("demokeys: jti: %w", err)
		}
		jti = hex.EncodeToString(b[:])
	}
	b := jwt.NewBuilder().
		Issuer(iss).
		Audience([]string{aud}).
		IssuedAt(iat).
		NotBefore(iat).
		Expiration(iat.Add(ttl)).
		JwtID(jti)
	if s.Subject != "" {
		b = b.Subject(s.Subject)
	}
	if len(s.Roles) > 0 {
		b = b.Claim(ClaimRoles, s.Roles)
	}
	if len(s.Scopes) > 0 {
		b = b.Claim(ClaimScope, strings.Join(s.Scopes, " "))
	}
	if s.FHIRUser != "" {
		b = b.Claim(ClaimFHIRUser, s.FHIRUser)
	}
	if s.Patient != "" {
		b = b.Claim(ClaimPatient, s.Patient)
	}
	if s.Purpose != "" {
		b = b.Claim(ClaimPurpose, s.Purpose)
	}
	if s.ClientID != "" {
		b = b.Claim(ClaimClientID, s.ClientID)
	}
	if len(s.AMR) > 0 {
		b = b.Claim(ClaimAMR, s.AMR)
	}
	for name, v := range s.Extra {
		b = b.Claim(name, v)
	}
	tok, err := b.Build()
	if err != nil {
		return nil, fmt.Errorf("demokeys: build token: %w", err)
	}
	return tok, nil
}

// Mint signs a token for spec with the demo key (ES256, kid in the header).
func (k *Keys) Mint(spec TokenSpec) (string, error) {
	tok, err := spec.build()
	if err != nil {
		return "", err
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, k.private))
	if err != nil {
		return "", fmt.Errorf("demokeys: sign: %w", err)
	}
	return string(signed), nil
}
