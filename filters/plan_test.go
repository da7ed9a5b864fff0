package filters

import "github.com/phigate/phigate/plan"

// The tests write plans as a policy writes them and compile them against
// the engine's keys, as the decision and metadata decoders do, before
// applying them.
type (
	Directive   = plan.Directive
	Enforcement = plan.Enforcement
)

const (
	ActionRemove     = plan.ActionRemove
	ActionMask       = plan.ActionMask
	ActionTokenize   = plan.ActionTokenize
	ActionAllow      = plan.ActionAllow
	ActionDeidentify = plan.ActionDeidentify
)

// Plan is a plan as a test writes it.
type Plan struct {
	Redact     []Directive
	Enforce    *Enforcement
	DecisionID string
}

func (p Plan) Empty() bool { return len(p.Redact) == 0 && p.Enforce == nil }

func (p Plan) compile(e *Engine) (plan.Plan, error) {
	return plan.Compile(p.Redact, p.Enforce, e.Keys())
}

// apply compiles p and applies it; a plan that does not compile is the
// error, as a decision carrying it would have been refused.
func apply(e *Engine, mediaType string, body []byte, p Plan) (Result, error) {
	c, err := p.compile(e)
	if err != nil {
		return Result{}, err
	}
	return e.Apply(mediaType, body, c, p.DecisionID)
}
