package authz

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

// foreignEvaluator answers from the foreign document only, and records
// which of its two entry points was asked.
type foreignEvaluator struct {
	native, foreign int
	doc             []byte
}

func (f *foreignEvaluator) Evaluate(context.Context, *Request) (Decision, error) {
	f.native++
	return Decision{Allow: true}, nil
}

func (f *foreignEvaluator) EvaluateForeign(_ context.Context, _ *Request, doc []byte) (Decision, error) {
	f.foreign++
	f.doc = doc
	return Decision{Allow: true}, nil
}

// TestAuthorizeForeign: a request carrying a foreign document is decided
// from it, after identity and canonicalization, never on the canonical
// form alone; one whose document could not be built is refused; an
// evaluator that cannot read the document denies.
func TestAuthorizeForeign(t *testing.T) {
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	k := newTestKey(t, "k1", jwa.RS256)
	writeJWKS(t, jwks, k)
	v := newVerifier(t, jwks, nil)
	tok := "Bearer " + mint(t, k, baseClaims(time.Now()))
	p := newTestParser(t)
	in := func(path, auth string, doc []byte, err error) *CheckInput {
		h := map[string]string{}
		if auth != "" {
			h["authorization"] = auth
		}
		return &CheckInput{ID: "r", Method: "GET", Path: path, Headers: h, Foreign: doc, ForeignErr: err}
	}
	cases := []struct {
		name    string
		in      *CheckInput
		status  int
		foreign int
	}{
		{"decided from the document", in("/fhir/Patient/1", tok, []byte(`{}`), nil), 200, 1},
		{"no identity: refused before the policy", in("/fhir/Patient/1", "", []byte(`{}`), nil), 401, 0},
		{"ambiguous: refused before the policy", in("/fhir/Patient/1/../2", tok, []byte(`{}`), nil), 400, 0},
		{"document not built", in("/fhir/Patient/1", tok, nil, Errorf(CodeUnsupported, "body")), 400, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := &foreignEvaluator{}
			a := NewAuthorizer(Options{Verifier: v, Parser: p, Evaluator: ev})
			_, d, _ := a.Authorize(t.Context(), tc.in)
			if d.Status != tc.status || ev.foreign != tc.foreign || ev.native != 0 {
				t.Fatalf("status %d foreign %d native %d, want %d %d 0", d.Status, ev.foreign, ev.native, tc.status, tc.foreign)
			}
		})
	}
	a := NewAuthorizer(Options{Verifier: v, Parser: p, Evaluator: &echoEvaluator{}})
	if _, d, err := a.Authorize(t.Context(), in("/fhir/Patient/1", tok, []byte(`{}`), nil)); d.Allow || err == nil {
		t.Fatalf("an evaluator without the foreign entry point: %+v, %v; want a denial", d, err)
	}
}
