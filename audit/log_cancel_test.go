package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// A request whose context is already cancelled (the client went away, or
// the proxy gave up) still made a decision, usually a denial, and the trail
// must hold it: the decision path's context bounds how long the caller
// waits, never whether the record is kept.
func TestRecordWithCancelledContextIsKept(t *testing.T) {
	l, cfg := openTest(t, func(c *Config) { c.CheckpointEvery = 1000; c.SegmentMaxBytes = 1 << 20 })
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	const writers, each = 8, 50 // 400 denials
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				n := w*each + i
				err := l.Record(ctx, testRequest(n, fmt.Sprintf("u%d", w), "p1"), testDecision(n, false))
				// The caller may be told its record is not confirmed yet (it
				// stopped waiting), never that the record was not kept.
				if err != nil && !errors.Is(err, context.Canceled) {
					errs <- fmt.Errorf("Record %d: %w", n, err)
				}
				if errors.Is(err, ErrClosed) {
					errs <- fmt.Errorf("Record %d refused: %w", n, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := Query(cfg.Dir, Filter{}, QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if e.Decision == nil {
			continue
		}
		if e.Decision.Allow {
			t.Fatalf("decision %s recorded as an allow", e.Decision.ID)
		}
		seen[e.Decision.ID] = true
	}
	if len(seen) != writers*each {
		t.Fatalf("%d of %d denials with a cancelled context are in the trail", len(seen), writers*each)
	}
	if _, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{RequireCheckpointedTail: true}); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

// notWritten reads phigate_audit_records_not_written_total by reason.
func notWritten(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "phigate_audit_records_not_written_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" {
					out[lp.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// noPHI fails when an operational log entry carries anything of the
// record: the patient, the user or the token of testRequest.
func noPHI(t *testing.T, entries []observer.LoggedEntry) {
	t.Helper()
	for _, e := range entries {
		text := e.Message
		for k, v := range e.ContextMap() {
			text += " " + k + "=" + fmt.Sprint(v)
		}
		for _, s := range []string{"p-secret", "u-secret", "secret-token"} {
			if strings.Contains(text, s) {
				t.Errorf("log entry %q carries record content %q", text, s)
			}
		}
	}
}

// A record the log cannot take is never a silence: the caller gets an
// error (and so denies), a counter names why, and an error log says so
// without any of the record's content.
func TestRecordNotWrittenIsLoud(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		core, logs := observer.New(zap.DebugLevel)
		l, _ := openTest(t, nil, WithRegisterer(reg), WithLogger(zap.New(core)))
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		for i, c := range []context.Context{t.Context(), ctx} {
			err := l.Record(c, testRequest(i, "u-secret", "p-secret"), testDecision(i, false))
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("Record %d after Close = %v, want ErrClosed", i, err)
			}
		}
		if got := notWritten(t, reg)["closed"]; got != 2 {
			t.Fatalf("records_not_written_total{reason=closed} = %v, want 2", got)
		}
		if n := logs.FilterMessage("audit record not written").FilterField(zap.String("reason", "closed")).Len(); n != 2 {
			t.Fatalf("%d error logs for records not written, want 2", n)
		}
		noPHI(t, logs.All())
	})

	t.Run("queue_full", func(t *testing.T) {
		// The committer is held inside a write that cannot finish (a pipe
		// nobody reads), the one-slot queue is taken, and the next record
		// waits for space only as long as the log allows, whatever its
		// own context says.
		reg := prometheus.NewRegistry()
		core, logs := observer.New(zap.DebugLevel)
		l, _ := openTest(t, func(c *Config) { c.MaxBatch = 1; c.PreallocateBytes = -1 },
			WithRegisterer(reg), WithLogger(zap.New(core)), WithQueueWait(50*time.Millisecond))
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		seg := l.seg
		l.seg = pw // the committer reads it only after the send below
		l.ext.mu.Lock()
		l.ext.f = pipeAt{pw}
		l.ext.mu.Unlock()
		big := testRequest(0, "u-secret", "p-secret")
		big.Query["q"] = []string{strings.Repeat("x", 256<<10)} // more than a pipe holds
		results := make(chan error, 2)
		go func() { results <- l.Record(t.Context(), big, testDecision(0, false)) }()
		// A byte in the pipe means the committer is inside the write, which
		// cannot finish while the rest of the record does not fit.
		if _, err := io.ReadFull(pr, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		go func() {
			results <- l.Record(t.Context(), testRequest(1, "u-secret", "p-secret"), testDecision(1, false))
		}()
		waitFor(t, func() bool { return len(l.reqs) == 1 })

		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		start := time.Now()
		err = l.Record(ctx, testRequest(2, "u-secret", "p-secret"), testDecision(2, false))
		if CodeOf(err) != CodeIO || errors.Is(err, context.Canceled) {
			t.Fatalf("Record into a full queue = %v, want an io_error that is not the context's", err)
		}
		if waited := time.Since(start); waited < 40*time.Millisecond {
			t.Fatalf("gave up after %s: the cancelled context cut the wait short", waited)
		}
		if got := notWritten(t, reg)["queue_full"]; got != 1 {
			t.Fatalf("records_not_written_total{reason=queue_full} = %v, want 1", got)
		}
		if n := logs.FilterMessage("audit record not written").FilterField(zap.String("reason", "queue_full")).Len(); n != 1 {
			t.Fatalf("%d error logs for the record not queued, want 1", n)
		}

		// Let the write through: the pipe cannot be synced, so both
		// queued records fail, and are counted, as records not written.
		go io.Copy(io.Discard, pr)
		for range 2 {
			if err := <-results; err == nil {
				t.Fatal("a record written to a pipe reported durable")
			}
		}
		l.Close()
		seg.Close()
		pr.Close()
		got := notWritten(t, reg)
		if got["write_failed"]+got["failed"] != 2 {
			t.Fatalf("records_not_written_total = %v, want the 2 records of the failed write counted", got)
		}
		noPHI(t, logs.All())
	})
}

// pipeAt writes to a pipe whatever the offset.
type pipeAt struct{ *os.File }

func (p pipeAt) WriteAt(b []byte, _ int64) (int, error) { return p.Write(b) }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
