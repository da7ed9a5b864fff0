package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/demo/fhirdata"
)

// withTokenKey configures the tokenization key the default policy names.
func withTokenKey(t *testing.T) func(*Config) {
	return func(c *Config) {
		p := filepath.Join(t.TempDir(), "demo-1.key")
		if err := os.WriteFile(p, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.Filters.TokenKeys = map[string]string{"demo-1": p}
	}
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("response is not JSON: %v: %.200s", err, b)
	}
	return m
}

func entries(bundle map[string]any) []map[string]any {
	var out []map[string]any
	es, _ := bundle["entry"].([]any)
	for _, e := range es {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func TestEndToEndRedaction(t *testing.T) {
	s := startStack(t, stackOptions{compress: true, mutate: withTokenKey(t)})
	billing := s.token(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})
	nurse := s.token(demokeys.TokenSpec{Subject: "nurse-01", Roles: []string{"nurse"}, FHIRUser: "Practitioner/prac-001", Purpose: "TREAT"})
	doc := s.token(physician(1))

	t.Run("billing sees no telecom or address", func(t *testing.T) {
		r := s.do("GET", "/fhir/Patient/pat-0001", billing, nil, nil)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		p := decodeJSON(t, r.body)
		for _, field := range []string{"telecom", "address", "text"} {
			if _, ok := p[field]; ok {
				t.Errorf("billing response still has %s", field)
			}
		}
		if !bytes.Contains(r.body, []byte(`"REDACTED"`)) {
			t.Error("redacted resource is not marked REDACTED in meta.security")
		}
		if got := r.header.Get("content-length"); got != "" && got != itoa(len(r.body)) {
			t.Errorf("content-length %s, body %d bytes", got, len(r.body))
		}
	})

	t.Run("nurse sees tokenized identifiers, equal across responses", func(t *testing.T) {
		var first []any
		for i := range 2 {
			r := s.do("GET", "/fhir/Patient/pat-0001", nurse, nil, nil)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			ids, _ := decodeJSON(t, r.body)["identifier"].([]any)
			if len(ids) == 0 {
				t.Fatal("no identifiers in the nurse's response")
			}
			if i == 0 {
				first = ids
				continue
			}
			a, _ := json.Marshal(first)
			b, _ := json.Marshal(ids)
			if !bytes.Equal(a, b) {
				t.Errorf("tokens differ across responses:\n%s\n%s", a, b)
			}
		}
		direct := upstreamPatient(t, s, "pat-0001")
		for _, id := range direct["identifier"].([]any) {
			v, _ := id.(map[string]any)["value"].(string)
			if v != "" && bytes.Contains(mustJSON(first), []byte(`"`+v+`"`)) {
				t.Errorf("identifier value %q passed untokenized", v)
			}
		}
	})

	t.Run("search bundle loses patients outside the care team and total matches", func(t *testing.T) {
		// All conditions fit one page, so the adjusted total is exact.
		r := s.do("GET", "/fhir/Condition?_count=1000", doc, nil, nil)
		if r.status != 200 {
			t.Fatalf("status %d: %.300s", r.status, r.body)
		}
		b := decodeJSON(t, r.body)
		matches := 0
		for _, e := range entries(b) {
			res, _ := e["resource"].(map[string]any)
			if res["resourceType"] == "OperationOutcome" {
				continue
			}
			matches++
			ref, _ := res["subject"].(map[string]any)["reference"].(string)
			n, _ := fhirdata.PatientNumber(strings.TrimPrefix(ref, "Patient/"))
			if (n-1)%60 != 0 {
				t.Errorf("entry about %s is not on prac-001's care team", ref)
			}
		}
		if matches == 0 {
			t.Fatal("no entries left at all")
		}
		if total, _ := b["total"].(float64); int(total) != matches {
			t.Errorf("total = %v, entries = %d", b["total"], matches)
		}
	})

	t.Run("a paged search drops the total it cannot know", func(t *testing.T) {
		r := s.do("GET", "/fhir/Patient?_count=100", doc, nil, nil)
		if r.status != 200 {
			t.Fatalf("status %d: %.300s", r.status, r.body)
		}
		b := decodeJSON(t, r.body)
		if _, ok := b["total"]; ok {
			t.Errorf("paged Bundle still states total %v, which counts patients outside the care team", b["total"])
		}
		for _, e := range entries(b) {
			res, _ := e["resource"].(map[string]any)
			if res["resourceType"] != "Patient" {
				continue
			}
			if n, _ := fhirdata.PatientNumber(res["id"].(string)); (n-1)%60 != 0 {
				t.Errorf("entry %v is not on prac-001's care team", res["id"])
			}
		}
	})

	t.Run("PSY observation withheld without a permitting purpose", func(t *testing.T) {
		psy := fhirdata.LabelledObservationID(1, fhirdata.LabelPSY)
		r := s.do("GET", "/fhir/Observation?patient=pat-0001", doc, nil, nil)
		if r.status != 200 {
			t.Fatalf("status %d: %.300s", r.status, r.body)
		}
		if bytes.Contains(r.body, []byte(psy)) {
			t.Fatalf("PSY observation %s reached the client", psy)
		}
		if !bytes.Contains(r.body, []byte("suppressed")) {
			t.Error("the Bundle does not say that entries were suppressed")
		}
		single := s.do("GET", "/fhir/Observation/"+psy, doc, nil, nil)
		if single.status != 403 || bytes.Contains(single.body, []byte("PSY")) {
			t.Errorf("direct read of the PSY observation: status %d body %.200s, want 403", single.status, single.body)
		}
	})

	t.Run("gzip is never passed unredacted", func(t *testing.T) {
		s.up.reset()
		r := s.do("GET", "/fhir/Patient/pat-0001", billing, map[string]string{"accept-encoding": "gzip"}, nil)
		if r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
		body := r.body
		if r.header.Get("content-encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		if bytes.Contains(body, []byte("telecom")) {
			t.Fatal("compressed path leaked telecom")
		}
		for _, req := range s.up.requests() {
			if req.headers.Get("accept-encoding") != "" {
				t.Errorf("upstream was asked for %q", req.headers.Get("accept-encoding"))
			}
		}
	})
}

func TestEndToEndFailClosedBodies(t *testing.T) {
	s := startStack(t, stackOptions{maxBody: 16 << 10, mutate: withTokenKey(t)})
	billing := s.token(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})

	t.Run("body over the buffer limit", func(t *testing.T) {
		r := s.do("GET", "/fhir/Patient?_count=500", billing, nil, nil)
		if r.status < 500 {
			t.Fatalf("status %d for an oversized body, want an error", r.status)
		}
		if bytes.Contains(r.body, []byte("telecom")) || bytes.Contains(r.body, []byte("pat-0")) {
			t.Fatalf("oversized body leaked data: %.200s", r.body)
		}
	})

	t.Run("malformed JSON", func(t *testing.T) {
		s.up.override("/fhir/Patient/pat-0001", "application/fhir+json", `{"resourceType":"Patient","id":"pat-0001","telecom":[{"value":"555-0100"}`)
		r := s.do("GET", "/fhir/Patient/pat-0001", billing, nil, nil)
		if r.status != 502 {
			t.Fatalf("status %d for malformed JSON, want 502", r.status)
		}
		if strings.Contains(string(r.body), "555-0100") {
			t.Fatal("malformed body leaked")
		}
	})

	t.Run("compressed upstream body is refused", func(t *testing.T) {
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		_, _ = zw.Write([]byte(`{"resourceType":"Patient","id":"pat-0001","telecom":[{"value":"555-0100"}]}`))
		_ = zw.Close()
		s.up.overrideEncoded("/fhir/Patient/pat-0001", "application/fhir+json", "gzip", zb.String())
		r := s.do("GET", "/fhir/Patient/pat-0001", billing, nil, nil)
		if r.status != 502 || !isOutcome(r) {
			t.Fatalf("status %d body %.200s, want 502 OperationOutcome", r.status, r.body)
		}
	})
}

func upstreamPatient(t *testing.T, s *stack, id string) map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + s.up.addr + "/fhir/Patient/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return decodeJSON(t, b)
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
