package decisionlog

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/internal/service"
)

// receiver is a decision log endpoint: it checks the headers OPA's
// plugin sends, keeps each body decompressed and answers with the next
// status of its script (200 when the script is used up).
type receiver struct {
	*httptest.Server
	t       *testing.T
	mu      sync.Mutex
	script  []int
	bodies  [][]byte
	arrived chan struct{} // one value per request, when not nil
	hold    chan struct{} // requests wait for it to close, when not nil
}

func newReceiver(t *testing.T, script ...int) *receiver {
	r := &receiver{t: t, script: script}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	if r.arrived != nil {
		r.arrived <- struct{}{}
	}
	if r.hold != nil {
		<-r.hold
	}
	if req.Method != http.MethodPost || req.URL.Path != "/logs" || req.Header.Get("Content-Encoding") != "gzip" ||
		req.Header.Get("Content-Type") != "application/json" {
		r.t.Errorf("got %s %s encoding %q type %q; want POST /logs, gzip, application/json", req.Method, req.URL.Path,
			req.Header.Get("Content-Encoding"), req.Header.Get("Content-Type"))
	}
	zr, err := gzip.NewReader(req.Body)
	if err != nil {
		r.t.Errorf("body is not gzip: %v", err)
		w.WriteHeader(400)
		return
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		r.t.Errorf("body: %v", err)
	}
	r.mu.Lock()
	status := 200
	if len(r.script) > 0 {
		status, r.script = r.script[0], r.script[1:]
	}
	if status == 200 {
		r.bodies = append(r.bodies, body)
	}
	r.mu.Unlock()
	w.WriteHeader(status)
}

// events decodes every accepted body as OPA's array of events.
func (r *receiver) events(t *testing.T) []map[string]any {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, b := range r.bodies {
		var evs []map[string]any
		if err := json.Unmarshal(b, &evs); err != nil {
			t.Fatalf("body is not a JSON array of events: %v", err)
		}
		out = append(out, evs...)
	}
	return out
}

func (r *receiver) raw() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, x := range r.bodies {
		b.Write(x)
	}
	return b.String()
}

func testConfig(t *testing.T, url string, mut func(*Config)) Config {
	t.Helper()
	c := Config{URL: url, Labels: map[string]string{"cluster": "east-1"},
		Reporting: Reporting{MinDelay: 20 * time.Millisecond, MaxDelay: 40 * time.Millisecond}}
	if mut != nil {
		mut(&c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// The distinctive strings a request and its decision carry: none may
// reach the receiver.
const (
	patient   = "zq7PATIENTx81f3"
	resource  = "obsRESOURCEq55"
	queryVal  = "QUERYVALUE-lupus"
	reasonBG  = "motorcycle crash, unconscious"
	subject   = "dr-SUBJECT-hal9"
	userRef   = "Practitioner/prac-USER-77"
	clientIP  = "203.0.113.77"
	headerVal = "HEADERSECRET-abc"
)

func phiRequest(i int) (*authz.Request, *authz.Decision) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	req := &authz.Request{
		ID: "req-1", Time: now, TimeNS: now.UnixNano(), Method: "GET",
		Path:    "/fhir/Patient/" + patient + "/Observation/" + resource,
		Query:   map[string][]string{"code": {queryVal}},
		Headers: map[string]string{"x-note": headerVal},
		Source:  authz.Peer{Address: clientIP, Principal: "spiffe://cluster.local/ns/ehr/sa/app"},
		Identity: authz.Identity{Authenticated: true, Subject: subject, FHIRUser: userRef, Roles: []string{"physician", "role-" + patient},
			Scopes: []authz.Scope{{Raw: "user/Observation.rs?code=" + queryVal, Context: "user", Resource: "Observation", Permissions: "rs"}}},
		FHIR: authz.FHIRRequest{Interaction: authz.InteractionRead, ResourceType: "Observation", ID: resource,
			Compartment: &authz.Compartment{Type: "Patient", ID: patient}, Patients: []string{patient}},
		Purpose:    "TREAT",
		BreakGlass: authz.BreakGlassRequest{Requested: true, Reason: reasonBG},
		Care:       []authz.CareRelationship{{Patient: patient, Role: "attending", Source: "adt"}},
	}
	d := &authz.Decision{Allow: true, Status: 200, Reason: "no_care_relationship_with_" + patient,
		Headers:     map[string]string{"x-patient": patient},
		BreakGlass:  authz.BreakGlass{Active: true, Reason: reasonBG, Expires: "2026-01-02T04:04:05Z"},
		Obligations: []authz.Obligation{{Type: "notify_privacy_office", Params: map[string]string{"patient": patient}}},
		Audit:       authz.AuditInfo{Patients: []string{patient}, Purpose: "TREAT", Rules: []string{"allow:break_glass", "deny:" + patient}},
		ID:          "dec-" + string(rune('a'+i)), Policy: authz.Provenance{Revision: "rev-42"},
	}
	return req, d
}

// TestEventShapeAndMasking: the receiver gets OPA's shape, with what an
// operator needs, and none of the request's identifiers or free text.
func TestEventShapeAndMasking(t *testing.T) {
	rcv := newReceiver(t)
	l, err := New(testConfig(t, rcv.URL, nil), "inst-1", "v1.2.3", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, d := phiRequest(0)
	l.Record(req, d)
	l.Close()

	raw := rcv.raw()
	for _, s := range []string{patient, resource, queryVal, reasonBG, "motorcycle", subject, "prac-USER-77", clientIP, headerVal} {
		if strings.Contains(raw, s) {
			t.Errorf("payload carries %q:\n%s", s, raw)
		}
	}
	evs := rcv.events(t)
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	ev := evs[0]
	get := func(path ...string) any {
		var v any = ev
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		}
		return v
	}
	want := []struct {
		path []string
		want any
	}{
		{[]string{"decision_id"}, "dec-a"},
		{[]string{"labels", "id"}, "inst-1"},
		{[]string{"labels", "version"}, "v1.2.3"},
		{[]string{"labels", "cluster"}, "east-1"},
		{[]string{"bundles", "phigate", "revision"}, "rev-42"},
		{[]string{"path"}, "phigate/authz/decision"},
		{[]string{"timestamp"}, "2026-01-02T03:04:05Z"},
		{[]string{"input", "method"}, "GET"},
		{[]string{"input", "fhir", "interaction"}, "read"},
		{[]string{"input", "fhir", "resource_type"}, "Observation"},
		{[]string{"input", "fhir", "compartment", "type"}, "Patient"},
		{[]string{"input", "purpose_of_use"}, "TREAT"},
		{[]string{"input", "break_glass", "requested"}, true},
		{[]string{"input", "source", "principal"}, "spiffe://cluster.local/ns/ehr/sa/app"},
		{[]string{"result", "allow"}, true},
		{[]string{"result", "status"}, float64(200)},
		{[]string{"result", "reason"}, Mask},
		{[]string{"result", "break_glass", "active"}, true},
	}
	for _, w := range want {
		if got := get(w.path...); got != w.want {
			t.Errorf("%s = %v, want %v", strings.Join(w.path, "."), got, w.want)
		}
	}
	if roles, _ := get("input", "identity", "roles").([]any); len(roles) != 2 || roles[0] != "physician" || roles[1] != Mask {
		t.Errorf("roles = %v, want physician and the masked one", roles)
	}
	if rules, _ := get("result", "audit", "rules").([]any); len(rules) != 2 || rules[0] != "allow:break_glass" || rules[1] != Mask {
		t.Errorf("rules = %v, want allow:break_glass and the masked one", rules)
	}
	strs := func(k string) []string {
		var out []string
		for _, v := range ev[k].([]any) {
			out = append(out, v.(string))
		}
		return out
	}
	erased, masked := strs("erased"), strs("masked")
	for _, p := range []string{"/input/path", "/input/query", "/input/headers", "/input/source/address", "/input/identity/subject",
		"/input/identity/fhir_user", "/input/identity/scopes/0/raw", "/input/fhir/id", "/input/fhir/patients", "/input/fhir/compartment/id",
		"/input/break_glass/reason", "/input/care", "/result/headers", "/result/break_glass/reason", "/result/obligations/0/params",
		"/result/audit/patients"} {
		if !slices.Contains(erased, p) {
			t.Errorf("erased lacks %s: %v", p, erased)
		}
	}
	for _, p := range []string{"/result/reason", "/input/identity/roles/1", "/result/audit/rules/1"} {
		if !slices.Contains(masked, p) {
			t.Errorf("masked lacks %s: %v", p, masked)
		}
	}
}

// TestRetriesAfterServerErrors: a batch refused with 500 is sent again,
// after a delay, until accepted; nothing is lost or sent twice.
func TestRetriesAfterServerErrors(t *testing.T) {
	rcv := newReceiver(t, 500, 503)
	reg := prometheus.NewRegistry()
	l, err := New(testConfig(t, rcv.URL, nil), "inst-1", "v1", nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req, d := phiRequest(i)
		l.Record(req, d)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(rcv.events(t)) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	l.Close()
	var ids []string
	for _, ev := range rcv.events(t) {
		ids = append(ids, ev["decision_id"].(string))
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"dec-a", "dec-b", "dec-c"}) {
		t.Fatalf("received %v, want each of dec-a, dec-b, dec-c once", ids)
	}
	if got := testutil.ToFloat64(l.failures.WithLabelValues("status")); got != 2 {
		t.Errorf("upload failures{status} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(l.sent); got != 3 {
		t.Errorf("sent = %v, want 3", got)
	}
}

// TestFullBufferDrops: while an upload hangs, events beyond the buffer
// are dropped and counted, Record returns at once, and Close sends what
// was buffered.
func TestFullBufferDrops(t *testing.T) {
	rcv := newReceiver(t)
	rcv.arrived, rcv.hold = make(chan struct{}, 10), make(chan struct{})
	cfg := testConfig(t, rcv.URL, func(c *Config) {
		c.Reporting = Reporting{BufferSizeLimitEvents: 5, UploadSizeLimitEvents: 5, MinDelay: time.Hour, MaxDelay: time.Hour}
		c.Timeout = time.Minute
	})
	l, err := New(cfg, "inst-1", "v1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		req, d := phiRequest(i)
		l.Record(req, d)
	}
	<-rcv.arrived // the full buffer was sent at once and the upload now hangs
	start := time.Now()
	for i := range 10 {
		req, d := phiRequest(5 + i)
		l.Record(req, d)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Record took %v with the receiver hanging, want no wait", took)
	}
	if got := testutil.ToFloat64(l.dropped.WithLabelValues(dropBufferFull)); got != 5 {
		t.Fatalf("dropped{buffer_full} = %v, want 5 (5 in flight, 5 buffered, 5 over)", got)
	}
	close(rcv.hold)
	l.Close()
	if got := len(rcv.events(t)); got != 10 {
		t.Fatalf("receiver got %d events, want 10 (the batch in flight and the buffer flushed on Close)", got)
	}
}

// TestCloseGivesUpAtTheDeadline: with the receiver down, Close returns
// after shutdown_timeout and counts what it could not send.
func TestCloseGivesUpAtTheDeadline(t *testing.T) {
	rcv := newReceiver(t)
	url := rcv.URL
	rcv.Close()
	l, err := New(testConfig(t, url, func(c *Config) {
		c.ShutdownTimeout = 200 * time.Millisecond
		c.Reporting.MinDelay, c.Reporting.MaxDelay = time.Hour, time.Hour
	}), "inst-1", "v1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req, d := phiRequest(i)
		l.Record(req, d)
	}
	done := make(chan struct{})
	go func() { l.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	if got := testutil.ToFloat64(l.dropped.WithLabelValues(dropShutdown)); got != 3 {
		t.Fatalf("dropped{shutdown} = %v, want 3", got)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"labels without url", Config{Labels: map[string]string{"a": "b"}}, "decision_logs.url"},
		{"bad url", Config{URL: "localhost:9000"}, "decision_logs.url"},
		{"reserved label", Config{URL: "https://h/", Labels: map[string]string{"id": "x"}}, "decision_logs.labels"},
		{"free-text label", Config{URL: "https://h/", Labels: map[string]string{"team": "the ward of Dr Who"}}, "decision_logs.labels"},
		{"upload over buffer", Config{URL: "https://h/", Reporting: Reporting{BufferSizeLimitEvents: 10, UploadSizeLimitEvents: 20}}, "upload_size_limit_events"},
		{"delays", Config{URL: "https://h/", Reporting: Reporting{MinDelay: time.Minute, MaxDelay: time.Second}}, "reporting.max_delay"},
		{"token over http", Config{URL: "http://logs.example/", Credentials: credentialsEnv("HOME")}, "decision_logs.credentials"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want an error naming %s", err, c.want)
			}
		})
	}
	var empty Config
	if err := empty.Validate(); err != nil || empty.Enabled() {
		t.Fatalf("an empty section: %v, enabled %v; want valid and off", err, empty.Enabled())
	}
}

func credentialsEnv(name string) service.Credentials {
	return service.Credentials{BearerTokenEnv: name}
}

// TestEventPath: the path is the rule that decided, phigate's unless the
// wiring names another.
func TestEventPath(t *testing.T) {
	rcv := newReceiver(t)
	l, err := New(testConfig(t, rcv.URL, func(c *Config) { c.Path = "envoy/authz/allow" }), "inst-1", "v1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, d := phiRequest(0)
	l.Record(req, d)
	l.Close()
	if evs := rcv.events(t); len(evs) != 1 || evs[0]["path"] != "envoy/authz/allow" {
		t.Fatalf("events %v, want one with path envoy/authz/allow", evs)
	}
	if ev := NewEvent(req, d, nil); ev.Path != DecisionPath {
		t.Fatalf("default path %q, want %q", ev.Path, DecisionPath)
	}
}
