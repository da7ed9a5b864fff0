package audit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppendDurable measures durable (fsynced) records per second with
// group commit at several writer counts. Each writer calls Record in a loop,
// as concurrent ext_authz checks do.
func BenchmarkAppendDurable(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			cfg := Config{Dir: b.TempDir()}
			l, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			req, d := testRequest(1, "u1", "p1"), testDecision(1, true)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if err := l.Record(b.Context(), req, d); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkEncodeDecision is the per-record CPU cost on the caller's side:
// building the AuditEvent and encoding it with the policy input.
func BenchmarkEncodeDecision(b *testing.B) {
	req, d := testRequest(1, "u1", "p1"), testDecision(1, true)
	bld := Builder{Server: "phigate"}
	now := time.Now()
	b.ReportAllocs()
	var n int
	for b.Loop() {
		p, err := encodeDecision(bld.Decision(req, d, now, false), req, d)
		if err != nil {
			b.Fatal(err)
		}
		n = len(p)
	}
	b.ReportMetric(float64(n), "bytes/record")
}
