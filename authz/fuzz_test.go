package authz

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

// FuzzParse throws arbitrary targets and header values at the parser: it
// must never panic, and an accepted request's canonical form must parse
// again to the same interpretation (canonicalization is idempotent, so no
// second normalizer downstream can find a different request in it).
func FuzzParse(f *testing.F) {
	for _, tc := range parseCases() {
		f.Add(tc.methodOr("GET"), tc.path, tc.headers["x-purpose-of-use"], tc.headers["x-break-glass"], tc.headers["content-type"], tc.body)
	}
	p := newTestParser(f)
	f.Fuzz(func(t *testing.T, method, target, purpose, breakGlass, ctype, body string) {
		h := map[string]string{}
		if purpose != "" {
			h["x-purpose-of-use"] = purpose
		}
		if breakGlass != "" {
			h["x-break-glass"] = breakGlass
		}
		if ctype != "" {
			h["content-type"] = ctype
		}
		req, err := p.Parse(&CheckInput{Method: method, Path: target, Headers: h, Body: []byte(body)})
		if err != nil {
			if CodeOf(err) == "" {
				t.Fatalf("uncoded error %v", err)
			}
			return
		}
		if req.FHIR.Patients == nil || !sortedUnique(req.FHIR.Patients) {
			t.Fatalf("patients not sorted unique: %q", req.FHIR.Patients)
		}
		if method == "POST" || method == "PUT" || method == "PATCH" {
			return // the body is part of the request; the target alone does not re-parse to it
		}
		again, err := p.Parse(&CheckInput{Method: method, Path: canonicalTarget(req), Headers: h})
		if err != nil {
			t.Fatalf("canonical %q of %q refused: %v", canonicalTarget(req), target, err)
		}
		if !reflect.DeepEqual(again.FHIR, req.FHIR) || again.Path != req.Path {
			t.Fatalf("not idempotent for %q:\n %+v\n %+v", target, req.FHIR, again.FHIR)
		}
	})
}

func (tc parseCase) methodOr(def string) string {
	if tc.method == "" {
		return def
	}
	return tc.method
}

func sortedUnique(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

func BenchmarkParse(b *testing.B) {
	p := newTestParser(b)
	cases := []struct{ name, path string }{
		{"read", "/fhir/Patient/123"},
		{"search", "/fhir/Observation?patient=Patient/123&code=http://loinc.org|1234-5&_count=50"},
		{"compartment", "/fhir/Patient/123/Observation?category=laboratory"},
	}
	h := map[string]string{"accept": "application/fhir+json", "x-purpose-of-use": "TREAT", "user-agent": "bench"}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			in := &CheckInput{Method: "GET", Path: c.path, Headers: h}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Parse(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchVerifier(b *testing.B) (*JWTVerifier, testKey) {
	jwks := filepath.Join(b.TempDir(), "jwks.json")
	k := newTestKey(b, "k1", jwa.RS256)
	writeJWKS(b, jwks, k)
	return newVerifier(b, jwks, nil), k
}

func BenchmarkVerifyCached(b *testing.B) {
	v, k := benchVerifier(b)
	tok := mint(b, k, baseClaims(time.Now()))
	if _, err := v.Verify(b.Context(), tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(b.Context(), tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyUncached(b *testing.B) {
	v, k := benchVerifier(b)
	v.cache = nil
	tok := mint(b, k, baseClaims(time.Now()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(b.Context(), tok); err != nil {
			b.Fatal(err)
		}
	}
}
