package plan

import "slices"

// Plan is what the response side must do to one response body: the
// compiled redaction rules and the response-side enforcement. The zero
// Plan asks for nothing. Build one with Compile (the decision side) or
// DecodeMetadata (the filter side); a Rule that did not come from Compile
// is refused by the filters.
//
// Its JSON form is the decision document's: "redact" holds the directives
// as the policy wrote them and "enforce" the enforcement, so a decision
// that embeds a Plan is stored exactly as before the plan was compiled.
type Plan struct {
	Redact []Rule `json:"redact,omitempty"`
	// Enforce holds the response-side checks (patients in the grant,
	// permitted sensitivity labels, resource types). Nil means no
	// response-side enforcement.
	Enforce *Enforcement `json:"enforce,omitempty"`
}

// Empty reports whether the plan asks for nothing, so the response may
// pass without its body being buffered.
func (p Plan) Empty() bool { return len(p.Redact) == 0 && p.Enforce == nil }

// Directives returns the directives as written, in order.
func (p Plan) Directives() []Directive {
	if len(p.Redact) == 0 {
		return nil
	}
	out := make([]Directive, len(p.Redact))
	for i := range p.Redact {
		out[i] = p.Redact[i].Directive
	}
	return out
}

// Rule is a compiled directive. The Directive is kept as written, for the
// audit trail and the metadata; the rest is what applying it needs.
type Rule struct {
	Directive
	elem     Path
	keep     map[string]bool
	ff1      bool
	compiled bool
}

// Compiled reports whether the rule came from Compile. A rule built by
// hand, or read back from a stored decision, was never checked and must
// not be applied.
func (r *Rule) Compiled() bool { return r.compiled }

// Elem is the parsed path: the resource type and the steps beneath it. An
// allow rule has the type only, and a deidentify rule neither (its profile
// says what it reaches).
func (r *Rule) Elem() Path { return r.elem }

// Keeps reports whether an allow rule keeps the member name. resourceType,
// id and meta are always kept: without them the resource cannot be read,
// nor told to be redacted.
func (r *Rule) Keeps(name string) bool { return r.keep[name] }

// FF1 reports whether a tokenize rule asks for format-preserving tokens.
func (r *Rule) FF1() bool { return r.ff1 }

// Keys is the set of token key ids a plan may name: the ids of the
// deployment's tokenization keys, never their secrets.
type Keys struct {
	ids map[string]bool
	any bool
}

// NewKeys returns the set of the given key ids. The zero Keys holds none,
// so a plan that tokenizes is refused where no key is configured.
func NewKeys(ids ...string) Keys {
	k := Keys{ids: make(map[string]bool, len(ids))}
	for _, id := range ids {
		k.ids[id] = true
	}
	return k
}

// AnyKey accepts every key id. It is for tools that evaluate policies but
// never filter a response (policy checks, audit replay): whether a key
// exists is a fact of a deployment, not of the policy, and the filter side
// checks it again against the keys it holds.
func AnyKey() Keys { return Keys{any: true} }

// Has reports whether id is one of the keys.
func (k Keys) Has(id string) bool { return k.any || k.ids[id] }

// IDs returns the key ids, sorted; nil for AnyKey.
func (k Keys) IDs() []string {
	out := make([]string, 0, len(k.ids))
	for id := range k.ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Compile checks the directives and the enforcement of a decision and
// returns the plan. Errors have code CodeBadDirective and name the
// directive by its index.
func Compile(redact []Directive, enforce *Enforcement, keys Keys) (Plan, error) {
	p := Plan{Enforce: enforce}
	if len(redact) > 0 {
		p.Redact = make([]Rule, 0, len(redact))
	}
	for i, d := range redact {
		r, err := compileRule(d, keys)
		if err != nil {
			return Plan{}, errorf(CodeBadDirective, "directive %d: %s", i, detail(err))
		}
		p.Redact = append(p.Redact, r)
	}
	return p, nil
}

func detail(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Detail
	}
	return err.Error()
}

func compileRule(d Directive, keys Keys) (Rule, error) {
	r := Rule{Directive: d, compiled: true}
	switch d.Action {
	case ActionRemove, ActionMask, ActionTokenize:
		p, err := ParsePath(d.Path)
		if err != nil {
			return Rule{}, err
		}
		if len(p.Steps) == 0 {
			return Rule{}, errorf(CodeBadDirective, "path %q names no element", d.Path)
		}
		r.elem = p
		if d.Action == ActionTokenize {
			if !keys.Has(d.KeyID) {
				return Rule{}, errorf(CodeBadDirective, "unknown key id %q", d.KeyID)
			}
			switch d.Format {
			case "", "hmac":
			case "ff1":
				r.ff1 = true
			default:
				return Rule{}, errorf(CodeBadDirective, "unknown token format %q", d.Format)
			}
		}
	case ActionAllow:
		if d.Path != "*" && !IsIdent(d.Path) {
			return Rule{}, errorf(CodeBadDirective, "allow needs a resource type as path")
		}
		r.elem = Path{Type: d.Path}
		r.keep = make(map[string]bool, len(d.Keep)+3)
		for _, k := range []string{"resourceType", "id", "meta"} {
			r.keep[k] = true
		}
		for _, k := range d.Keep {
			r.keep[k] = true
		}
	case ActionDeidentify:
		if d.Profile != ProfileSafeHarbor {
			return Rule{}, errorf(CodeBadDirective, "unknown profile %q", d.Profile)
		}
		if d.KeyID != "" && !keys.Has(d.KeyID) {
			return Rule{}, errorf(CodeBadDirective, "unknown key id %q", d.KeyID)
		}
	default:
		return Rule{}, errorf(CodeBadDirective, "unknown action %q", d.Action)
	}
	return r, nil
}
