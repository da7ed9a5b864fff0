package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/notify"
	"github.com/phigate/phigate/server"
)

// TestBreakGlassNotifiesEndToEnd: a break-glass read through the real
// Envoy reaches the privacy office's webhook (the sink the shipped
// policy's obligation names) with the decision id, the user and the rule,
// and neither the reason typed nor the patient; the outcome is an audit
// record joined to the decision and a metric. A webhook that keeps
// failing is tried max_attempts times, the request is answered all the
// same, and the failure is audited and counted.
func TestBreakGlassNotifiesEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		outcome  string
		attempts string
	}{
		{"delivered", http.StatusNoContent, notify.Delivered, "1"},
		{"failing webhook", http.StatusServiceUnavailable, notify.Failed, "3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bodies := make(chan string, 8)
			var hits atomic.Int32
			hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				hits.Add(1)
				bodies <- string(b)
				w.WriteHeader(tc.status)
			}))
			defer hook.Close()
			var dir string
			s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) {
				dir = c.Audit.Dir
				c.Notify = notify.Config{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
					Sinks: map[string]notify.SinkConfig{"privacy-office": {Webhook: &notify.WebhookConfig{URL: hook.URL}}}}
			}})
			spec := demokeys.TokenSpec{Subject: "prac-001", Roles: []string{"physician"}, FHIRUser: "Practitioner/prac-001", AMR: []string{"pwd", "otp"}}
			r := s.Do("GET", "/fhir/Patient/pat-0005", s.Token(spec), map[string]string{"x-break-glass": "trauma bay"}, nil)
			if r.Status != 200 {
				t.Fatalf("status %d; body %.300s", r.Status, r.Body)
			}
			id := r.Header.Get(envoy.DecisionHeader)
			if id == "" {
				t.Fatal("no decision id")
			}
			var body string
			select {
			case body = <-bodies:
			case <-time.After(10 * time.Second):
				t.Fatal("the webhook heard nothing within 10s")
			}
			var p map[string]any
			if err := json.Unmarshal([]byte(body), &p); err != nil {
				t.Fatal(err)
			}
			if p["type"] != "break-glass" || p["decision_id"] != id || p["subject"] != "prac-001" || p["allowed"] != true ||
				!strings.Contains(body, `"break_glass.used"`) || p["policy_revision"] != s.Phigate.Policy().Status().Revision {
				t.Errorf("payload %s", body)
			}
			for _, secret := range []string{"trauma bay", "pat-0005"} {
				if strings.Contains(body, secret) {
					t.Errorf("the payload carries %q: %s", secret, body)
				}
			}
			ev := notificationRecord(t, dir, id)
			if got := entityDetail(ev, audit.DetailOutcome); got != tc.outcome {
				t.Errorf("audited outcome %q, want %q", got, tc.outcome)
			}
			if got := entityDetail(ev, audit.DetailAttempts); got != tc.attempts {
				t.Errorf("audited attempts %q, want %s", got, tc.attempts)
			}
			if entityDetail(ev, audit.DetailSink) != "privacy-office" {
				t.Errorf("audited sink %q", entityDetail(ev, audit.DetailSink))
			}
			if n := hits.Load(); strconv.Itoa(int(n)) != tc.attempts {
				t.Errorf("the webhook was called %d times, want %s", n, tc.attempts)
			}
			_, m := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics")
			if want := `phigate_notify_total{outcome="` + tc.outcome + `",sink="privacy-office"} 1`; !strings.Contains(m, want) {
				t.Errorf("metrics lack %s", want)
			}
			// audit query --decision lists the decision and its notification.
			es, err := audit.Query(dir, audit.Filter{DecisionID: id}, audit.QueryOptions{})
			if err != nil || len(es) != 2 || es[0].Kind != audit.KindDecision || es[1].Kind != audit.KindNotification {
				t.Errorf("records of decision %s: %d, %v", id, len(es), err)
			}
		})
	}
}

// notificationRecord waits for the notification record of a decision: it
// is written in the background, after the response.
func notificationRecord(t *testing.T, dir, id string) *audit.AuditEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		es, err := audit.Query(dir, audit.Filter{DecisionID: id, Kind: audit.KindNotification}, audit.QueryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(es) > 0 {
			return es[0].Event
		}
		if time.Now().After(deadline) {
			t.Fatal("no notification record within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func entityDetail(ev *audit.AuditEvent, typ string) string {
	for _, en := range ev.Entity {
		for _, d := range en.Detail {
			if d.Type == typ {
				return d.ValueString
			}
		}
	}
	return ""
}
