package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/demo/fhirdata"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// lockedBuffer is a bytes.Buffer safe for the logger's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// phiValues lists the identifying values of one synthetic patient as the
// legacy service holds them: id, names, identifiers, birth date, telecom,
// address lines. Each is something a log line or a metric label must never
// carry.
func phiValues(t *testing.T, id string) (values []string, family, mrn, ssn, birth string) {
	t.Helper()
	p, ok := fhirdata.Default().Get("Patient", id)
	if !ok {
		t.Fatalf("no %s in the demo data", id)
	}
	values = append(values, id)
	for _, n := range list(p["name"]) {
		if f, _ := n["family"].(string); f != "" {
			values = append(values, f)
			if family == "" {
				family = f
			}
		}
		for _, g := range n["given"].([]any) {
			values = append(values, g.(string))
		}
	}
	for _, ident := range list(p["identifier"]) {
		v, _ := ident["value"].(string)
		if v == "" {
			continue
		}
		values = append(values, v)
		switch ident["system"] {
		case "http://hospital.example.org/mrn":
			mrn = v
		case "http://hl7.org/fhir/sid/us-ssn":
			ssn = v
			values = append(values, strings.ReplaceAll(v, "-", ""))
		}
	}
	birth, _ = p["birthDate"].(string)
	values = append(values, birth, strings.ReplaceAll(birth, "-", ""))
	for _, tc := range list(p["telecom"]) {
		if v, _ := tc["value"].(string); v != "" {
			values = append(values, v)
		}
	}
	for _, a := range list(p["address"]) {
		for _, l := range a["line"].([]any) {
			values = append(values, l.(string))
		}
	}
	if family == "" || mrn == "" || ssn == "" || birth == "" {
		t.Fatalf("%s lacks a family name, MRN, SSN or birth date: %v", id, values)
	}
	return values, family, mrn, ssn, birth
}

func list(v any) []map[string]any {
	var out []map[string]any
	arr, _ := v.([]any)
	for _, e := range arr {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// TestPHINeverInLogsOrMetrics drives reads, name, identifier and birth-date
// searches, denials and malformed bodies about known synthetic patients
// through Envoy and phigate logging at debug level, then requires that no
// identifying value of those patients appears in the log or in /metrics.
func TestPHINeverInLogsOrMetrics(t *testing.T) {
	inCare, inCareFamily, inCareMRN, inCareSSN, inCareBirth := phiValues(t, "pat-0001")
	outside, outFamily, outMRN, _, outBirth := phiValues(t, "pat-0002")
	forbidden := append(inCare, outside...)

	var logs lockedBuffer
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(&logs), zapcore.DebugLevel))

	// Owners are not read from the legacy service here: this test is about
	// what the log and metrics carry, not about writes.
	var auditDir string
	s := stacktest.Start(t, stacktest.Options{Logger: logger, Mutate: func(cfg *server.Config) {
		auditDir = cfg.Audit.Dir
		cfg.Owners.Upstream = ""
		stacktest.WithTokenKey(t)(cfg)
		cfg.Log.Level = "debug"
	}})

	doc := s.Token(stacktest.Physician(1))
	billing := s.Token(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})
	// A response body the filters cannot parse, holding the patient's data.
	s.Up.Override("/fhir/Patient/pat-0061", "application/fhir+json",
		fmt.Sprintf(`{"resourceType":"Patient","id":"pat-0001","name":[{"family":%q}],"birthDate":%q,"identifier":[{"value":%q`,
			inCareFamily, inCareBirth, inCareSSN))
	q := url.QueryEscape
	cases := []struct {
		name   string
		method string
		path   string
		token  string
		body   string
		status int // 0: any
	}{
		{"read in care team", "GET", "/fhir/Patient/pat-0001", doc, "", 200},
		{"read outside care team", "GET", "/fhir/Patient/pat-0002", doc, "", 403},
		{"search by family name", "GET", "/fhir/Patient?name=" + q(inCareFamily), doc, "", 0},
		{"search by another family name", "GET", "/fhir/Patient?family=" + q(outFamily), doc, "", 0},
		{"search by MRN", "GET", "/fhir/Patient?identifier=" + q(inCareMRN), doc, "", 0},
		{"search by system and MRN", "GET", "/fhir/Patient?identifier=" + q("http://hospital.example.org/mrn|"+outMRN), doc, "", 0},
		{"search by SSN", "GET", "/fhir/Patient?identifier=" + q("http://hl7.org/fhir/sid/us-ssn|"+inCareSSN), billing, "", 0},
		{"search by birth date", "GET", "/fhir/Patient?birthdate=" + outBirth, doc, "", 0},
		{"search by name without a token", "GET", "/fhir/Patient?name=" + q(outFamily), "", "", 401},
		{"read with a garbage token", "GET", "/fhir/Patient/pat-0002", "not.a.jwt", "", 401},
		{"delete by the wrong role", "DELETE", "/fhir/Patient/pat-0001", billing, "", 403},
		{"ambiguous path naming a patient", "GET", "/fhir/Patient%2Fpat-0002", doc, "", 400},
		{"redacted read", "GET", "/fhir/Patient/pat-0001", billing, "", 200},
		{"malformed batch body", "POST", "/fhir", doc,
			`{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient?name=` + inCareFamily + `&birthdate=` + inCareBirth + `"}`, 0},
		{"malformed create body", "POST", "/fhir/Patient", doc,
			`{"resourceType":"Patient","name":[{"family":"` + outFamily + `"}],"identifier":[{"value":"` + outMRN, 0},
		{"malformed response body", "GET", "/fhir/Patient/pat-0061", billing, "", 502},
	}
	for _, tc := range cases {
		var body io.Reader
		var headers map[string]string
		if tc.body != "" {
			body = strings.NewReader(tc.body)
			headers = map[string]string{"content-type": "application/fhir+json"}
		}
		r := s.Do(tc.method, tc.path, tc.token, headers, body)
		if tc.status != 0 && r.Status != tc.status {
			t.Errorf("%s: status %d, want %d; body %.200s", tc.name, r.Status, tc.status, r.Body)
		}
	}

	resp, err := http.Get("http://" + s.Phigate.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	s.StopPhigate()
	logText := logs.String()
	if !strings.Contains(logText, `"level":"debug"`) && !strings.Contains(logText, `"level":"info"`) {
		t.Fatalf("the logger captured nothing at debug or info level; is it wired? log:\n%.500s", logText)
	}
	if !strings.Contains(string(metrics), "phigate_") {
		t.Fatalf("/metrics has no phigate series:\n%.500s", metrics)
	}

	// Control: the values did reach phigate. The audit trail is the one
	// place they are written, so the absence below is not an accident of
	// requests that never arrived.
	var trail []byte
	segs, _ := filepath.Glob(filepath.Join(auditDir, "seg-*.pga"))
	for _, f := range segs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		trail = append(trail, b...)
	}
	for _, v := range []string{"pat-0001", "pat-0002", inCareMRN, outMRN, outBirth} {
		if !bytes.Contains(trail, []byte(v)) {
			t.Errorf("control: the audit trail does not hold %q; did the request reach phigate?", v)
		}
	}

	for _, out := range []struct {
		name string
		text string
	}{{"log", logText}, {"metrics", string(metrics)}} {
		for _, v := range forbidden {
			t.Run(out.name+" lacks "+v, func(t *testing.T) {
				if i := strings.Index(out.text, v); i >= 0 {
					lo, hi := max(0, i-150), min(len(out.text), i+len(v)+150)
					t.Errorf("%s contains %q: …%s…", out.name, v, out.text[lo:hi])
				}
			})
		}
	}
	t.Logf("checked %d values against %d bytes of log and %d bytes of metrics", len(forbidden), len(logText), len(metrics))
}
