package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// checkDecisionKeys refuses, at load, a policy whose decision rule can
// produce a key the decoder does not read (decisionShape), as far as the
// compiled rules show it. It follows, from the rules that define the
// decision (decision := {...}, else branches and defaults, decision.audit
// := {...}, decision["redact"] := ..., redact contains {...}):
//
//   - object literals with constant keys, at any depth the decoder knows
//     the keys of (enforce, redact[], audit …);
//   - references to other rules (enforce := {...} in any package), with
//     their own branches;
//   - variables bound in a rule's body (d := {...}; decision := d) and the
//     element terms of array and set comprehensions (redact := [{...} | …]).
//
// It cannot know, and leaves to the decoder, which refuses the decision
// at evaluation (a deny naming the field): keys computed from input or
// data (decision[k] := v, {k: v | …}), values read from data (a redaction
// directive in data.json with a misspelt key), values built by functions
// and built-ins (object.union, json.unmarshal, a user function), and
// references into part of a rule's value (x.y where x := {"y": …}).
func checkDecisionKeys(c *ast.Compiler) error {
	w := &keyWalk{c: c, seen: map[keyVisit]bool{}, unknown: map[string]string{}}
	w.rules(ast.MustParseRef(DecisionQuery), "decision", decisionShape)
	if len(w.unknown) == 0 {
		return nil
	}
	paths := make([]string, 0, len(w.unknown))
	for p := range w.unknown {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	if len(paths) > 10 {
		paths = append(paths[:10], fmt.Sprintf("and %d more", len(paths)-10))
	}
	msgs := make([]string, len(paths))
	for i, p := range paths {
		msgs[i] = p + ": unknown field"
		if loc := w.unknown[p]; loc != "" {
			msgs[i] += " (" + loc + ")"
		}
	}
	return fmt.Errorf("the decision can carry fields the decoder does not read: %s", strings.Join(msgs, "; "))
}

type keyWalk struct {
	c       *ast.Compiler
	seen    map[keyVisit]bool
	unknown map[string]string // path of the unknown key → where it is written
}

// keyVisit is one rule checked against one shape: a rule referred to twice
// for the same field is read once, and a cycle of references ends.
type keyVisit struct {
	rule  *ast.Rule
	shape *docShape
}

// maxTermDepth bounds the chase of variables through bodies.
const maxTermDepth = 64

// rules checks every rule that defines ref or a document below it, whose
// value lands at path (of shape s) in the decision.
func (w *keyWalk) rules(ref ast.Ref, path string, s *docShape) {
	for _, r := range w.c.GetRulesWithPrefix(ref) {
		if len(r.Head.Args) > 0 {
			continue // a function: called, not referred to
		}
		p, rs := path, s
		known := true
		for _, t := range r.Ref()[len(ref):] {
			k, isStr := t.Value.(ast.String)
			if !isStr || rs == nil || rs.keys == nil {
				known = false // a computed key, or below a field of free keys
				break
			}
			inner, ok := rs.keys[string(k)]
			if !ok {
				w.report(p+"."+keyName(k), r.Location)
				known = false
				break
			}
			p, rs = p+"."+string(k), inner
		}
		if !known || rs == nil {
			continue
		}
		for x := r; x != nil; x = x.Else {
			if w.seen[keyVisit{x, rs}] {
				continue
			}
			w.seen[keyVisit{x, rs}] = true
			switch {
			case x.Head.Value != nil:
				w.term(x.Head.Value, []ast.Body{x.Body}, p, rs, x.Location, 0)
			case x.Head.Key != nil && rs.elems != nil:
				// A partial set (redact contains {...}): each member is an element.
				w.term(x.Head.Key, []ast.Body{x.Body}, p+"[]", rs.elems, x.Location, 0)
			}
		}
	}
}

// term checks one term whose value lands at path (of shape s); bodies are
// where its variables may be bound, innermost last.
func (w *keyWalk) term(t *ast.Term, bodies []ast.Body, path string, s *docShape, loc *ast.Location, depth int) {
	if s == nil || t == nil || depth > maxTermDepth {
		return
	}
	if t.Location != nil {
		loc = t.Location
	}
	switch v := t.Value.(type) {
	case ast.Var:
		for _, x := range bindings(v, bodies) {
			w.term(x, bodies, path, s, loc, depth+1)
		}
	case ast.Ref:
		if ground, ok := groundDataRef(v); ok {
			w.rules(ground, path, s)
		}
	case ast.Object:
		if s.keys == nil {
			return
		}
		v.Foreach(func(k, x *ast.Term) {
			ks, isStr := k.Value.(ast.String)
			if !isStr {
				return // computed: the decoder's to refuse
			}
			inner, ok := s.keys[string(ks)]
			if !ok {
				w.report(path+"."+keyName(ks), k.Location)
				return
			}
			w.term(x, bodies, path+"."+string(ks), inner, loc, depth+1)
		})
	case *ast.Array:
		if s.elems != nil {
			for i := range v.Len() {
				w.term(v.Elem(i), bodies, path+"[]", s.elems, loc, depth+1)
			}
		}
	case ast.Set:
		if s.elems != nil {
			v.Foreach(func(x *ast.Term) { w.term(x, bodies, path+"[]", s.elems, loc, depth+1) })
		}
	case *ast.ArrayComprehension:
		if s.elems != nil {
			w.term(v.Term, append(slices.Clip(bodies), v.Body), path+"[]", s.elems, loc, depth+1)
		}
	case *ast.SetComprehension:
		if s.elems != nil {
			w.term(v.Term, append(slices.Clip(bodies), v.Body), path+"[]", s.elems, loc, depth+1)
		}
	case *ast.ObjectComprehension:
		if ks, isStr := v.Key.Value.(ast.String); isStr && s.keys != nil {
			if _, ok := s.keys[string(ks)]; !ok {
				w.report(path+"."+keyName(ks), v.Key.Location)
			}
		}
	}
}

// bindings are the terms v is unified with in bodies (v = x or x = v, as
// the compiler writes := and = alike).
func bindings(v ast.Var, bodies []ast.Body) []*ast.Term {
	var out []*ast.Term
	for _, b := range bodies {
		for _, e := range b {
			if !e.IsEquality() || e.Negated {
				continue
			}
			ops := e.Operands()
			if len(ops) != 2 {
				continue
			}
			if ops[0].Value.Compare(v) == 0 {
				out = append(out, ops[1])
			} else if ops[1].Value.Compare(v) == 0 {
				out = append(out, ops[0])
			}
		}
	}
	return out
}

// groundDataRef returns ref when it names a document below data by
// constant keys alone.
func groundDataRef(ref ast.Ref) (ast.Ref, bool) {
	if !ref.HasPrefix(ast.DefaultRootRef) {
		return nil, false
	}
	for _, t := range ref[1:] {
		if _, isStr := t.Value.(ast.String); !isStr {
			return nil, false
		}
	}
	return ref, true
}

func (w *keyWalk) report(path string, loc *ast.Location) {
	if _, done := w.unknown[path]; done {
		return
	}
	where := ""
	if loc != nil {
		where = fmt.Sprintf("%s:%d", loc.File, loc.Row)
	}
	w.unknown[path] = where
}
