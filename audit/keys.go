package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// KeyID names a public key in checkpoints: the first 8 bytes of its SHA-256,
// hex encoded.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// PublicKeyPath is where the public half of a signing key is written.
func PublicKeyPath(signingKeyFile string) string { return signingKeyFile + ".pub" }

// LoadOrCreateSigningKey reads a PEM PKCS#8 Ed25519 private key, or creates
// one (mode 0600) with its public key beside it when the file does not
// exist. A key file readable by group or others is refused: whoever can read
// it can forge checkpoints.
func LoadOrCreateSigningKey(path string) (ed25519.PrivateKey, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return createSigningKey(path)
	case err != nil:
		return nil, errf(CodeIO, nil, err, "signing key")
	case st.Mode().Perm()&0o077 != 0:
		return nil, errf(CodeConfig, nil, nil, "SigningKeyFile %s is accessible by group or others (mode %o); want 0600", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errf(CodeIO, nil, err, "signing key")
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errf(CodeConfig, nil, nil, "SigningKeyFile %s is not a PEM PRIVATE KEY", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, errf(CodeConfig, nil, err, "SigningKeyFile %s", path)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errf(CodeConfig, nil, nil, "SigningKeyFile %s is not an Ed25519 key", path)
	}
	if _, err := os.Stat(PublicKeyPath(path)); errors.Is(err, fs.ErrNotExist) {
		if err := writePublicKeyFile(PublicKeyPath(path), priv.Public().(ed25519.PublicKey)); err != nil {
			return nil, err
		}
	}
	return priv, nil
}

// LoadSigningKey reads an existing signing key and never creates one.
func LoadSigningKey(path string) (ed25519.PrivateKey, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, errf(CodeIO, nil, err, "signing key")
	}
	return LoadOrCreateSigningKey(path)
}

// CreateSigningKey makes a new key at path (which must not exist) with its
// public key at PublicKeyPath(path), for "phigate audit keygen".
func CreateSigningKey(path string) (ed25519.PrivateKey, error) {
	if _, err := os.Stat(path); err == nil {
		return nil, errf(CodeConfig, nil, nil, "%s exists; a signing key is never overwritten", path)
	}
	return createSigningKey(path)
}

func createSigningKey(path string) (ed25519.PrivateKey, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, errf(CodeIO, nil, err, "signing key directory")
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, errf(CodeIO, nil, err, "generate signing key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, errf(CodeIO, nil, err, "encode signing key")
	}
	if err := writeExclusive(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	// The public half is derived, so a stale one left behind is replaced.
	if err := writePublicKeyFile(PublicKeyPath(path), pub); err != nil {
		return nil, err
	}
	return priv, nil
}

// PublicKeyPEM is pub as a PEM PKIX "PUBLIC KEY" block.
func PublicKeyPEM(pub ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub) // cannot fail for an Ed25519 key
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// WritePublicKeyPEM writes pub to path as PEM, replacing it atomically.
func WritePublicKeyPEM(path string, pub ed25519.PublicKey) error {
	return writePublicKeyFile(path, pub)
}

func writePublicKeyFile(path string, pub ed25519.PublicKey) error {
	if err := writeAtomic(path, PublicKeyPEM(pub), 0o644); err != nil {
		return errf(CodeIO, nil, err, "write public key %s", path)
	}
	return nil
}

// JWK is an Ed25519 public key as an RFC 8037 OKP JSON Web Key; Kid is the
// KeyID checkpoints name.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
}

// PublicJWK returns pub as a JWK whose kid is its KeyID.
func PublicJWK(pub ed25519.PublicKey) JWK {
	return JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(pub), Kid: KeyID(pub), Use: "sig"}
}

// KeySet holds the public keys a verifier trusts, by KeyID.
type KeySet map[string]ed25519.PublicKey

// NewKeySet trusts exactly the keys given.
func NewKeySet(pubs ...ed25519.PublicKey) KeySet {
	ks := KeySet{}
	for _, p := range pubs {
		ks[KeyID(p)] = p
	}
	return ks
}

// IDs lists the key ids in ks, sorted.
func (ks KeySet) IDs() []string {
	ids := make([]string, 0, len(ks))
	for id := range ks {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// LoadTrustedKeys reads the keys a verifier pins: a PEM file with one or
// more PUBLIC KEY blocks, a JWK, or a JWK Set {"keys":[...]}. A JWK's kid,
// when present, must be the key's KeyID, so a key set cannot relabel a key.
func LoadTrustedKeys(path string) (KeySet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errf(CodeIO, nil, err, "trusted keys")
	}
	ks := KeySet{}
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		var set struct {
			Keys []JWK `json:"keys"`
			JWK
		}
		if err := json.Unmarshal(t, &set); err != nil {
			return nil, errf(CodeConfig, nil, nil, "trusted keys %s is not a JWK or JWK Set", path)
		}
		jwks := set.Keys
		if set.Kty != "" {
			jwks = append(jwks, set.JWK)
		}
		for i, k := range jwks {
			if k.Kty != "OKP" || k.Crv != "Ed25519" {
				return nil, errf(CodeConfig, nil, nil, "trusted keys %s: key %d is not an Ed25519 OKP key", path, i)
			}
			x, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.X, "="))
			if err != nil || len(x) != ed25519.PublicKeySize {
				return nil, errf(CodeConfig, nil, nil, "trusted keys %s: key %d has a bad x", path, i)
			}
			pub := ed25519.PublicKey(x)
			if k.Kid != "" && k.Kid != KeyID(pub) {
				return nil, errf(CodeConfig, nil, nil, "trusted keys %s: key %d has kid %q but its key id is %s", path, i, k.Kid, KeyID(pub))
			}
			ks[KeyID(pub)] = pub
		}
	} else {
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if blk.Type != "PUBLIC KEY" {
				continue
			}
			k, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				return nil, errf(CodeConfig, nil, err, "trusted keys %s", path)
			}
			pub, ok := k.(ed25519.PublicKey)
			if !ok {
				return nil, errf(CodeConfig, nil, nil, "trusted keys %s holds a key that is not Ed25519", path)
			}
			ks[KeyID(pub)] = pub
		}
	}
	if len(ks) == 0 {
		return nil, errf(CodeConfig, nil, nil, "trusted keys %s holds no Ed25519 public key", path)
	}
	return ks, nil
}

func writeExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return errf(CodeIO, nil, err, "create %s", path)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return errf(CodeIO, nil, err, "write %s", path)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return errf(CodeIO, nil, err, "sync %s", path)
	}
	return f.Close()
}

// LoadPublicKey reads a PEM PKIX Ed25519 public key (the .pub file written
// beside the signing key).
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errf(CodeIO, nil, err, "public key")
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errf(CodeConfig, nil, nil, "%s is not a PEM PUBLIC KEY", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, errf(CodeConfig, nil, err, "public key %s", path)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, errf(CodeConfig, nil, nil, "%s is not an Ed25519 public key", path)
	}
	return pub, nil
}

// LoadEncryptionKey returns the 32-byte AES-256 key from a file (raw 32
// bytes, or 64 hex digits, or base64) or from the named environment
// variable (hex or base64). Exactly one source may be given; none returns a
// nil key (no encryption). Errors never contain key material.
func LoadEncryptionKey(file, envVar string) ([]byte, error) {
	switch {
	case file != "" && envVar != "":
		return nil, errf(CodeConfig, nil, nil, "EncryptionKeyFile and EncryptionKeyEnv are mutually exclusive")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, errf(CodeIO, nil, err, "EncryptionKeyFile")
		}
		if len(b) == 32 {
			return b, nil
		}
		return parseKeyText(string(b), "EncryptionKeyFile")
	case envVar != "":
		v, ok := os.LookupEnv(envVar)
		if !ok || v == "" {
			return nil, errf(CodeConfig, nil, nil, "EncryptionKeyEnv: variable %s is not set", envVar)
		}
		return parseKeyText(v, "EncryptionKeyEnv")
	}
	return nil, nil
}

func parseKeyText(s, field string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	return nil, errf(CodeConfig, nil, nil, "%s: want 32 bytes raw, hex or base64", field)
}
