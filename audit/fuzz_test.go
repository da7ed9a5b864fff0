package audit

import (
	"testing"
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
		if serr == nil && end != int64(len(data)) {
			t.Fatalf("parsed %d of %d bytes without error", end, len(data))
		}
		if serr != nil && serr.offset != end {
			t.Fatalf("error at %d, good frames end at %d", serr.offset, end)
		}
	})
}
