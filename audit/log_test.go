package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func TestVerifyCleanLog(t *testing.T) {
	l, cfg := openTest(t, nil)
	fill(t, l, 1, 60)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{RequireCheckpointedTail: true})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Records != 60 || rep.Checkpointed != 60 || rep.Segments < 2 {
		t.Fatalf("report = %+v, want 60 records, all checkpointed, several segments", rep)
	}
	// Reopen continues the chain in place.
	l2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l2, 61, 7)
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err = VerifyKeyFile(cfg.Dir, PublicKeyPath(cfg.SigningKeyFile), VerifyOptions{RequireCheckpointedTail: true})
	if err != nil || rep.Records != 67 {
		t.Fatalf("after reopen: %+v, %v; want 67 records", rep, err)
	}
}

// tamperCase mutates a closed log and says where Verify must complain.
type tamperCase struct {
	name     string
	mutate   func(t *testing.T, dir string) (wantFile string, wantOffset int64)
	wantCode error
}

func TestVerifyDetectsTampering(t *testing.T) {
	const records = 60
	cases := []tamperCase{
		{"flip a payload byte", func(t *testing.T, dir string) (string, int64) {
			name := segNames(t, dir)[0]
			data, fr := segFrames(t, dir, name)
			data[fr[3].Offset+headerLen+10] ^= 0x01
			writeFile(t, filepath.Join(dir, name), data)
			return name, fr[3].Offset
		}, ErrChainBroken},
		{"flip a stored hash byte", func(t *testing.T, dir string) (string, int64) {
			name := segNames(t, dir)[1]
			data, fr := segFrames(t, dir, name)
			data[fr[1].Offset+fr[1].Size-1] ^= 0x80
			writeFile(t, filepath.Join(dir, name), data)
			return name, fr[1].Offset
		}, ErrChainBroken},
		{"delete a record", func(t *testing.T, dir string) (string, int64) {
			name := segNames(t, dir)[0]
			data, fr := segFrames(t, dir, name)
			out := append(bytes.Clone(data[:fr[2].Offset]), data[fr[3].Offset:]...)
			writeFile(t, filepath.Join(dir, name), out)
			return name, fr[2].Offset
		}, ErrChainBroken},
		{"swap two records", func(t *testing.T, dir string) (string, int64) {
			name := segNames(t, dir)[0]
			data, fr := segFrames(t, dir, name)
			a, b := fr[1], fr[2]
			out := bytes.Clone(data[:a.Offset])
			out = append(out, data[b.Offset:b.Offset+b.Size]...)
			out = append(out, data[a.Offset:a.Offset+a.Size]...)
			out = append(out, data[b.Offset+b.Size:]...)
			writeFile(t, filepath.Join(dir, name), out)
			return name, a.Offset
		}, ErrChainBroken},
		{"insert a forged record", func(t *testing.T, dir string) (string, int64) {
			// The forger links the new record correctly to its predecessor;
			// the record after it then no longer follows.
			name := segNames(t, dir)[0]
			data, fr := segFrames(t, dir, name)
			forged, _ := appendFrame(nil, fr[2].Seq, fr[2].Prev, 0, []byte(`{"v":1,"kind":"decision","event":{}}`))
			out := bytes.Clone(data[:fr[2].Offset])
			out = append(out, forged...)
			out = append(out, data[fr[2].Offset:]...)
			writeFile(t, filepath.Join(dir, name), out)
			return name, fr[2].Offset + int64(len(forged))
		}, ErrChainBroken},
		{"truncate a middle segment mid-frame", func(t *testing.T, dir string) (string, int64) {
			name := segNames(t, dir)[0]
			data, fr := segFrames(t, dir, name)
			last := fr[len(fr)-1]
			cut := last.Offset + 20
			writeFile(t, filepath.Join(dir, name), data[:cut])
			return name, last.Offset
		}, ErrTruncated},
		{"truncate a middle segment on a frame boundary", func(t *testing.T, dir string) (string, int64) {
			name := segNames(t, dir)[0]
			data, fr := segFrames(t, dir, name)
			last := fr[len(fr)-1]
			writeFile(t, filepath.Join(dir, name), data[:last.Offset])
			return name, last.Offset
		}, ErrTruncated},
		{"truncate the last segment", func(t *testing.T, dir string) (string, int64) {
			name := lastNonEmpty(t, dir)
			data, fr := segFrames(t, dir, name)
			writeFile(t, filepath.Join(dir, name), data[:fr[len(fr)-1].Offset])
			return name, fr[len(fr)-1].Offset
		}, ErrTruncated},
		{"delete the newest segments", func(t *testing.T, dir string) (string, int64) {
			name := lastNonEmpty(t, dir)
			for _, n := range segNames(t, dir) {
				if n >= name {
					os.Remove(filepath.Join(dir, n))
				}
			}
			return name, -1
		}, ErrTruncated},
		{"delete the newest records' segment only", func(t *testing.T, dir string) (string, int64) {
			name := lastNonEmpty(t, dir)
			os.Remove(filepath.Join(dir, name))
			names := segNames(t, dir)
			return names[len(names)-1], 0
		}, ErrChainBroken},
		{"delete a middle segment", func(t *testing.T, dir string) (string, int64) {
			names := segNames(t, dir)
			os.Remove(filepath.Join(dir, names[1]))
			return names[2], -1
		}, ErrChainBroken},
		{"rewrite the chain after an edit", func(t *testing.T, dir string) (string, int64) {
			// An attacker without the signing key rewrites a record and
			// recomputes every later hash: only the checkpoints catch it.
			return rewriteFrom(t, dir, 7)
		}, ErrCheckpointMismatch},
		{"replace a checkpoint with one signed by another key", func(t *testing.T, dir string) (string, int64) {
			return replaceCheckpoint(t, dir, 2, func(c *Checkpoint) {
				_, evil, _ := ed25519.GenerateKey(rand.Reader)
				*c = signCheckpoint(evil, c.Size, [32]byte{1}, c.Segment, c.Offset, timeOf(c))
			})
		}, ErrSignature},
		{"edit a checkpoint's head", func(t *testing.T, dir string) (string, int64) {
			return replaceCheckpoint(t, dir, 1, func(c *Checkpoint) { c.Head = strings.Repeat("ab", 32) })
		}, ErrSignature},
		{"reorder checkpoints", func(t *testing.T, dir string) (string, int64) {
			p := filepath.Join(dir, checkpointsFile)
			b, _ := os.ReadFile(p)
			lines := strings.SplitAfter(string(b), "\n")
			lines[1], lines[2] = lines[2], lines[1]
			writeFile(t, p, []byte(strings.Join(lines, "")))
			return checkpointsFile, int64(len(lines[0]) + len(lines[1]))
		}, ErrCheckpointMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, cfg := openTest(t, nil)
			fill(t, l, 1, records)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{}); err != nil {
				t.Fatalf("untouched log: %v", err)
			}
			wantFile, wantOff := tc.mutate(t, cfg.Dir)
			rep, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{})
			if !errors.Is(err, tc.wantCode) {
				t.Fatalf("Verify = %v, want %v", err, tc.wantCode)
			}
			pos, ok := PositionOf(err)
			if !ok || rep.Bad == nil || *rep.Bad != pos {
				t.Fatalf("no position: err %v report %+v", err, rep)
			}
			if pos.File != wantFile || (wantOff >= 0 && pos.Offset != wantOff) {
				t.Fatalf("position = %+v, want file %s offset %d", pos, wantFile, wantOff)
			}
			if ExitCode(err) == ExitOK || ExitCode(err) == ExitOther {
				t.Fatalf("ExitCode(%v) = %d, want a specific code", err, ExitCode(err))
			}
		})
	}
}

// lastNonEmpty is the newest segment holding records (a rotation leaves an
// empty newest segment behind).
func lastNonEmpty(t *testing.T, dir string) string {
	names := segNames(t, dir)
	for i := len(names) - 1; i >= 0; i-- {
		if _, fr := segFrames(t, dir, names[i]); len(fr) > 0 {
			return names[i]
		}
	}
	t.Fatal("no records")
	return ""
}

func timeOf(c *Checkpoint) time.Time { tm, _ := time.Parse(time.RFC3339Nano, c.Time); return tm }

// rewriteFrom edits record seq and recomputes the chain after it, keeping
// every frame where it was. Returns where the first checkpoint at or after
// seq sits.
func rewriteFrom(t *testing.T, dir string, seq uint64) (string, int64) {
	t.Helper()
	var prev [32]byte
	wantFile, wantOff := "", int64(-1)
	for _, name := range segNames(t, dir) {
		data, frames := segFrames(t, dir, name)
		var out []byte
		for _, f := range frames {
			payload := f.Payload
			if f.Seq == seq {
				payload = bytes.Replace(bytes.Clone(payload), []byte(`"read"`), []byte(`"vread"`), 1)
				if bytes.Equal(payload, f.Payload) {
					t.Fatal("edit did not change the record")
				}
			}
			var h [32]byte
			out, h = appendFrame(out, f.Seq, prev, f.Flags, payload)
			if f.Seq >= seq && f.Seq%5 == 0 && wantOff < 0 {
				wantFile, wantOff = name, int64(len(out))-f.Size
			}
			prev = h
		}
		_ = data
		writeFile(t, filepath.Join(dir, name), out)
	}
	return wantFile, wantOff
}

// replaceCheckpoint rewrites line i (0-based) of the checkpoints file.
func replaceCheckpoint(t *testing.T, dir string, i int, edit func(*Checkpoint)) (string, int64) {
	t.Helper()
	p := filepath.Join(dir, checkpointsFile)
	b, _ := os.ReadFile(p)
	lines := strings.SplitAfter(string(b), "\n")
	var c Checkpoint
	if err := json.Unmarshal([]byte(lines[i]), &c); err != nil {
		t.Fatal(err)
	}
	edit(&c)
	nb, _ := json.Marshal(&c)
	var off int64
	for _, l := range lines[:i] {
		off += int64(len(l))
	}
	lines[i] = string(nb) + "\n"
	writeFile(t, p, []byte(strings.Join(lines, "")))
	return checkpointsFile, off
}

func TestRecoverTornTail(t *testing.T) {
	// A crash while appending leaves the file cut short; one while
	// overwriting the segment's preallocated zeros leaves whole sectors of
	// the commit unwritten. Either way the tail is set aside and the log
	// resumes after its last whole record. Each tear returns where the
	// torn bytes begin and how many records stay.
	lastFrame := func(t *testing.T, path string) frame {
		data, _ := os.ReadFile(path)
		frames, _ := parseFrames(data)
		return frames[len(frames)-1]
	}
	cases := []struct {
		name     string
		prealloc int64
		tear     func(t *testing.T, path string, end int64) (int64, uint64)
	}{
		{"half a frame header", -1, func(t *testing.T, path string, end int64) (int64, uint64) {
			writeAt(t, path, end, []byte("PG\x01\x00\x00\x00"))
			return end, 12
		}},
		{"frame without its hash", -1, func(t *testing.T, path string, end int64) (int64, uint64) {
			fr, _ := appendFrame(nil, 999, [32]byte{}, 0, []byte(`{"v":1}`))
			writeAt(t, path, end, fr[:len(fr)-5])
			return end, 12
		}},
		{"frame whose later sectors were not written", 0, func(t *testing.T, path string, end int64) (int64, uint64) {
			lf := lastFrame(t, path)
			from := (lf.Offset + 600) / 512 * 512 // a sector boundary inside the frame
			writeAt(t, path, from, make([]byte, end-from))
			return lf.Offset, 11
		}},
		{"commit whose first sector was not written", 0, func(t *testing.T, path string, end int64) (int64, uint64) {
			lf := lastFrame(t, path)
			to := (lf.Offset + 512) / 512 * 512
			writeAt(t, path, lf.Offset, make([]byte, to-lf.Offset))
			return lf.Offset, 11
		}},
		{"frame cut in the middle of a commit's sectors", 0, func(t *testing.T, path string, end int64) (int64, uint64) {
			lf := lastFrame(t, path)
			from := (lf.Offset + 1024) / 512 * 512
			writeAt(t, path, from, make([]byte, 512))
			return lf.Offset, 11
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, cfg := openTest(t, func(c *Config) {
				c.CheckpointEvery = 1000
				c.SegmentMaxBytes = 1 << 20
				c.PreallocateBytes = tc.prealloc
			})
			fill(t, l, 1, 12)
			l.abandon() // crash: records 1..12 durable, no final checkpoint
			names := segNames(t, cfg.Dir)
			seg := names[len(names)-1]
			path := filepath.Join(cfg.Dir, seg)
			end := recordsEnd(t, path)
			if tc.prealloc == 0 {
				// The zeros a commit overwrites: the extender's, however far
				// it got before the crash.
				if err := os.Truncate(path, end+minPrealloc); err != nil {
					t.Fatal(err)
				}
			}
			tornAt, records := tc.tear(t, path, end)
			if _, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{}); err == nil {
				t.Fatal("Verify accepted a torn tail")
			}
			l2, err := Open(cfg)
			if err != nil {
				t.Fatalf("Open after crash: %v", err)
			}
			rec := l2.Recovery()
			if rec.TornSegment != seg || rec.TornOffset != tornAt || rec.Records != records || rec.QuarantineSegment != "" {
				t.Fatalf("recovery = %+v, want torn at %s offset %d with %d records", rec, seg, tornAt, records)
			}
			if _, err := os.Stat(path + ".torn"); err != nil {
				t.Fatalf("torn bytes not kept: %v", err)
			}
			fill(t, l2, int(records)+1, 3)
			if err := l2.Close(); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify(cfg.Dir, l2.PublicKey(), VerifyOptions{RequireCheckpointedTail: true})
			if err != nil || rep.Records != records+3 {
				t.Fatalf("Verify after recovery: %+v %v, want %d records", rep, err, records+3)
			}
		})
	}
}

// Zeros after the last record are space not yet written, whether the
// extender put them there or the file system did in a crash: the trail
// verifies, Open reports nothing torn and appends over them, and a clean
// Close leaves the segment holding its records only.
func TestZeroTailIsReused(t *testing.T) {
	for _, prealloc := range []int64{0, -1} {
		t.Run(fmt.Sprintf("preallocate=%d", prealloc), func(t *testing.T) {
			l, cfg := openTest(t, func(c *Config) {
				c.CheckpointEvery = 1000
				c.SegmentMaxBytes = 1 << 20
				c.PreallocateBytes = prealloc
			})
			fill(t, l, 1, 12)
			l.abandon()
			path := filepath.Join(cfg.Dir, segNames(t, cfg.Dir)[0])
			end := recordsEnd(t, path)
			if err := os.Truncate(path, end+300); err != nil {
				t.Fatal(err)
			}
			if rep, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{}); err != nil || rep.Records != 12 {
				t.Fatalf("Verify with a zero tail: %+v %v, want 12 records", rep, err)
			}
			l2, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if rec := l2.Recovery(); rec.TornSegment != "" || rec.QuarantineSegment != "" || rec.Records != 12 {
				t.Fatalf("recovery = %+v, want 12 records and nothing set aside", rec)
			}
			fill(t, l2, 13, 3)
			if err := l2.Close(); err != nil {
				t.Fatal(err)
			}
			if rep, err := Verify(cfg.Dir, l2.PublicKey(), VerifyOptions{RequireCheckpointedTail: true}); err != nil || rep.Records != 15 {
				t.Fatalf("Verify after reuse: %+v %v, want 15 records", rep, err)
			}
			if st, err := os.Stat(path); err != nil || st.Size() != recordsEnd(t, path) {
				t.Fatalf("closed segment is %v bytes, want its records' %d", st.Size(), recordsEnd(t, path))
			}
		})
	}
}

// The live segment runs ahead of its records in zeros, which every reader
// stops at; a rotated one holds its records only.
func TestPreallocatedSegments(t *testing.T) {
	l, cfg := openTest(t, func(c *Config) { c.SegmentMaxBytes = 1 << 20; c.CheckpointEvery = 10 })
	fill(t, l, 1, 40)
	path := filepath.Join(cfg.Dir, segNames(t, cfg.Dir)[0])
	waitFor(t, func() bool {
		st, err := os.Stat(path)
		return err == nil && st.Size() >= recordsEnd(t, path)+minPrealloc/2
	})
	if rep, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{}); err != nil || rep.Records != 40 {
		t.Fatalf("Verify of a live preallocated segment: %+v %v", rep, err)
	}
	entries, err := Query(cfg.Dir, Filter{}, QueryOptions{})
	if err != nil || len(entries) != 40 {
		t.Fatalf("query of a live preallocated segment: %d records, %v; want 40", len(entries), err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Segments rotated away are cut to their records.
	l, cfg = openTest(t, func(c *Config) { c.SegmentMaxBytes = 16 << 10 })
	fill(t, l, 1, 60)
	names := segNames(t, cfg.Dir)
	if len(names) < 3 {
		t.Fatalf("%d segments, want rotation", len(names))
	}
	for _, name := range names[:len(names)-1] {
		p := filepath.Join(cfg.Dir, name)
		if st, err := os.Stat(p); err != nil || st.Size() != recordsEnd(t, p) {
			t.Fatalf("rotated segment %s is %d bytes, want its records' %d", name, st.Size(), recordsEnd(t, p))
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// recordsEnd is where the records of a segment end.
func recordsEnd(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	frames, serr := parseFrames(data)
	if serr != nil {
		t.Fatalf("%s: %s", path, serr.detail)
	}
	if len(frames) == 0 {
		return 0
	}
	lf := frames[len(frames)-1]
	return lf.Offset + lf.Size
}

func appendTo(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func TestGroupCommitConcurrent(t *testing.T) {
	reg := prometheus.NewRegistry()
	l, cfg := openTest(t, func(c *Config) { c.CheckpointEvery = 100; c.SegmentMaxBytes = 64 << 10 }, WithRegisterer(reg))
	const writers, each = 32, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				n := w*each + i
				req := testRequest(n, fmt.Sprintf("w%d", w), "p1")
				if err := l.Record(t.Context(), req, testDecision(n, true)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Record: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{RequireCheckpointedTail: true})
	if err != nil || rep.Records != writers*each {
		t.Fatalf("Verify = %+v, %v; want %d records", rep, err, writers*each)
	}
	entries, err := Query(cfg.Dir, Filter{}, QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e.Decision.ID] {
			t.Fatalf("decision %s recorded twice", e.Decision.ID)
		}
		seen[e.Decision.ID] = true
	}
	if len(seen) != writers*each {
		t.Fatalf("%d distinct decisions, want %d", len(seen), writers*each)
	}
	hist := map[string]*dto.Histogram{}
	h, _ := reg.Gather()
	for _, mf := range h {
		if m := mf.GetMetric(); len(m) == 1 && m[0].GetHistogram() != nil {
			hist[mf.GetName()] = m[0].GetHistogram()
		}
	}
	batches := hist["phigate_audit_batch_records"].GetSampleCount()
	if batches == 0 || batches >= writers*each {
		t.Fatalf("%d commits for %d records: writers were not grouped", batches, writers*each)
	}
	// Every caller's wait is observed once, and a wait holds at least one
	// write+fsync, so the waits add up to no less than the commits' time
	// spread over their records' callers.
	wait, commit := hist["phigate_audit_record_wait_seconds"], hist["phigate_audit_append_seconds"]
	if wait.GetSampleCount() != writers*each {
		t.Fatalf("record_wait_seconds counted %d waits, want %d", wait.GetSampleCount(), writers*each)
	}
	if wait.GetSampleSum() < commit.GetSampleSum() {
		t.Fatalf("callers waited %.4fs in all, less than the %.4fs the commits took", wait.GetSampleSum(), commit.GetSampleSum())
	}
	t.Logf("%d records in %d group commits", writers*each, batches)
}

func TestRecordAfterCloseFails(t *testing.T) {
	l, _ := openTest(t, nil)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	err := l.Record(t.Context(), testRequest(1, "u", "p"), testDecision(1, true))
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after Close = %v, want ErrClosed", err)
	}
}

func TestRecordFailsWhenDiskFails(t *testing.T) {
	// A segment that cannot be written must turn into an error for the
	// caller (the decision path denies), and every later record must fail
	// too: the file's state after a failed write is unknown.
	l, _ := openTest(t, nil)
	defer l.Close()
	fill(t, l, 1, 2)
	l.seg.Close() // the committer's next write fails with "file already closed"
	err := l.Record(t.Context(), testRequest(3, "u", "p"), testDecision(3, true))
	if !errors.Is(err, ErrIO) {
		t.Fatalf("Record on failed disk = %v, want ErrIO", err)
	}
	err = l.Record(t.Context(), testRequest(4, "u", "p"), testDecision(4, true))
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after failure = %v, want ErrClosed", err)
	}
}

func TestSigningKeyFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	k1, err := LoadOrCreateSigningKey(p)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %o, want 600", st.Mode().Perm())
	}
	k2, err := LoadOrCreateSigningKey(p)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("reload: %v, same=%v", err, k1.Equal(k2))
	}
	pub, err := LoadPublicKey(PublicKeyPath(p))
	if err != nil || !pub.Equal(k1.Public()) {
		t.Fatalf("public key: %v", err)
	}
	os.Chmod(p, 0o644)
	if _, err := LoadOrCreateSigningKey(p); !errors.Is(err, ErrConfig) {
		t.Fatalf("world-readable key = %v, want ErrConfig", err)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"no dir", Config{}, "dir"},
		{"tiny segment", Config{Dir: "x", SegmentMaxBytes: 10}, "segment_max_bytes"},
		{"tiny preallocation", Config{Dir: "x", PreallocateBytes: 4096}, "preallocate_bytes"},
		{"short age", Config{Dir: "x", SegmentMaxAge: 1}, "segment_max_age"},
		{"negative checkpoint", Config{Dir: "x", CheckpointEvery: -1}, "checkpoint_every"},
		{"two key sources", Config{Dir: "x", EncryptionKeyFile: "f", EncryptionKeyEnv: "E"}, "encryption_key_file"},
		{"bad sink", Config{Dir: "x", Sinks: []SinkConfig{{Type: "kafka"}}}, "sinks[0].type"},
		{"syslog without port", Config{Dir: "x", Sinks: []SinkConfig{{Type: "syslog", Address: "host"}}}, "sinks[0].address"},
		{"key inside dir", Config{Dir: "x", SigningKeyFile: "x/k"}, "signing_key_file"},
		{"witness inside dir", Config{Dir: "x", WitnessFile: "./x/sub/w.json"}, "witness_file"},
		{"record cap above the frame limit", Config{Dir: "x", MaxRecordBytes: MaxFramePayload + 1}, "max_record_bytes"},
		{"record cap too small", Config{Dir: "x", MaxRecordBytes: 100}, "max_record_bytes"},
		{"plain syslog off-host", Config{Dir: "x", Sinks: []SinkConfig{{Type: "syslog", Address: "siem:514"}}}, "sinks[0].tls"},
		{"ok", Config{Dir: "x"}, ""},
		{"key beside dir", Config{Dir: "x", SigningKeyFile: "x.key", WitnessFile: "../w.json"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field) || !errors.Is(err, ErrConfig)):
				t.Fatalf("Validate = %v, want ErrConfig naming %s", err, tc.field)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	cases := []struct {
		name         string
		maxBytes     int64
		advance      time.Duration
		records      int
		wantSegments int
	}{
		{"by size", 16 << 10, 0, 20, 5},
		// r1 and r2 share a segment (r2 finds it 2h old and rotates), r3
		// rotates again: seg 1, seg 3, and an empty seg 4.
		{"by age", 1 << 20, 2 * time.Hour, 3, 3},
		{"neither", 1 << 20, time.Minute, 3, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			l, cfg := openTest(t, func(c *Config) {
				c.SegmentMaxBytes, c.SegmentMaxAge, c.CheckpointEvery = tc.maxBytes, time.Hour, 1000
			}, WithClock(clock))
			for i := 1; i <= tc.records; i++ {
				fill(t, l, i, 1)
				mu.Lock()
				now = now.Add(tc.advance)
				mu.Unlock()
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{RequireCheckpointedTail: true})
			if err != nil || int(rep.Records) != tc.records {
				t.Fatalf("Verify: %+v %v", rep, err)
			}
			if rep.Segments != tc.wantSegments {
				names := segNames(t, cfg.Dir)
				t.Fatalf("%d segments, want %d: %v", rep.Segments, tc.wantSegments, names)
			}
			// Every rotation left a checkpoint naming the segment it closed.
			if rep.Checkpoints < tc.wantSegments-1 {
				t.Fatalf("%d checkpoints for %d segments", rep.Checkpoints, tc.wantSegments)
			}
		})
	}
}

// TestCheckpointByTime: on a quiet trail, records are vouched for by a
// checkpoint CheckpointInterval after the last one, without waiting for
// CheckpointEvery records or for shutdown; with nothing new, no checkpoint
// is written.
func TestCheckpointByTime(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	l, cfg := openTest(t, func(c *Config) {
		c.CheckpointEvery, c.CheckpointInterval, c.SegmentMaxBytes = 1000, time.Minute, 1<<20
	}, WithClock(clock))
	count := func() int {
		t.Helper()
		_, cps, _, err := readCheckpoints(cfg.Dir)
		if err != nil {
			t.Fatal(err)
		}
		return len(cps)
	}
	waitFor := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second) // the committer ticks every second
		for count() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%d checkpoints, want %d", count(), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	base := count()
	fill(t, l, 1, 3)
	advance(30 * time.Second)
	time.Sleep(1500 * time.Millisecond) // a tick passes with the interval not yet up
	if got := count(); got != base {
		t.Fatalf("%d checkpoints before the interval, want %d", got, base)
	}
	advance(31 * time.Second)
	waitFor(base + 1) // by the tick, no record needed
	_, cps, _, _ := readCheckpoints(cfg.Dir)
	if last := cps[len(cps)-1].Checkpoint; last.Size != 3 {
		t.Fatalf("checkpoint covers %d records, want 3", last.Size)
	}
	advance(2 * time.Minute)
	time.Sleep(1500 * time.Millisecond)
	if got := count(); got != base+1 {
		t.Fatalf("%d checkpoints with nothing new, want %d", got, base+1)
	}
	fill(t, l, 4, 1)
	advance(2 * time.Minute)
	fill(t, l, 5, 1) // due at this record: the commit signs it
	waitFor(base + 2)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{RequireCheckpointedTail: true}); err != nil {
		t.Fatal(err)
	}
}

// A checkpoint is written beside the committer, and its failure still
// stops the log: records past a checkpoint that could not be written are
// refused, never taken on the chain's word alone.
func TestCheckpointFailureStopsRecording(t *testing.T) {
	reg := prometheus.NewRegistry()
	wdir := filepath.Join(t.TempDir(), "witness")
	l, cfg := openTest(t, func(c *Config) {
		c.CheckpointEvery, c.SegmentMaxBytes = 5, 1<<20
		c.WitnessFile = filepath.Join(wdir, "witness.json")
	}, WithRegisterer(reg))
	fill(t, l, 1, 5)
	waitFor(t, func() bool {
		_, cps, _, _ := readCheckpoints(cfg.Dir)
		return len(cps) >= 1 && cps[len(cps)-1].Checkpoint.Size == 5
	})
	// The witness's directory becomes a file: the next checkpoint fails.
	if err := os.RemoveAll(wdir); err != nil {
		t.Fatal(err)
	}
	writeFile(t, wdir, []byte("not a directory"))
	var refused error
	for i := 6; i < 200 && refused == nil; i++ {
		refused = l.Record(t.Context(), testRequest(i, "u1", "p1"), testDecision(i, true))
		if refused == nil && i%5 == 0 {
			time.Sleep(20 * time.Millisecond) // let the checkpointer get to it
		}
	}
	if refused == nil {
		t.Fatal("records still taken after a checkpoint failed")
	}
	if got := testutil.ToFloat64(l.m.appendFailures); got != 1 {
		t.Fatalf("append failures %v, want 1", got)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close after a failure: %v", err)
	}
	// What was taken is on disk and verifies.
	if _, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{}); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}
