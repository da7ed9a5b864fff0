package bench

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histograms hold microseconds from 1µs to 60s at 3 significant digits:
// 0.1% resolution everywhere, a fixed ~250 KB each.
const (
	histMin = 1
	histMax = 60_000_000
	histSig = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSig) }

// Latency summarizes a histogram in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(), Mean: h.Mean() / 1000,
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)),
		Max: ms(h.Max()),
	}
}

// Stage is the result of one rate (open loop) or concurrency (closed loop)
// step against one target.
type Stage struct {
	Mode        Mode    `json:"mode"`
	Rate        float64 `json:"offered_rate,omitempty"` // open loop, requests/s
	Concurrency int     `json:"concurrency,omitempty"`  // closed loop
	DurationS   float64 `json:"duration_s"`             // measured window

	// Offered = Sent + Unsent (open loop). Sent = Answered + Failed.
	Offered  int64 `json:"offered,omitempty"`
	Unsent   int64 `json:"unsent,omitempty"` // due but never sent: hard stop
	Sent     int64 `json:"sent"`
	Answered int64 `json:"answered"` // the target answered (allowed or denied)
	Failed   int64 `json:"failed"`   // no answer: gRPC error, timeout, transport
	// Throughput is answered requests per second over the measured window.
	Throughput float64 `json:"throughput"`

	// Latency of answered requests. In the open loop it runs from the time
	// the request was due (less the generator's timer oversleep, see
	// runOpen), so waits caused by a slow target count.
	Latency Latency `json:"latency"`
	// Service runs from the moment the request was actually sent. In the
	// open loop it is what a generator without correction would report.
	Service Latency `json:"service"`
	// SendLagMS is how late the generator sent, p99 and max, in ms; a large
	// value with a fast target means the generator itself was saturated.
	SendLagP99 float64 `json:"send_lag_p99_ms,omitempty"`
	SendLagMax float64 `json:"send_lag_max_ms,omitempty"`

	Errors    map[string]int64            `json:"errors"`    // by gRPC code name / HTTP failure
	Decisions map[string]int64            `json:"decisions"` // ok, denied_403, ...
	ByKind    map[string]map[string]int64 `json:"by_kind"`   // scenario kind -> decision or error

	Process *ProcessStage `json:"process,omitempty"`
	// Decided is how the target made its decisions in the measured window,
	// when it can say (phigate in-process): evaluated by the policy or
	// reused from its decision cache.
	Decided *DecidedStage `json:"decided,omitempty"`
}

// DecidedStage splits a stage's decisions into those the policy was
// evaluated for and those reused from the decision cache. The share
// evaluated is what keeps a cached figure honest: a pool that repeats
// flatters a cache that real traffic would miss.
type DecidedStage struct {
	Evaluated      uint64  `json:"evaluated"`
	Reused         uint64  `json:"reused"`
	EvaluatedShare float64 `json:"evaluated_share"` // 0..1
}

// DecisionCounts reads a target's decision counters since it started.
type DecisionCounts func() (evaluated, reused uint64)

func decidedSince(f DecisionCounts, evaluated0, reused0 uint64) *DecidedStage {
	e, r := f()
	d := &DecidedStage{Evaluated: e - evaluated0, Reused: r - reused0}
	if n := d.Evaluated + d.Reused; n > 0 {
		d.EvaluatedShare = float64(d.Evaluated) / float64(n)
	}
	return d
}

// recorder accumulates one stage. A mutex is enough: recording is a few
// hundred nanoseconds against request latencies of tens of microseconds.
type recorder struct {
	mu        sync.Mutex
	lat, svc  *hdrhistogram.Histogram
	lag       *hdrhistogram.Histogram
	window    *hdrhistogram.Histogram
	sent      int64
	answered  int64
	failed    int64
	winDone   int64
	winFailed int64
	errors    map[string]int64
	decisions map[string]int64
	byKind    map[string]map[string]int64
	kinds     []string
}

func newRecorder(kinds []string) *recorder {
	return &recorder{
		lat: newHist(), svc: newHist(), lag: newHist(), window: newHist(),
		errors: map[string]int64{}, decisions: map[string]int64{},
		byKind: map[string]map[string]int64{}, kinds: kinds,
	}
}

func micros(d time.Duration) int64 {
	us := d.Microseconds()
	if us < histMin {
		return histMin
	}
	if us > histMax {
		return histMax
	}
	return us
}

func (r *recorder) record(i int, latency, service, lag time.Duration, o Outcome) {
	label := o.Decision
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent++
	if lag >= 0 {
		_ = r.lag.RecordValue(micros(lag))
	}
	if o.Err != "" {
		r.failed++
		r.winFailed++
		r.errors[o.Err]++
		label = "error_" + o.Err
	} else {
		r.answered++
		r.winDone++
		r.decisions[o.Decision]++
		_ = r.lat.RecordValue(micros(latency))
		_ = r.svc.RecordValue(micros(service))
		_ = r.window.RecordValue(micros(latency))
	}
	k := r.kinds[i%len(r.kinds)]
	m := r.byKind[k]
	if m == nil {
		m = map[string]int64{}
		r.byKind[k] = m
	}
	m[label]++
}

// progress writes one line for the last interval and resets the window.
func (r *recorder) progress(w io.Writer, prefix string, elapsed, interval time.Duration) {
	r.mu.Lock()
	done, failed, p99 := r.winDone, r.winFailed, float64(r.window.ValueAtQuantile(99))/1000
	r.window.Reset()
	r.winDone, r.winFailed = 0, 0
	r.mu.Unlock()
	fmt.Fprintf(w, "%s t=%4.0fs rate=%8.0f/s failed=%d p99=%.3fms\n",
		prefix, elapsed.Seconds(), float64(done)/interval.Seconds(), failed, p99)
}

func (r *recorder) stage(s *Stage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.Sent, s.Answered, s.Failed = r.sent, r.answered, r.failed
	s.Latency, s.Service = summarize(r.lat), summarize(r.svc)
	if r.lag.TotalCount() > 0 {
		s.SendLagP99 = float64(r.lag.ValueAtQuantile(99)) / 1000
		s.SendLagMax = float64(r.lag.Max()) / 1000
	}
	s.Errors, s.Decisions, s.ByKind = r.errors, r.decisions, r.byKind
	if s.DurationS > 0 {
		s.Throughput = float64(s.Answered) / s.DurationS
	}
}

// loopParams are the per-step settings shared by both loops.
type loopParams struct {
	warmup, step, timeout time.Duration
	maxInFlight           int
	progress              io.Writer
	label                 string
	kinds                 []string
	onMeasure             func() // called when the measured window opens
}

// runOpen sends at rate for warmup+step. Request i is due at start+i/rate;
// its latency is measured from that instant. When the target falls behind,
// the generator sends the overdue requests as soon as it can (up to
// maxInFlight outstanding), exactly as independent clients would, instead
// of silently stretching the schedule.
func runOpen(ctx context.Context, t Target, rate float64, p loopParams) Stage {
	st := Stage{Mode: Open, Rate: rate, DurationS: p.step.Seconds()}
	w := beginStage(ctx, p)
	defer w.finish()
	ctx, rec, start := w.ctx, w.rec, w.start

	total := int64(rate * (p.warmup + p.step).Seconds())
	warm := int64(rate * p.warmup.Seconds())
	sem := make(chan struct{}, p.maxInFlight)
	var wg sync.WaitGroup
	var warmStarted atomic.Bool
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// overshoot is how late the generator's own timer woke for the last
	// request it had to wait for. Go timers wake up to ~1 ms late when the
	// process is otherwise idle (the netpoller sleeps in whole
	// milliseconds); that is the generator's clock, not the target, so up to
	// that much lateness is excluded from the latency. Everything beyond it
	// (waiting for an in-flight slot, catching up after a stall) is charged.
	var overshoot time.Duration
	var i int64
loop:
	for ; i < total; i++ {
		due := start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
				// The channel's value is when the timer fired, not when
				// this goroutine got to run; the latter is what matters.
				overshoot = max(0, time.Since(due))
			case <-ctx.Done():
				break loop
			}
		}
		from := due.Add(min(max(0, time.Since(due)), overshoot))
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		measured := i >= warm
		if measured && !warmStarted.Swap(true) && p.onMeasure != nil {
			p.onMeasure()
		}
		wg.Add(1)
		go func(i int64, due, from time.Time, measured bool) {
			defer wg.Done()
			defer func() { <-sem }()
			rctx, rcancel := context.WithTimeout(ctx, p.timeout)
			sent := time.Now()
			o := t.Send(rctx, int(i))
			done := time.Now()
			rcancel()
			if measured {
				rec.record(int(i), done.Sub(from), done.Sub(sent), sent.Sub(due), o)
			}
		}(i, due, from, measured)
	}
	wg.Wait()
	w.finish()
	st.Offered = total - warm
	st.Unsent = total - max(i, warm)
	rec.stage(&st)
	return st
}

// runClosed keeps n requests in flight for warmup+step and records those
// sent and completed inside the measured window.
func runClosed(ctx context.Context, t Target, n int, p loopParams) Stage {
	st := Stage{Mode: Closed, Concurrency: n, DurationS: p.step.Seconds()}
	w := beginStage(ctx, p)
	defer w.finish()
	ctx, rec, measureFrom, end := w.ctx, w.rec, w.measureFrom, w.end
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				sent := time.Now()
				if !sent.Before(end) {
					return
				}
				i := int(next.Add(1) - 1)
				rctx, rcancel := context.WithTimeout(ctx, p.timeout)
				o := t.Send(rctx, i)
				done := time.Now()
				rcancel()
				if !sent.Before(measureFrom) {
					once.Do(func() {
						if p.onMeasure != nil {
							p.onMeasure()
						}
					})
					rec.record(i, done.Sub(sent), done.Sub(sent), -1, o)
				}
			}
		}()
	}
	wg.Wait()
	w.finish()
	// Requests that started in the window but finished after it still
	// count: the window is defined by send time, so throughput stays
	// unbiased at the edges.
	rec.stage(&st)
	return st
}

// stageWindow is one step's schedule: warm-up from start, the measured
// window from measureFrom to end, and a context that ends once the last
// request's timeout has passed.
type stageWindow struct {
	ctx                     context.Context
	rec                     *recorder
	start, measureFrom, end time.Time
	cancel, stopProgress    func()
}

func beginStage(ctx context.Context, p loopParams) *stageWindow {
	w := &stageWindow{rec: newRecorder(p.kinds), start: time.Now()}
	w.measureFrom = w.start.Add(p.warmup)
	w.end = w.measureFrom.Add(p.step)
	// Nothing may be in flight past end+timeout; a tiny margin lets the
	// last requests finish on their own deadline.
	w.ctx, w.cancel = context.WithDeadline(ctx, w.end.Add(p.timeout+500*time.Millisecond))
	w.stopProgress = startProgress(w.ctx, w.rec, p, w.measureFrom)
	return w
}

// finish stops the progress line and the step's context; it may be called
// more than once.
func (w *stageWindow) finish() {
	w.stopProgress()
	w.cancel()
}

// startProgress prints one line per second once the measured window opens.
func startProgress(ctx context.Context, rec *recorder, p loopParams, from time.Time) (stop func()) {
	if p.progress == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if now.Before(from) {
					rec.mu.Lock()
					rec.window.Reset()
					rec.winDone, rec.winFailed = 0, 0
					rec.mu.Unlock()
					fmt.Fprintf(p.progress, "%s warming up\n", p.label)
					last = now
					continue
				}
				rec.progress(p.progress, p.label, now.Sub(from), now.Sub(last))
				last = now
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
