package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/internal/fskind"
)

// TestBenchModes runs the self-starting modes of `phigate-demo bench` for a couple of
// seconds at a low rate and checks that each report names both sides, that
// both answered every request, and that the decisions are the policy's and
// not an artefact (the reference Envoy never denies; phigate denies the
// forged, expired and missing tokens and the reads off the care team).
func TestBenchModes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      Setup
		cfg       Config
		names     [2]string
		refDenies bool
	}{
		{
			name:  "through Envoy with and without phigate",
			opts:  Setup{Envoy: true, TeamSize: 50},
			names: [2]string{"envoy+phigate", "envoy"},
		},
		{
			name:  "in-process with 5,000 care-team pairs",
			opts:  Setup{CareTeams: 5000, TeamSize: 50},
			cfg:   Config{Baseline: true},
			names: [2]string{"phigate", "baseline"},
		},
		{
			name:  "in-process with 2,000 distinct (practitioner, patient) pairs",
			opts:  Setup{TeamSize: 50},
			cfg:   Config{Baseline: true, Pairs: 2000},
			names: [2]string{"phigate", "baseline"},
		},
		{
			name:  "in-process against the same phigate with its audit trail elsewhere",
			opts:  Setup{TeamSize: 50, AuditReference: "ref-audit"},
			names: [2]string{"phigate", "phigate-audit-reference"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.opts.AuditReference != "" {
				tc.opts.AuditReference = filepath.Join(dir, tc.opts.AuditReference)
			}
			cfg := tc.cfg
			cfg.Mode, cfg.Rates, cfg.Step, cfg.Warmup = Open, []float64{40}, 1500*time.Millisecond, 300*time.Millisecond
			cfg.Scenario, cfg.Seed, cfg.MaxDuration = "mixed", 1, time.Minute
			rep, err := RunSetup(t.Context(), cfg, tc.opts, dir, io.Discard)
			if err != nil {
				t.Fatalf("runBench: %v", err)
			}
			if len(rep.Targets) != 2 {
				t.Fatalf("got %d targets, want 2", len(rep.Targets))
			}
			for i, tr := range rep.Targets {
				if tr.Name != tc.names[i] {
					t.Errorf("target %d is %q, want %q", i, tr.Name, tc.names[i])
				}
				if len(tr.Stages) != 1 {
					t.Fatalf("%s: got %d stages, want 1", tr.Name, len(tr.Stages))
				}
				st := tr.Stages[0]
				if st.Answered < 30 || st.Failed != 0 || st.Answered != st.Sent {
					t.Errorf("%s: sent %d, answered %d, failed %d (errors %v); want every request answered", tr.Name, st.Sent, st.Answered, st.Failed, st.Errors)
				}
				if st.Latency.P50 <= 0 || st.Latency.P99 < st.Latency.P50 {
					t.Errorf("%s: p50 %.3f ms, p99 %.3f ms: not a latency distribution", tr.Name, st.Latency.P50, st.Latency.P99)
				}
			}
			target, ref := rep.Targets[0].Stages[0].Decisions, rep.Targets[1].Stages[0].Decisions
			// phigate says how it decided: evaluated or reused, never more
			// decisions than answers (401s are decided before the policy).
			for i, tr := range rep.Targets {
				st, isPhigate := tr.Stages[0], strings.HasPrefix(tr.Name, "phigate") || strings.Contains(tr.Name, "+phigate")
				switch d := st.Decided; {
				case !isPhigate && d != nil:
					t.Errorf("%s reports decisions %+v it cannot know", tr.Name, d)
				case isPhigate && d == nil:
					t.Errorf("target %d %s: no evaluated/reused split", i, tr.Name)
				case isPhigate && (d.Evaluated == 0 || int64(d.Evaluated+d.Reused) > st.Answered+8 ||
					d.EvaluatedShare != float64(d.Evaluated)/float64(d.Evaluated+d.Reused)):
					t.Errorf("%s: %+v for %d answered", tr.Name, d, st.Answered)
				}
			}
			if tc.cfg.Pairs > 0 {
				if rep.Scenario.Pairs != tc.cfg.Pairs || rep.Calls != 4096 {
					t.Errorf("scenario pairs %d with %d calls, want %d pairs in a pool of 4096", rep.Scenario.Pairs, rep.Calls, tc.cfg.Pairs)
				}
				if !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, "2000 care-team pairs") }) {
					t.Errorf("notes %q: the in-process phigate did not load the pairs' care teams", rep.Notes)
				}
			}
			if target["ok"] == 0 || target["denied_401"] == 0 || target["denied_403"] == 0 {
				t.Errorf("%s decisions %v: want allowed requests, 401s (bad tokens) and 403s (off the care team)", tc.names[0], target)
			}
			if tc.opts.Envoy {
				for d, n := range ref {
					if d != "ok" {
						t.Errorf("Envoy without phigate answered %s %d times; it has no authorization and must pass everything", d, n)
					}
				}
				if _, err := os.Stat(filepath.Join(dir, "envoy-phigate.yaml")); err != nil {
					t.Errorf("bootstrap of the Envoy with phigate not kept: %v", err)
				}
			}
			if tc.opts.AuditReference != "" {
				// The reference is a whole phigate: the same requests get the
				// same decisions, and its records land in the directory given.
				if !maps.Equal(target, ref) {
					t.Errorf("decisions differ: phigate %v, reference %v", target, ref)
				}
				entries, err := audit.Query(tc.opts.AuditReference, audit.Filter{}, audit.QueryOptions{})
				if err != nil {
					t.Fatalf("reference audit trail: %v", err)
				}
				if st := rep.Targets[1].Stages[0]; int64(len(entries)) < st.Answered {
					t.Errorf("reference audit trail holds %d records for %d answered requests", len(entries), st.Answered)
				}
				if !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, "file system: "+fskind.Of(dir)) }) {
					t.Errorf("notes %q do not name the reference's file system", rep.Notes)
				}
			}
			if len(rep.Ratios) != 1 || rep.Ratios[0].Throughput == 0 {
				t.Errorf("ratios %+v: want one step compared", rep.Ratios)
			}
			if r := rep.Ratios[0]; r.AddedP50 != rep.Targets[0].Stages[0].Latency.P50-rep.Targets[1].Stages[0].Latency.P50 {
				t.Errorf("added p50 %.3f ms is not target p50 minus reference p50", r.AddedP50)
			}

			var table bytes.Buffer
			if err := WriteReports(rep, dir, &table); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{tc.names[0], tc.names[1], "added p50 ms", "report.svg", "evaluated", "%"} {
				if !strings.Contains(table.String(), want) {
					t.Errorf("table lacks %q:\n%s", want, table.String())
				}
			}
			var back Report
			if b, err := os.ReadFile(filepath.Join(dir, "report.json")); err != nil {
				t.Fatal(err)
			} else if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("report.json: %v", err)
			}
			if len(back.Targets) != 2 || back.Targets[0].Name != tc.names[0] {
				t.Errorf("report.json targets %+v", back.Targets)
			}
			svg, err := os.ReadFile(filepath.Join(dir, "report.svg"))
			if err != nil {
				t.Fatal(err)
			}
			if err := xml.Unmarshal(svg, new(struct{})); err != nil || !bytes.Contains(svg, []byte(tc.names[1])) {
				t.Errorf("report.svg is not well-formed or lacks %q: %v", tc.names[1], err)
			}
			if !bytes.Contains(svg, []byte(tc.names[0]+" evaluated:")) {
				t.Errorf("report.svg does not show the share %s evaluated", tc.names[0])
			}
		})
	}
}

// TestWriteCareTeamPolicy checks the generated data: exactly the pairs
// asked for, the demo's own pairs kept (so the bench's decisions do not
// change), every list at most teamSize long, and no patient twice in a list.
func TestWriteCareTeamPolicy(t *testing.T) {
	for _, tc := range []struct {
		name           string
		pairs, size    int
		wantErr        bool
		wantPractMin   int
		wantDemoListed bool
	}{
		{name: "shipped pairs only", pairs: 1200, size: 50, wantPractMin: 60, wantDemoListed: true},
		{name: "100,000 pairs in teams of 50", pairs: 100_000, size: 50, wantPractMin: 2000, wantDemoListed: true},
		{name: "fewer than the shipped data", pairs: 10, size: 50, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			got, err := writeCareTeamPolicy(dir, tc.pairs, tc.size)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want an error for %d pairs", tc.pairs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.pairs {
				t.Errorf("wrote %d pairs, want %d", got, tc.pairs)
			}
			b, err := os.ReadFile(filepath.Join(dir, "data.json"))
			if err != nil {
				t.Fatal(err)
			}
			var data struct {
				Phigate struct {
					CareTeams map[string][]string `json:"care_teams"`
				} `json:"phigate"`
			}
			if err := json.Unmarshal(b, &data); err != nil {
				t.Fatal(err)
			}
			n := 0
			for who, list := range data.Phigate.CareTeams {
				n += len(list)
				if len(list) > max(tc.size, 20) {
					t.Errorf("%s has %d patients, want at most %d", who, len(list), tc.size)
				}
				seen := map[string]bool{}
				for _, p := range list {
					if seen[p] {
						t.Errorf("%s lists %s twice", who, p)
					}
					seen[p] = true
				}
			}
			if n != tc.pairs || len(data.Phigate.CareTeams) < tc.wantPractMin {
				t.Errorf("data.json holds %d pairs over %d practitioners, want %d over at least %d", n, len(data.Phigate.CareTeams), tc.pairs, tc.wantPractMin)
			}
			onTeam := false
			for _, p := range data.Phigate.CareTeams["Practitioner/prac-001"] {
				onTeam = onTeam || p == "pat-0061"
			}
			if onTeam != tc.wantDemoListed {
				t.Errorf("prac-001 → pat-0061 listed: %v, want %v", onTeam, tc.wantDemoListed)
			}
			if _, err := os.Stat(filepath.Join(dir, "relationship.rego")); err != nil {
				t.Errorf("the policy modules were not copied: %v", err)
			}
		})
	}
}

// TestBenchOptionsExclusive checks that flags which start targets of their
// own are refused beside flags naming other targets, with the flag named.
func TestBenchOptionsExclusive(t *testing.T) {
	for _, tc := range []struct {
		o    Setup
		cfg  Config
		flag string
	}{
		{Setup{TeamSize: 50, AuditReference: "/tmp/x"}, Config{Baseline: true}, "--audit-reference"},
		{Setup{TeamSize: 50, AuditReference: "/tmp/x"}, Config{Target: "127.0.0.1:1"}, "--audit-reference"},
		{Setup{TeamSize: 50, AuditReference: "/tmp/x", Envoy: true}, Config{}, "--audit-reference"},
		{Setup{TeamSize: 50, NoDecisionCache: true}, Config{Target: "127.0.0.1:1"}, "--no-decision-cache"},
		{Setup{TeamSize: 50, Envoy: true}, Config{Baseline: true}, "--envoy"},
	} {
		err := tc.o.Validate(tc.cfg)
		if err == nil || !strings.HasPrefix(err.Error(), tc.flag+":") {
			t.Errorf("validate(%+v, %+v) = %v, want an error naming %s", tc.o, tc.cfg, err, tc.flag)
		}
	}
	if err := (Setup{TeamSize: 50, AuditReference: "/tmp/x"}).Validate(Config{}); err != nil {
		t.Errorf("--audit-reference alone: %v", err)
	}
}
