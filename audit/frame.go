package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const (
	headerLen  = 48
	hashLen    = 32
	frameExtra = headerLen + hashLen
	frameVer   = 1
	flagSealed = 1 << 0

	segPrefix       = "seg-"
	segSuffix       = ".pga"
	checkpointsFile = "checkpoints.jsonl"
)

var (
	frameMagic = [2]byte{'P', 'G'}
	hashDomain = []byte("phigate-audit-record/v1\x00")
)

// frame is one decoded record frame.
type frame struct {
	Seq     uint64
	Prev    [32]byte
	Flags   byte
	Payload []byte
	Hash    [32]byte // as stored
	Offset  int64
	Size    int64
}

// appendFrame encodes a frame onto buf and returns the record hash.
func appendFrame(buf []byte, seq uint64, prev [32]byte, flags byte, payload []byte) ([]byte, [32]byte) {
	start := len(buf)
	buf = append(buf, frameMagic[0], frameMagic[1], frameVer, flags)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(payload)))
	buf = binary.BigEndian.AppendUint64(buf, seq)
	buf = append(buf, prev[:]...)
	buf = append(buf, payload...)
	h := recordHash(buf[start:start+headerLen], payload)
	buf = append(buf, h[:]...)
	return buf, h
}

func recordHash(header, payload []byte) [32]byte {
	d := sha256.New()
	d.Write(hashDomain)
	d.Write(header)
	d.Write(payload)
	var h [32]byte
	d.Sum(h[:0])
	return h
}

// scanErr is what a segment scan found wrong with the bytes at an offset.
type scanErr struct {
	code   Code
	offset int64
	detail string
}

// parseFrames decodes the frames of a segment image. It stops at the first
// frame that is incomplete (CodeTruncated) or malformed or whose stored
// hash does not match its bytes (CodeChainBroken), returning the good frames
// before it. Chain links between frames are the caller's to check.
//
// Zeros from a frame boundary to the end are the segment's preallocated
// space not yet written (see extender.go) and end the image without
// error; zeros followed by anything else are incomplete (CodeTruncated).
// No frame starts with a zero byte, so the two never meet.
func parseFrames(data []byte) ([]frame, *scanErr) {
	var out []frame
	off := 0
	for off < len(data) {
		rest := data[off:]
		if rest[0] == 0 {
			if allZero(rest) {
				return out, nil
			}
			return out, &scanErr{CodeTruncated, int64(off), "unwritten space before more data"}
		}
		if len(rest) < headerLen {
			return out, &scanErr{CodeTruncated, int64(off), "incomplete frame header"}
		}
		if rest[0] != frameMagic[0] || rest[1] != frameMagic[1] || rest[2] != frameVer {
			return out, &scanErr{CodeChainBroken, int64(off), "bad frame magic or version"}
		}
		n := int(binary.BigEndian.Uint32(rest[4:8]))
		if n > MaxFramePayload {
			return out, &scanErr{CodeChainBroken, int64(off), "frame length out of range"}
		}
		if len(rest) < frameExtra+n {
			return out, &scanErr{CodeTruncated, int64(off), "incomplete frame"}
		}
		f := frame{Flags: rest[3], Seq: binary.BigEndian.Uint64(rest[8:16]), Offset: int64(off), Size: int64(frameExtra + n)}
		copy(f.Prev[:], rest[16:48])
		f.Payload = rest[headerLen : headerLen+n]
		copy(f.Hash[:], rest[headerLen+n:frameExtra+n])
		if recordHash(rest[:headerLen], f.Payload) != f.Hash {
			return out, &scanErr{CodeChainBroken, int64(off), "record hash does not match its content"}
		}
		out = append(out, f)
		off += frameExtra + n
	}
	return out, nil
}

// zeroBlock is compared against, a block at a time, by allZero.
var zeroBlock [4096]byte

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

func segmentName(firstSeq uint64) string {
	return fmt.Sprintf("%s%020d%s", segPrefix, firstSeq, segSuffix)
}

// listSegments returns segment file names in sequence order with the first
// sequence number each name claims.
func listSegments(dir string) ([]string, []uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, errf(CodeIO, nil, err, "read log directory")
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if e.Type().IsRegular() && strings.HasPrefix(n, segPrefix) && strings.HasSuffix(n, segSuffix) {
			names = append(names, n)
		}
	}
	slices.Sort(names) // fixed-width numbers sort as strings
	firsts := make([]uint64, len(names))
	for i, n := range names {
		v, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, segPrefix), segSuffix), 10, 64)
		if err != nil {
			return nil, nil, errf(CodeChainBroken, &Position{File: n}, nil, "segment name is not a sequence number")
		}
		firsts[i] = v
	}
	return names, firsts, nil
}

func readFile(dir, name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, errf(CodeIO, &Position{File: name}, err, "read")
	}
	return b, nil
}

func zeroHash() [32]byte { return [32]byte{} }

// copyTail appends data[off:] to path so bytes removed during recovery are
// kept for investigation instead of destroyed.
func copyTail(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
