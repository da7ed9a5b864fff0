package upstream

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
)

// LoggedRequest is what reached the server for one request: the evidence a
// test or a person uses to prove what the gateway let through (or that
// nothing did). The Authorization value itself is never kept, only whether
// one was present.
type LoggedRequest struct {
	Time   time.Time `json:"time"`
	Method string    `json:"method"`
	// Path is the request target as received: path and raw query.
	Path string `json:"path"`
	// Headers holds every x-* header plus a few that matter to the tests
	// (accept, accept-encoding, content-type, prefer, user-agent,
	// if-match, traceparent), lower-cased, repeated values joined by ", ".
	Headers       map[string]string `json:"headers"`
	Authorization bool              `json:"authorization"`
	ContentLength int64             `json:"content_length"`
	Status        int               `json:"status"`
	RemoteAddr    string            `json:"remote_addr"`
}

var loggedHeaders = map[string]bool{
	"accept": true, "accept-encoding": true, "content-type": true, "prefer": true,
	"user-agent": true, "if-match": true, "traceparent": true, "forwarded": true,
}

func logEntry(r *http.Request, status int, at time.Time) LoggedRequest {
	h := map[string]string{}
	for name, vals := range r.Header {
		ln := strings.ToLower(name)
		if strings.HasPrefix(ln, "x-") || loggedHeaders[ln] {
			h[ln] = strings.Join(vals, ", ")
		}
	}
	return LoggedRequest{
		Time:          at.UTC(),
		Method:        r.Method,
		Path:          r.URL.RequestURI(),
		Headers:       h,
		Authorization: r.Header.Get("Authorization") != "",
		ContentLength: r.ContentLength,
		Status:        status,
		RemoteAddr:    r.RemoteAddr,
	}
}

// requestLog is a bounded in-memory log; when full, the oldest entries go.
// It is a ring, so adding costs the same however full it is.
type requestLog struct {
	mu      sync.Mutex
	cap     int
	entries []LoggedRequest // the ring, up to cap long
	next    int             // where the next entry goes once the ring is full
	dropped int
}

func newRequestLog(capacity int) *requestLog { return &requestLog{cap: capacity} }

func (l *requestLog) add(e LoggedRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cap <= 0 {
		l.dropped++
		return
	}
	if len(l.entries) < l.cap {
		l.entries = append(l.entries, e)
		return
	}
	l.entries[l.next] = e
	l.next = (l.next + 1) % l.cap
	l.dropped++
}

// snapshot returns the entries oldest first, and how many were dropped.
func (l *requestLog) snapshot() ([]LoggedRequest, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]LoggedRequest, 0, len(l.entries))
	out = append(out, l.entries[l.next:]...)
	out = append(out, l.entries[:l.next]...)
	return out, l.dropped
}

func (l *requestLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries, l.next, l.dropped = nil, 0, 0
}

// Requests returns a copy of the request log, oldest first.
func (s *Server) Requests() []LoggedRequest {
	out, _ := s.reqs.snapshot()
	return out
}

// Reset empties the request log.
func (s *Server) Reset() { s.reqs.reset() }

// AdminHandler serves the request log and data reset as JSON, meant for a
// listener separate from the FHIR one (so the gateway never routes to it):
//
//	GET    /requests   {"requests": [...], "dropped": n}
//	DELETE /requests   empties the log
//	POST   /reset-data restores the generated data set
//	GET    /healthz    200 "ok"
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /requests", func(w http.ResponseWriter, r *http.Request) {
		entries, dropped := s.reqs.snapshot()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Requests []LoggedRequest `json:"requests"`
			Dropped  int             `json:"dropped"`
		}{entries, dropped})
	})
	mux.HandleFunc("DELETE /requests", func(w http.ResponseWriter, r *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /reset-data", func(w http.ResponseWriter, r *http.Request) {
		s.ResetData()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
