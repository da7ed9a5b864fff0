package audit

import (
	"path/filepath"
	"time"
)

// Config configures a Log. Validate fills defaults; Open calls it.
type Config struct {
	// Dir holds the segments, checkpoints and (by default) the signing key.
	Dir string `yaml:"dir"`
	// SegmentMaxBytes rotates a segment once it reaches this size.
	SegmentMaxBytes int64 `yaml:"segment_max_bytes"`
	// SegmentMaxAge rotates a segment this long after it was opened, at the
	// next record or the next one-second tick, whichever comes first.
	SegmentMaxAge time.Duration `yaml:"segment_max_age"`
	// CheckpointEvery signs a checkpoint at least every N records.
	CheckpointEvery int `yaml:"checkpoint_every"`
	// SigningKeyFile is the Ed25519 private key (PEM PKCS#8), created with
	// mode 0600 if absent; its public key is written to SigningKeyFile+".pub".
	SigningKeyFile string `yaml:"signing_key_file"`
	// EncryptionKeyFile or EncryptionKeyEnv (a variable name) supply the
	// optional AES-256 key for sealing records at rest. Not both.
	EncryptionKeyFile string `yaml:"encryption_key_file"`
	EncryptionKeyEnv  string `yaml:"encryption_key_env"`
	// Server names this phigate instance in records (server agent, source).
	Server string `yaml:"server"`
	// Site is AuditEvent.source.site.
	Site string `yaml:"site"`
	// MaxBatch bounds how many records one write+fsync carries.
	MaxBatch int `yaml:"max_batch"`
	// Sinks receive a copy of every AuditEvent after it is durable.
	Sinks []SinkConfig `yaml:"sinks"`
}

// Defaults applied by Validate.
const (
	DefaultSegmentMaxBytes = 64 << 20
	DefaultSegmentMaxAge   = 24 * time.Hour
	DefaultCheckpointEvery = 1000
	DefaultMaxBatch        = 4096
	DefaultSigningKeyName  = "signing.key"
)

// Validate checks c, fills defaults and names the first bad field.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errf(CodeConfig, nil, nil, "Dir is required")
	}
	switch {
	case c.SegmentMaxBytes == 0:
		c.SegmentMaxBytes = DefaultSegmentMaxBytes
	case c.SegmentMaxBytes < 4096:
		return errf(CodeConfig, nil, nil, "SegmentMaxBytes %d is below the 4096 minimum", c.SegmentMaxBytes)
	}
	switch {
	case c.SegmentMaxAge == 0:
		c.SegmentMaxAge = DefaultSegmentMaxAge
	case c.SegmentMaxAge < time.Second:
		return errf(CodeConfig, nil, nil, "SegmentMaxAge %s is below one second", c.SegmentMaxAge)
	}
	switch {
	case c.CheckpointEvery == 0:
		c.CheckpointEvery = DefaultCheckpointEvery
	case c.CheckpointEvery < 0:
		return errf(CodeConfig, nil, nil, "CheckpointEvery must be positive")
	}
	switch {
	case c.MaxBatch == 0:
		c.MaxBatch = DefaultMaxBatch
	case c.MaxBatch < 0:
		return errf(CodeConfig, nil, nil, "MaxBatch must be positive")
	}
	if c.SigningKeyFile == "" {
		c.SigningKeyFile = filepath.Join(c.Dir, DefaultSigningKeyName)
	}
	if c.EncryptionKeyFile != "" && c.EncryptionKeyEnv != "" {
		return errf(CodeConfig, nil, nil, "EncryptionKeyFile and EncryptionKeyEnv are mutually exclusive")
	}
	if c.Server == "" {
		c.Server = "phigate"
	}
	for i := range c.Sinks {
		if err := c.Sinks[i].Validate(); err != nil {
			return errf(CodeConfig, nil, err, "Sinks[%d]", i)
		}
	}
	return nil
}
