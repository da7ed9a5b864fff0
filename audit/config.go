package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config configures a Log. Validate fills defaults; Open calls it.
type Config struct {
	// Dir holds the segments, the checkpoints and a copy of the public key.
	// The private signing key and the witness live outside it: whoever can
	// rewrite the directory must not also hold what vouches for it.
	Dir string `yaml:"dir"`
	// SegmentMaxBytes rotates a segment once it reaches this size.
	SegmentMaxBytes int64 `yaml:"segment_max_bytes"`
	// PreallocateBytes is how far ahead of its records the live segment is
	// kept filled with zeros, so that a commit's fsync has no file size or
	// block allocation to journal. Default DefaultPreallocateBytes; negative
	// turns it off.
	PreallocateBytes int64 `yaml:"preallocate_bytes"`
	// SegmentMaxAge rotates a segment this long after it was opened, at the
	// next record or the next one-second tick, whichever comes first.
	SegmentMaxAge time.Duration `yaml:"segment_max_age"`
	// CheckpointEvery signs a checkpoint at least every N records.
	CheckpointEvery int `yaml:"checkpoint_every"`
	// CheckpointInterval signs a checkpoint of any records not yet
	// checkpointed this long after the last one, at the next record or the
	// next one-second tick: a quiet trail is vouched for within this time,
	// not only every CheckpointEvery records or at shutdown.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// SigningKeyFile is the Ed25519 private key (PEM PKCS#8). It must not be
	// inside Dir. It is created (mode 0600, public key at SigningKeyFile+".pub")
	// only for a trail that has never been written; a missing key over an
	// existing trail is an error, never a reason to make a new one. Default:
	// <Dir>.signing.key beside the directory.
	SigningKeyFile string `yaml:"signing_key_file"`
	// WitnessFile holds a copy of the newest signed checkpoint, rewritten at
	// every checkpoint. Open refuses a trail shorter than it, or whose record
	// at its size has another hash. It must not be inside Dir. Default:
	// <Dir>.witness.json beside the directory.
	WitnessFile string `yaml:"witness_file"`
	// MaxRecordBytes caps one stored record (after sealing). A decision whose
	// record would be larger is recorded as a compact substitute that keeps
	// who, what decision and the outcome, and counts what was dropped.
	MaxRecordBytes int `yaml:"max_record_bytes"`
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
	// ReplicaID names this trail at the centre the fleet ships to (a
	// PostgreSQL store, see ship.go); default DefaultReplicaID.
	ReplicaID string `yaml:"replica_id"`
	// Ship tunes shipping to the centre.
	Ship ShipConfig `yaml:"ship"`
}

// Defaults applied by Validate.
const (
	DefaultSegmentMaxBytes = 64 << 20
	DefaultSegmentMaxAge   = 24 * time.Hour
	DefaultCheckpointEvery = 1000
	// DefaultCheckpointInterval bounds how long records wait for a
	// checkpoint on a quiet trail.
	DefaultCheckpointInterval = 5 * time.Minute
	DefaultMaxBatch           = 4096
	DefaultMaxRecordBytes     = 1 << 20
	// PublicKeyName is the copy of the public key kept in Dir, for
	// "verify --trust-on-first-use" only: anyone who can write Dir can
	// replace it, so verification pins a copy held elsewhere.
	PublicKeyName = "signing.pub"
	// legacySigningKeyName is where earlier versions kept the private key,
	// inside Dir; its public half is legacySigningKeyName+".pub".
	legacySigningKeyName = "signing.key"
)

// DirPublicKeyFile is the public key stored in the trail's directory, for
// trust on first use: signing.pub, or the .pub an earlier version left
// beside its in-directory key.
func DirPublicKeyFile(dir string) string {
	p := filepath.Join(dir, PublicKeyName)
	if _, err := os.Stat(p); err != nil {
		if legacy := PublicKeyPath(filepath.Join(dir, legacySigningKeyName)); fileExists(legacy) {
			return legacy
		}
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// MaxFramePayload is the largest payload a reader accepts in one frame, and
// so the largest one the writer may ever produce.
const MaxFramePayload = 16 << 20

// Validate checks c, fills defaults and names the first bad field.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errf(CodeConfig, nil, nil, "dir is required")
	}
	switch {
	case c.SegmentMaxBytes == 0:
		c.SegmentMaxBytes = DefaultSegmentMaxBytes
	case c.SegmentMaxBytes < 4096:
		return errf(CodeConfig, nil, nil, "segment_max_bytes %d is below the 4096 minimum", c.SegmentMaxBytes)
	}
	switch {
	case c.PreallocateBytes == 0:
		c.PreallocateBytes = DefaultPreallocateBytes
	case c.PreallocateBytes > 0 && c.PreallocateBytes < fillPiece:
		return errf(CodeConfig, nil, nil, "preallocate_bytes %d is below the %d minimum (negative turns preallocation off)", c.PreallocateBytes, fillPiece)
	}
	switch {
	case c.SegmentMaxAge == 0:
		c.SegmentMaxAge = DefaultSegmentMaxAge
	case c.SegmentMaxAge < time.Second:
		return errf(CodeConfig, nil, nil, "segment_max_age %s is below one second", c.SegmentMaxAge)
	}
	switch {
	case c.CheckpointEvery == 0:
		c.CheckpointEvery = DefaultCheckpointEvery
	case c.CheckpointEvery < 0:
		return errf(CodeConfig, nil, nil, "checkpoint_every must be positive")
	}
	switch {
	case c.CheckpointInterval == 0:
		c.CheckpointInterval = DefaultCheckpointInterval
	case c.CheckpointInterval < time.Second:
		return errf(CodeConfig, nil, nil, "checkpoint_interval must be at least 1s")
	}
	switch {
	case c.MaxBatch == 0:
		c.MaxBatch = DefaultMaxBatch
	case c.MaxBatch < 0:
		return errf(CodeConfig, nil, nil, "max_batch must be positive")
	}
	switch {
	case c.MaxRecordBytes == 0:
		c.MaxRecordBytes = DefaultMaxRecordBytes
	case c.MaxRecordBytes < 16<<10 || c.MaxRecordBytes > MaxFramePayload:
		return errf(CodeConfig, nil, nil, "max_record_bytes %d is outside [%d, %d]", c.MaxRecordBytes, 16<<10, MaxFramePayload)
	}
	dir := filepath.Clean(c.Dir)
	if c.SigningKeyFile == "" {
		c.SigningKeyFile = DefaultSigningKeyFile(dir)
	}
	if c.WitnessFile == "" {
		c.WitnessFile = DefaultWitnessFile(dir)
	}
	for _, f := range []struct{ name, path string }{{"signing_key_file", c.SigningKeyFile}, {"witness_file", c.WitnessFile}} {
		in, err := within(dir, f.path)
		if err != nil {
			return errf(CodeConfig, nil, err, "%s", f.name)
		}
		if in {
			return errf(CodeConfig, nil, nil, "%s %s is inside dir %s; keep it outside the audit directory", f.name, f.path, c.Dir)
		}
	}
	if c.EncryptionKeyFile != "" && c.EncryptionKeyEnv != "" {
		return errf(CodeConfig, nil, nil, "encryption_key_file and encryption_key_env are mutually exclusive")
	}
	if c.Server == "" {
		c.Server = "phigate"
	}
	if err := validReplicaID(c.ReplicaID); err != nil {
		return err
	}
	if err := c.Ship.validate(); err != nil {
		return err
	}
	for i := range c.Sinks {
		if err := c.Sinks[i].Validate(); err != nil {
			// The sink names its own field; prefix it with the sink's place,
			// so the message reads as the YAML path (sinks[0].tls: ...).
			var e *Error
			if errors.As(err, &e) {
				return &Error{Code: CodeConfig, Detail: fmt.Sprintf("sinks[%d].%s", i, e.Detail), Err: e.Err}
			}
			return errf(CodeConfig, nil, err, "sinks[%d]", i)
		}
	}
	return nil
}

// DefaultSigningKeyFile is where the signing key goes when the config does
// not say: beside dir, not in it. A deployment should name a path on
// another volume or a secret mount instead.
func DefaultSigningKeyFile(dir string) string { return filepath.Clean(dir) + ".signing.key" }

// DefaultWitnessFile is where the witness goes when the config does not
// say: beside dir, not in it.
func DefaultWitnessFile(dir string) string { return filepath.Clean(dir) + ".witness.json" }

// within reports whether path is dir or lies under it, comparing absolute
// paths with symbolic links resolved where they exist, so a link cannot
// smuggle the key back into the directory.
func within(dir, path string) (bool, error) {
	d, err := resolve(dir)
	if err != nil {
		return false, err
	}
	p, err := resolve(path)
	if err != nil {
		return false, err
	}
	rel, err := filepath.Rel(d, p)
	if err != nil {
		return false, nil
	}
	return rel == "." || !(rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator))), nil
}

// resolve makes path absolute and resolves symbolic links in the longest
// prefix of it that exists.
func resolve(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	rest := ""
	for cur := abs; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest), nil
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return abs, nil
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}
