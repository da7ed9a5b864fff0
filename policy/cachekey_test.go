package policy

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phigate/phigate/authz"
)

// TestFastKeyMatchesAST: for generated requests, the key written straight
// from the request is the key of the AST input, path by path, on every
// path of the input (keyPaths, found by reflection) and on fields that do
// not exist.
func TestFastKeyMatchesAST(t *testing.T) {
	fastPaths := keyPaths(t)
	r := rand.New(rand.NewPCG(7, 11))
	for i := range 3000 {
		req := randomRequest(r, 0)
		whole := inputValue(req).(ast.Object)
		field := func(name string) ast.Value {
			if t := whole.Get(ast.InternedTerm(name)); t != nil {
				return t.Value
			}
			return nil
		}
		for _, p := range fastPaths {
			dc := &decisionCache{paths: [][]string{p}}
			if got, want := dc.key(req), dc.keyFrom(field); got != want {
				t.Fatalf("request %d, path %s:\nfast %q\nAST  %q\nrequest %+v", i, strings.Join(p, "."), got, want, req)
			}
		}
		dc := &decisionCache{paths: minimalPaths(append([][]string(nil), fastPaths...))}
		if dc.key(req) != dc.keyFrom(field) {
			t.Fatalf("request %d: the whole key differs", i)
		}
	}
}

func randomRequest(r *rand.Rand, depth int) *authz.Request {
	str := func() string {
		switch r.IntN(6) {
		case 0:
			return ""
		case 1:
			return "1:s3:x"
		case 2:
			return "Ünïcødé ✓"
		default:
			return []string{"a", "read", "Patient", "pat-0001", "dr-house", "TREAT", "u"}[r.IntN(7)]
		}
	}
	strs := func() []string {
		switch r.IntN(3) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		out := make([]string, 1+r.IntN(3))
		for i := range out {
			out[i] = str()
		}
		return out
	}
	num := func() int64 {
		return []int64{0, 1, -5, 1741791600000000000}[r.IntN(4)]
	}
	req := &authz.Request{
		ID: str(), Method: str(), Path: str(), TimeNS: num(), Purpose: str(),
		Headers: map[string]string{"x-a": str()}, Query: map[string][]string{"q": strs()},
		Source: authz.Peer{Address: str(), Principal: str()},
		Identity: authz.Identity{Authenticated: r.IntN(2) == 0, Error: str(), Subject: str(), Issuer: str(),
			FHIRUser: str(), Roles: strs(), Patient: str(), ClientID: str(), MFA: r.IntN(2) == 0, AMR: strs(),
			ACR: str(), IssuedAt: num(), Expires: num(), Service: r.IntN(2) == 0, Purpose: str()},
		BreakGlass: authz.BreakGlassRequest{Requested: r.IntN(2) == 0, Reason: str()},
		FHIR:       randomFHIR(r, str, strs, depth),
	}
	for range r.IntN(3) {
		req.Identity.Scopes = append(req.Identity.Scopes, authz.Scope{Raw: str(), Context: str(), Resource: str(), Permissions: str()})
	}
	for range r.IntN(3) {
		req.BreakGlass.Grants = append(req.BreakGlass.Grants, authz.Grant{Patient: str(), Reason: str(), ExpiresNS: num()})
	}
	return req
}

func randomFHIR(r *rand.Rand, str func() string, strs func() []string, depth int) authz.FHIRRequest {
	f := authz.FHIRRequest{Interaction: authz.Interaction(str()), ResourceType: str(), ID: str(), Version: str(), Operation: str(),
		Patients: strs(), AllPatients: r.IntN(2) == 0, Include: strs(), IncludedTypes: strs(), RevInclude: strs(), Method: str(), Kind: str()}
	if r.IntN(3) == 0 {
		f.Compartment = &authz.Compartment{Type: str(), ID: str()}
	}
	if depth < 2 && r.IntN(3) == 0 {
		for range 1 + r.IntN(3) {
			f.Entries = append(f.Entries, randomFHIR(r, str, strs, depth+1))
		}
	}
	return f
}

// BenchmarkCacheKey is the key of a typical read with the shipped
// library's paths, written from the request and built through the AST.
func BenchmarkCacheKey(b *testing.B) {
	e, err := NewEngine(b.Context(), Config{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	dc := e.Snapshot().cache
	req := cacheRequest(1)
	req.Identity.Scopes = []authz.Scope{{Raw: "user/*.rs", Context: "user", Resource: "*", Permissions: "rs"}}
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = dc.key(req)
		}
	})
	b.Run("ast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = dc.keyFrom(func(name string) ast.Value { return inputField(req, name) })
		}
	})
}

// keyFrom builds the key from the AST of the input whose top-level fields
// field returns: the definition key must agree with.
func (dc *decisionCache) keyFrom(field func(name string) ast.Value) string {
	var b []byte
	for _, p := range dc.paths {
		b = appendProjected(b, field(p[0]), p[1:])
	}
	return string(b)
}

// len reports the number of entries held (both generations).
func (dc *decisionCache) len() int {
	n := 0
	for i := range dc.shards {
		s := &dc.shards[i]
		s.mu.Lock()
		n += len(s.cur) + len(s.prev)
		s.mu.Unlock()
	}
	return n
}

// The key of a request is built in a stack buffer and costs one allocation,
// the string itself; a change that moves the buffer to the heap (a cycle of
// functions in the canonical writer, for one) doubles that on every Check.
func TestCacheKeyAllocatesOnce(t *testing.T) {
	e, err := NewEngine(t.Context(), Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	dc := e.Snapshot().cache
	req := cacheRequest(1)
	if n := testing.AllocsPerRun(100, func() { _ = dc.key(req) }); n != 1 {
		t.Fatalf("key allocates %v times per request, want 1", n)
	}
}

// Paths into the headers and the query, which the key once built through
// the AST, are written from the request too, still with one allocation.
func TestCacheKeyMapPathsAllocateOnce(t *testing.T) {
	req := cacheRequest(1)
	req.Query = map[string][]string{"patient": {"pat-0001"}, "code": {"x", "y"}}
	dc := &decisionCache{paths: [][]string{{"headers"}, {"query"}, {"query", "patient"}, {"headers", "x-request-id"}}}
	if n := testing.AllocsPerRun(100, func() { _ = dc.key(req) }); n != 1 {
		t.Fatalf("key allocates %v times per request, want 1", n)
	}
}
