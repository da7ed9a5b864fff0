package server_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/bundletest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/policy"
	"github.com/phigate/phigate/policy/decisionlog"
	"github.com/phigate/phigate/server"
)

// startPhigate runs a whole phigate (server.New and Run) with mutate
// applied to the test configuration, and a gRPC client for it.
func startPhigate(t *testing.T, mutate func(*server.Config)) (*server.Server, authv3.AuthorizationClient, *demokeys.Keys) {
	t.Helper()
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := stacktest.ServerConfig(t, keys)
	mutate(cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, zap.NewNop())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return srv, authv3.NewAuthorizationClient(conn), keys
}

// TestPolicyFromBundleServer: a phigate whose policy comes from a bundle
// server is not ready and denies until the first signed bundle arrives,
// then decides with it, and decides differently once the server
// publishes a new revision; an unsigned bundle pushed meanwhile changes
// nothing.
func TestPolicyFromBundleServer(t *testing.T) {
	signer := bundletest.NewSigner(t, "release")
	bs := bundletest.NewServer(t, "/bundles/phigate.tar.gz")
	srv, client, keys := startPhigate(t, func(c *server.Config) {
		c.Policy.BundleServer = policy.BundleServerConfig{
			URL:     bs.URL,
			Polling: policy.BundlePolling{MinDelay: 50 * time.Millisecond, MaxDelay: 100 * time.Millisecond},
			Signing: &policy.BundleSigning{Keys: map[string]policy.BundleKey{"release": {KeyFile: signer.PublicFile}}},
		}
	})
	tok, err := keys.Mint(stacktest.Physician(1))
	if err != nil {
		t.Fatal(err)
	}
	check := func() codes.Code {
		resp, err := client.Check(t.Context(), stacktest.CheckRequest("GET", "/fhir/Patient/pat-0001", tok))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return codes.Code(resp.GetStatus().GetCode())
	}
	ready := func() (int, string) { return stacktest.GetBody(t, "http://"+srv.AdminAddr()+"/readyz") }

	if code, body := ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before any bundle = %d %s, want 503", code, body)
	}
	if got := check(); got != codes.PermissionDenied {
		t.Fatalf("Check before any bundle = %v, want PermissionDenied (fail closed)", got)
	}

	lib, err := policy.Source{}.Load()
	if err != nil {
		t.Fatal(err)
	}
	bs.Publish(bundletest.FromBundle(t, lib, "library-1", signer))
	waitUntil(t, func() bool { return srv.Policy().Status().Revision == "library-1" })
	if code, body := ready(); code != http.StatusOK || !strings.Contains(body, `"revision":"library-1"`) {
		t.Fatalf("/readyz with the library = %d %s, want 200 at library-1", code, body)
	}
	if got := check(); got != codes.OK {
		t.Fatalf("physician reading their patient under the library = %v, want OK", got)
	}

	// Unsigned: refused, the library keeps deciding.
	closed := "package phigate.authz\n\ndecision := {\"allow\": false, \"status\": 403, \"reason\": \"closed\"}\n"
	bs.Publish(bundletest.Build(t, bundletest.Options{Modules: map[string]string{"authz.rego": closed}, Revision: "closed-unsigned"}))
	waitUntil(t, func() bool { return srv.Policy().Status().LastError != "" })
	if got, rev := check(), srv.Policy().Status().Revision; got != codes.OK || rev != "library-1" {
		t.Fatalf("after an unsigned push: %v at %s, want OK at library-1", got, rev)
	}

	bs.Publish(bundletest.Build(t, bundletest.Options{Modules: map[string]string{"authz.rego": closed}, Revision: "closed-1", Signer: signer}))
	waitUntil(t, func() bool { return srv.Policy().Status().Revision == "closed-1" })
	if got := check(); got != codes.PermissionDenied {
		t.Fatalf("after the server published closed-1: %v, want PermissionDenied", got)
	}
	_, metrics := stacktest.GetBody(t, "http://"+srv.AdminAddr()+"/metrics")
	for _, want := range []string{`phigate_policy_bundle_active_revision_info{revision="closed-1"} 1`, `phigate_policy_bundle_failures_total{reason="signature"}`,
		"phigate_policy_bundle_last_success_timestamp_seconds "} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestDecisionLogsThroughServer: decisions made by a whole phigate reach
// a decision log receiver in OPA's shape, with the audit's decision ids,
// and a patient id, a search value and the break-glass reason the
// requests carried appear nowhere in what was sent.
func TestDecisionLogsThroughServer(t *testing.T) {
	var mu sync.Mutex
	var payload strings.Builder
	var events []map[string]any
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		b, _ := io.ReadAll(zr)
		var evs []map[string]any
		if err := json.Unmarshal(b, &evs); err != nil {
			t.Errorf("not an array of events: %v", err)
		}
		mu.Lock()
		payload.Write(b)
		events = append(events, evs...)
		mu.Unlock()
	}))
	defer rcv.Close()
	srv, client, keys := startPhigate(t, func(c *server.Config) {
		c.DecisionLogs = decisionlog.Config{URL: rcv.URL,
			Reporting: decisionlog.Reporting{MinDelay: 20 * time.Millisecond, MaxDelay: 40 * time.Millisecond}}
	})
	tok, err := keys.Mint(stacktest.Physician(1))
	if err != nil {
		t.Fatal(err)
	}
	const (
		patient = "zq7PATIENTx81f3"
		value   = "QVALUEq9lupus"
		why     = "motorcycle-crash-unconscious"
	)
	reqs := []*authv3.CheckRequest{
		stacktest.CheckRequest("GET", "/fhir/Patient/"+patient, tok),
		stacktest.CheckRequest("GET", "/fhir/Observation?patient="+patient+"&code="+value, tok),
		stacktest.CheckRequest("GET", "/fhir/Patient/pat-0001", tok),
	}
	bg := stacktest.CheckRequest("GET", "/fhir/Patient/"+patient, tok)
	bg.Attributes.Request.Http.Headers["x-break-glass"] = why
	reqs = append(reqs, bg)
	ids := map[string]bool{}
	for _, r := range reqs {
		resp, err := client.Check(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range append(resp.GetOkResponse().GetHeaders(), resp.GetDeniedResponse().GetHeaders()...) {
			if h.GetHeader().GetKey() == envoy.DecisionHeader {
				ids[h.GetHeader().GetValue()] = true
			}
		}
	}
	if len(ids) != len(reqs) {
		t.Fatalf("%d decision ids from %d checks", len(ids), len(reqs))
	}
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(events) >= len(reqs) })
	mu.Lock()
	defer mu.Unlock()
	for _, s := range []string{patient, value, why, "motorcycle"} {
		if strings.Contains(payload.String(), s) {
			t.Errorf("the decision log payload carries %q", s)
		}
	}
	allowed := 0
	for _, ev := range events {
		id, _ := ev["decision_id"].(string)
		if !ids[id] {
			t.Errorf("event decision_id %q is not one the checks returned", id)
		}
		res, _ := ev["result"].(map[string]any)
		if res["allow"] == true {
			allowed++
		}
		if rev, _ := ev["bundles"].(map[string]any)["phigate"].(map[string]any)["revision"].(string); rev == "" {
			t.Errorf("event %s has no policy revision", id)
		}
		in, _ := ev["input"].(map[string]any)
		if f, _ := in["fhir"].(map[string]any); f["interaction"] == nil || f["resource_type"] == nil {
			t.Errorf("event %s lacks the interaction or resource type: %v", id, f)
		}
	}
	if allowed != 1 {
		t.Errorf("%d allowed events, want 1 (pat-0001)", allowed)
	}
	_, metrics := stacktest.GetBody(t, "http://"+srv.AdminAddr()+"/metrics")
	for _, name := range []string{"phigate_decision_logs_sent_total", "phigate_decision_logs_dropped_total", "phigate_decision_logs_upload_failures_total",
		"phigate_decision_logs_last_success_timestamp_seconds", "phigate_decision_logs_buffered_events"} {
		if !strings.Contains(metrics, "# TYPE "+name+" ") {
			t.Errorf("/metrics lacks %s with decision_logs set", name)
		}
	}
}
