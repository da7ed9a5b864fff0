package bench

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
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/demo"
	"github.com/phigate/phigate/internal/fskind"
	"github.com/phigate/phigate/policy"
	regolib "github.com/phigate/phigate/rego"
	"github.com/phigate/phigate/server"
)

// Setup is what a bench run starts around the load generator: which
// targets it starts itself (phigate in-process, the legacy service and two
// Envoys) and with what policy data. RunSetup builds them from it, so the
// command that takes these as flags holds no orchestration of its own.
type Setup struct {
	Envoy           bool
	CareTeams       int
	TeamSize        int
	PolicyDir       string
	NoDecisionCache bool
	AuditReference  string
}

// Validate names the bad flag; the generator's own settings are checked by
// Config.Validate.
func (o Setup) Validate(cfg Config) error {
	if o.Envoy && (cfg.Target != "" || cfg.Compare != "" || cfg.Baseline) {
		return errors.New("--envoy: starts its own targets; drop --target, --compare and --baseline")
	}
	if o.CareTeams != 0 && cfg.Target != "" {
		return errors.New("--care-teams: the generated policy is loaded by the in-process phigate; drop --target")
	}
	if o.PolicyDir != "" && (o.CareTeams != 0 || cfg.Target != "") {
		return errors.New("--policy: the in-process phigate loads it; drop --care-teams and --target")
	}
	if o.NoDecisionCache && cfg.Target != "" {
		return errors.New("--no-decision-cache: applies to the in-process phigate; drop --target (or set policy.decision_cache.disabled in the target's configuration)")
	}
	if o.AuditReference != "" && (o.Envoy || cfg.Target != "" || cfg.Compare != "" || cfg.Baseline) {
		return errors.New("--audit-reference: the reference is a second in-process phigate; drop --envoy, --target, --compare and --baseline")
	}
	if o.CareTeams < 0 || o.CareTeams > 10_000_000 {
		return fmt.Errorf("--care-teams: must be in [0, 10000000], got %d", o.CareTeams)
	}
	if o.TeamSize < 1 || o.TeamSize > 100_000 {
		return fmt.Errorf("--team-size: must be in [1, 100000], got %d", o.TeamSize)
	}
	return nil
}

// benchIdentity fills the bench's token settings so the target and the
// generator agree on key, issuer and audience.
func benchIdentity(cfg *Config, dir string) {
	cfg.KeyFile = filepath.Join(dir, "bench.jwk")
	cfg.JWKSFile = filepath.Join(dir, "bench-jwks.json")
	if cfg.Issuer == "" {
		cfg.Issuer = "https://bench.phigate.local"
	}
	if cfg.Audience == "" {
		cfg.Audience = "phigate"
	}
}

// RunSetup runs one configuration, writing the bench's key, JWKS and any
// generated policy into dir; with no target it starts phigate in-process,
// trusting the bench's signing key. Everything it starts is stopped before
// it returns.
func RunSetup(ctx context.Context, cfg Config, o Setup, dir string, progress io.Writer) (*Report, error) {
	benchIdentity(&cfg, dir)
	if err := pairsCareTeams(cfg, &o); err != nil {
		return nil, err
	}
	if o.Envoy {
		return runBenchEnvoy(ctx, cfg, o, dir, progress)
	}
	if strings.HasPrefix(cfg.Target, "http://") || strings.HasPrefix(cfg.Target, "https://") {
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return RunHTTP(ctx, cfg, progress)
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
		cfg.TargetDecisions = decisionCounts(ph.engine)
		notes = append(ph.notes, "phigate runs inside the bench process: its pid is the generator's, so CPU and RSS include the generator's own (request pool, histograms, goroutines)")
		if o.AuditReference != "" {
			ref, err := startBenchPhigate(ctx, cfg, o, dir, o.AuditReference)
			if err != nil {
				return nil, fmt.Errorf("--audit-reference: %w", err)
			}
			defer ref.stop()
			// Both share this process; the pid is sampled once, for the target.
			cfg.Compare, cfg.CompareName, cfg.ComparePID = ref.addr, "phigate-audit-reference", -1
			cfg.CompareDecisions = decisionCounts(ref.engine)
			notes = append(notes, fmt.Sprintf("reference: a second in-process phigate, the same but for its audit trail in %s (file system: %s)",
				o.AuditReference, fskind.Of(o.AuditReference)))
			refEngine = ref.engine
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rep, err := Run(ctx, cfg, progress)
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

// pairsCareTeams makes the in-process phigate load the care teams a
// scenario's pairs are drawn from: --care-teams is the pairs unless given,
// and must then be the same.
func pairsCareTeams(cfg Config, o *Setup) error {
	if cfg.Target != "" && !o.Envoy {
		return nil // the target's data is its own; see bench/README.md
	}
	sc, err := loadScenarioFor(cfg)
	if err != nil || sc.Pairs == 0 {
		return err
	}
	switch {
	case o.PolicyDir != "":
		return errors.New("--pairs: draws from the care teams the bench generates; drop --policy")
	case o.CareTeams == 0:
		o.CareTeams, o.TeamSize = sc.Pairs, sc.TeamSize
	case o.CareTeams != sc.Pairs || o.TeamSize != sc.TeamSize:
		return fmt.Errorf("--care-teams %d (team size %d) and the scenario's pairs %d (team size %d) must agree", o.CareTeams, o.TeamSize, sc.Pairs, sc.TeamSize)
	}
	return nil
}

// decisionCounts reads the in-process engine's decisions, evaluated and
// reused.
func decisionCounts(e *policy.Engine) DecisionCounts {
	return func() (uint64, uint64) {
		c := e.CacheCounts()
		return c.Evaluated(), c.Hits
	}
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
func startBenchPhigate(ctx context.Context, cfg Config, o Setup, dir, auditDir string) (*benchPhigate, error) {
	signer, err := NewSigner(cfg.KeyFile, cfg.Issuer, cfg.Audience)
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
	if pc.Filters.TokenKeys, err = demo.TokenKeys(dir); err != nil {
		return nil, err
	}
	ph := &benchPhigate{}
	if o.CareTeams > 0 {
		pdir := filepath.Join(dir, "policy-care-teams")
		pairs, err := writeCareTeamPolicy(pdir, o.CareTeams, o.TeamSize)
		if err != nil {
			return nil, fmt.Errorf("--care-teams: %w", err)
		}
		pc.Policy.Source = policy.Source{Dir: pdir}
		ph.notes = append(ph.notes, fmt.Sprintf("policy: the shipped library with %d care-team pairs (%d per practitioner) from %s", pairs, o.TeamSize, pdir))
	} else if o.PolicyDir == "" {
		pdir := filepath.Join(dir, "policy-bench")
		if err := writeLibrary(pdir, func(map[string]any) error { return nil }); err != nil {
			return nil, err
		}
		pc.Policy.Source = policy.Source{Dir: pdir}
	}
	if o.PolicyDir == "" {
		ph.notes = append(ph.notes, fmt.Sprintf("usage limits raised to %.0e: the bench's identities read far beyond a clinician's thresholds; each request is still counted, none crosses a limit", liftedLimit))
	}
	if o.PolicyDir != "" {
		pc.Policy.Source = policy.SourceFor(o.PolicyDir)
		ph.notes = append(ph.notes, "policy: "+o.PolicyDir)
	}
	if o.NoDecisionCache {
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
	total := 0
	err := writeLibrary(dir, func(ph map[string]any) error {
		var err error
		total, err = addCareTeams(ph, pairs, teamSize)
		return err
	})
	return total, err
}

// liftedLimit is every usage threshold of the bench's policy: the
// generator's few identities read thousands of patients a second.
const liftedLimit = 1e12

// writeLibrary writes the shipped library into dir with its data edited
// by edit, and every usage threshold (data.phigate.bulk_read) lifted to
// liftedLimit, so that the counting is measured and no refusal is.
func writeLibrary(dir string, edit func(ph map[string]any) error) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
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
		return err
	}
	ph, _ := data["phigate"].(map[string]any)
	if ph == nil {
		return errors.New("the shipped data.json has no phigate object")
	}
	if br, ok := ph["bulk_read"].(map[string]any); ok {
		if th, ok := br["thresholds"].(map[string]any); ok {
			for _, v := range th {
				if limits, ok := v.(map[string]any); ok {
					for k := range limits {
						limits[k] = liftedLimit
					}
				}
			}
		}
	}
	if err := edit(ph); err != nil {
		return err
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "data.json"), b, 0o644)
}

// addCareTeams grows the shipped care teams to pairs relationships,
// teamSize per practitioner, with synthetic patients.
func addCareTeams(ph map[string]any, pairs, teamSize int) (int, error) {
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
		who := "Practitioner/" + PractitionerID(k)
		for len(teams[who]) < teamSize && total < pairs {
			teams[who] = append(teams[who], PatientID(Patients+1+next%synthetic))
			next++
			total++
		}
	}
	ph["care_teams"] = teams
	return total, nil
}

// WriteReports prints rep's table to stdout and writes report.json and
// report.svg into dir.
func WriteReports(rep *Report, dir string, stdout io.Writer) error {
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

// Smoke keeps the tool from rotting: a short open- and closed-loop run
// against in-process phigate with the baseline, and every report written.
// The tables go to stdout; an error names the loop that failed.
func Smoke(ctx context.Context, out string, stdout io.Writer) error {
	for _, cfg := range []Config{
		{Mode: Open, Rates: []float64{50, 100}, Baseline: true},
		{Mode: Closed, Concurrency: []int{2}, Baseline: true},
	} {
		cfg.Step, cfg.Warmup, cfg.Scenario, cfg.Seed, cfg.MaxDuration = time.Second, 200*time.Millisecond, "mixed", 1, time.Minute
		// Each loop keeps its reports in a directory of its own under out,
		// so the paths printed exist after the run.
		dir := filepath.Join(out, "smoke-"+string(cfg.Mode))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		rep, err := RunSetup(ctx, cfg, Setup{TeamSize: 50}, dir, io.Discard)
		if err == nil {
			err = WriteReports(rep, dir, stdout)
		}
		if err == nil {
			err = smokeCheck(dir)
		}
		if err != nil {
			return fmt.Errorf("%s loop: %w", cfg.Mode, err)
		}
	}
	fmt.Fprintln(stdout, "bench smoke: ok")
	return nil
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
