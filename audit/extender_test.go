package audit

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// zerosFail refuses the extender's writes of zeros and passes the
// committer's records through, as a disk that cannot allocate ahead would.
type zerosFail struct{ segFile }

func (z zerosFail) WriteAt(b []byte, off int64) (int, error) {
	if len(b) > 0 && &b[0] == &zeroPiece[0] {
		return 0, errors.New("no space for zeros")
	}
	return z.segFile.WriteAt(b, off)
}

// A segment that cannot be filled ahead is counted and logged once, and
// records go on being made durable by extending the file.
func TestPreallocationFailureLosesNothing(t *testing.T) {
	reg := prometheus.NewRegistry()
	core, logs := observer.New(zap.WarnLevel)
	l, cfg := openTest(t, func(c *Config) { c.SegmentMaxBytes = 1 << 20; c.CheckpointEvery = 1000 },
		WithRegisterer(reg), WithLogger(zap.New(core)))
	fill(t, l, 1, 2)
	l.ext.mu.Lock()
	l.ext.f = zerosFail{l.ext.f}
	l.ext.zeroed = l.ext.written // as if nothing were allocated ahead
	l.ext.mu.Unlock()
	fill(t, l, 3, 100)
	waitFor(t, func() bool { return testutil.ToFloat64(l.m.preallocFailures) == 1 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(l.m.preallocFailures); got != 1 {
		t.Fatalf("preallocate_failures_total = %v, want 1: a failed file is not retried", got)
	}
	if n := logs.FilterMessage("audit segment preallocation failed; appends extend the file until the next segment").Len(); n != 1 {
		t.Fatalf("%d warnings, want 1", n)
	}
	noPHI(t, logs.All())
	if rep, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{RequireCheckpointedTail: true}); err != nil || rep.Records != 102 {
		t.Fatalf("Verify: %+v %v, want 102 records", rep, err)
	}
	path := filepath.Join(cfg.Dir, segNames(t, cfg.Dir)[0])
	if end := recordsEnd(t, path); end == 0 {
		t.Fatal("no records")
	}
}

// With preallocation off the segment never runs ahead of its records.
func TestPreallocationOff(t *testing.T) {
	l, cfg := openTest(t, func(c *Config) { c.SegmentMaxBytes = 1 << 20; c.PreallocateBytes = -1 })
	fill(t, l, 1, 20)
	path := filepath.Join(cfg.Dir, segNames(t, cfg.Dir)[0])
	if st := statSize(t, path); st != recordsEnd(t, path) {
		t.Fatalf("segment is %d bytes with preallocation off, want its records' %d", st, recordsEnd(t, path))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func statSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
