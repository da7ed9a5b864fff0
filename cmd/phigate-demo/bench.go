package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/phigate/phigate/bench"
)

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("bench", stderr)
	var cfg bench.Config
	var o bench.Setup
	var cpuProfile string
	fs.StringVar(&cfg.Target, "target", "", "ext_authz address (host:port or unix:///path), or an http:// URL for the end-to-end mode; empty starts phigate in-process")
	fs.StringVar(&cfg.Compare, "compare", "", "a second target of the same kind, measured in the same run (e.g. Envoy without phigate)")
	fs.BoolVar(&cfg.Baseline, "baseline", false, "also run the same load against a built-in no-op ext_authz server")
	fs.BoolVar(&o.Envoy, "envoy", false, "end to end: start the legacy service, phigate and two Envoys (with and without phigate's filters) and compare them in one run")
	fs.StringVar(&o.PolicyDir, "policy", "", "policy directory or bundle for the in-process phigate (default: the embedded library)")
	fs.IntVar(&o.CareTeams, "care-teams", 0, "load a generated policy whose data holds this many practitioner→patient care-team pairs (0: the shipped data)")
	fs.IntVar(&o.TeamSize, "team-size", 50, "with --care-teams or --pairs: patients per practitioner")
	fs.IntVar(&cfg.Pairs, "pairs", 0, "draw callers and patients from this many distinct (practitioner, patient) care-team pairs, which the in-process phigate loads as with --care-teams; the pool grows to as many requests (0: the scenario's, else the demo population)")
	fs.BoolVar(&o.NoDecisionCache, "no-decision-cache", false, "the in-process phigate evaluates the policy for every request")
	fs.StringVar(&o.AuditReference, "audit-reference", "", "also start a second in-process phigate, the same but for its audit trail, which lives in this directory, and measure it as the reference (on tmpfs, the difference is what durable appends cost)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "unrecorded load before each step (default 1s; an explicit 0 records from the first request, a cold start for the in-process phigate's first step)")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the bench process (generator and in-process phigate) to this file")
	mode := fs.String("mode", "open", "open (constant rates, coordinated-omission corrected) or closed (fixed concurrency)")
	rates := fs.String("rates", "500,1000,2000", "open loop: requests per second per step")
	conc := fs.String("concurrency", "1,4,16,64", "closed loop: concurrency per step")
	fs.DurationVar(&cfg.Step, "step", 10*time.Second, "duration of each step")
	fs.StringVar(&cfg.Scenario, "scenario", "mixed", "built-in mix (read-mostly, mixed, adversarial) or a scenario YAML file")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the request sequence")
	fs.IntVar(&cfg.Connections, "connections", 0, "gRPC connections, or HTTP connections per target (default 4; 64 with --envoy)")
	fs.DurationVar(&cfg.MaxDuration, "max", 10*time.Minute, "hard limit for the whole run")
	out := fs.String("out", "bench/out", "directory for report.json and report.svg")
	smoke := fs.Bool("smoke", false, "a seconds-long low-rate run of every mode against in-process phigate and the baseline")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "team-size":
			cfg.TeamSize = o.TeamSize // else a scenario's team_size stands
		case "warmup":
			// An explicit 0 measures from the first request: with phigate
			// started by the run, a cold start (empty decision and token caches).
			cfg.NoWarmup = cfg.Warmup == 0
		}
	})
	var err error
	cfg.Mode = bench.Mode(*mode)
	if cfg.Rates, err = floats(*rates); err != nil {
		fmt.Fprintln(stderr, "phigate-demo bench: --rates:", err)
		return 2
	}
	if cfg.Concurrency, err = ints(*conc); err != nil {
		fmt.Fprintln(stderr, "phigate-demo bench: --concurrency:", err)
		return 2
	}
	if err := o.Validate(cfg); err != nil {
		fmt.Fprintln(stderr, "phigate-demo bench:", err)
		return 2
	}
	if *smoke {
		if err := bench.Smoke(ctx, *out, stdout); err != nil {
			fmt.Fprintln(stderr, "phigate-demo bench --smoke:", err)
			return 1
		}
		return 0
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(stderr, "phigate-demo bench:", err)
		return 1
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "phigate-demo bench: --cpuprofile:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "phigate-demo bench: --cpuprofile:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.RunSetup(ctx, cfg, o, *out, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "phigate-demo bench:", err)
		return 1
	}
	if err := bench.WriteReports(rep, *out, stdout); err != nil {
		fmt.Fprintln(stderr, "phigate-demo bench:", err)
		return 1
	}
	return 0
}

func floats(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
