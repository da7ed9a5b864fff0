package policy

import (
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/phigate/phigate/authz"
)

// The decision cache reuses a decision for a later request that is the same
// in every input field the policy reads, for as long as the policy itself
// says the decision holds (decision.cache.until_ns). It adds no policy
// semantics of its own:
//
//   - The key is the projection of the input on the paths the compiled
//     policy references (found by walking its modules), so a field the
//     policy never reads (request id, source port, user agent) cannot make
//     two requests differ and a field it does read always does. A policy
//     that reads the input as a whole, or through a computed key at the top
//     level, gets no cache.
//   - The request time is the one field left out of the key. The policy
//     answers for it with until_ns: the decision holds for requests at or
//     after the instant it was evaluated for and before until_ns. A policy
//     that does not set until_ns is never reused.
//   - A cache belongs to one compiled Snapshot: a reload (new rules, new
//     data) starts empty.
//
// Entries live in two generations per shard: when the current one is full
// it becomes the previous one and the older is dropped, so memory is bounded
// by twice the configured size and recently used entries survive.

// timePath is the input field the policy's until_ns answers for.
const timePath = "time_ns"

type cacheEntry struct {
	d           authz.Decision
	from, until int64
}

const cacheShards = 16

type cacheShard struct {
	mu        sync.Mutex
	cur, prev map[string]cacheEntry
}

type decisionCache struct {
	paths    [][]string // sorted, none a prefix of another, timePath left out
	perShard int
	maxAge   int64 // nanoseconds; 0: no cap
	seed     maphash.Seed
	shards   [cacheShards]cacheShard
}

// newDecisionCache returns a cache for the compiled policy, or nil when the
// policy's reads of the input cannot be bounded or entries is 0.
func newDecisionCache(c *ast.Compiler, entries int, maxAge time.Duration) *decisionCache {
	if entries <= 0 {
		return nil
	}
	paths, ok := inputPaths(c)
	if !ok {
		return nil
	}
	dc := &decisionCache{paths: paths, perShard: max(1, entries/cacheShards), seed: maphash.MakeSeed(), maxAge: int64(maxAge)}
	for i := range dc.shards {
		dc.shards[i].cur = map[string]cacheEntry{}
	}
	return dc
}

// CacheKeyPaths names the input paths a cached decision is keyed on
// ("identity.roles", …); nil when the snapshot has no decision cache.
func (s *Snapshot) CacheKeyPaths() []string {
	if s.cache == nil {
		return nil
	}
	out := make([]string, len(s.cache.paths))
	for i, p := range s.cache.paths {
		out[i] = "input." + strings.Join(p, ".")
	}
	return out
}

// inputPaths lists the paths below input that the compiled modules read:
// the longest constant prefix of every reference rooted at input. ok is
// false when some reference has no constant first step (input itself,
// input[x]), since then any field may matter.
func inputPaths(c *ast.Compiler) (paths [][]string, ok bool) {
	ok = true
	var visit func(x any) bool
	walk := func(x any) { ast.NewGenericVisitor(visit).Walk(x) }
	visit = func(x any) bool {
		switch v := x.(type) {
		case ast.Ref:
			if v.HasPrefix(ast.InputRootRef) {
				var p []string
				for _, t := range v[1:] {
					s, isStr := t.Value.(ast.String)
					if !isStr {
						break
					}
					p = append(p, string(s))
				}
				if len(p) == 0 {
					ok = false
				}
				paths = append(paths, p)
			} else if _, isVar := v[0].Value.(ast.Var); !isVar {
				walk(v[0])
			}
			for _, t := range v[1:] {
				walk(t)
			}
			return true
		case ast.Var:
			if v.Equal(ast.InputRootDocument.Value) {
				ok = false
			}
		}
		return false
	}
	for _, name := range sortedModuleNames(c) {
		walk(c.Modules[name])
	}
	if !ok {
		return nil, false
	}
	return minimalPaths(paths), true
}

func sortedModuleNames(c *ast.Compiler) []string {
	names := make([]string, 0, len(c.Modules))
	for n := range c.Modules {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// minimalPaths sorts and deduplicates paths, drops every path below
// another one (reading input.a covers input.a.b) and drops timePath.
func minimalPaths(paths [][]string) [][]string {
	slices.SortFunc(paths, func(a, b []string) int { return slices.Compare(a, b) })
	var out [][]string
	for _, p := range paths {
		if n := len(out); n > 0 && hasPathPrefix(p, out[n-1]) {
			continue
		}
		out = append(out, p)
	}
	return slices.DeleteFunc(out, func(p []string) bool { return len(p) == 1 && p[0] == timePath })
}

func hasPathPrefix(p, prefix []string) bool {
	return len(p) >= len(prefix) && slices.Equal(p[:len(prefix)], prefix)
}

// key is the canonical text of the input's projection on the cached paths.
// Distinct projections give distinct keys: every value is written with its
// type and length-delimited strings. Every path is written straight from
// the request (appendRequestPath), never through the AST.
func (dc *decisionCache) key(r *authz.Request) string {
	b := make([]byte, 0, 512)
	for _, p := range dc.paths {
		b = appendRequestPath(b, r, p)
	}
	return string(b)
}

// appendProjected writes the value at rest below v (undefined when a step
// is missing or not an object).
func appendProjected(b []byte, v ast.Value, rest []string) []byte {
	for _, seg := range rest {
		o, isObj := v.(ast.Object)
		if !isObj {
			v = nil
			break
		}
		t := o.Get(ast.InternedTerm(seg))
		if t == nil {
			v = nil
			break
		}
		v = t.Value
	}
	return appendCanonical(b, v)
}

// appendCanonical writes v so that two values have the same text exactly
// when they are equal as Rego values (object keys and set members sorted).
// It recurses only into itself: escape analysis gives up on a cycle of
// functions, and the caller's key buffer would then move to the heap.
func appendCanonical(b []byte, v ast.Value) []byte {
	var elems *ast.Array
	switch x := v.(type) {
	case nil:
		return append(b, 'u')
	case ast.Null:
		return append(b, 'n')
	case ast.Boolean:
		return appendCanonBool(b, bool(x))
	case ast.Number:
		// An integer is written in one canonical form; any other number
		// by its literal text, so 1.0 and 1.00 merely miss each other.
		if i, ok := x.Int64(); ok {
			return appendCanonInt(b, i)
		}
		return appendString(append(b, 'N'), string(x))
	case ast.String:
		return appendCanonString(b, string(x))
	case *ast.Array:
		b, elems = append(b, 'a'), x
	case ast.Set:
		b, elems = append(b, 'S'), x.Sorted()
	case ast.Object:
		keys := x.Keys()
		slices.SortFunc(keys, func(a, c *ast.Term) int { return a.Value.Compare(c.Value) })
		b = appendCanonLen(append(b, 'o'), len(keys))
		for _, k := range keys {
			b = appendCanonical(b, k.Value)
			b = appendCanonical(b, x.Get(k).Value)
		}
		return b
	default:
		// Any other term (a ref or call cannot occur in an input) is
		// written by its string form behind a marker of its own.
		return appendString(append(b, '?'), v.String())
	}
	b = appendCanonLen(b, elems.Len())
	for i := range elems.Len() {
		b = appendCanonical(b, elems.Elem(i).Value)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(appendCanonLen(b, len(s)), s...)
}

func (dc *decisionCache) shard(key string) *cacheShard {
	return &dc.shards[maphash.String(dc.seed, key)%cacheShards]
}

// get returns the decision cached under key that holds at instant t.
func (dc *decisionCache) get(key string, t int64) (authz.Decision, bool) {
	s := dc.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.cur[key]
	if !ok {
		if e, ok = s.prev[key]; ok {
			s.putLocked(dc.perShard, key, e)
		}
	}
	if !ok || t < e.from || t >= e.until {
		return authz.Decision{}, false
	}
	return e.d, true
}

// put keeps d for requests in [from, until), shortened to maxAge.
func (dc *decisionCache) put(key string, d authz.Decision, from, until int64) {
	if dc.maxAge > 0 && until-from > dc.maxAge {
		until = from + dc.maxAge
	}
	s := dc.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putLocked(dc.perShard, key, cacheEntry{d: d, from: from, until: until})
}

func (s *cacheShard) putLocked(limit int, key string, e cacheEntry) {
	if _, ok := s.cur[key]; !ok && len(s.cur) >= limit {
		s.prev, s.cur = s.cur, make(map[string]cacheEntry, limit)
	}
	s.cur[key] = e
}

// CacheStats counts what the decision cache did, by outcome.
type CacheStats struct {
	by [4]prometheus.Counter // indexed by cacheHit, cacheMiss, cacheNotReusable, cacheNone
}

const (
	cacheHit = iota
	cacheMiss
	cacheNotReusable
	cacheNone
)

// NewCacheStats registers phigate_policy_decision_cache_total with reg
// (nil: counted but not exported).
func NewCacheStats(reg prometheus.Registerer) (*CacheStats, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "phigate_policy_decision_cache_total",
		Help: "Decisions by cache outcome: hit (reused), miss (evaluated and kept), not_reusable (evaluated; the policy set no lifetime), uncached (evaluated; no decision cache).",
	}, []string{"result"})
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			return nil, err
		}
	}
	cs := &CacheStats{}
	for i, r := range []string{"hit", "miss", "not_reusable", "uncached"} {
		cs.by[i] = vec.WithLabelValues(r)
	}
	return cs, nil
}

func (cs *CacheStats) count(outcome int) {
	if cs != nil {
		cs.by[outcome].Inc()
	}
}

// counts reads the counters back.
func (cs *CacheStats) counts() CacheCounts {
	var n [4]uint64
	for i, c := range cs.by {
		var m dto.Metric
		if c.Write(&m) == nil {
			n[i] = uint64(m.GetCounter().GetValue())
		}
	}
	return CacheCounts{Hits: n[cacheHit], Misses: n[cacheMiss], NotReusable: n[cacheNotReusable], Uncached: n[cacheNone]}
}

// CacheCounts is what the decision cache did since the Engine started;
// Uncached counts decisions made with no cache at all.
type CacheCounts struct{ Hits, Misses, NotReusable, Uncached uint64 }

// Evaluated is how many decisions the policy was evaluated for.
func (c CacheCounts) Evaluated() uint64 { return c.Misses + c.NotReusable + c.Uncached }

// String summarises the counts for a report.
func (c CacheCounts) String() string {
	total := c.Hits + c.Evaluated()
	switch {
	case total == 0:
		return "decision cache: no decisions"
	case c.Uncached == total:
		return fmt.Sprintf("decision cache: none; %d decisions, every one evaluated", total)
	}
	return fmt.Sprintf("decision cache: %d hits, %d misses, %d not reusable, %d uncached (hit ratio %.1f%%)",
		c.Hits, c.Misses, c.NotReusable, c.Uncached, 100*float64(c.Hits)/float64(total))
}
