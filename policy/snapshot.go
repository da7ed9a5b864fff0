package policy

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/phigate/phigate/plan"
)

// DecisionQuery is the one entry point phigate evaluates.
const DecisionQuery = "data.phigate.authz.decision"

// Snapshot is one compiled policy, immutable once built.
type Snapshot struct {
	Revision string
	Source   string
	LoadedAt time.Time
	// Tests is the number of policy tests that passed when the snapshot was built.
	Tests int

	data   map[string]any // the bundle's data, for DataString
	query  rego.PreparedEvalQuery
	decode rego.EvalOption // decodes the decision, its plan compiled against BuildOptions.TokenKeys
	cache  *decisionCache
	stats  *CacheStats
	// opaEnvoy is the OPA-Envoy decision when the policy is served in
	// that mode (BuildOptions.OPAEnvoy); phigate's own query is then not
	// prepared and Evaluate refuses.
	opaEnvoy *opaEnvoyQuery
}

// BuildOptions control how a bundle becomes a Snapshot.
type BuildOptions struct {
	// RunTests runs the bundle's *_test.rego before accepting it.
	RunTests bool
	// DecisionCache is how many decisions the snapshot may keep for reuse
	// (see decisionCache); 0 evaluates every request.
	DecisionCache int
	// CacheMaxAge caps how long a decision is reused (0: as long as the
	// policy says).
	CacheMaxAge time.Duration
	// CacheStats counts cache outcomes; nil counts nothing.
	CacheStats *CacheStats
	// TokenKeys are the token key ids a decision's directives may name;
	// a decision naming another is refused. The zero value holds none.
	TokenKeys plan.Keys
	// OPAEnvoy, when set, serves the bundle as an OPA-Envoy policy: its
	// decision is the one the section names, not phigate's.
	OPAEnvoy *OPAEnvoyConfig
}

// Build compiles a bundle strictly, prepares the decision query and, when
// asked, runs the bundle's tests. Any failure leaves nothing half-built.
func Build(ctx context.Context, src string, b *bundle.Bundle, o BuildOptions) (*Snapshot, error) {
	serving := map[string]*ast.Module{}
	all := map[string]*ast.Module{}
	for _, m := range b.Modules {
		all[m.Path] = m.Parsed
		if !isTest(m.Path) {
			serving[m.Path] = m.Parsed
		}
	}
	if len(serving) == 0 {
		return nil, &Error{Code: CodeLoad, Source: src, Err: errors.New("no policy modules")}
	}
	// A policy written for OPA-Envoy is compiled as the plugin compiles
	// it, not strictly: it is to run unchanged.
	compiler := ast.NewCompiler().WithStrict(o.OPAEnvoy == nil).WithEnablePrintStatements(false)
	if compiler.Compile(serving); compiler.Failed() {
		return nil, &Error{Code: CodeCompile, Source: src, Err: compiler.Errors}
	}
	if o.OPAEnvoy != nil {
		return buildOPAEnvoySnapshot(ctx, src, b, compiler, all, o)
	}
	if !hasRule(compiler, DecisionQuery) {
		return nil, &Error{Code: CodeShape, Source: src, Err: fmt.Errorf("no rule defines %s", DecisionQuery)}
	}
	if err := checkDecisionKeys(compiler); err != nil {
		return nil, &Error{Code: CodeShape, Source: src, Err: err}
	}
	store := inmem.NewFromObjectWithOpts(b.Data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	s := &Snapshot{Revision: revision(b), Source: src, LoadedAt: time.Now(), decode: decodeResult(o.TokenKeys), data: b.Data}
	if o.RunTests {
		n, err := runTests(ctx, store, all, "")
		if err != nil {
			return nil, &Error{Code: CodeTest, Source: src, Err: err}
		}
		s.Tests = n
	}
	pq, err := rego.New(
		rego.Query(DecisionQuery),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.StoreReadAST(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, &Error{Code: CodeCompile, Source: src, Err: err}
	}
	s.query = pq
	// The shape probes run before the cache exists: they must evaluate.
	if err := s.checkShape(ctx); err != nil {
		return nil, &Error{Code: CodeShape, Source: src, Err: err}
	}
	s.cache, s.stats = newDecisionCache(compiler, o.DecisionCache, o.CacheMaxAge), o.CacheStats
	return s, nil
}

// buildOPAEnvoySnapshot is Build for a policy served in OPA-Envoy mode.
func buildOPAEnvoySnapshot(ctx context.Context, src string, b *bundle.Bundle, compiler *ast.Compiler, all map[string]*ast.Module, o BuildOptions) (*Snapshot, error) {
	store := inmem.NewFromObjectWithOpts(b.Data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	s := &Snapshot{Revision: revision(b), Source: src, LoadedAt: time.Now()}
	if o.RunTests {
		n, err := runTests(ctx, store, all, "")
		if err != nil {
			return nil, &Error{Code: CodeTest, Source: src, Err: err}
		}
		s.Tests = n
	}
	prepare := func(q string) (rego.PreparedEvalQuery, error) {
		pq, err := rego.New(rego.Query(q), rego.Compiler(compiler), rego.Store(store)).PrepareForEval(ctx)
		if err != nil {
			return pq, &Error{Code: CodeCompile, Source: src, Err: err}
		}
		return pq, nil
	}
	if err := buildOPAEnvoy(ctx, s, compiler, o, prepare); err != nil {
		var pe *Error
		if errors.As(err, &pe) {
			return nil, err
		}
		return nil, &Error{Code: CodeShape, Source: src, Err: err}
	}
	return s, nil
}

// hasRule reports whether some rule defines the document at query: a rule
// of its own, rules below it (decision.allow := …) or one above it.
func hasRule(c *ast.Compiler, query string) bool {
	return len(c.GetRules(ast.MustParseRef(query))) > 0
}

// TestResult is one policy test outcome.
type TestResult struct {
	Name     string
	Package  string
	Pass     bool
	Fail     bool
	Skip     bool
	Err      error
	Duration time.Duration
}

// RunTests runs every *_test.rego of a bundle and returns each result.
func RunTests(ctx context.Context, b *bundle.Bundle, filter string) ([]TestResult, error) {
	all := map[string]*ast.Module{}
	for _, m := range b.Modules {
		all[m.Path] = m.Parsed
	}
	store := inmem.NewFromObject(b.Data)
	return collectTests(ctx, store, all, filter)
}

func runTests(ctx context.Context, store storage.Store, mods map[string]*ast.Module, filter string) (int, error) {
	res, err := collectTests(ctx, store, mods, filter)
	if err != nil {
		return 0, err
	}
	var failed []string
	for _, r := range res {
		if r.Fail || r.Err != nil {
			failed = append(failed, r.Package+"."+r.Name)
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		if len(failed) > 10 {
			failed = append(failed[:10], fmt.Sprintf("and %d more", len(failed)-10))
		}
		return 0, fmt.Errorf("%d of %d policy tests failed: %s", len(failed), len(res), strings.Join(failed, ", "))
	}
	return len(res), nil
}

func collectTests(ctx context.Context, store storage.Store, mods map[string]*ast.Module, filter string) ([]TestResult, error) {
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer store.Abort(ctx, txn)
	r := tester.NewRunner().SetStore(store).SetModules(mods).SetDefaultRegoVersion(ast.RegoV1).SetTimeout(30 * time.Second)
	if filter != "" {
		r = r.Filter(filter)
	}
	ch, err := r.RunTests(ctx, txn)
	if err != nil {
		return nil, err
	}
	var out []TestResult
	for res := range ch {
		tr := TestResult{Name: res.Name, Package: res.Package, Pass: res.Pass(), Fail: res.Fail, Skip: res.Skip, Err: res.Error, Duration: res.Duration}
		out = append(out, tr)
	}
	return out, nil
}

// DataString returns the string the bundle's data holds at path (such as
// "phigate", "emergency", "notify"), and whether there is one, so that
// configuration checks can hold the data to what the deployment offers.
func (s *Snapshot) DataString(path ...string) (string, bool) {
	var v any = s.data
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		v = m[k]
	}
	str, ok := v.(string)
	return str, ok
}
