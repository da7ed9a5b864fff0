package stacktest

import (
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/phigate/phigate/demo"
)

// Legacy runs the demo's legacy FHIR service on a loopback port and records
// every request that reaches it, so tests can prove what got through.
type Legacy struct {
	Addr      string
	mu        sync.Mutex
	seen      []SeenRequest
	overrides map[string]cannedResponse
}

// cannedResponse replaces the legacy service's answer for one path, to
// show what phigate does with bodies a real service might send.
type cannedResponse struct {
	contentType, encoding, body string
	header                      http.Header // more response headers, if any
	status                      int         // 200 when zero
}

// SeenRequest is one request as the legacy service received it.
type SeenRequest struct {
	Method  string
	Path    string // with query
	Headers http.Header
}

// StartLegacy serves the legacy service for t.
func StartLegacy(t *testing.T) *Legacy {
	t.Helper()
	h, err := demo.Upstream()
	if err != nil {
		t.Fatal(err)
	}
	l := &Legacy{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.seen = append(l.seen, SeenRequest{r.Method, r.URL.RequestURI(), r.Header.Clone()})
		canned, ok := l.overrides[r.URL.Path]
		l.mu.Unlock()
		if ok {
			w.Header().Set("content-type", canned.contentType)
			if canned.encoding != "" {
				w.Header().Set("content-encoding", canned.encoding)
			}
			for k, vs := range canned.header {
				w.Header()[k] = vs
			}
			if canned.status != 0 {
				w.WriteHeader(canned.status)
			}
			_, _ = w.Write([]byte(canned.body))
			return
		}
		h.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l
}

// Reset forgets the requests seen so far.
func (l *Legacy) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = nil
}

// Requests returns the requests seen since the last Reset.
func (l *Legacy) Requests() []SeenRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]SeenRequest(nil), l.seen...)
}

// Override answers path with body instead of the data set's resource.
func (l *Legacy) Override(path, contentType, body string) {
	l.OverrideEncoded(path, contentType, "", body)
}

// OverrideEncoded is Override with a content-encoding.
func (l *Legacy) OverrideEncoded(path, contentType, encoding, body string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.overrides == nil {
		l.overrides = map[string]cannedResponse{}
	}
	l.overrides[path] = cannedResponse{contentType: contentType, encoding: encoding, body: body}
}

// OverrideHeaders is Override with more response headers.
func (l *Legacy) OverrideHeaders(path, contentType, body string, header http.Header) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.overrides == nil {
		l.overrides = map[string]cannedResponse{}
	}
	l.overrides[path] = cannedResponse{contentType: contentType, body: body, header: header}
}

// BulkExport makes the service answer a FHIR Bulk Data export at the
// system level: the kick-off (GET /fhir/$export) is accepted with 202 and
// a Content-Location of its status URL, /bulkstatus/job-1; the status URL
// answers the complete manifest, whose one output file is
// /bulkfiles/job-1-Patient.ndjson.
func (l *Legacy) BulkExport() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.overrides == nil {
		l.overrides = map[string]cannedResponse{}
	}
	base := "http://" + l.Addr
	l.overrides["/fhir/$export"] = cannedResponse{contentType: "application/fhir+json", status: http.StatusAccepted,
		header: http.Header{"Content-Location": {base + "/bulkstatus/job-1"}}}
	l.overrides["/bulkstatus/job-1"] = cannedResponse{contentType: "application/json",
		body: `{"transactionTime":"2026-12-04T08:00:00Z","request":"` + base + `/fhir/$export","requiresAccessToken":true,` +
			`"output":[{"type":"Patient","url":"` + base + `/bulkfiles/job-1-Patient.ndjson"}],"error":[]}`}
	l.overrides["/bulkfiles/job-1-Patient.ndjson"] = cannedResponse{contentType: "application/fhir+ndjson",
		body: `{"resourceType":"Patient","id":"pat-0001"}` + "\n"}
}
