package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/bench"
	"github.com/phigate/phigate/internal/fskind"
	"github.com/phigate/phigate/policy"
	regolib "github.com/phigate/phigate/rego"
	"github.com/phigate/phigate/server"
)

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("bench", stderr)
	var cfg bench.Config
	var o benchOptions
	fs.StringVar(&cfg.Target, "target", "", "ext_authz address (host:port or unix:///path), or an http:// URL for the end-to-end mode; empty starts phigate in-process")
	fs.StringVar(&cfg.Compare, "compare", "", "a second target of the same kind, measured in the same run (e.g. Envoy without phigate)")
	fs.BoolVar(&cfg.Baseline, "baseline", false, "also run the same load against a built-in no-op ext_authz server")
	fs.BoolVar(&o.envoy, "envoy", false, "end to end: start the legacy service, phigate and two Envoys (with and without phigate's filters) and compare them in one run")
	fs.StringVar(&o.policyDir, "policy", "", "policy directory or bundle for the in-process phigate (default: the embedded library)")
	fs.IntVar(&o.careTeams, "care-teams", 0, "load a generated policy whose data holds this many practitioner→patient care-team pairs (0: the shipped data)")
	fs.IntVar(&o.teamSize, "team-size", 50, "with --care-teams: patients per practitioner")
	fs.BoolVar(&o.noDecisionCache, "no-decision-cache", false, "the in-process phigate evaluates the policy for every request")
	fs.StringVar(&o.auditReference, "audit-reference", "", "also start a second in-process phigate, the same but for its audit trail, which lives in this directory, and measure it as the reference (on tmpfs, the difference is what durable appends cost)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "unrecorded load before each step (default 1s)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the bench process (generator and in-process phigate) to this file")
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
	if err := o.validate(cfg); err != nil {
		fmt.Fprintln(stderr, "phigate bench:", err)
		return 2
	}
	if *smoke {
		return benchSmoke(ctx, stdout, stderr)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(stderr, "phigate bench:", err)
		return 1
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "phigate bench: --cpuprofile:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "phigate bench: --cpuprofile:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := runBench(ctx, cfg, o, *out, stderr)
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

// benchOptions are what `phigate bench` sets up around the load generator:
// which targets it starts itself and with what policy data.
type benchOptions struct {
	envoy           bool
	careTeams       int
	teamSize        int
	policyDir       string
	cpuProfile      string
	noDecisionCache bool
	auditReference  string
}

// validate names the bad flag; the generator's own settings are checked by
// bench.Config.Validate.
func (o benchOptions) validate(cfg bench.Config) error {
	if o.envoy && (cfg.Target != "" || cfg.Compare != "" || cfg.Baseline) {
		return errors.New("--envoy: starts its own targets; drop --target, --compare and --baseline")
	}
	if o.careTeams != 0 && cfg.Target != "" {
		return errors.New("--care-teams: the generated policy is loaded by the in-process phigate; drop --target")
	}
	if o.policyDir != "" && (o.careTeams != 0 || cfg.Target != "") {
		return errors.New("--policy: the in-process phigate loads it; drop --care-teams and --target")
	}
	if o.noDecisionCache && cfg.Target != "" {
		return errors.New("--no-decision-cache: applies to the in-process phigate; drop --target (or set policy.decision_cache.disabled in the target's configuration)")
	}
	if o.auditReference != "" && (o.envoy || cfg.Target != "" || cfg.Compare != "" || cfg.Baseline) {
		return errors.New("--audit-reference: the reference is a second in-process phigate; drop --envoy, --target, --compare and --baseline")
	}
	if o.careTeams < 0 || o.careTeams > 10_000_000 {
		return fmt.Errorf("--care-teams: must be in [0, 10000000], got %d", o.careTeams)
	}
	if o.teamSize < 1 || o.teamSize > 100_000 {
		return fmt.Errorf("--team-size: must be in [1, 100000], got %d", o.teamSize)
	}
	return nil
}

// benchIdentity fills the bench's token settings so the target and the
// generator agree on key, issuer and audience.
func benchIdentity(cfg *bench.Config, dir string) {
	cfg.KeyFile = filepath.Join(dir, "bench.jwk")
	cfg.JWKSFile = filepath.Join(dir, "bench-jwks.json")
	if cfg.Issuer == "" {
		cfg.Issuer = "https://bench.phigate.local"
	}
	if cfg.Audience == "" {
		cfg.Audience = "phigate"
	}
}

// runBench runs one configuration; with no target it starts phigate
// in-process, trusting the bench's signing key.
func runBench(ctx context.Context, cfg bench.Config, o benchOptions, dir string, progress io.Writer) (*bench.Report, error) {
	benchIdentity(&cfg, dir)
	if o.envoy {
		return runBenchEnvoy(ctx, cfg, o, dir, progress)
	}
	if strings.HasPrefix(cfg.Target, "http://") || strings.HasPrefix(cfg.Target, "https://") {
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return bench.RunHTTP(ctx, cfg, progress)
	}
	var notes []string
	var ph *benchPhigate
	var refEngine *policy.Engine
	if cfg.Target == "" {
		var err error
		ph, err = startBenchPhigate(ctx, cfg, o, dir, filepath.Join(dir, "audit"))
		if err != nil {
			return nil, err
		}
		defer ph.stop()
		cfg.Target, cfg.TargetName, cfg.PID = ph.addr, "phigate", os.Getpid()
		notes = append(ph.notes, "phigate runs inside the bench process: its pid is the generator's, so CPU and RSS include the generator's own (request pool, histograms, goroutines)")
		if o.auditReference != "" {
			ref, err := startBenchPhigate(ctx, cfg, o, dir, o.auditReference)
			if err != nil {
				return nil, fmt.Errorf("--audit-reference: %w", err)
			}
			defer ref.stop()
			// Both share this process; the pid is sampled once, for the target.
			cfg.Compare, cfg.CompareName, cfg.ComparePID = ref.addr, "phigate-audit-reference", -1
			notes = append(notes, fmt.Sprintf("reference: a second in-process phigate, the same but for its audit trail in %s (file system: %s)",
				o.auditReference, fskind.Of(o.auditReference)))
			refEngine = ref.engine
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rep, err := bench.Run(ctx, cfg, progress)
	if err != nil {
		return nil, err
	}
	rep.Notes = append(rep.Notes, notes...)
	if ph != nil {
		rep.Notes = append(rep.Notes, "phigate "+ph.engine.CacheCounts().String())
	}
	if refEngine != nil {
		rep.Notes = append(rep.Notes, "phigate-audit-reference "+refEngine.CacheCounts().String())
	}
	return rep, nil
}

// benchPhigate is phigate started inside the bench process.
type benchPhigate struct {
	addr   string
	engine *policy.Engine
	notes  []string
	stop   func()
}

// startBenchPhigate starts phigate in-process on loopback, trusting the
// bench's signing key, with a tokenization key for the policy's
// tokenize directives and, when asked, the generated care-team data.
func startBenchPhigate(ctx context.Context, cfg bench.Config, o benchOptions, dir, auditDir string) (*benchPhigate, error) {
	signer, err := bench.NewSigner(cfg.KeyFile, cfg.Issuer, cfg.Audience)
	if err != nil {
		return nil, err
	}
	if err := signer.WriteJWKS(cfg.JWKSFile); err != nil {
		return nil, err
	}
	pc := &server.Config{
		Listen: server.ListenConfig{GRPC: "127.0.0.1:0", Admin: "127.0.0.1:0"},
		Log:    server.LogConfig{Level: "error"},
		JWT:    authz.JWTConfig{Issuer: cfg.Issuer, Audiences: []string{cfg.Audience}, JWKSFile: cfg.JWKSFile},
	}
	pc.Audit.Dir = auditDir
	if pc.Filters.TokenKeys, err = demoTokenKeys(dir); err != nil {
		return nil, err
	}
	ph := &benchPhigate{}
	if o.careTeams > 0 {
		pdir := filepath.Join(dir, "policy-care-teams")
		pairs, err := writeCareTeamPolicy(pdir, o.careTeams, o.teamSize)
		if err != nil {
			return nil, fmt.Errorf("--care-teams: %w", err)
		}
		pc.Policy.Source = policy.Source{Dir: pdir}
		ph.notes = append(ph.notes, fmt.Sprintf("policy: the shipped library with %d care-team pairs (%d per practitioner) from %s", pairs, o.teamSize, pdir))
	}
	if o.policyDir != "" {
		pc.Policy.Source = policySource(o.policyDir)
		ph.notes = append(ph.notes, "policy: "+o.policyDir)
	}
	if o.noDecisionCache {
		pc.Policy.DecisionCache.Disabled = true
		ph.notes = append(ph.notes, "decision cache disabled: the policy is evaluated for every request")
	}
	if err := pc.Validate(); err != nil {
		return nil, err
	}
	// The collector is paced as serve paces it (GOGC from the runtime
	// defaults unless the environment sets it). It paces the whole process,
	// so the generator and a --baseline server run under it too. serve's
	// soft memory limit is not applied: this process also holds the
	// generator (and with --envoy the legacy service), and a limit sized
	// for phigate alone would keep its collector running without pause.
	server.ApplyGCPercent(pc.Runtime)
	gc := debug.SetGCPercent(-1) // reads the setting; restored at once
	debug.SetGCPercent(gc)
	limit := "none"
	if l := debug.SetMemoryLimit(-1); l < math.MaxInt64 {
		limit = fmt.Sprintf("%d MiB", l>>20)
	}
	ph.notes = append(ph.notes, fmt.Sprintf("runtime: GOGC %d (as serve sets it), soft memory limit %s (serve's is not applied to this shared process)", gc, limit))
	sctx, cancel := context.WithCancel(ctx)
	srv, err := server.New(sctx, pc, zap.NewNop())
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(sctx) }()
	ph.addr, ph.engine = srv.GRPCAddr(), srv.Policy()
	ph.stop = func() { cancel(); <-done }
	return ph, nil
}

// writeCareTeamPolicy writes the shipped policy library into dir with its
// data.json's care_teams grown to exactly pairs practitioner→patient pairs.
// The demo population's pairs are kept, so the bench's requests get the same
// decisions; every practitioner, the bench's callers included, is topped up
// to teamSize patients with synthetic ones (pat-1201 and up), because the
// policy looks a patient up in the caller's list and a short list would
// flatter it. It returns the number of pairs written.
func writeCareTeamPolicy(dir string, pairs, teamSize int) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	var data map[string]any
	err := fs.WalkDir(regolib.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := regolib.FS.ReadFile(path)
		if err != nil {
			return err
		}
		if path == "data.json" {
			return json.Unmarshal(b, &data)
		}
		return os.WriteFile(filepath.Join(dir, filepath.FromSlash(path)), b, 0o644)
	})
	if err != nil {
		return 0, err
	}
	ph, _ := data["phigate"].(map[string]any)
	if ph == nil {
		return 0, errors.New("the shipped data.json has no phigate object")
	}
	teams := map[string][]string{}
	total := 0
	if old, ok := ph["care_teams"].(map[string]any); ok {
		for who, v := range old {
			list, _ := v.([]any)
			for _, p := range list {
				if s, ok := p.(string); ok {
					teams[who] = append(teams[who], s)
					total++
				}
			}
		}
	}
	if pairs < total {
		return 0, fmt.Errorf("must be at least the %d pairs the shipped data already holds, got %d", total, pairs)
	}
	synthetic := max(teamSize, pairs/2) // each synthetic patient is on about two teams
	next := 0
	for k := 1; total < pairs; k++ {
		who := "Practitioner/" + bench.PractitionerID(k)
		for len(teams[who]) < teamSize && total < pairs {
			teams[who] = append(teams[who], bench.PatientID(bench.Patients+1+next%synthetic))
			next++
			total++
		}
	}
	ph["care_teams"] = teams
	b, err := json.Marshal(data)
	if err != nil {
		return 0, err
	}
	return total, os.WriteFile(filepath.Join(dir, "data.json"), b, 0o644)
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
		rep, err := runBench(ctx, cfg, benchOptions{teamSize: 50}, dir, io.Discard)
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
