package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"
)

// Report is everything one invocation measured. Its JSON form is the
// machine-readable result; WriteTable and WriteSVG render it for people.
type Report struct {
	Started    time.Time      `json:"started"`
	Config     Config         `json:"config"`
	Scenario   *Scenario      `json:"scenario"`
	Calls      int            `json:"calls"` // distinct pre-built requests
	NumCPU     int            `json:"num_cpu"`
	GOMAXPROCS int            `json:"gomaxprocs"`
	ElapsedS   float64        `json:"elapsed_s"`
	Truncated  bool           `json:"truncated"` // the hard stop ended the run early
	Targets    []TargetReport `json:"targets"`
	// Ratios compare the target with the reference, step by step.
	Ratios []Ratio `json:"ratios,omitempty"`
	// Saturation compares the best throughput of each (closed loop).
	Saturation *Saturation `json:"saturation,omitempty"`
	Notes      []string    `json:"notes,omitempty"`
}

// TargetReport is the result of one target across all steps.
type TargetReport struct {
	Name      string      `json:"name"`
	Address   string      `json:"address"`
	Reference bool        `json:"reference"`
	PID       int         `json:"pid,omitempty"`
	Stages    []Stage     `json:"stages"`
	RSS       []RSSSample `json:"rss,omitempty"`
}

// Ratio is target ÷ reference for one step. Latency ratios above 1 mean
// the target is slower; a throughput ratio below 1 means it served less.
type Ratio struct {
	Rate        float64 `json:"offered_rate,omitempty"`
	Concurrency int     `json:"concurrency,omitempty"`
	Throughput  float64 `json:"throughput"`
	P50         float64 `json:"p50"`
	P99         float64 `json:"p99"`
	P999        float64 `json:"p999"`
	// Added is target minus reference in milliseconds: with Envoy and phigate
	// as the target and the same Envoy without phigate as the reference, what
	// phigate's filters add to each percentile. A ratio alone hides that a
	// 3x slower p50 may be 0.4 ms.
	AddedP50  float64 `json:"added_p50_ms"`
	AddedP99  float64 `json:"added_p99_ms"`
	AddedP999 float64 `json:"added_p999_ms"`
}

// Saturation is the best closed-loop throughput of each target.
type Saturation struct {
	Target    float64 `json:"target"`
	Reference float64 `json:"reference"`
	Ratio     float64 `json:"ratio"`
}

// RunHTTP is Run for HTTP targets (Envoy listeners): it refuses a gRPC
// address so that a caller comparing two Envoy set-ups cannot mix them up.
func RunHTTP(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	if kindOf(cfg.Target) != kindHTTP {
		return nil, fieldErr(CodeConfig, "Target", "RunHTTP needs an http(s):// URL")
	}
	return Run(ctx, cfg, progress)
}

// Run validates cfg, builds the scenario's requests, and drives the target
// (and the reference, when there is one) through every step, alternating
// between them step by step so that drift on a shared machine affects both.
// It stops by itself after cfg.MaxDuration at the latest. progress, when
// not nil, receives a line per second.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()

	sc, err := loadScenarioFor(cfg)
	if err != nil {
		return nil, err
	}
	signer, err := NewSigner(cfg.KeyFile, cfg.Issuer, cfg.Audience)
	if err != nil {
		return nil, err
	}
	if cfg.JWKSFile != "" {
		if err := signer.WriteJWKS(cfg.JWKSFile); err != nil {
			return nil, err
		}
	}
	calls, err := sc.Calls(cfg.Seed, signer, started)
	if err != nil {
		return nil, err
	}

	type side struct {
		t       Target
		rep     *TargetReport
		pid     int
		smp     *sampler
		decided DecisionCounts
	}
	rep := &Report{Started: started, Config: cfg, Scenario: sc, Calls: len(calls),
		NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0)}
	var sides []*side

	main, err := NewTarget(cfg.TargetName, cfg.Target, cfg.Connections)
	if err != nil {
		return nil, err
	}
	defer main.Close()
	sides = append(sides, &side{t: main, rep: &TargetReport{Name: cfg.TargetName, Address: cfg.Target}, pid: cfg.PID, decided: cfg.TargetDecisions})

	switch {
	case cfg.Baseline:
		addr := "127.0.0.1:0"
		if kindIsUnix(cfg.Target) {
			dir, err := os.MkdirTemp("", "phigate-bench-")
			if err != nil {
				return nil, wrapErr(CodeTarget, "baseline socket dir", err)
			}
			defer os.RemoveAll(dir)
			addr = "unix://" + filepath.Join(dir, "noop.sock")
		}
		noop, err := StartNoop(ctx, addr)
		if err != nil {
			return nil, err
		}
		defer noop.Stop()
		ref, err := NewGRPCTarget(cfg.CompareName, noop.Addr(), cfg.Connections)
		if err != nil {
			return nil, err
		}
		defer ref.Close()
		sides = append(sides, &side{t: ref, rep: &TargetReport{Name: cfg.CompareName, Address: noop.Addr(), Reference: true}, pid: -1})
		rep.Notes = append(rep.Notes, "baseline: in-process no-op ext_authz server on its own listener; it shares CPUs with the generator, so its CPU and RSS are not reported")
	case cfg.Compare != "":
		ref, err := NewTarget(cfg.CompareName, cfg.Compare, cfg.Connections)
		if err != nil {
			return nil, err
		}
		defer ref.Close()
		sides = append(sides, &side{t: ref, rep: &TargetReport{Name: cfg.CompareName, Address: cfg.Compare, Reference: true}, pid: cfg.ComparePID, decided: cfg.CompareDecisions})
	}

	kinds := make([]string, len(calls))
	for i, c := range calls {
		kinds[i] = c.Kind
	}
	for _, s := range sides {
		if err := s.t.Prepare(calls); err != nil {
			return nil, err
		}
		if s.pid == 0 {
			pid, err := FindPID(s.t.Address())
			if err != nil {
				rep.Notes = append(rep.Notes, s.rep.Name+": process not sampled ("+err.Error()+"); set the pid to sample it")
			}
			s.pid = pid
		}
		if s.pid > 0 {
			if _, err := procTimes(s.pid); err != nil {
				rep.Notes = append(rep.Notes, s.rep.Name+": process "+strconv.Itoa(s.pid)+" not readable: "+err.Error())
				s.pid = 0
			} else {
				s.rep.PID = s.pid
				s.smp = startSampler(ctx, s.pid, started)
			}
		}
	}

	steps := len(cfg.Rates)
	if cfg.Mode == Closed {
		steps = len(cfg.Concurrency)
	}
	for step := range steps {
		for _, s := range sides {
			if ctx.Err() != nil {
				break
			}
			p := loopParams{warmup: cfg.Warmup, step: cfg.Step, timeout: cfg.Timeout,
				maxInFlight: cfg.MaxInFlight, progress: progress, kinds: kinds}
			var mark cpuMark
			var evaluated0, reused0 uint64
			p.onMeasure = func() {
				if s.pid > 0 {
					mark = markCPU(s.pid)
				}
				if s.decided != nil {
					evaluated0, reused0 = s.decided()
				}
			}
			var st Stage
			if cfg.Mode == Open {
				p.label = fmt.Sprintf("[%s %d/%d rate %g/s]", s.rep.Name, step+1, steps, cfg.Rates[step])
				st = runOpen(ctx, s.t, cfg.Rates[step], p)
			} else {
				p.label = fmt.Sprintf("[%s %d/%d conc %d]", s.rep.Name, step+1, steps, cfg.Concurrency[step])
				st = runClosed(ctx, s.t, cfg.Concurrency[step], p)
			}
			if s.pid > 0 {
				st.Process = processStage(s.pid, mark, st.Answered)
			}
			if s.decided != nil {
				st.Decided = decidedSince(s.decided, evaluated0, reused0)
			}
			if progress != nil {
				fmt.Fprintf(progress, "%s done: answered=%d failed=%d throughput=%.0f/s p99=%.3fms\n",
					p.label, st.Answered, st.Failed, st.Throughput, st.Latency.P99)
			}
			s.rep.Stages = append(s.rep.Stages, st)
		}
	}
	if ctx.Err() != nil {
		rep.Truncated = true
		rep.Notes = append(rep.Notes, "stopped early by the hard limit (MaxDuration) or cancellation")
	}
	for _, s := range sides {
		if s.smp != nil {
			s.smp.sample()
			var err error
			s.rep.RSS, err = s.smp.series()
			if err != nil {
				rep.Notes = append(rep.Notes, s.rep.Name+": some RSS samples failed: "+err.Error())
			}
		}
		if n := onlyUnauthenticated(s.rep.Stages); n > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: every one of %d answered requests was denied 401 (unauthenticated): "+
				"does it trust the bench's signing key? Give it %s (jwt.jwks_file) and keep the same --out directory between runs, "+
				"since a new one gets a new key", s.rep.Name, n, keyHint(cfg.JWKSFile)))
		}
		rep.Targets = append(rep.Targets, *s.rep)
	}
	rep.computeRatios()
	rep.ElapsedS = time.Since(started).Seconds()
	return rep, nil
}

// loadScenarioFor loads cfg's scenario with cfg's pairs applied.
func loadScenarioFor(cfg Config) (*Scenario, error) {
	sc, err := LoadScenario(cfg.Scenario)
	if err != nil || cfg.Pairs == 0 {
		return sc, err
	}
	if err := sc.WithPairs(cfg.Pairs, cfg.TeamSize); err != nil {
		return nil, err
	}
	return sc, nil
}

// onlyUnauthenticated returns how many requests were answered when every
// answer was a 401, and 0 otherwise: a target that trusts none of the
// bench's tokens measures only its rejection path, whatever the scenario.
func onlyUnauthenticated(stages []Stage) int64 {
	var n int64
	for _, st := range stages {
		for d, c := range st.Decisions {
			if d != "denied_401" {
				return 0
			}
			n += c
		}
	}
	return n
}

func keyHint(jwks string) string {
	if jwks == "" {
		return "the bench's JWKS"
	}
	return jwks
}

func kindIsUnix(addr string) bool { return len(addr) > 7 && addr[:7] == "unix://" }

func (r *Report) computeRatios() {
	if len(r.Targets) < 2 {
		return
	}
	t, ref := r.Targets[0], r.Targets[1]
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	for i := range min(len(t.Stages), len(ref.Stages)) {
		a, b := t.Stages[i], ref.Stages[i]
		r.Ratios = append(r.Ratios, Ratio{
			Rate: a.Rate, Concurrency: a.Concurrency,
			Throughput: div(a.Throughput, b.Throughput),
			P50:        div(a.Latency.P50, b.Latency.P50),
			P99:        div(a.Latency.P99, b.Latency.P99),
			P999:       div(a.Latency.P999, b.Latency.P999),
			AddedP50:   a.Latency.P50 - b.Latency.P50,
			AddedP99:   a.Latency.P99 - b.Latency.P99,
			AddedP999:  a.Latency.P999 - b.Latency.P999,
		})
	}
	if r.Config.Mode == Closed {
		best := func(tr TargetReport) float64 {
			var m float64
			for _, s := range tr.Stages {
				m = max(m, s.Throughput)
			}
			return m
		}
		s := &Saturation{Target: best(t), Reference: best(ref)}
		s.Ratio = div(s.Target, s.Reference)
		r.Saturation = s
	}
}
