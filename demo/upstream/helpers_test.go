package upstream

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/phigate/phigate/demo/fhirdata"
)

var (
	dsOnce sync.Once
	ds     *fhirdata.Dataset
)

func dataset() *fhirdata.Dataset {
	dsOnce.Do(func() { ds = fhirdata.Default() })
	return ds
}

func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) }
	}
	s, err := New(dataset(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON (status %d): %v: %.200s", r.status, err, r.body)
	}
	return m
}

func do(t *testing.T, h http.Handler, method, target string, body any, header map[string]string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req := httptest.NewRequestWithContext(t.Context(), method, target, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	out := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	if rec.Header().Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(out.body))
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		out.body, err = io.ReadAll(zr)
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
	}
	return out
}

// ids lists "Type/id" of a Bundle's entries with the given search mode
// ("" for every entry with a resource).
func ids(t *testing.T, b map[string]any, mode string) []string {
	t.Helper()
	var out []string
	entries, _ := b["entry"].([]any)
	for _, e := range entries {
		m := e.(map[string]any)
		res, ok := m["resource"].(map[string]any)
		if !ok {
			continue
		}
		if mode != "" {
			sm, _ := m["search"].(map[string]any)
			if sm["mode"] != mode {
				continue
			}
		}
		out = append(out, res["resourceType"].(string)+"/"+res["id"].(string))
	}
	return out
}
