package audit

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
)

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// EncryptionKey, when set, also proves every sealed record opens.
	EncryptionKey []byte
	// RequireCheckpointedTail fails (ErrTruncated) when records follow the
	// newest checkpoint, i.e. the log was not closed cleanly.
	RequireCheckpointedTail bool
}

// VerifyReport summarizes a verified log. On failure it holds what was
// checked before the first problem, and Bad locates that problem.
type VerifyReport struct {
	Segments    int    `json:"segments"`
	Records     uint64 `json:"records"`
	Checkpoints int    `json:"checkpoints"`
	Head        string `json:"head,omitempty"` // hex hash of the last record
	// Checkpointed is the size of the newest checkpoint; records after it are
	// protected by the chain alone.
	Checkpointed uint64    `json:"checkpointed"`
	Decrypted    bool      `json:"decrypted"`
	Bad          *Position `json:"bad,omitempty"`
	Code         Code      `json:"code,omitempty"`
}

// Verify checks the whole log in dir against pub: every frame's hash, the
// chain across segments, segment names, every checkpoint's signature, and
// that each checkpoint matches the record and byte offset it names. It
// returns the first problem as an *Error with a Position (segment file,
// record sequence, byte offset) and one of ErrChainBroken,
// ErrCheckpointMismatch, ErrSignature, ErrTruncated or ErrDecrypt.
func Verify(dir string, pub ed25519.PublicKey, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	err := verify(dir, pub, opts, &rep)
	if err != nil {
		rep.Code = CodeOf(err)
		if p, ok := PositionOf(err); ok {
			rep.Bad = &p
		}
	}
	return rep, err
}

// VerifyKeyFile is Verify with the public key read from a PEM file.
func VerifyKeyFile(dir, pubFile string, opts VerifyOptions) (VerifyReport, error) {
	pub, err := LoadPublicKey(pubFile)
	if err != nil {
		return VerifyReport{Code: CodeOf(err)}, err
	}
	return Verify(dir, pub, opts)
}

func verify(dir string, pub ed25519.PublicKey, opts VerifyOptions, rep *VerifyReport) error {
	if len(pub) != ed25519.PublicKeySize {
		return errf(CodeConfig, nil, nil, "public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	aead, err := newAEAD(opts.EncryptionKey)
	if err != nil {
		return err
	}
	rep.Decrypted = aead != nil

	// Checkpoints first: they are the signed truth the segments must match.
	_, cps, tornAt, err := readCheckpoints(dir)
	if err != nil {
		return err
	}
	if tornAt >= 0 {
		return errf(CodeTruncated, &Position{File: checkpointsFile, Offset: tornAt}, nil, "incomplete checkpoint line")
	}
	bySize := map[uint64]*checkpointLine{}
	segEnd := map[string]int64{} // largest offset any checkpoint vouches for, per segment
	for i := range cps {
		c := &cps[i]
		pos := &Position{File: checkpointsFile, Offset: c.LineOffset}
		if !c.verifySig(pub) {
			return errf(CodeSignature, pos, nil, "checkpoint %d (size %d) is not signed by the key", i+1, c.Size)
		}
		// Sizes only grow. Times are not compared: a wall clock stepped back
		// by NTP is not tampering.
		if i > 0 && c.Size < cps[i-1].Size {
			return errf(CodeCheckpointMismatch, pos, nil, "checkpoint %d goes backwards", i+1)
		}
		if prev, ok := bySize[c.Size]; ok && (prev.Head != c.Head || prev.Segment != c.Segment || prev.Offset != c.Offset) {
			return errf(CodeCheckpointMismatch, pos, nil, "checkpoint %d contradicts an earlier one of the same size", i+1)
		}
		bySize[c.Size] = c
		if c.Offset > segEnd[c.Segment] {
			segEnd[c.Segment] = c.Offset
		}
		rep.Checkpoints++
		rep.Checkpointed = c.Size
	}

	names, firsts, err := listSegments(dir)
	if err != nil {
		return err
	}
	var prev [32]byte
	var seq uint64
	for i, name := range names {
		data, err := readFile(dir, name)
		if err != nil {
			return err
		}
		rep.Segments++
		if firsts[i] != seq+1 {
			code := CodeChainBroken
			return errf(code, &Position{File: name, Seq: seq + 1}, nil, "segment should start at sequence %d, its name says %d", seq+1, firsts[i])
		}
		frames, serr := parseFrames(data)
		for j := range frames {
			f := &frames[j]
			pos := &Position{File: name, Seq: f.Seq, Offset: f.Offset}
			if f.Seq != seq+1 {
				return errf(CodeChainBroken, pos, nil, "expected sequence %d", seq+1)
			}
			if f.Prev != prev {
				return errf(CodeChainBroken, pos, nil, "previous hash does not match record %d", seq)
			}
			if aead != nil || f.Flags&flagSealed == 0 {
				if _, derr := decodeFrame(aead, f); derr != nil {
					var e *Error
					errors.As(derr, &e)
					e.Pos = pos
					if e.Code == CodeEncode {
						e.Code = CodeChainBroken // a correctly hashed frame with garbage inside was written that way
					}
					return e
				}
			}
			seq, prev = f.Seq, f.Hash
			rep.Records, rep.Head = seq, hex.EncodeToString(prev[:])
			if c, ok := bySize[seq]; ok {
				end := f.Offset + f.Size
				switch {
				case c.Head != rep.Head:
					return errf(CodeCheckpointMismatch, pos, nil, "record hash differs from the signed checkpoint of size %d", c.Size)
				case c.Segment != name || c.Offset != end:
					return errf(CodeCheckpointMismatch, pos, nil, "checkpoint of size %d places this record at %s offset %d", c.Size, c.Segment, c.Offset)
				}
			}
		}
		if serr != nil {
			return errf(serr.code, &Position{File: name, Seq: seq + 1, Offset: serr.offset}, nil, "%s", serr.detail)
		}
		if want, ok := segEnd[name]; ok && int64(len(data)) < want {
			return errf(CodeTruncated, &Position{File: name, Seq: seq + 1, Offset: int64(len(data))}, nil, "segment is %d bytes, a checkpoint vouches for %d", len(data), want)
		}
	}
	if n := len(cps); n > 0 && cps[n-1].Size > seq {
		c := cps[n-1]
		return errf(CodeTruncated, &Position{File: c.Segment, Seq: seq + 1, Offset: segEnd[c.Segment]}, nil,
			"log ends at record %d, the newest checkpoint says %d", seq, c.Size)
	}
	if opts.RequireCheckpointedTail && seq > rep.Checkpointed {
		return errf(CodeTruncated, &Position{File: lastOr(names), Seq: rep.Checkpointed + 1}, nil,
			"%d records follow the newest checkpoint", seq-rep.Checkpointed)
	}
	return nil
}

func lastOr(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1]
}
