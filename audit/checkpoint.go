package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// checkpointTime is RFC 3339 with a fixed nine-digit fraction, so the text
// has one spelling per instant.
const checkpointTime = "2006-01-02T15:04:05.000000000Z07:00"

// Checkpoint is a signed statement of the log's size and head.
type Checkpoint struct {
	KeyID   string `json:"key_id"`
	Size    uint64 `json:"size"` // records in the log, = sequence of the head record
	Head    string `json:"head"` // hex record hash of record Size
	Segment string `json:"segment"`
	Offset  int64  `json:"offset"` // byte length of Segment when signed
	Time    string `json:"time"`   // RFC 3339, UTC
	Sig     string `json:"sig"`    // base64 Ed25519 over SignedBytes
}

// SignedBytes is the exact text the signature covers: one field per line, so
// there is nothing to canonicalize.
func (c *Checkpoint) SignedBytes() []byte {
	return fmt.Appendf(nil, "phigate-audit-checkpoint/v1\nkey %s\nsize %d\nhead %s\nsegment %s\noffset %d\ntime %s\n",
		c.KeyID, c.Size, c.Head, c.Segment, c.Offset, c.Time)
}

func signCheckpoint(priv ed25519.PrivateKey, size uint64, head [32]byte, segment string, offset int64, now time.Time) Checkpoint {
	c := Checkpoint{
		KeyID: KeyID(priv.Public().(ed25519.PublicKey)), Size: size, Head: hex.EncodeToString(head[:]),
		Segment: segment, Offset: offset, Time: now.UTC().Format(checkpointTime),
	}
	c.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, c.SignedBytes()))
	return c
}

// verifySig checks the checkpoint's key id and signature.
func (c *Checkpoint) verifySig(pub ed25519.PublicKey) bool {
	if c.KeyID != KeyID(pub) {
		return false
	}
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	if err != nil {
		return false
	}
	return ed25519.Verify(pub, c.SignedBytes(), sig)
}

// checkpointLine is a parsed line of checkpoints.jsonl with its offset.
type checkpointLine struct {
	Checkpoint
	LineOffset int64 // byte offset of the line in checkpoints.jsonl
}

// parseCheckpoints decodes checkpoints.jsonl. A final line without its
// newline is a torn write: it is returned as tornAt (else -1).
// readCheckpoints reads and parses dir's checkpoint file (none yet is no
// checkpoints), returning the raw bytes too for a caller that repairs them.
func readCheckpoints(dir string) (data []byte, cps []checkpointLine, tornAt int64, err error) {
	data, err = os.ReadFile(filepath.Join(dir, checkpointsFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, -1, errf(CodeIO, &Position{File: checkpointsFile}, err, "read")
	}
	cps, tornAt, err = parseCheckpoints(data)
	return data, cps, tornAt, err
}

func parseCheckpoints(data []byte) (cps []checkpointLine, tornAt int64, err error) {
	tornAt = -1
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var off int64
	for sc.Scan() {
		line := sc.Bytes()
		lineLen := int64(len(line)) + 1
		if off+lineLen > int64(len(data)) { // no trailing newline
			return cps, off, nil
		}
		var c Checkpoint
		if jerr := json.Unmarshal(line, &c); jerr != nil {
			return cps, -1, errf(CodeSignature, &Position{File: checkpointsFile, Offset: off}, nil, "checkpoint %d is not valid JSON", len(cps)+1)
		}
		cps = append(cps, checkpointLine{Checkpoint: c, LineOffset: off})
		off += lineLen
	}
	if err := sc.Err(); err != nil {
		return cps, -1, errf(CodeSignature, &Position{File: checkpointsFile, Offset: off}, err, "checkpoints")
	}
	return cps, tornAt, nil
}
