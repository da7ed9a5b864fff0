package main

import (
	"net"
	"net/http"
	"sync"
	"testing"
)

// legacy runs the demo's legacy FHIR service on a loopback port and records
// every request that reaches it, so tests can prove what got through.
type legacy struct {
	addr      string
	mu        sync.Mutex
	seen      []seenRequest
	overrides map[string]cannedResponse
}

// cannedResponse replaces the legacy service's answer for one path, to
// show what phigate does with bodies a real service might send.
type cannedResponse struct {
	contentType, encoding, body string
	header                      http.Header // more response headers, if any
}

type seenRequest struct {
	method  string
	path    string // with query
	headers http.Header
}

func startLegacy(t *testing.T) *legacy {
	t.Helper()
	h, err := demoUpstreamHandler()
	if err != nil {
		t.Fatal(err)
	}
	l := &legacy{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.seen = append(l.seen, seenRequest{r.Method, r.URL.RequestURI(), r.Header.Clone()})
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
			_, _ = w.Write([]byte(canned.body))
			return
		}
		h.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l
}

func (l *legacy) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = nil
}

func (l *legacy) requests() []seenRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]seenRequest(nil), l.seen...)
}

func (l *legacy) override(path, contentType, body string) {
	l.overrideEncoded(path, contentType, "", body)
}

func (l *legacy) overrideEncoded(path, contentType, encoding, body string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.overrides == nil {
		l.overrides = map[string]cannedResponse{}
	}
	l.overrides[path] = cannedResponse{contentType: contentType, encoding: encoding, body: body}
}

// overrideHeaders is override with more response headers.
func (l *legacy) overrideHeaders(path, contentType, body string, header http.Header) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.overrides == nil {
		l.overrides = map[string]cannedResponse{}
	}
	l.overrides[path] = cannedResponse{contentType: contentType, body: body, header: header}
}
