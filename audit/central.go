package audit

import (
	"context"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// CentralReplica is one replica as the centre knows it.
type CentralReplica struct {
	Replica
	// Head is the newest durable sequence the replica reported when it
	// last shipped.
	Head uint64
	// Conflicts are the sequences at which the replica offered a record the
	// centre holds with other bytes (0: it offered another chain for the id).
	Conflicts []uint64
}

// CentralSource is the centre as verify --central reads it
// (store.AuditCentre).
type CentralSource interface {
	// Replicas lists every replica, ordered by id.
	Replicas(ctx context.Context) ([]CentralReplica, error)
	// Records calls fn with the replica's records in ascending sequence.
	Records(ctx context.Context, replica string, fn func(*ShipRecord) error) error
	// Checkpoints returns the replica's checkpoints by ascending size.
	Checkpoints(ctx context.Context, replica string) ([]Checkpoint, error)
}

// CentralQuerier is the centre as query --central reads it.
type CentralQuerier interface {
	// Select calls fn with every record that may match f, across
	// replicas, ordered by recorded time, replica and sequence. It may
	// pass more than f matches (the caller checks each record) but never
	// fewer.
	Select(ctx context.Context, f Filter, fn func(replica string, r *ShipRecord) error) error
}

// Gap is a run of sequences a replica's central copy lacks.
type Gap struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	Why  string `json:"why"`
}

// CentralProblem is one thing wrong with a replica's central copy.
type CentralProblem struct {
	Seq    uint64 `json:"seq,omitempty"`
	Code   Code   `json:"code"`
	Detail string `json:"detail"`
}

// CentralReport is what verify --central found for one replica.
type CentralReport struct {
	Replica      string           `json:"replica"`
	KeyID        string           `json:"key_id"`
	Records      uint64           `json:"records"` // present at the centre
	Head         uint64           `json:"head"`    // highest sequence present
	Reported     uint64           `json:"reported_head"`
	Checkpoints  int              `json:"checkpoints"`
	Checkpointed uint64           `json:"checkpointed"`
	Decrypted    bool             `json:"decrypted"`
	Gaps         []Gap            `json:"gaps,omitempty"`
	Problems     []CentralProblem `json:"problems,omitempty"`
	More         int              `json:"more_problems,omitempty"` // beyond those listed
	Code         Code             `json:"code,omitempty"`
}

// CentralVerifyOptions tunes VerifyCentral.
type CentralVerifyOptions struct {
	// EncryptionKey, when set, opens sealed records too, so their columns
	// are checked against their content.
	EncryptionKey []byte
	// Replica limits verification to one replica id.
	Replica string
}

// maxProblems bounds the problems listed per replica.
const maxProblems = 100

// codeRank orders failure classes for a report's code: the worst wins.
var codeRank = []Code{CodeChainBroken, CodeCheckpointMismatch, CodeSignature, CodeTruncated, CodeDecrypt, CodeShipConflict, CodeQuarantined}

// VerifyCentral verifies every replica's chain and checkpoints at the
// centre against the trusted keys: each record's frame and hash, its link
// to the record before it, its columns against its bytes, each checkpoint's
// signature and head. Every run of missing sequences is a Gap: between
// records present, up to the newest checkpoint, and up to the head the
// replica reported. The error is the worst problem found (chain broken,
// then checkpoint mismatch, bad signature, truncated, decrypt, conflict,
// quarantined), at the first replica that has it, with the code the local
// verify would give it (ExitCode).
func VerifyCentral(ctx context.Context, src CentralSource, keys KeySet, opts CentralVerifyOptions) ([]CentralReport, error) {
	if len(keys) == 0 {
		return nil, errf(CodeConfig, nil, nil, "no trusted public key")
	}
	aead, err := newAEAD(opts.EncryptionKey)
	if err != nil {
		return nil, err
	}
	reps, err := src.Replicas(ctx)
	if err != nil {
		return nil, errf(CodeIO, nil, err, "centre")
	}
	if opts.Replica != "" {
		reps = slices.DeleteFunc(reps, func(r CentralReplica) bool { return r.ID != opts.Replica })
		if len(reps) == 0 {
			return nil, errf(CodeConfig, nil, nil, "replica %q is not at the centre", opts.Replica)
		}
	}
	var out []CentralReport
	var first error
	for _, r := range reps {
		rep := CentralReport{Replica: r.ID, KeyID: r.KeyID, Reported: r.Head, Decrypted: aead != nil}
		v := centralVerifier{rep: &rep, keys: keys, aead: aead}
		cps, err := src.Checkpoints(ctx, r.ID)
		if err != nil {
			return out, errf(CodeIO, nil, err, "centre: checkpoints of %s", r.ID)
		}
		v.checkpoints(cps)
		var prev [32]byte
		var expect uint64 = 1
		err = src.Records(ctx, r.ID, func(sr *ShipRecord) error {
			if sr.Seq > expect {
				rep.Gaps = append(rep.Gaps, Gap{From: expect, To: sr.Seq - 1, Why: "missing between records the centre holds"})
			}
			h := v.record(sr, prev, sr.Seq == expect)
			if r.Genesis != ([32]byte{}) && sr.Seq == 1 && h != r.Genesis {
				v.problem(1, CodeChainBroken, "record 1 is not the one the replica registered with")
			}
			prev, expect = h, sr.Seq+1
			rep.Records++
			rep.Head = sr.Seq
			return ctx.Err()
		})
		if err != nil {
			return out, errf(CodeIO, nil, err, "centre: records of %s", r.ID)
		}
		if v.newest > rep.Head {
			rep.Gaps = append(rep.Gaps, Gap{From: rep.Head + 1, To: v.newest,
				Why: fmt.Sprintf("a signed checkpoint says the trail had %d records", v.newest)})
		}
		if end := max(rep.Head, v.newest); r.Head > end {
			rep.Gaps = append(rep.Gaps, Gap{From: end + 1, To: r.Head,
				Why: fmt.Sprintf("the replica reported %d durable records; not shipped yet, or lost", r.Head)})
		}
		for _, g := range rep.Gaps {
			v.problem(g.From, CodeTruncated, fmt.Sprintf("records %d-%d are missing: %s", g.From, g.To, g.Why))
		}
		for _, seq := range r.Conflicts {
			what := fmt.Sprintf("the replica offered another record %d than the centre holds", seq)
			if seq == 0 {
				what = "another chain claimed this replica id"
			}
			v.problem(seq, CodeShipConflict, what+" (phigate_audit_conflicts keeps it)")
		}
		if v.code != "" {
			rep.Code = v.code
			if first == nil || slices.Index(codeRank, v.code) < slices.Index(codeRank, CodeOf(first)) {
				first = errf(v.code, nil, nil, "replica %s: %s", r.ID, v.codeDetail)
			}
		}
		out = append(out, rep)
	}
	return out, first
}

type centralVerifier struct {
	rep    *CentralReport
	keys   KeySet
	aead   cipher.AEAD
	bySize map[uint64]*Checkpoint
	newest uint64

	code       Code
	codeSeq    uint64
	codeDetail string
}

func (v *centralVerifier) problem(seq uint64, code Code, detail string) {
	if len(v.rep.Problems) < maxProblems {
		v.rep.Problems = append(v.rep.Problems, CentralProblem{Seq: seq, Code: code, Detail: detail})
	} else {
		v.rep.More++
	}
	if v.code == "" || slices.Index(codeRank, code) < slices.Index(codeRank, v.code) {
		v.code, v.codeSeq, v.codeDetail = code, seq, detail
	}
}

func (v *centralVerifier) checkpoints(cps []Checkpoint) {
	v.bySize = map[uint64]*Checkpoint{}
	for i := range cps {
		c := &cps[i]
		if !v.keys.verifies(c) {
			v.problem(c.Size, CodeSignature, fmt.Sprintf("checkpoint of size %d (key id %s) is not signed by a trusted key", c.Size, c.KeyID))
			continue
		}
		v.rep.Checkpoints++
		if p, ok := v.bySize[c.Size]; ok && p.Head != c.Head {
			v.problem(c.Size, CodeCheckpointMismatch, fmt.Sprintf("two signed checkpoints of size %d name different heads", c.Size))
		}
		v.bySize[c.Size] = c
		v.newest = max(v.newest, c.Size)
	}
	v.rep.Checkpointed = v.newest
}

// record checks one record and returns its hash, the link the next one
// must carry. linked says the record before it is present.
func (v *centralVerifier) record(sr *ShipRecord, prev [32]byte, linked bool) [32]byte {
	h := sr.Hash()
	frames, serr := parseFrames(sr.Frame)
	if serr != nil || !oneFrame(frames, sr.Frame) {
		detail := "not one whole frame"
		if serr != nil {
			detail = serr.detail
		}
		v.problem(sr.Seq, CodeChainBroken, fmt.Sprintf("record %d: %s", sr.Seq, detail))
		return h
	}
	f := &frames[0]
	switch {
	case f.Seq != sr.Seq:
		v.problem(sr.Seq, CodeChainBroken, fmt.Sprintf("record %d: its frame says sequence %d", sr.Seq, f.Seq))
	case linked && f.Prev != prev:
		v.problem(sr.Seq, CodeChainBroken, fmt.Sprintf("record %d: previous hash does not match record %d", sr.Seq, sr.Seq-1))
	}
	if c, ok := v.bySize[sr.Seq]; ok && c.Head != hex.EncodeToString(h[:]) {
		v.problem(sr.Seq, CodeCheckpointMismatch, fmt.Sprintf("record %d differs from the signed checkpoint of size %d", sr.Seq, c.Size))
	}
	v.columns(sr, f)
	return h
}

// columns checks the stored columns against what the bytes say, when the
// record can be read.
func (v *centralVerifier) columns(sr *ShipRecord, f *frame) {
	if f.Flags&flagSealed != 0 && v.aead == nil {
		return
	}
	r, err := decodeFrame(v.aead, f)
	if err != nil {
		code := CodeChainBroken
		if CodeOf(err) == CodeDecrypt {
			code = CodeDecrypt
		}
		v.problem(sr.Seq, code, fmt.Sprintf("record %d: %v", sr.Seq, err))
		return
	}
	if !sameIndex(indexOf(r), sr.Index) {
		v.problem(sr.Seq, CodeChainBroken, fmt.Sprintf("record %d: the centre's query columns differ from the record's bytes", sr.Seq))
	}
	if r.Kind == KindQuarantine {
		v.problem(sr.Seq, CodeQuarantined, fmt.Sprintf("record %d says an unreadable range was moved aside on the replica", sr.Seq))
	}
}

// sameIndex compares columns, times to the microsecond PostgreSQL keeps.
func sameIndex(a, b RecordIndex) bool {
	return a.Kind == b.Kind && a.DecisionID == b.DecisionID && a.User == b.User && a.FHIRUser == b.FHIRUser &&
		a.Outcome == b.Outcome && a.BreakGlass == b.BreakGlass && slices.Equal(a.Patients, b.Patients) &&
		a.Recorded.Truncate(time.Microsecond).Equal(b.Recorded.Truncate(time.Microsecond))
}

// DecodeShipped reads a record the centre holds: its frame must be whole
// and hash to itself, and say seq.
func DecodeShipped(sr *ShipRecord, key []byte) (*Entry, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return decodeShipped(sr, aead)
}

func decodeShipped(sr *ShipRecord, aead cipher.AEAD) (*Entry, error) {
	frames, serr := parseFrames(sr.Frame)
	if serr != nil || !oneFrame(frames, sr.Frame) || frames[0].Seq != sr.Seq {
		return nil, errf(CodeChainBroken, nil, nil, "the centre's record %d is not a whole frame of that sequence; run verify --central", sr.Seq)
	}
	r, err := decodeFrame(aead, &frames[0])
	if err != nil {
		return nil, errf(CodeOf(err), nil, nil, "the centre's record %d: %s", sr.Seq, errDetail(err))
	}
	e := &Entry{Seq: sr.Seq, Kind: r.Kind, Event: r.Event, Input: r.Input, Decision: r.Decision}
	if e.Decision != nil {
		e.Decision.ID = r.DecisionID
	}
	e.Recorded, _ = time.Parse(time.RFC3339Nano, r.Event.Recorded)
	return e, nil
}

// errStop ends a Select early.
var errStop = errors.New("enough")

// QueryCentral is Query across every replica at the centre: the centre
// selects by its columns, and each record is then read from its bytes
// (its hash checked) and matched against f, so the answer rests on the
// records, not on the columns.
func QueryCentral(ctx context.Context, src CentralQuerier, f Filter, opts QueryOptions) ([]Entry, error) {
	aead, err := newAEAD(opts.EncryptionKey)
	if err != nil {
		return nil, err
	}
	var out []Entry
	var bad error
	err = src.Select(ctx, f, func(replica string, sr *ShipRecord) error {
		e, err := decodeShipped(sr, aead)
		if err != nil {
			if bad == nil {
				bad = errf(CodeOf(err), nil, nil, "replica %s: %s", replica, errDetail(err))
			}
			return nil // the other records still answer; the damage is reported
		}
		if !f.Matches(e) {
			return nil
		}
		e.Replica = replica
		out = append(out, *e)
		if opts.Limit > 0 && len(out) >= opts.Limit {
			return errStop
		}
		return ctx.Err()
	})
	if err != nil && !errors.Is(err, errStop) {
		return out, errf(CodeIO, nil, err, "centre")
	}
	return out, bad
}

// WriteCentralReport prints verify --central's findings.
func WriteCentralReport(w io.Writer, reps []CentralReport, err error) error {
	var b strings.Builder
	for _, r := range reps {
		verdict := "ok"
		if r.Code != "" {
			verdict = string(r.Code)
		}
		fmt.Fprintf(&b, "replica %s (key id %s): %s: %d records present, highest %d, replica reported %d, %d checkpoints (newest size %d)\n",
			r.Replica, r.KeyID, verdict, r.Records, r.Head, r.Reported, r.Checkpoints, r.Checkpointed)
		for _, g := range r.Gaps {
			fmt.Fprintf(&b, "  gap: replica %s records %d-%d missing (%s)\n", r.Replica, g.From, g.To, g.Why)
		}
		for _, p := range r.Problems {
			if p.Code == CodeTruncated {
				continue // the gaps above
			}
			fmt.Fprintf(&b, "  %s: %s\n", p.Code, p.Detail)
		}
		if r.More > 0 {
			fmt.Fprintf(&b, "  ... and %d more problems\n", r.More)
		}
	}
	switch {
	case len(reps) == 0 && err == nil:
		b.WriteString("no replica has shipped to the centre\n")
	case err == nil:
		fmt.Fprintf(&b, "OK: %d replicas verified\n", len(reps))
	default:
		fmt.Fprintf(&b, "FAILED: %v\n", err)
	}
	_, werr := io.WriteString(w, b.String())
	return werr
}

// errDetail is an *Error's detail, or the error's text.
func errDetail(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Detail
	}
	return err.Error()
}

// oneFrame reports whether b, parsed into frames, is exactly one frame: a
// shipped record carries no zeros after it, as a segment may.
func oneFrame(frames []frame, b []byte) bool {
	return len(frames) == 1 && frames[0].Size == int64(len(b))
}
