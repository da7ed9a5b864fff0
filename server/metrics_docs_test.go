package server_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/phigate/phigate/internal/stacktest"
)

// TestMetricsDocsAndDashboard: against a running phigate through the real
// Envoy, every metric the Grafana dashboard queries exists, every phigate
// metric exposed is in docs/metrics.md, and every metric documented is
// exposed (or is one that only appears once its event happens, listed
// below with why).
func TestMetricsDocsAndDashboard(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	doc := s.Token(stacktest.Physician(1))
	for _, p := range []string{"/fhir/Patient/pat-0001", "/fhir/Patient/pat-0002", "/fhir/Observation?patient=pat-0001", "/fhir/metadata"} {
		s.Do("GET", p, doc, nil, nil)
	}
	s.Do("GET", "/fhir/Patient/pat-0001", "", nil, nil)
	_, body := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics")
	exposed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (phigate_\S+) `).FindAllStringSubmatch(body, -1) {
		exposed[m[1]] = true
	}
	if len(exposed) < 15 {
		t.Fatalf("only %d phigate metrics exposed", len(exposed))
	}

	b, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(phigate_[a-z_]+)` \\|").FindAllStringSubmatch(string(b), -1) {
		documented[m[1]] = true
	}
	// Vectors with no series until their event happens.
	onEvent := map[string]string{
		"phigate_audit_sink_dropped_total":        "a sink's queue overflows",
		"phigate_audit_sink_errors_total":         "a sink fails to deliver",
		"phigate_ingest_messages_total":           "a feed message arrives",
		"phigate_ingest_message_duration_seconds": "a feed message arrives",
		// Registered only when their section is configured.
		"phigate_policy_bundle_last_success_timestamp_seconds": "policy.bundle_server is set",
		"phigate_policy_bundle_failures_total":                 "policy.bundle_server is set",
		"phigate_policy_bundle_active_revision_info":           "policy.bundle_server is set",
		"phigate_decision_logs_sent_total":                     "decision_logs is set",
		"phigate_decision_logs_dropped_total":                  "decision_logs is set",
		"phigate_decision_logs_upload_failures_total":          "decision_logs is set",
		"phigate_decision_logs_last_success_timestamp_seconds": "decision_logs is set",
		"phigate_decision_logs_buffered_events":                "decision_logs is set",
		"phigate_tls_handshake_failures_total":                 "listen.tls is set",
		"phigate_throttled_total":                              "abuse.buckets names a bucket",
		"phigate_notify_queue_depth":                           "a notify sink is configured",
		"phigate_notify_delivery_seconds":                      "a notify sink is configured",
		// Shipping to the central audit runs with a PostgreSQL store only
		// (server/central_e2e_test.go holds these to what is exposed).
		"phigate_audit_ship_lag_records":       "a PostgreSQL store is configured",
		"phigate_audit_ship_lag_seconds":       "a PostgreSQL store is configured",
		"phigate_audit_ship_records_total":     "a PostgreSQL store is configured",
		"phigate_audit_ship_checkpoints_total": "a PostgreSQL store is configured",
		"phigate_audit_ship_errors_total":      "a PostgreSQL store is configured",
		"phigate_audit_ship_halted":            "a PostgreSQL store is configured",
	}
	for name := range exposed {
		if !documented[name] {
			t.Errorf("%s is exposed but not in docs/metrics.md", name)
		}
	}
	for name := range documented {
		if !exposed[name] && onEvent[name] == "" {
			t.Errorf("docs/metrics.md describes %s, which phigate does not expose", name)
		}
	}

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	raw, err := os.ReadFile("../docs/grafana/phigate-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	var queried []string
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range regexp.MustCompile(`phigate_[a-z_]+`).FindAllString(tg.Expr, -1) {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(m, suffix); ok && exposed[base] {
						m = base
					}
				}
				if !exposed[m] {
					t.Errorf("panel %q queries %s, which phigate does not expose", p.Title, m)
				}
				queried = append(queried, m)
			}
		}
	}
	for _, must := range []string{"phigate_decisions_total", "phigate_audit_append_failures_total", "phigate_extproc_responses_total"} {
		if !slices.Contains(queried, must) {
			t.Errorf("the dashboard does not show %s", must)
		}
	}
}
