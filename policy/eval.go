package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
)

// decodeResult returns the EvalGenerateJSON hook: the decision is decoded
// from the AST as OPA produces it, never converted to a generic tree
// first, and its plan compiled against keys.
func decodeResult(keys plan.Keys) rego.EvalOption {
	return rego.EvalGenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) {
		d, err := decodeDecision(t.Value, keys)
		if err != nil {
			return nil, &Error{Code: CodeShape, Err: err}
		}
		return d, nil
	})
}

// Evaluate runs the decision query for one request, or reuses the decision
// of an identical earlier request that the policy said still holds. The
// caller's context reaches the evaluator, so a deadline stops a runaway
// policy. A returned Decision may share its maps and slices with other
// requests' decisions: callers treat it as read-only.
func (s *Snapshot) Evaluate(ctx context.Context, req *authz.Request) (authz.Decision, error) {
	return s.evaluateWithin(ctx, req, 0)
}

// evaluateWithin is Evaluate with the evaluation (not a cache lookup)
// bounded by timeout; 0 leaves ctx as it is.
func (s *Snapshot) evaluateWithin(ctx context.Context, req *authz.Request, timeout time.Duration) (authz.Decision, error) {
	if s.opaEnvoy != nil {
		// Never decide an OPA-Envoy policy's request without its input.
		return authz.Decision{}, &Error{Code: CodeEval, Err: errors.New("the policy is served in OPA-Envoy mode: it decides from the OPA-Envoy input only")}
	}
	eval := func() (authz.Decision, error) {
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		d, err := s.evaluate(ctx, inputValue(req), s.decode)
		if err == nil {
			d.Policy = authz.Provenance{Revision: s.Revision, EvaluatedNS: req.TimeNS}
		}
		return d, err
	}
	if s.cache == nil {
		s.stats.count(cacheNone)
		return eval()
	}
	key := s.cache.key(req)
	if d, ok := s.cache.get(key, req.TimeNS); ok {
		s.stats.count(cacheHit)
		d.Policy.Reused = true
		return d, nil
	}
	d, err := eval()
	if err != nil {
		return d, err
	}
	if req.TimeNS > 0 && d.CacheUntilNS > req.TimeNS {
		s.cache.put(key, d, req.TimeNS, d.CacheUntilNS)
		s.stats.count(cacheMiss)
	} else {
		s.stats.count(cacheNotReusable)
	}
	return d, nil
}

func (s *Snapshot) evaluate(ctx context.Context, input ast.Value, opts ...rego.EvalOption) (authz.Decision, error) {
	opts = append(opts, rego.EvalParsedInput(input))
	rs, err := s.query.Eval(ctx, opts...)
	if err != nil {
		var pe *Error
		if errors.As(err, &pe) {
			return authz.Decision{}, err
		}
		return authz.Decision{}, &Error{Code: CodeEval, Err: err}
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return authz.Decision{}, &Error{Code: CodeEval, Err: errors.New("the policy produced no decision for this input")}
	}
	d, ok := rs[0].Expressions[0].Value.(authz.Decision)
	if !ok {
		return authz.Decision{}, &Error{Code: CodeShape, Err: fmt.Errorf("decision decoded as %T", rs[0].Expressions[0].Value)}
	}
	return d, nil
}

// shapeProbes are inputs every policy must answer with a well-formed
// decision: nobody, a garbage identity, and a plain read.
var shapeProbes = []*authz.Request{
	{ID: "probe-1", Method: "GET", Path: "/fhir/Patient/probe",
		Identity: authz.Identity{Error: "missing_token"},
		FHIR:     authz.FHIRRequest{Interaction: authz.InteractionRead, ResourceType: "Patient", ID: "probe", Patients: []string{"probe"}}},
	{ID: "probe-2", Method: "GET", Path: "/fhir/Observation",
		Identity: authz.Identity{Authenticated: true, Subject: "probe", Roles: []string{"no-such-role"}},
		FHIR:     authz.FHIRRequest{Interaction: authz.InteractionSearchType, ResourceType: "Observation", AllPatients: true}},
	{ID: "probe-3", Method: "DELETE", Path: "/fhir",
		Identity: authz.Identity{Authenticated: true, Subject: "probe", Roles: []string{"admin"}},
		FHIR:     authz.FHIRRequest{Interaction: authz.InteractionBatch}},
}

// checkShape evaluates the probes: a policy that is undefined or malformed
// for any of them is refused before it can serve.
func (s *Snapshot) checkShape(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, p := range shapeProbes {
		if _, err := s.Evaluate(ctx, p); err != nil {
			return fmt.Errorf("input %s: %w", p.ID, err)
		}
	}
	return nil
}

// Explain evaluates with a full trace and returns the decision and the
// trace lines, for policy authors (phigate policy eval --explain=full).
func (s *Snapshot) Explain(ctx context.Context, req *authz.Request) (authz.Decision, []string, error) {
	buf := newTraceBuffer()
	d, err := s.evaluate(ctx, inputValue(req), s.decode, rego.EvalQueryTracer(buf.tracer))
	return d, buf.lines(), err
}

// ExplainSummary evaluates with a trace and returns the decision and a
// summary of it: the rules that held and the comparisons that failed,
// with file, line and values (phigate policy eval --explain).
func (s *Snapshot) ExplainSummary(ctx context.Context, req *authz.Request) (authz.Decision, []string, error) {
	buf := newTraceBuffer()
	d, err := s.evaluate(ctx, inputValue(req), s.decode, rego.EvalQueryTracer(buf.tracer))
	return d, buf.summary(), err
}
