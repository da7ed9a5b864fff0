package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunSmoke drives a real no-op ext_authz server (the "target") against
// the built-in baseline, in both loops, and checks the report is coherent.
func TestRunSmoke(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
	}{
		{"open loop tcp", Config{Mode: Open, Rates: []float64{150, 300}}},
		{"closed loop tcp", Config{Mode: Closed, Concurrency: []int{1, 4}}},
		{"open loop unix", Config{Mode: Open, Rates: []float64{200}, Target: "unix"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if tc.cfg.Target == "unix" {
				addr = "unix://" + filepath.Join(t.TempDir(), "t.sock")
			}
			srv, err := StartNoop(t.Context(), addr)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Stop()
			dir := t.TempDir()
			cfg := tc.cfg
			cfg.Target = srv.Addr()
			cfg.Baseline = true
			cfg.Step = 700 * time.Millisecond
			cfg.Warmup = 200 * time.Millisecond
			cfg.Scenario = "mixed"
			cfg.Seed = 7
			cfg.PID = os.Getpid() // the target is in this process; sample it
			cfg.KeyFile = filepath.Join(dir, "bench.jwk")
			cfg.JWKSFile = filepath.Join(dir, "jwks.json")
			var progress bytes.Buffer
			rep, err := Run(t.Context(), cfg, &progress)
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, rep)
			if len(rep.Targets) != 2 || !rep.Targets[1].Reference {
				t.Fatalf("targets = %d, want target + baseline reference", len(rep.Targets))
			}
			steps := len(cfg.Rates) + len(cfg.Concurrency)
			if len(rep.Ratios) != steps {
				t.Fatalf("ratios = %d, want %d", len(rep.Ratios), steps)
			}
			for _, r := range rep.Ratios {
				if !(r.Throughput > 0) || !(r.P50 > 0) || !(r.P99 > 0) {
					t.Errorf("ratio not computed: %+v", r)
				}
			}
			if cfg.Mode == Closed && (rep.Saturation == nil || !(rep.Saturation.Ratio > 0)) {
				t.Errorf("saturation ratio missing: %+v", rep.Saturation)
			}
			if cfg.Mode == Open {
				for i, s := range rep.Targets[0].Stages {
					// The no-op answers in well under a millisecond; at these
					// rates the achieved throughput must be close to offered.
					if s.Throughput < 0.8*cfg.Rates[i] || s.Throughput > 1.2*cfg.Rates[i] {
						t.Errorf("stage %d throughput %.0f, offered %g", i, s.Throughput, cfg.Rates[i])
					}
				}
			}
			st := rep.Targets[0].Stages[0]
			if st.Process == nil || !(st.Process.RSSMiB > 0) || len(rep.Targets[0].RSS) == 0 {
				t.Errorf("process sampling missing: %+v rss=%d", st.Process, len(rep.Targets[0].RSS))
			}
			if !strings.Contains(progress.String(), "done: answered=") {
				t.Errorf("no progress lines:\n%s", progress.String())
			}

			var js bytes.Buffer
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var back Report
			if err := json.Unmarshal(js.Bytes(), &back); err != nil {
				t.Fatalf("JSON does not decode: %v", err)
			}
			if back.Targets[0].Stages[0].Answered != st.Answered {
				t.Errorf("JSON round trip: answered %d, want %d", back.Targets[0].Stages[0].Answered, st.Answered)
			}
			var tbl bytes.Buffer
			if err := rep.WriteTable(&tbl); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(tbl.String(), "target ÷ baseline") {
				t.Errorf("table lacks ratio section:\n%s", tbl.String())
			}
			var svg bytes.Buffer
			if err := rep.WriteSVG(&svg); err != nil {
				t.Fatal(err)
			}
			checkXML(t, svg.Bytes())
			if b, err := os.ReadFile(cfg.JWKSFile); err != nil || !bytes.Contains(b, []byte(`"ES256"`)) {
				t.Errorf("JWKS file not written: %v %s", err, b)
			}
			t.Logf("\n%s", tbl.String())
		})
	}
}

func checkReport(t *testing.T, rep *Report) {
	t.Helper()
	for _, tr := range rep.Targets {
		for i, s := range tr.Stages {
			if s.Sent == 0 {
				t.Fatalf("%s stage %d sent nothing", tr.Name, i)
			}
			if s.Answered+s.Failed != s.Sent {
				t.Errorf("%s stage %d: answered %d + failed %d != sent %d", tr.Name, i, s.Answered, s.Failed, s.Sent)
			}
			if s.Mode == Open && s.Sent+s.Unsent != s.Offered {
				t.Errorf("%s stage %d: sent %d + unsent %d != offered %d", tr.Name, i, s.Sent, s.Unsent, s.Offered)
			}
			var dec, errs, kinds int64
			for _, n := range s.Decisions {
				dec += n
			}
			for _, n := range s.Errors {
				errs += n
			}
			for _, m := range s.ByKind {
				for _, n := range m {
					kinds += n
				}
			}
			if dec != s.Answered || errs != s.Failed || kinds != s.Sent {
				t.Errorf("%s stage %d: decisions %d/%d errors %d/%d by-kind %d/%d", tr.Name, i, dec, s.Answered, errs, s.Failed, kinds, s.Sent)
			}
			if s.Latency.Count != s.Answered {
				t.Errorf("%s stage %d: histogram count %d, answered %d", tr.Name, i, s.Latency.Count, s.Answered)
			}
			l := s.Latency
			if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
				t.Errorf("%s stage %d: percentiles out of order: %+v", tr.Name, i, l)
			}
			if s.Failed > s.Sent/100 {
				t.Errorf("%s stage %d: %d failures against a no-op server: %v", tr.Name, i, s.Failed, s.Errors)
			}
		}
	}
}

func checkXML(t *testing.T, b []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	var root string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, b)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	if !bytes.Contains(b, []byte("<polyline")) && !bytes.Contains(b, []byte("<circle")) {
		t.Errorf("SVG has no data series")
	}
}

// A target that rejects every bench token is flagged; any other answer,
// in any stage, clears it.
func TestOnlyUnauthenticated(t *testing.T) {
	all401 := []Stage{{Decisions: map[string]int64{"denied_401": 40}}, {Decisions: map[string]int64{"denied_401": 2}}}
	if n := onlyUnauthenticated(all401); n != 42 {
		t.Errorf("all 401: %d, want 42", n)
	}
	mixed := []Stage{{Decisions: map[string]int64{"denied_401": 40}}, {Decisions: map[string]int64{"denied_401": 2, "ok": 1}}}
	if n := onlyUnauthenticated(mixed); n != 0 {
		t.Errorf("one allowed request among 401s flagged: %d", n)
	}
	if n := onlyUnauthenticated([]Stage{{}}); n != 0 {
		t.Errorf("no answers flagged: %d", n)
	}
}
