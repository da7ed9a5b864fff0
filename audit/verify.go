package audit

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"strconv"
)

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// EncryptionKey, when set, also proves every sealed record opens.
	EncryptionKey []byte
	// RequireCheckpointedTail fails (ErrTruncated) when records follow the
	// newest checkpoint, i.e. the log was not closed cleanly.
	RequireCheckpointedTail bool
	// Witness holds checkpoints kept off the trail (the witness file, a
	// sink's copy). Each must be signed by a trusted key and match the
	// trail, which must be at least as long as each of them: this is what
	// catches checkpoints.jsonl cut back and the records after it rewritten.
	Witness []Checkpoint
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
// ErrCheckpointMismatch, ErrSignature, ErrTruncated, ErrDecrypt or
// ErrQuarantined (the trail verifies, but holds a quarantine record).
func Verify(dir string, pub ed25519.PublicKey, opts VerifyOptions) (VerifyReport, error) {
	if len(pub) != ed25519.PublicKeySize {
		err := errf(CodeConfig, nil, nil, "public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
		return VerifyReport{Code: CodeConfig}, err
	}
	return VerifyTrusted(dir, NewKeySet(pub), opts)
}

// VerifyTrusted is Verify against a set of pinned keys: each checkpoint
// must be signed by the key its key id names, and that key must be in keys.
func VerifyTrusted(dir string, keys KeySet, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	err := verify(dir, keys, opts, &rep)
	if err != nil {
		rep.Code = CodeOf(err)
		if p, ok := PositionOf(err); ok {
			rep.Bad = &p
		}
	}
	return rep, err
}

// VerifyKeyFile is Verify with the trusted keys read from a file (see
// LoadTrustedKeys).
func VerifyKeyFile(dir, pubFile string, opts VerifyOptions) (VerifyReport, error) {
	keys, err := LoadTrustedKeys(pubFile)
	if err != nil {
		return VerifyReport{Code: CodeOf(err)}, err
	}
	return VerifyTrusted(dir, keys, opts)
}

func (ks KeySet) verifies(c *Checkpoint) bool {
	pub, ok := ks[c.KeyID]
	return ok && c.verifySig(pub)
}

// cpIndex is what the checkpoints in force say about the records.
type cpIndex struct {
	bySize map[uint64]*checkpointLine
	segEnd map[string]int64 // largest offset any checkpoint vouches for, per segment
	newest uint64
	err    error // the first inconsistency among them
}

// indexCheckpoints indexes the checkpoints keep selects.
func indexCheckpoints(cps []checkpointLine, keep func(*checkpointLine) bool) cpIndex {
	ix := cpIndex{bySize: map[uint64]*checkpointLine{}, segEnd: map[string]int64{}}
	var prev *checkpointLine
	for i := range cps {
		c := &cps[i]
		if !keep(c) {
			continue
		}
		pos := &Position{File: checkpointsFile, Offset: c.LineOffset}
		// Sizes only grow. Times are not compared: a wall clock stepped back
		// by NTP is not tampering.
		if prev != nil && c.Size < prev.Size && ix.err == nil {
			ix.err = errf(CodeCheckpointMismatch, pos, nil, "checkpoint %d goes backwards", i+1)
		}
		if p, ok := ix.bySize[c.Size]; ok && (p.Head != c.Head || p.Segment != c.Segment || p.Offset != c.Offset) && ix.err == nil {
			ix.err = errf(CodeCheckpointMismatch, pos, nil, "checkpoint %d contradicts an earlier one of the same size", i+1)
		}
		ix.bySize[c.Size] = c
		if c.Offset > ix.segEnd[c.Segment] {
			ix.segEnd[c.Segment] = c.Offset
		}
		ix.newest = c.Size
		prev = c
	}
	return ix
}

func verify(dir string, keys KeySet, opts VerifyOptions, rep *VerifyReport) error {
	if len(keys) == 0 {
		return errf(CodeConfig, nil, nil, "no trusted public key")
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
	for i := range cps {
		c := &cps[i]
		if !keys.verifies(&c.Checkpoint) {
			return errf(CodeSignature, &Position{File: checkpointsFile, Offset: c.LineOffset}, nil,
				"checkpoint %d (size %d, key id %s) is not signed by a trusted key", i+1, c.Size, c.KeyID)
		}
		rep.Checkpoints++
	}
	witness := map[uint64]*Checkpoint{}
	var witnessMax uint64
	for i := range opts.Witness {
		w := &opts.Witness[i]
		if !keys.verifies(w) {
			return errf(CodeSignature, &Position{File: "witness"}, nil, "witness checkpoint %d (size %d, key id %s) is not signed by a trusted key", i+1, w.Size, w.KeyID)
		}
		witness[w.Size] = w
		witnessMax = max(witnessMax, w.Size)
	}
	// Until a quarantine record says otherwise, every checkpoint is in force.
	ix := indexCheckpoints(cps, func(*checkpointLine) bool { return true })
	rep.Checkpointed = ix.newest
	var quarantined *Error

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
				r, derr := decodeFrame(aead, f)
				if derr != nil {
					var e *Error
					errors.As(derr, &e)
					e.Pos = pos
					if e.Code == CodeEncode {
						e.Code = CodeChainBroken // a correctly hashed frame with garbage inside was written that way
					}
					return e
				}
				if r.Kind == KindQuarantine && quarantined == nil {
					// Checkpoints written before the quarantine describe the
					// trail as it was; from here on only those written after
					// it (and those below the range) are in force.
					cut, _ := strconv.ParseInt(detailValue(r.Event, DetailCheckpointsOffset), 10, 64)
					ix = indexCheckpoints(cps, func(c *checkpointLine) bool { return c.LineOffset >= cut || c.Size < f.Seq })
					seg, _ := detailOf1(r.Event, DetailSegment)
					quarantined = errf(CodeQuarantined, pos, nil,
						"record %d says an unreadable range was moved aside at startup (from %s offset %s, %s bytes, reason %q, up to size %s had been checkpointed); the quarantine files beside the segments hold it",
						f.Seq, seg, detailValue(r.Event, DetailOffset), detailValue(r.Event, DetailBytes), detailValue(r.Event, DetailReason), detailValue(r.Event, DetailCheckpointed))
				}
			}
			seq, prev = f.Seq, f.Hash
			rep.Records, rep.Head = seq, hex.EncodeToString(prev[:])
			if c, ok := ix.bySize[seq]; ok {
				end := f.Offset + f.Size
				switch {
				case c.Head != rep.Head:
					return errf(CodeCheckpointMismatch, pos, nil, "record hash differs from the signed checkpoint of size %d", c.Size)
				case c.Segment != name || c.Offset != end:
					return errf(CodeCheckpointMismatch, pos, nil, "checkpoint of size %d places this record at %s offset %d", c.Size, c.Segment, c.Offset)
				}
			}
			if w, ok := witness[seq]; ok && w.Head != rep.Head && quarantined == nil {
				return errf(CodeCheckpointMismatch, pos, nil, "record hash differs from the witness checkpoint of size %d: the trail was rewritten", w.Size)
			}
		}
		if serr != nil {
			return errf(serr.code, &Position{File: name, Seq: seq + 1, Offset: serr.offset}, nil, "%s", serr.detail)
		}
		if want, ok := ix.segEnd[name]; ok && int64(len(data)) < want {
			return errf(CodeTruncated, &Position{File: name, Seq: seq + 1, Offset: int64(len(data))}, nil, "segment is %d bytes, a checkpoint vouches for %d", len(data), want)
		}
	}
	if ix.err != nil {
		return ix.err
	}
	if ix.newest > seq {
		c := ix.bySize[ix.newest]
		return errf(CodeTruncated, &Position{File: c.Segment, Seq: seq + 1, Offset: ix.segEnd[c.Segment]}, nil,
			"log ends at record %d, the newest checkpoint says %d", seq, c.Size)
	}
	if witnessMax > seq && quarantined == nil {
		return errf(CodeTruncated, &Position{File: lastOr(names), Seq: seq + 1}, nil,
			"log ends at record %d, a witness checkpoint says %d: records were removed", seq, witnessMax)
	}
	rep.Checkpointed = ix.newest
	if opts.RequireCheckpointedTail && seq > rep.Checkpointed {
		return errf(CodeTruncated, &Position{File: lastOr(names), Seq: rep.Checkpointed + 1}, nil,
			"%d records follow the newest checkpoint", seq-rep.Checkpointed)
	}
	if quarantined != nil {
		return quarantined
	}
	return nil
}

func detailOf1(ev *AuditEvent, typ string) (string, bool) {
	for _, en := range ev.Entity {
		for _, d := range en.Detail {
			if d.Type == typ {
				return d.ValueString, true
			}
		}
	}
	return "", false
}

func detailValue(ev *AuditEvent, typ string) string {
	v, _ := detailOf1(ev, typ)
	return v
}

func lastOr(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1]
}
