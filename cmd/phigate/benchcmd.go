package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/bench"
)

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("bench", stderr)
	var cfg bench.Config
	fs.StringVar(&cfg.Target, "target", "", "ext_authz address (host:port or unix:///path), or an http:// URL for the end-to-end mode; empty starts phigate in-process")
	fs.StringVar(&cfg.Compare, "compare", "", "a second target of the same kind, measured in the same run (e.g. Envoy without phigate)")
	fs.BoolVar(&cfg.Baseline, "baseline", false, "also run the same load against a built-in no-op ext_authz server")
	mode := fs.String("mode", "open", "open (constant rates, coordinated-omission corrected) or closed (fixed concurrency)")
	rates := fs.String("rates", "500,1000,2000", "open loop: requests per second per step")
	conc := fs.String("concurrency", "1,4,16,64", "closed loop: concurrency per step")
	fs.DurationVar(&cfg.Step, "step", 10*time.Second, "duration of each step")
	fs.StringVar(&cfg.Scenario, "scenario", "mixed", "built-in mix (read-mostly, mixed, adversarial) or a scenario YAML file")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the request sequence")
	fs.DurationVar(&cfg.MaxDuration, "max", 10*time.Minute, "hard limit for the whole run")
	out := fs.String("out", "bench/out", "directory for report.json and report.svg")
	smoke := fs.Bool("smoke", false, "a seconds-long low-rate run of every mode against in-process phigate and the baseline")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	var err error
	cfg.Mode = bench.Mode(*mode)
	if cfg.Rates, err = floats(*rates); err != nil {
		fmt.Fprintln(stderr, "phigate bench: --rates:", err)
		return 2
	}
	if cfg.Concurrency, err = ints(*conc); err != nil {
		fmt.Fprintln(stderr, "phigate bench: --concurrency:", err)
		return 2
	}
	if *smoke {
		return benchSmoke(ctx, stdout, stderr)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(stderr, "phigate bench:", err)
		return 1
	}
	rep, err := runBench(ctx, cfg, *out, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "phigate bench:", err)
		return 1
	}
	if err := writeReports(rep, *out, stdout); err != nil {
		fmt.Fprintln(stderr, "phigate bench:", err)
		return 1
	}
	return 0
}

// runBench runs one configuration; with no target it starts phigate
// in-process, trusting the bench's signing key.
func runBench(ctx context.Context, cfg bench.Config, dir string, progress io.Writer) (*bench.Report, error) {
	cfg.KeyFile = filepath.Join(dir, "bench.jwk")
	cfg.JWKSFile = filepath.Join(dir, "bench-jwks.json")
	if cfg.Issuer == "" {
		cfg.Issuer = "https://bench.phigate.local"
	}
	if cfg.Audience == "" {
		cfg.Audience = "phigate"
	}
	if strings.HasPrefix(cfg.Target, "http://") || strings.HasPrefix(cfg.Target, "https://") {
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return bench.RunHTTP(ctx, cfg, progress)
	}
	if cfg.Target == "" {
		signer, err := bench.NewSigner(cfg.KeyFile, cfg.Issuer, cfg.Audience)
		if err != nil {
			return nil, err
		}
		if err := signer.WriteJWKS(cfg.JWKSFile); err != nil {
			return nil, err
		}
		pc := &Config{
			Listen: ListenConfig{GRPC: "127.0.0.1:0", Admin: "127.0.0.1:0"},
			JWT:    authz.JWTConfig{Issuer: cfg.Issuer, Audiences: []string{cfg.Audience}, JWKSFile: cfg.JWKSFile},
		}
		pc.Audit.Dir = filepath.Join(dir, "audit")
		if err := pc.Validate(); err != nil {
			return nil, err
		}
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		srv, err := newServer(sctx, pc, zap.NewNop())
		if err != nil {
			return nil, err
		}
		done := make(chan error, 1)
		go func() { done <- srv.run(sctx) }()
		defer func() { cancel(); <-done }()
		cfg.Target, cfg.TargetName, cfg.PID = srv.GRPCAddr, "phigate", os.Getpid()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return bench.Run(ctx, cfg, progress)
}

func writeReports(rep *bench.Report, dir string, stdout io.Writer) error {
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	for name, write := range map[string]func(io.Writer) error{"report.json": rep.WriteJSON, "report.svg": rep.WriteSVG} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		werr := write(f)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("%s: %w", name, werr)
		}
	}
	fmt.Fprintf(stdout, "reports: %s, %s\n", filepath.Join(dir, "report.json"), filepath.Join(dir, "report.svg"))
	return nil
}

// benchSmoke keeps the tool from rotting: a short open- and closed-loop run
// against in-process phigate with the baseline, and every report written.
func benchSmoke(ctx context.Context, stdout, stderr io.Writer) int {
	dir, err := os.MkdirTemp("", "phigate-bench-smoke")
	if err != nil {
		fmt.Fprintln(stderr, "phigate bench:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	for _, cfg := range []bench.Config{
		{Mode: bench.Open, Rates: []float64{50, 100}, Baseline: true},
		{Mode: bench.Closed, Concurrency: []int{2}, Baseline: true},
	} {
		cfg.Step, cfg.Warmup, cfg.Scenario, cfg.Seed, cfg.MaxDuration = time.Second, 200*time.Millisecond, "mixed", 1, time.Minute
		rep, err := runBench(ctx, cfg, dir, io.Discard)
		if err == nil {
			err = writeReports(rep, dir, stdout)
		}
		if err == nil {
			err = smokeCheck(dir)
		}
		if err != nil {
			fmt.Fprintf(stderr, "phigate bench --smoke (%s loop): %v\n", cfg.Mode, err)
			return 1
		}
	}
	fmt.Fprintln(stdout, "bench smoke: ok")
	return 0
}

func smokeCheck(dir string) error {
	for _, name := range []string{"report.json", "report.svg"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if st.Size() == 0 {
			return errors.New(name + " is empty")
		}
	}
	return nil
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
