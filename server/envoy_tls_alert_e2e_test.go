package server_test

import (
	"crypto/tls"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/phigate/phigate/internal/stacktest"
)

const (
	rulesFile     = "../deploy/prometheus/phigate-rules.yaml"
	envoyTLSAlert = "EnvoyDownstreamTLSHandshakeFailures"
)

// The counters of a refused handshake at Envoy's client-facing listener
// (Envoy 1.40): a client without a certificate, one whose certificate the
// client CA did not issue, one that speaks no TLS Envoy accepts.
const (
	sslNoCert    = "envoy_listener_ssl_fail_verify_no_cert"
	sslVerify    = "envoy_listener_ssl_fail_verify_error"
	sslConnError = "envoy_listener_ssl_connection_error"
	sslHandshake = "envoy_listener_ssl_handshake" // completed
)

// TestEnvoyTLSHandshakeAlert: the handshakes the real Envoy's mTLS
// listener refuses raise exactly the counters EnvoyDownstreamTLSHandshakeFailures
// reads, under the listener's address, by one per handshake and in one
// counter each; a good client's request raises none of them. promtool
// then evaluates the rule file's expression over the scrapes taken before
// and after: the refusals are over the threshold, the good request is
// not, and the alert fires when the refusals go on.
func TestEnvoyTLSHandshakeAlert(t *testing.T) {
	expr := alertExpr(t, envoyTLSAlert)
	counted := []string{sslConnError, sslNoCert, sslVerify}
	if got := exprMetrics(expr); !slices.Equal(got, slices.Sorted(slices.Values(counted))) {
		t.Fatalf("%s reads %v, want %v (the counters this test proves)", envoyTLSAlert, got, counted)
	}

	ts := startTLSStack(t)
	other := newPKI(t)
	// Envoy names a listener without a stat_prefix by its address, ':' as '_'.
	listener := strings.ReplaceAll(ts.Envoy.Listen, ":", "_")
	scrape := func() map[string]float64 { return listenerCounters(t, ts.Stack, listener) }
	noCert := func(max uint16) func() *tls.Config {
		return func() *tls.Config {
			c := ts.clientConfig(ts.envoyName)
			c.MaxVersion = max
			return c
		}
	}
	refused := []struct {
		name    string
		cfg     func() *tls.Config
		counter string
	}{
		{"no certificate, TLS 1.3", noCert(0), sslNoCert},
		{"no certificate, TLS 1.2", noCert(tls.VersionTLS12), sslNoCert},
		{"certificate from another CA", func() *tls.Config {
			return ts.clientConfig(ts.envoyName, other.clientCert(t, 5, reminders))
		}, sslVerify},
		{"TLS 1.1", func() *tls.Config {
			c := ts.clientConfig(ts.envoyName, ts.pki.clientCert(t, 6, reminders))
			c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			return c
		}, sslConnError},
	}

	before := scrape()
	for _, name := range append(counted, sslHandshake) {
		if v, ok := before[name]; !ok || v != 0 {
			t.Fatalf("fresh Envoy: %s{envoy_listener_address=%q} = %v (present %v), want 0", name, listener, v, ok)
		}
	}
	const rounds = 2
	want := maps.Clone(before)
	for range rounds {
		for _, tc := range refused {
			if err := handshakeAndRead(ts.Envoy.Listen, tc.cfg()); err == nil {
				t.Fatalf("%s: the handshake succeeded", tc.name)
			}
			want[tc.counter]++
		}
	}
	// Envoy counts a refusal as it sends the alert; the client may read
	// the alert a moment before the counter is visible on /stats.
	var after map[string]float64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if after = scrape(); maps.Equal(after, want) || time.Now().After(deadline) {
			break
		}
	}
	if !maps.Equal(after, want) {
		t.Fatalf("after %d rounds of refused handshakes: %v, want %v", rounds, after, want)
	}

	ts.Up.Reset()
	resp, body, err := ts.get(t, ts.clientConfig(ts.envoyName, ts.pki.clientCert(t, 400, reminders)), "/fhir/Patient/pat-0001")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("good client: %v %v %.200s", resp, err, body)
	}
	want[sslHandshake]++
	good := scrape()
	if !maps.Equal(good, want) {
		t.Fatalf("after a good client's request: %v, want %v (only %s up by one)", good, want, sslHandshake)
	}

	t.Run("promtool evaluates the rule", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("promtool is not installed (make services installs Debian's prometheus package)")
			}
			t.Skip("promtool not installed (make services installs it)")
		}
		rules, err := filepath.Abs(rulesFile)
		if err != nil {
			t.Fatal(err)
		}
		lbl := map[string]string{"job": "envoy", "envoy_listener_address": listener}
		// series is one counter over scrapes a minute apart.
		series := func(values func(name string) string) []map[string]string {
			var in []map[string]string
			for _, name := range counted {
				in = append(in, map[string]string{
					"series": fmt.Sprintf(`%s{job="envoy",envoy_listener_address=%q}`, name, listener),
					"values": values(name),
				})
			}
			return in
		}
		num := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
		two := func(a, b map[string]float64) func(string) string {
			return func(name string) string { return num(a[name]) + " " + num(b[name]) }
		}
		// The refusals of one round each minute, or none, for half an hour.
		sustained := func(per map[string]float64) func(string) string {
			return func(name string) string { return fmt.Sprintf("%s+%sx30", num(after[name]), num(per[name]/rounds)) }
		}
		var total float64
		delta := map[string]float64{}
		for _, name := range counted {
			delta[name] = after[name] - before[name]
			total += delta[name]
		}
		type exprTest struct {
			Expr       string           `yaml:"expr"`
			EvalTime   string           `yaml:"eval_time"`
			ExpSamples []map[string]any `yaml:"exp_samples"`
		}
		type alertTest struct {
			EvalTime  string           `yaml:"eval_time"`
			Alertname string           `yaml:"alertname"`
			ExpAlerts []map[string]any `yaml:"exp_alerts"`
		}
		type test struct {
			Name        string              `yaml:"name"`
			Interval    string              `yaml:"interval"`
			InputSeries []map[string]string `yaml:"input_series"`
			Exprs       []exprTest          `yaml:"promql_expr_test,omitempty"`
			Alerts      []alertTest         `yaml:"alert_rule_test,omitempty"`
		}
		labels := fmt.Sprintf(`{job="envoy",envoy_listener_address=%q}`, listener)
		perMinute := total / rounds
		file := map[string]any{
			"rule_files":          []string{rules},
			"evaluation_interval": "1m",
			"tests": []test{
				{Name: "the scrapes before and after the refusals", Interval: "1m", InputSeries: series(two(before, after)),
					Exprs: []exprTest{{Expr: expr, EvalTime: "1m", ExpSamples: []map[string]any{{"labels": labels, "value": total}}}}},
				{Name: "the scrapes before and after the good request", Interval: "1m", InputSeries: series(two(after, good)),
					Exprs: []exprTest{{Expr: expr, EvalTime: "1m", ExpSamples: []map[string]any{}}}},
				{Name: "a round of refusals each minute", Interval: "1m", InputSeries: series(sustained(delta)),
					Alerts: []alertTest{
						{EvalTime: "5m", Alertname: envoyTLSAlert, ExpAlerts: []map[string]any{}}, // pending
						{EvalTime: "25m", Alertname: envoyTLSAlert, ExpAlerts: []map[string]any{{
							"exp_labels": map[string]string{"severity": "warning", "job": lbl["job"], "envoy_listener_address": listener},
							"exp_annotations": map[string]string{
								"summary":     "Envoy refuses TLS handshakes on its " + listener + " listener",
								"description": num(perMinute*10) + " client handshakes refused by Envoy in envoy over 10m.",
								"runbook_url": "docs/runbooks.md#envoydownstreamtlshandshakefailures",
							},
						}}},
					}},
				{Name: "good requests only", Interval: "1m", InputSeries: series(sustained(map[string]float64{})),
					Alerts: []alertTest{{EvalTime: "25m", Alertname: envoyTLSAlert, ExpAlerts: []map[string]any{}}}},
			},
		}
		raw, err := yaml.Marshal(file)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "envoy-tls-alert.test.yaml")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(promtool, "test", "rules", path).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool test rules: %v\n%s\n%s", err, out, raw)
		}
		t.Logf("%s", strings.TrimSpace(string(out)))
	})
}

// alertExpr returns the expression of the named alert in the rule file.
func alertExpr(t *testing.T, alert string) string {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatal(err)
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == alert {
				return r.Expr
			}
		}
	}
	t.Fatalf("%s has no alert %s", rulesFile, alert)
	return ""
}

// exprMetrics returns the Envoy metric names an expression reads, sorted:
// names in groupings and matchers are labels, not metrics.
func exprMetrics(expr string) []string {
	cut := regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\{[^}]*\}`).ReplaceAllString(expr, " ")
	names := regexp.MustCompile(`\benvoy_[a-z0-9_]+`).FindAllString(cut, -1)
	slices.Sort(names)
	return slices.Compact(names)
}

// listenerCounters scrapes Envoy's /stats/prometheus and returns the
// listener's ssl counters whose only label is its address.
func listenerCounters(t *testing.T, s *stacktest.Stack, listener string) map[string]float64 {
	t.Helper()
	status, body := stacktest.GetBody(t, "http://"+s.Envoy.Admin+"/stats/prometheus")
	if status != 200 {
		t.Fatalf("envoy /stats/prometheus: %d", status)
	}
	out := map[string]float64{}
	line := regexp.MustCompile(`(?m)^(envoy_listener_ssl_[a-z_]+)\{envoy_listener_address="` + regexp.QuoteMeta(listener) + `"\} (\S+)$`)
	for _, m := range line.FindAllStringSubmatch(body, -1) {
		if !slices.Contains([]string{sslConnError, sslNoCert, sslVerify, sslHandshake}, m[1]) {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("%s: %v", m[0], err)
		}
		out[m[1]] = v
	}
	return out
}
