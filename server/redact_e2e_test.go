package server_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/demo/fhirdata"
	"github.com/phigate/phigate/internal/stacktest"
)

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
	s := stacktest.Start(t, stacktest.Options{Compress: true, Mutate: stacktest.WithTokenKey(t)})
	billing := s.Token(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})
	nurse := s.Token(demokeys.TokenSpec{Subject: "nurse-01", Roles: []string{"nurse"}, FHIRUser: "Practitioner/prac-001", Purpose: "TREAT"})
	doc := s.Token(stacktest.Physician(1))

	t.Run("billing sees no telecom or address", func(t *testing.T) {
		r := s.Do("GET", "/fhir/Patient/pat-0001", billing, nil, nil)
		if r.Status != 200 {
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
		p := decodeJSON(t, r.Body)
		for _, field := range []string{"telecom", "address", "text"} {
			if _, ok := p[field]; ok {
				t.Errorf("billing response still has %s", field)
			}
		}
		if !bytes.Contains(r.Body, []byte(`"REDACTED"`)) {
			t.Error("redacted resource is not marked REDACTED in meta.security")
		}
		if got := r.Header.Get("content-length"); got != "" && got != itoa(len(r.Body)) {
			t.Errorf("content-length %s, body %d bytes", got, len(r.Body))
		}
	})

	t.Run("nurse sees tokenized identifiers, equal across responses", func(t *testing.T) {
		var first []any
		for i := range 2 {
			r := s.Do("GET", "/fhir/Patient/pat-0001", nurse, nil, nil)
			if r.Status != 200 {
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
			ids, _ := decodeJSON(t, r.Body)["identifier"].([]any)
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
		r := s.Do("GET", "/fhir/Condition?_count=1000", doc, nil, nil)
		if r.Status != 200 {
			t.Fatalf("status %d: %.300s", r.Status, r.Body)
		}
		b := decodeJSON(t, r.Body)
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
		r := s.Do("GET", "/fhir/Patient?_count=100", doc, nil, nil)
		if r.Status != 200 {
			t.Fatalf("status %d: %.300s", r.Status, r.Body)
		}
		b := decodeJSON(t, r.Body)
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
		r := s.Do("GET", "/fhir/Observation?patient=pat-0001", doc, nil, nil)
		if r.Status != 200 {
			t.Fatalf("status %d: %.300s", r.Status, r.Body)
		}
		if bytes.Contains(r.Body, []byte(psy)) {
			t.Fatalf("PSY observation %s reached the client", psy)
		}
		if !bytes.Contains(r.Body, []byte("suppressed")) {
			t.Error("the Bundle does not say that entries were suppressed")
		}
		single := s.Do("GET", "/fhir/Observation/"+psy, doc, nil, nil)
		if single.Status != 403 || bytes.Contains(single.Body, []byte("PSY")) {
			t.Errorf("direct read of the PSY observation: status %d body %.200s, want 403", single.Status, single.Body)
		}
	})

	t.Run("gzip is never passed unredacted", func(t *testing.T) {
		s.Up.Reset()
		r := s.Do("GET", "/fhir/Patient/pat-0001", billing, map[string]string{"accept-encoding": "gzip"}, nil)
		if r.Status != 200 {
			t.Fatalf("status %d", r.Status)
		}
		body := r.Body
		if r.Header.Get("content-encoding") == "gzip" {
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
		for _, req := range s.Up.Requests() {
			if req.Headers.Get("accept-encoding") != "" {
				t.Errorf("upstream was asked for %q", req.Headers.Get("accept-encoding"))
			}
		}
	})
}

func TestEndToEndFailClosedBodies(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{MaxBody: 16 << 10, Mutate: stacktest.WithTokenKey(t)})
	billing := s.Token(demokeys.TokenSpec{Subject: "billing-01", Roles: []string{"billing"}, Purpose: "HPAYMT"})

	t.Run("body over the buffer limit", func(t *testing.T) {
		r := s.Do("GET", "/fhir/Patient?_count=500", billing, nil, nil)
		if r.Status < 500 {
			t.Fatalf("status %d for an oversized body, want an error", r.Status)
		}
		if bytes.Contains(r.Body, []byte("telecom")) || bytes.Contains(r.Body, []byte("pat-0")) {
			t.Fatalf("oversized body leaked data: %.200s", r.Body)
		}
	})

	t.Run("malformed JSON", func(t *testing.T) {
		s.Up.Override("/fhir/Patient/pat-0001", "application/fhir+json", `{"resourceType":"Patient","id":"pat-0001","telecom":[{"value":"555-0100"}`)
		r := s.Do("GET", "/fhir/Patient/pat-0001", billing, nil, nil)
		if r.Status != 502 {
			t.Fatalf("status %d for malformed JSON, want 502", r.Status)
		}
		if strings.Contains(string(r.Body), "555-0100") {
			t.Fatal("malformed body leaked")
		}
	})

	t.Run("compressed upstream body is refused", func(t *testing.T) {
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		_, _ = zw.Write([]byte(`{"resourceType":"Patient","id":"pat-0001","telecom":[{"value":"555-0100"}]}`))
		_ = zw.Close()
		s.Up.OverrideEncoded("/fhir/Patient/pat-0001", "application/fhir+json", "gzip", zb.String())
		r := s.Do("GET", "/fhir/Patient/pat-0001", billing, nil, nil)
		if r.Status != 502 || !stacktest.IsOutcome(r) {
			t.Fatalf("status %d body %.200s, want 502 OperationOutcome", r.Status, r.Body)
		}
	})
}

func upstreamPatient(t *testing.T, s *stacktest.Stack, id string) map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + s.Up.Addr + "/fhir/Patient/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return decodeJSON(t, b)
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
