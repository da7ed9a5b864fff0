package audit

import (
	"testing"
	"time"
)

// FuzzParseFrames feeds arbitrary segment bytes to the parser: it must never
// panic, and every frame it accepts must carry a hash matching its bytes.
func FuzzParseFrames(f *testing.F) {
	one, _ := appendFrame(nil, 1, [32]byte{}, 0, []byte(`{"v":1,"kind":"decision","event":{}}`))
	two, _ := appendFrame(append([]byte{}, one...), 2, [32]byte{9}, flagSealed, make([]byte, 40))
	f.Add([]byte{})
	f.Add(one)
	f.Add(two)
	f.Add(two[:len(two)-3])
	f.Add(append(append([]byte{}, one...), make([]byte, 600)...))
	f.Add(append(append(append([]byte{}, one...), make([]byte, 600)...), 1))
	f.Add([]byte("PG\x01\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		frames, serr := parseFrames(data)
		var end int64
		for _, fr := range frames {
			if fr.Offset != end {
				t.Fatalf("frame at %d, previous ended at %d", fr.Offset, end)
			}
			if recordHash(data[fr.Offset:fr.Offset+headerLen], fr.Payload) != fr.Hash {
				t.Fatal("accepted a frame whose hash does not match")
			}
			end = fr.Offset + fr.Size
		}
		if serr == nil && !allZero(data[end:]) {
			t.Fatalf("parsed %d of %d bytes without error, and what follows is not zeros", end, len(data))
		}
		if serr != nil && serr.offset != end {
			t.Fatalf("error at %d, good frames end at %d", serr.offset, end)
		}
	})
}

// FuzzCentralRecord feeds arbitrary bytes, as a centre whose database was
// written by someone else could hold them, to verify --central and query
// --central: neither may panic, and a record verify passes must read back
// with the columns it was stored with.
func FuzzCentralRecord(f *testing.F) {
	payload := []byte(`{"v":1,"kind":"decision","event":{"resourceType":"AuditEvent","recorded":"2026-12-04T08:00:00Z","outcome":"0"}}`)
	one, _ := appendFrame(nil, 1, [32]byte{}, 0, payload)
	f.Add(one, uint64(1), "decision")
	f.Add(one, uint64(2), "decision")
	f.Add(one[:len(one)-1], uint64(1), "")
	f.Add([]byte("PG\x01\x00\x00\x00\x00\x00"), uint64(1), "decision")
	sealed, _ := appendFrame(nil, 1, [32]byte{}, flagSealed, make([]byte, 40))
	f.Add(sealed, uint64(1), "")
	f.Fuzz(func(t *testing.T, data []byte, seq uint64, kind string) {
		if seq == 0 {
			return
		}
		c := newMemCentre()
		var genesis [32]byte
		if err := c.Register(t.Context(), Replica{ID: "r", KeyID: "k", Genesis: genesis}); err != nil {
			t.Fatal(err)
		}
		rec := ShipRecord{Seq: seq, Frame: data, Index: RecordIndex{Kind: kind, Patients: []string{}}}
		rec.Index.Recorded, _ = time.Parse(time.RFC3339, "2026-12-04T08:00:00Z")
		c.records["r"][seq] = rec
		reps, _ := VerifyCentral(t.Context(), c, KeySet{"k": make([]byte, 32)}, CentralVerifyOptions{})
		entries, qerr := QueryCentral(t.Context(), c, Filter{}, QueryOptions{})
		if len(reps) != 1 {
			t.Fatalf("%d reports", len(reps))
		}
		chainOK := true
		for _, p := range reps[0].Problems {
			if p.Code != CodeTruncated { // a gap below seq is not the record's fault
				chainOK = false
			}
		}
		sealed := len(data) > 3 && data[3]&flagSealed != 0 // read only with a key, which this run has not
		if chainOK && !sealed && (qerr != nil || len(entries) != 1 || entries[0].Kind != kind) {
			t.Fatalf("verify passed the record but query read %d entries (%v)", len(entries), qerr)
		}
	})
}
