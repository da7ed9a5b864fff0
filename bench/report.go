package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return wrapErr(CodeReport, "json", err)
	}
	return nil
}

// WriteTable writes aligned tables: one row per target and step, then the
// ratios to the reference, then outcomes and process figures.
func (r *Report) WriteTable(w io.Writer) error {
	ew := &errWriter{w: w}
	pairs := ""
	if r.Scenario.Pairs > 0 {
		pairs = fmt.Sprintf(" pairs=%d", r.Scenario.Pairs)
	}
	fmt.Fprintf(ew, "phigate bench  mode=%s scenario=%s%s seed=%d calls=%d step=%s warmup=%s cpus=%d elapsed=%.1fs\n\n",
		r.Config.Mode, r.Scenario.Name, pairs, r.Config.Seed, r.Calls, r.Config.Step, r.Config.Warmup, r.NumCPU, r.ElapsedS)

	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
	step := "rate/s"
	if r.Config.Mode == Closed {
		step = "conc"
	}
	fmt.Fprintf(tw, "target\t%s\tsent\tanswered\tfailed\tthroughput/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\tsvc p99 ms\tcpu cores\tcpu µs/req\trss MiB\tevaluated\t\n", step)
	for _, t := range r.Targets {
		for _, s := range t.Stages {
			cpu, per, rss := "-", "-", "-"
			if s.Process != nil {
				cpu = fmt.Sprintf("%.2f", s.Process.CPUCores)
				per = fmt.Sprintf("%.1f", s.Process.CPUPerRequestUS)
				rss = fmt.Sprintf("%.1f", s.Process.RSSMiB)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%s\t%s\t\n",
				t.Name, stepLabel(s), s.Sent, s.Answered, s.Failed, s.Throughput,
				s.Latency.P50, s.Latency.P90, s.Latency.P99, s.Latency.P999, s.Latency.Max, s.Service.P99,
				cpu, per, rss, evaluatedShare(s.Decided))
		}
	}
	_ = tw.Flush()

	if len(r.Ratios) > 0 {
		fmt.Fprintf(ew, "\n%s ÷ %s\n", r.Targets[0].Name, r.Targets[1].Name)
		tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "%s\tthroughput\tp50\tp99\tp99.9\tadded p50 ms\tadded p99 ms\tadded p99.9 ms\t\n", step)
		for _, x := range r.Ratios {
			lbl := fmt.Sprintf("%g", x.Rate)
			if r.Config.Mode == Closed {
				lbl = fmt.Sprintf("%d", x.Concurrency)
			}
			fmt.Fprintf(tw, "%s\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%+.3f\t%+.3f\t%+.3f\t\n", lbl, x.Throughput, x.P50, x.P99, x.P999,
				x.AddedP50, x.AddedP99, x.AddedP999)
		}
		_ = tw.Flush()
	}
	if r.Saturation != nil {
		fmt.Fprintf(ew, "\nsaturation throughput: %s %.0f/s, %s %.0f/s, ratio %.2fx\n",
			r.Targets[0].Name, r.Saturation.Target, r.Targets[1].Name, r.Saturation.Reference, r.Saturation.Ratio)
	}

	fmt.Fprintf(ew, "\noutcomes\n")
	tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	for _, t := range r.Targets {
		for _, s := range t.Stages {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", t.Name, stepLabel(s), counts("", s.Decisions), counts("error ", s.Errors))
		}
	}
	_ = tw.Flush()
	for _, t := range r.Targets {
		if len(t.RSS) > 1 {
			lo, hi := t.RSS[0].RSSMiB, t.RSS[0].RSSMiB
			for _, x := range t.RSS {
				lo, hi = min(lo, x.RSSMiB), max(hi, x.RSSMiB)
			}
			fmt.Fprintf(ew, "\n%s rss (pid %d): first %.1f MiB, last %.1f MiB, min %.1f, max %.1f over %d samples\n",
				t.Name, t.PID, t.RSS[0].RSSMiB, t.RSS[len(t.RSS)-1].RSSMiB, lo, hi, len(t.RSS))
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(ew, "note: %s\n", n)
	}
	if ew.err != nil {
		return wrapErr(CodeReport, "table", ew.err)
	}
	return nil
}

// evaluatedShare is the table's "evaluated" cell: the share of decisions
// the policy was evaluated for, "-" when the target does not say.
func evaluatedShare(d *DecidedStage) string {
	if d == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*d.EvaluatedShare)
}

func stepLabel(s Stage) string {
	if s.Mode == Closed {
		return fmt.Sprintf("%d", s.Concurrency)
	}
	return fmt.Sprintf("%g", s.Rate)
}

func counts(prefix string, m map[string]int64) string {
	var b strings.Builder
	for _, k := range sortedKeys(m) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s%s=%d", prefix, k, m[k])
	}
	return b.String()
}

// errWriter keeps the first write error so formatting code stays linear.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
