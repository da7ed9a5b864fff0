package filters

import (
	"crypto/hmac"
	"crypto/sha256"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/phigate/phigate/plan"
)

// Config configures an Engine.
type Config struct {
	// Keys maps a tokenization key id (the Directive's KeyID) to its secret.
	// Tokens carry the key id, so keys rotate by adding a new id, moving
	// policies to it, and retiring the old id once no consumer joins on it.
	Keys map[string][]byte
	// MaxBody is the largest body Apply accepts, in bytes. Default 16 MiB.
	MaxBody int
	// MaxDepth bounds JSON nesting so a hostile body cannot exhaust the
	// stack. Default 128; FHIR resources rarely nest beyond 20.
	MaxDepth int
	// Now is the clock used by the safe-harbor profile (ages over 89).
	// Default time.Now.
	Now func() time.Time
}

const (
	defaultMaxBody  = 16 << 20
	defaultMaxDepth = 128
	minKeyLen       = 16
)

// Validate fills defaults and names the first bad field.
func (c *Config) Validate() error {
	if c.MaxBody < 0 {
		return errorf(CodeBadConfig, "MaxBody: must not be negative")
	}
	if c.MaxBody == 0 {
		c.MaxBody = defaultMaxBody
	}
	if c.MaxDepth < 0 {
		return errorf(CodeBadConfig, "MaxDepth: must not be negative")
	}
	if c.MaxDepth == 0 {
		c.MaxDepth = defaultMaxDepth
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	ids := make([]string, 0, len(c.Keys))
	for id := range c.Keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if id == "" || strings.ContainsAny(id, ": \t\r\n|^~\\&") {
			return errorf(CodeBadConfig, "Keys: key id %q must be non-empty without ':', spaces or HL7 delimiters", id)
		}
		if len(c.Keys[id]) < minKeyLen {
			return errorf(CodeBadConfig, "Keys[%s]: secret shorter than %d bytes", id, minKeyLen)
		}
	}
	return nil
}

// Engine applies redaction plans to response bodies. It is safe for
// concurrent use: all state is built in NewEngine and only read after.
type Engine struct {
	cfg    Config
	keys   map[string]*tokenKey
	keyIDs plan.Keys
}

// tokenKey holds what a key id needs, derived once: the HMAC secret and
// the FF1 ciphers (AES-256 key derived from the secret, so any secret length
// works and HMAC and FF1 never share raw key material).
type tokenKey struct {
	id     string
	secret []byte
	ff1_10 *ff1
}

// NewEngine validates cfg and prepares the key material.
func NewEngine(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, keys: make(map[string]*tokenKey, len(cfg.Keys))}
	for id, secret := range cfg.Keys {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("phigate ff1 aes-256 key"))
		f, err := newFF1(m.Sum(nil), 10)
		if err != nil {
			return nil, err
		}
		e.keys[id] = &tokenKey{id: id, secret: slices.Clone(secret), ff1_10: f}
	}
	e.keyIDs = plan.NewKeys(slices.Collect(maps.Keys(cfg.Keys))...)
	return e, nil
}

// Keys returns the ids of the engine's token keys, which plans must be
// compiled against: a plan naming any other key is refused before it
// reaches Apply.
func (e *Engine) Keys() plan.Keys { return e.keyIDs }
