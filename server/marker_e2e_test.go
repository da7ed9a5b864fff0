package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/envoy/envoytest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// procOnlyPrefix is the test route on which Envoy runs ext_proc without
// ext_authz: what a route that lost its authorization looks like.
const procOnlyPrefix = "/unauthorized/"

// startProcOnlyStack starts the stack, then puts in front of it an Envoy
// that also has the ext_proc-only route. It returns the audit directory.
func startProcOnlyStack(t *testing.T) (*stacktest.Stack, string) {
	t.Helper()
	var dir string
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) { dir = c.Audit.Dir }})
	s.Envoy = envoytest.Start(t, envoy.BootstrapConfig{
		Upstream: s.Up.Addr, Phigate: s.Phigate.GRPCAddr(), ProcOnlyPrefix: procOnlyPrefix,
	})
	return s, dir
}

// filterings reads the response side's records back from the trail.
func filterings(t *testing.T, dir string) []audit.Entry {
	t.Helper()
	entries, err := audit.Query(dir, audit.Filter{Kind: audit.KindFiltering}, audit.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func detail(ev *audit.AuditEvent, typ string) string {
	for _, en := range ev.Entity {
		for _, d := range en.Detail {
			if d.Type == typ {
				return d.ValueString
			}
		}
	}
	return ""
}

// TestPlanMarkerEndToEnd: a response whose request never met ext_authz
// carries no plan marker, and ext_proc refuses it (502, a minimal
// OperationOutcome, a filtering record saying why) although the legacy
// service answered; the normal route, empty plans included, still works.
// The refusals of the response side are told apart in the trail: no marker,
// an unreadable body, another patient's data.
func TestPlanMarkerEndToEnd(t *testing.T) {
	s, dir := startProcOnlyStack(t)
	doc := s.Token(stacktest.Physician(1))

	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"normal route, a plan with a marker", "/fhir/Patient/pat-0001", doc, 200},
		{"normal route, an empty plan with a marker", "/fhir/metadata", "", 200},
		{"ext_proc alone, a patient read", procOnlyPrefix + "fhir/Patient/pat-0001", doc, 502},
		{"ext_proc alone, without a token", procOnlyPrefix + "fhir/Patient/pat-0002", "", 502},
		{"ext_proc alone, a search", procOnlyPrefix + "fhir/Observation?patient=pat-0002", "", 502},
		{"ext_proc alone, what needs no plan", procOnlyPrefix + "fhir/metadata", "", 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.Up.Reset()
			r := s.Do("GET", tc.path, tc.token, nil, nil)
			if r.Status != tc.want {
				t.Fatalf("status %d, want %d: %.300s", r.Status, tc.want, r.Body)
			}
			if tc.want == 200 {
				return
			}
			if len(s.Up.Requests()) != 1 {
				t.Fatalf("the legacy service saw %d requests; the test needs the response refused, not the request", len(s.Up.Requests()))
			}
			if !stacktest.IsOutcome(r) {
				t.Fatalf("body is not a minimal OperationOutcome: %s", r.Body)
			}
			for _, leak := range []string{"pat-000", "marker", "family", "Patient"} {
				if strings.Contains(string(r.Body), leak) {
					t.Errorf("refusal body reveals %q: %s", leak, r.Body)
				}
			}
		})
	}

	// The response side's other refusals, for the trail.
	s.Up.Override("/fhir/Patient/pat-0001", "application/fhir+json", `{"resourceType":"Patient","id":"pat-0001","name":[{"family":"X"}`)
	if r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil); r.Status != 502 {
		t.Fatalf("unreadable body: status %d, want 502", r.Status)
	}
	s.Up.Override("/fhir/Patient/pat-0001", "application/fhir+json", `{"resourceType":"Patient","id":"pat-0002","name":[{"family":"X"}]}`)
	if r := s.Do("GET", "/fhir/Patient/pat-0001", doc, nil, nil); r.Status != 403 {
		t.Fatalf("another patient's body: status %d, want 403", r.Status)
	}

	// An operator sees unmarked responses apart from other refusals.
	if _, m := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics"); !strings.Contains(m, `phigate_extproc_responses_total{outcome="unmarked"} 4`) {
		t.Errorf("metrics do not count the 4 unmarked responses:\n%s", grepLines(m, "phigate_extproc_responses_total"))
	}

	s.StopPhigate()
	got := map[string][]*audit.AuditEvent{}
	for _, e := range filterings(t, dir) {
		got[detail(e.Event, "reason")] = append(got[detail(e.Event, "reason")], e.Event)
	}
	for _, want := range []struct {
		reason, status, outcome string
		n                       int
	}{
		{envoy.RefusedMarkerMissing, "502", audit.OutcomeSerious, 4},
		{"malformed_body", "502", audit.OutcomeSerious, 1},
		{envoy.RefusedOutsideGrant, "403", audit.OutcomeMinor, 1},
	} {
		evs := got[want.reason]
		if len(evs) != want.n {
			t.Errorf("%d records with reason %q, want %d (reasons seen: %v)", len(evs), want.reason, want.n, keys(got))
			continue
		}
		for _, ev := range evs {
			if detail(ev, "status") != want.status || ev.Outcome != want.outcome || !strings.HasSuffix(ev.OutcomeDesc, want.reason) {
				t.Errorf("%s: status %q outcome %q %q, want %s %s", want.reason, detail(ev, "status"), ev.Outcome, ev.OutcomeDesc, want.status, want.outcome)
			}
			if forbidden := detail(ev, "forbidden") == "true"; forbidden != (want.status == "403") {
				t.Errorf("%s: forbidden detail %v for status %s", want.reason, forbidden, want.status)
			}
			if want.reason == envoy.RefusedMarkerMissing && ev.RequestID() == "" {
				t.Errorf("a refusal for a missing marker does not name the request")
			}
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestLocationHeadersEndToEnd: Location and Content-Location headers that
// name a patient outside the grant, or patient data the body does not
// vouch for, do not reach the client through the real Envoy; those about
// the granted patient, or the body itself, do.
func TestLocationHeadersEndToEnd(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	doc := s.Token(stacktest.Physician(1))
	patient := `{"resourceType":"Patient","id":"pat-0001","gender":"female"}`
	obs := `{"resourceType":"Observation","id":"obs-pat-0001-01","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/pat-0001"}}`
	for _, tc := range []struct {
		name, path, body string
		header           http.Header
		kept             []string
		dropped          []string
	}{
		{"another patient's id", "/fhir/Patient/pat-0001", patient, http.Header{
			"Location":         {"/fhir/Patient/pat-0002/_history/1"},
			"Content-Location": {"http://legacy/fhir/Patient/pat-0002"}}, nil, []string{"Location", "Content-Location"}},
		{"the granted patient", "/fhir/Patient/pat-0001", patient, http.Header{
			"Content-Location": {"/fhir/Patient/pat-0001/_history/3"}}, []string{"Content-Location"}, nil},
		{"a search about another patient", "/fhir/Patient/pat-0001", patient, http.Header{
			"Content-Location": {"/fhir/Observation?subject=Patient/pat-0002"}}, nil, []string{"Content-Location"}},
		{"the body's own resource", "/fhir/Observation/obs-pat-0001-01", obs, http.Header{
			"Content-Location": {"/fhir/Observation/obs-pat-0001-01/_history/1"}}, []string{"Content-Location"}, nil},
		{"patient data the body does not vouch for", "/fhir/Observation/obs-pat-0001-01", obs, http.Header{
			"Content-Location": {"/fhir/Observation/obs-pat-0002-01/_history/1"}}, nil, []string{"Content-Location"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.Up.OverrideHeaders(tc.path, "application/fhir+json", tc.body, tc.header)
			r := s.Do("GET", tc.path, doc, nil, nil)
			if r.Status != 200 {
				t.Fatalf("status %d, want 200: %.300s", r.Status, r.Body)
			}
			for _, h := range tc.kept {
				if r.Header.Get(h) != tc.header.Get(h) {
					t.Errorf("%s = %q, want %q kept", h, r.Header.Get(h), tc.header.Get(h))
				}
			}
			for _, h := range tc.dropped {
				if v := r.Header.Get(h); v != "" {
					t.Errorf("%s reached the client: %q", h, v)
				}
			}
			if strings.Contains(string(r.Body), "pat-0002") {
				t.Errorf("body names another patient: %s", r.Body)
			}
		})
	}
}

// TestPlanMarkerFleetKey: two servers configured with one plan_marker_key
// file accept each other's markers, as replicas behind one Envoy must; a
// server with its own random key does not; a key file too short to be a
// key stops the start.
func TestPlanMarkerFleetKey(t *testing.T) {
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "plan-marker.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(key string) *server.Server {
		t.Helper()
		cfg := stacktest.ServerConfig(t, keys)
		cfg.Filters.PlanMarkerKey = key
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		srv, err := server.New(ctx, cfg, zap.NewNop())
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = srv.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		return srv
	}
	dial := func(s *server.Server) *grpc.ClientConn {
		t.Helper()
		conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	a, b, alone := start(keyFile), start(keyFile), start("")

	tok, err := keys.Mint(stacktest.Physician(1))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := authv3.NewAuthorizationClient(dial(a)).Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "77", Method: "GET", Path: "/fhir/Patient/pat-0001", Scheme: "http", Host: "phigate.test",
			Headers: map[string]string{"authorization": "Bearer " + tok, "x-request-id": "req-fleet-1"}}}}})
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("Check: %v %v", err, resp)
	}
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{envoy.AuthzNamespace: resp.GetDynamicMetadata()}}
	for _, tc := range []struct {
		name string
		srv  *server.Server
		pass bool
	}{
		{"the replica that decided", a, true},
		{"another replica with the fleet key", b, true},
		{"a server with its own key", alone, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := extprocv3.NewExternalProcessorClient(dial(tc.srv)).Process(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer stream.CloseSend()
			err = stream.Send(&extprocv3.ProcessingRequest{MetadataContext: md,
				Attributes: map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
					envoy.RequestIDAttribute: structpb.NewStringValue("req-fleet-1")}}},
				Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
					Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "content-type", RawValue: []byte("application/fhir+json")}}}}}})
			if err != nil {
				t.Fatal(err)
			}
			r, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if refused := r.GetImmediateResponse() != nil; refused == tc.pass {
				t.Fatalf("refused %v, want pass %v: %v", refused, tc.pass, r)
			}
		})
	}

	short := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(short, []byte("0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := stacktest.ServerConfig(t, keys)
	cfg.Filters.PlanMarkerKey = short
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if srv, err := server.New(t.Context(), cfg, zap.NewNop()); err == nil {
		srv.Close()
		t.Fatal("a server started with a plan marker key too short to be one")
	} else if !strings.Contains(err.Error(), "filters.plan_marker_key") || strings.Contains(err.Error(), "0123456789") {
		t.Errorf("error %q should name the field and not the key", err)
	}
}
