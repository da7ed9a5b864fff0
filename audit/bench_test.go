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

// BenchmarkEncodeDecision is the per-record CPU cost on the caller's side of
// Log.Record: building the AuditEvent and encoding the stored record (event,
// policy input, decision) into a pooled buffer, which the committer returns
// to the pool once framed. "read" is a plain allowed read; "search" is a
// break-glass search whose decision carries headers, redaction directives,
// response-side enforcement and an obligation.
func BenchmarkEncodeDecision(b *testing.B) {
	for _, bc := range benchDecisions() {
		b.Run(bc.name, func(b *testing.B) {
			bld := Builder{Server: "phigate"}
			now := time.Now()
			b.ReportAllocs()
			var n int
			for b.Loop() {
				p := encodeDecision(getPayloadBuf(), bld.Decision(bc.req, bc.d, now, false), bc.req, bc.d)
				n = len(p)
				putPayloadBuf(p)
			}
			b.ReportMetric(float64(n), "bytes/record")
		})
	}
}
