package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The alert rules are held three ways. The Prometheus rule library
// (github.com/prometheus/prometheus/model/rulefmt) would pull the whole
// Prometheus module into go.mod (go mod graph grows from 863 to 1176
// edges, eleven more modules are required, and golang.org/x/crypto,
// x/net, genproto, prometheus/common and go-openapi move to newer
// versions), so the file is instead checked by promtool, Prometheus'
// own checker (Debian's prometheus package; make services installs it),
// which parses every expression; by a strict decode into the rule file's
// shape here, which refuses unknown keys; and by the metric names, each
// of which must be in docs/metrics.md (Envoy's in its own table there).

const rulesFile = "prometheus/phigate-rules.yaml"

type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval,omitempty"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// requiredAlerts are the conditions docs/runbooks.md promises an alert for.
var requiredAlerts = []string{
	"PhigatePermissionDenialSpike", "PhigateBulkReadAlert", "PhigateAuditAppendFailing",
	"PhigateAuditLag", "PhigateStoreDown", "PhigatePolicyReloadFailing",
	"PhigateTLSHandshakeFailures", "EnvoyDownstreamTLSHandshakeFailures",
}

func TestAlertRules(t *testing.T) {
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	metricsDoc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	runbooks, err := os.ReadFile("../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `((?:phigate|envoy)_[a-z_]+)` \\|").FindAllStringSubmatch(string(metricsDoc), -1) {
		documented[m[1]] = true
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)`).FindAllStringSubmatch(string(runbooks), -1) {
		anchors[strings.ToLower(m[1])] = true
	}
	metricName := regexp.MustCompile(`\b(?:phigate|envoy)_[a-z0-9_]+`)
	// Label names (envoy_listener_address) are in groupings and matchers,
	// not metric names: those are cut before the names are read.
	labelLists := regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\{[^}]*\}`)
	var alerts []string
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: a name and rules are required", g.Name)
		}
		for _, r := range g.Rules {
			name := r.Alert
			alerts = append(alerts, name)
			if name == "" || r.Record != "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("group %s: rule %q: an alert with an expression (no recording rules here)", g.Name, name)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", name, r.For, err)
				}
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", name, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: summary and description annotations are required", name)
			}
			if u := r.Annotations["runbook_url"]; u != "docs/runbooks.md#"+strings.ToLower(name) || !anchors[strings.ToLower(name)] {
				t.Errorf("%s: runbook_url %q: want docs/runbooks.md#%s with a section \"## %s\" there", name, u, strings.ToLower(name), name)
			}
			for _, m := range metricName.FindAllString(labelLists.ReplaceAllString(r.Expr, " "), -1) {
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suffix); ok && documented[b] {
						base = b
					}
				}
				if !documented[base] {
					t.Errorf("%s: %s is not in docs/metrics.md", name, m)
				}
			}
		}
	}
	for _, want := range requiredAlerts {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s", want)
		}
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not installed (make services installs Debian's prometheus package)")
		}
		t.Skip("promtool not installed: the expressions are not parsed (make services installs it)")
	}
	out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}
