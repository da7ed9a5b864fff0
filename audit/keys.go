package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
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
		if err := writePublicKey(PublicKeyPath(path), priv.Public().(ed25519.PublicKey)); err != nil {
			return nil, err
		}
	}
	return priv, nil
}

func createSigningKey(path string) (ed25519.PrivateKey, error) {
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
	if err := writePublicKey(PublicKeyPath(path), pub); err != nil {
		return nil, err
	}
	return priv, nil
}

func writePublicKey(path string, pub ed25519.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return errf(CodeIO, nil, err, "encode public key")
	}
	return writeExclusive(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
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
