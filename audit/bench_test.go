package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppendDurable measures durable (fsynced) records per second with
// group commit at several writer counts. Each writer calls Record in a loop,
// as concurrent ext_authz checks do, and the latency of every call is kept
// for the p50, p99 and p99.9 reported beside the rate. cpu-µs/record is the
// process's user+system CPU time per record, which includes the kernel's work
// for write and fsync (journal commits), a large share of the cost under load.
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
			lat := make([][]time.Duration, writers)
			b.ResetTimer()
			cpu0 := processCPU(b)
			start := time.Now()
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mine := make([]time.Duration, 0, b.N/writers+1)
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						if err := l.Record(b.Context(), req, d); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(t0))
					}
					lat[w] = mine
				}()
			}
			wg.Wait()
			el := time.Since(start)
			cpu := processCPU(b) - cpu0
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
			if cpu0 >= 0 {
				b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/record")
			}
			reportQuantiles(b, slices.Concat(lat...))
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

// BenchmarkSyncInFlight measures what the disk gives when more than one
// write + fsync of the same file is in flight: the question behind
// pipelining the group commit. Each syncer writes a record-sized block at
// its own offset and fsyncs, in a loop; appends/s is the total. With one
// syncer it is the device's floor for a durable append, with no log around
// it: its p50/p99/p99.9 sit beside BenchmarkAppendDurable's at one writer.
func BenchmarkSyncInFlight(b *testing.B) {
	for _, syncers := range []int{1, 2} {
		b.Run(fmt.Sprintf("syncers=%d", syncers), func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "seg"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			block := make([]byte, 3400)
			var next, off atomic.Int64
			var wg sync.WaitGroup
			lat := make([][]time.Duration, syncers)
			b.ResetTimer()
			start := time.Now()
			for s := range syncers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mine := make([]time.Duration, 0, b.N/syncers+1)
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						if _, err := f.WriteAt(block, off.Add(int64(len(block)))-int64(len(block))); err != nil {
							b.Error(err)
							return
						}
						if err := f.Sync(); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(t0))
					}
					lat[s] = mine
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
			reportQuantiles(b, slices.Concat(lat...))
		})
	}
}

// reportQuantiles reports the p50, p99 and p99.9 of one call's latencies,
// taken as the probe takes them.
func reportQuantiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	p := phaseOf("", lat)
	b.ReportMetric(p.P50*1e3, "p50-µs")
	b.ReportMetric(p.P99*1e3, "p99-µs")
	b.ReportMetric(p.P999*1e3, "p99.9-µs")
}

// BenchmarkAppendPaced offers records at a fixed rate, as ext_authz checks
// arrive at a steady 1,000 per second, each from its own goroutine started
// on schedule, and reports what a caller waits for durability (p50, p99,
// p99.9 from the call to its return): the second phase of
// `phigate audit probe`. b.N is the number of records, so -benchtime 5000x
// is five seconds. Run beside other load, it shows how the wait grows when
// the CPUs are shared.
func BenchmarkAppendPaced(b *testing.B) {
	const rate = 1000
	req, d := testRequest(1, "u1", "p1"), testDecision(1, true)
	b.ResetTimer()
	start := time.Now()
	lat, err := probeLog(b.Context(), b.TempDir(), req, d, ProbeOptions{Rate: rate, Duration: time.Duration(b.N) * time.Second / rate})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(len(lat))/time.Since(start).Seconds(), "records/s")
	reportQuantiles(b, lat)
}

// BenchmarkAppendPolicyInput is the policy input's share of
// BenchmarkEncodeDecision: the request as the record stores it.
func BenchmarkAppendPolicyInput(b *testing.B) {
	for _, bc := range benchDecisions() {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 4<<10)
			b.ReportAllocs()
			for b.Loop() {
				buf = appendPolicyInput(buf[:0], bc.req)
			}
		})
	}
}
