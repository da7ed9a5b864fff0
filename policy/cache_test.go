package policy

import (
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/phigate/phigate/authz"
)

func compileModules(t *testing.T, mods ...string) *ast.Compiler {
	t.Helper()
	parsed := map[string]*ast.Module{}
	for i, m := range mods {
		name := fmt.Sprintf("m%d.rego", i)
		pm, err := ast.ParseModuleWithOpts(name, m, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		parsed[name] = pm
	}
	c := ast.NewCompiler()
	if c.Compile(parsed); c.Failed() {
		t.Fatal(c.Errors)
	}
	return c
}

// The cache key covers exactly what the policy reads: fields below one it
// reads whole are folded in, and the request time is left to until_ns.
func TestInputPaths(t *testing.T) {
	c := compileModules(t, `package p
import input.identity as id
a if input.identity.subject == "x"
b if id.roles[_] == "y"
c if input.fhir.patients[input.fhir.id]
d if input.time_ns > 0
e if input.headers["x-purpose"] == "z"
`)
	paths, ok := inputPaths(c)
	if !ok {
		t.Fatal("a policy with constant input paths is not cacheable")
	}
	var got []string
	for _, p := range paths {
		got = append(got, strings.Join(p, "."))
	}
	if want := []string{"fhir.id", "fhir.patients", "headers.x-purpose", "identity.roles", "identity.subject"}; !slices.Equal(got, want) {
		t.Fatalf("paths = %v, want %v", got, want)
	}
	// Reading input.fhir whole covers the paths below it.
	c = compileModules(t, "package p\na if input.fhir.id == \"1\"\nb := input.fhir\nc if input.fhir.patients[0]\n")
	if paths, ok = inputPaths(c); !ok || len(paths) != 1 || strings.Join(paths[0], ".") != "fhir" {
		t.Fatalf("paths = %v (%v), want [fhir]", paths, ok)
	}
}

// A policy that reads the input whole or through a computed top-level key
// may depend on anything: it gets no cache.
func TestInputPathsUnbounded(t *testing.T) {
	for _, body := range []string{
		"x := input",
		"x := object.get(input, \"method\", \"\")",
		"x if input[k] == 1",
		"x := count(input)",
		"y if input.a\nx if {\n\ty with input as {}\n}",
	} {
		c := compileModules(t, "package p\n"+body+"\n")
		if paths, ok := inputPaths(c); ok {
			t.Errorf("%q: cacheable with paths %v, want not cacheable", body, paths)
		}
	}
}

// The shipped library reads identity, the FHIR request, method, purpose and
// break-glass, never the request id, headers, path, query or source: two
// requests differing only there share a key.
func TestEmbeddedLibraryCacheKey(t *testing.T) {
	e, err := NewEngine(t.Context(), Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dc := e.Snapshot().cache
	if dc == nil {
		t.Fatal("the embedded library has no decision cache")
	}
	for _, p := range dc.paths {
		switch p[0] {
		case "id", "headers", "path", "query", "source", "time_ns":
			t.Errorf("the cache key includes input.%s", strings.Join(p, "."))
		}
	}
	a := cacheRequest(1)
	b := cacheRequest(2)
	b.ID, b.TimeNS, b.Source.Address = "other", a.TimeNS+5, "10.9.9.9:4444"
	b.Headers = map[string]string{"user-agent": "other", "x-request-id": "r2"}
	b.Path, b.Query = a.Path+"?x=1", map[string][]string{"x": {"1"}}
	// The key built field by field is the key of the whole input document.
	for _, r := range []*authz.Request{a, b} {
		whole := inputValue(r).(ast.Object)
		if dc.key(r) != dc.keyFrom(func(name string) ast.Value {
			if t := whole.Get(ast.InternedTerm(name)); t != nil {
				return t.Value
			}
			return nil
		}) {
			t.Fatalf("key(%s) differs from the key of its input document", r.ID)
		}
	}
	if dc.key(a) != dc.key(b) {
		t.Fatal("requests differing only in fields the policy never reads have different keys")
	}
	for name, mut := range map[string]func(r *authz.Request){
		"subject":     func(r *authz.Request) { r.Identity.Subject = "someone-else" },
		"role":        func(r *authz.Request) { r.Identity.Roles = []string{"nurse"} },
		"mfa":         func(r *authz.Request) { r.Identity.MFA = true },
		"patient":     func(r *authz.Request) { r.FHIR.Patients = []string{"pat-0002"} },
		"interaction": func(r *authz.Request) { r.FHIR.Interaction = "vread" },
		"purpose":     func(r *authz.Request) { r.Purpose = "ETREAT" },
		"break-glass": func(r *authz.Request) { r.BreakGlass.Requested = true },
		"grant": func(r *authz.Request) {
			r.BreakGlass.Grants = []authz.Grant{{Patient: "pat-0001", ExpiresNS: r.TimeNS + 1}}
		},
	} {
		c := cacheRequest(1)
		mut(c)
		if dc.key(a) == dc.key(c) {
			t.Errorf("changing %s leaves the key unchanged", name)
		}
	}
}

func cacheRequest(n int) *authz.Request {
	return &authz.Request{
		ID: fmt.Sprintf("req-%d", n), Method: "GET", Path: "/fhir/Patient/pat-0001",
		TimeNS:  time.Date(2025, 3, 12, 15, 0, 10, 0, time.UTC).UnixNano(),
		Headers: map[string]string{"x-request-id": fmt.Sprintf("r%d", n)},
		Query:   map[string][]string{},
		Source:  authz.Peer{Address: fmt.Sprintf("10.0.0.%d:5000", n)},
		Identity: authz.Identity{Authenticated: true, Subject: "dr-house", FHIRUser: "Practitioner/prac-001",
			Roles: []string{"physician"}, Scopes: []authz.Scope{}},
		FHIR: authz.FHIRRequest{Interaction: "read", ResourceType: "Patient", ID: "pat-0001", Patients: []string{"pat-0001"}},
	}
}

// Canonical text: equal values, however built, give one key; different
// values never share one.
func TestAppendCanonical(t *testing.T) {
	same := [][2]string{
		{`{"a": 1, "b": [1, "x"]}`, `{"b": [1, "x"], "a": 1}`},
		{`{"x", "y"}`, `{"y", "x"}`},
	}
	for _, p := range same {
		a, b := ast.MustParseTerm(p[0]).Value, ast.MustParseTerm(p[1]).Value
		if string(appendCanonical(nil, a)) != string(appendCanonical(nil, b)) {
			t.Errorf("%s and %s have different keys", p[0], p[1])
		}
	}
	distinct := []string{`1`, `"1"`, `true`, `"true"`, `null`, `"null"`, `["ab"]`, `["a", "b"]`,
		`{"a": "b"}`, `{"ab": ""}`, `["a:b"]`, `{"a:b"}`, `[]`, `{}`, `set()`, `1.5`, `15`, `[["a"]]`, `["a", []]`}
	seen := map[string]string{}
	for _, s := range distinct {
		k := string(appendCanonical(nil, ast.MustParseTerm(s).Value))
		if prev, ok := seen[k]; ok {
			t.Errorf("%s and %s share the key %q", prev, s, k)
		}
		seen[k] = s
	}
}

// A policy whose decision depends on the time sets until_ns to the end of
// the second it was evaluated in; the cache must honour it to the nanosecond.
const secondPolicy = `package phigate.authz

sec := input.time_ns - (input.time_ns % 1000000000)

default allow := false

allow if input.identity.subject == "alice"

decision := {
	"allow": allow,
	"status": 403,
	"reason": sprintf("second %d data %s", [sec, data.phigate.tag]),
	"cache": {"until_ns": sec + 1000000000},
}
`

func TestDecisionCacheHonoursUntil(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, secondPolicy)
	writeData(t, dir, `{"phigate": {"tag": "one"}}`)
	reg := prometheus.NewRegistry()
	e, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}, ReloadInterval: 100 * time.Millisecond}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	base := time.Date(2025, 3, 12, 15, 0, 10, 0, time.UTC).UnixNano()
	at := func(subject string, ns int64) string {
		t.Helper()
		r := cacheRequest(int(ns % 1000))
		r.Identity.Subject, r.TimeNS = subject, ns
		d, err := e.Evaluate(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		return d.Reason
	}
	count := func(result string) int {
		return int(counterValue(t, e.cacheStats, result))
	}
	first := at("alice", base+100)
	if got := at("alice", base+999_999_999); got != first {
		t.Fatalf("inside the window: %q, want the cached %q", got, first)
	}
	if count("hit") != 1 || count("miss") != 1 {
		t.Fatalf("hit=%d miss=%d, want 1 and 1", count("hit"), count("miss"))
	}
	// Before the instant it was evaluated for, and at until_ns, the cached
	// decision does not apply.
	if got := at("alice", base+50); got != first || count("hit") != 1 {
		t.Fatalf("before the window: %q with %d hits, want a fresh evaluation", got, count("hit"))
	}
	if got := at("alice", base+1_000_000_000); got == first {
		t.Fatalf("at until_ns the old decision %q was reused", got)
	}
	// Another caller is another key.
	if got := at("bob", base+200); count("hit") != 1 || !strings.Contains(got, "one") {
		t.Fatalf("bob: %q with %d hits", got, count("hit"))
	}
	// A reload (new data) starts with an empty cache.
	writeData(t, dir, `{"phigate": {"tag": "two"}}`)
	waitFor(t, func() bool { return strings.Contains(at("alice", base+300), "two") })
}

// A policy that sets no until_ns is evaluated every time.
func TestDecisionCacheNeedsUntil(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, strings.Replace(goodPolicy, "%s", "one", 1))
	e, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	req := cacheRequest(1)
	for range 3 {
		if _, err := e.Evaluate(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.Snapshot().cache.len(); n != 0 {
		t.Fatalf("%d decisions cached from a policy without until_ns", n)
	}
	if got := int(counterValue(t, e.cacheStats, "not_reusable")); got != 3 {
		t.Fatalf("not_reusable = %d, want 3", got)
	}
}

func TestDecisionCacheDisabled(t *testing.T) {
	e, err := NewEngine(t.Context(), Config{DecisionCache: DecisionCacheConfig{Disabled: true}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Snapshot().cache != nil {
		t.Fatal("decision_cache.disabled still built a cache")
	}
	// Each decision is evaluated, and counted as made with no cache.
	for range 2 {
		if _, err := e.Evaluate(t.Context(), cacheRequest(1)); err != nil {
			t.Fatal(err)
		}
	}
	if c := e.CacheCounts(); c.Uncached != 2 || c.Hits+c.Misses+c.NotReusable != 0 || c.Evaluated() != 2 {
		t.Fatalf("counts with the cache off: %+v", c)
	}
	if err := (&Config{DecisionCache: DecisionCacheConfig{Entries: -1}}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "policy.decision_cache.entries") {
		t.Fatalf("negative entries: %v", err)
	}
}

// The cache holds at most twice its size, and what was used last survives
// a turnover.
func TestDecisionCacheBounded(t *testing.T) {
	dc := &decisionCache{perShard: 4, seed: maphash.MakeSeed()}
	for i := range dc.shards {
		dc.shards[i].cur = map[string]cacheEntry{}
	}
	for i := range 1000 {
		dc.put(fmt.Sprint("k", i), authz.Decision{Reason: fmt.Sprint(i)}, 0, 10)
	}
	if n := dc.len(); n > 2*4*cacheShards {
		t.Fatalf("%d entries held, bound %d", n, 2*4*cacheShards)
	}
	if d, ok := dc.get("k999", 5); !ok || d.Reason != "999" {
		t.Fatalf("the newest entry is gone: %v %v", d, ok)
	}
}

func writeData(t *testing.T, dir, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// counterValue reads phigate_policy_decision_cache_total{result} back.
func counterValue(t *testing.T, cs *CacheStats, result string) float64 {
	t.Helper()
	c := cs.counts()
	n, ok := map[string]uint64{"hit": c.Hits, "miss": c.Misses, "not_reusable": c.NotReusable, "uncached": c.Uncached}[result]
	if !ok {
		t.Fatalf("no result %q", result)
	}
	return float64(n)
}

// MaxAge shortens what the policy allows.
func TestDecisionCacheMaxAge(t *testing.T) {
	dc := &decisionCache{perShard: 4, seed: maphash.MakeSeed(), maxAge: 10}
	for i := range dc.shards {
		dc.shards[i].cur = map[string]cacheEntry{}
	}
	dc.put("k", authz.Decision{Reason: "r"}, 100, 1000)
	if _, ok := dc.get("k", 109); !ok {
		t.Fatal("miss inside max age")
	}
	if _, ok := dc.get("k", 110); ok {
		t.Fatal("hit at max age, though the policy allowed longer")
	}
}

// Every decision names the revision that evaluated it and the request time
// it was evaluated for; a reused one says so and keeps the original time,
// and with the cache disabled nothing is marked reused.
func TestDecisionProvenance(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, secondPolicy)
	writeData(t, dir, `{"phigate": {"tag": "one"}}`)
	base := time.Date(2025, 3, 12, 15, 0, 10, 0, time.UTC).UnixNano()
	for _, disabled := range []bool{false, true} {
		e, err := NewEngine(t.Context(), Config{Source: Source{Dir: dir}, DecisionCache: DecisionCacheConfig{Disabled: disabled}}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		rev := e.Snapshot().Revision
		if rev == "" {
			t.Fatal("snapshot has no revision")
		}
		for i, ns := range []int64{base + 100, base + 500_000_000} {
			r := cacheRequest(1)
			r.TimeNS = ns
			d, err := e.Evaluate(t.Context(), r)
			if err != nil {
				t.Fatal(err)
			}
			want := authz.Provenance{Revision: rev, EvaluatedNS: ns}
			if i == 1 && !disabled {
				want = authz.Provenance{Revision: rev, EvaluatedNS: base + 100, Reused: true}
			}
			if d.Policy != want {
				t.Errorf("cache disabled=%v, request %d: provenance %+v, want %+v", disabled, i, d.Policy, want)
			}
		}
		e.Close()
	}
}
