package policy

import (
	"fmt"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/filters"
)

// shapeError names the field of the decision document that is wrong.
type shapeError struct {
	path string
	want string
	got  ast.Value
}

func (e *shapeError) Error() string {
	if e.got == nil {
		return fmt.Sprintf("%s: want %s, field is missing", e.path, e.want)
	}
	return fmt.Sprintf("%s: want %s, got %s", e.path, e.want, ast.ValueName(e.got))
}

// decodeDecision turns the policy's decision object into authz.Decision. It
// reads the AST directly: no intermediate interface{} tree, no JSON.
func decodeDecision(v ast.Value) (authz.Decision, error) {
	var d authz.Decision
	obj, ok := v.(ast.Object)
	if !ok {
		return d, &shapeError{"decision", "object", v}
	}
	var err error
	field := func(name string) ast.Value {
		t := obj.Get(ast.InternedTerm(name))
		if t == nil {
			return nil
		}
		return t.Value
	}
	allow := field("allow")
	b, ok := allow.(ast.Boolean)
	if !ok {
		return d, &shapeError{"decision.allow", "boolean", allow}
	}
	d.Allow = bool(b)
	if x := field("status"); x != nil {
		if d.Status, err = asInt("decision.status", x); err != nil {
			return d, err
		}
		if d.Status < 100 || d.Status > 599 {
			return d, fmt.Errorf("decision.status: %d is not an HTTP status", d.Status)
		}
	}
	if x := field("reason"); x != nil {
		if d.Reason, err = asString("decision.reason", x); err != nil {
			return d, err
		}
	}
	if d.Headers, err = asStringMap("decision.headers", field("headers")); err != nil {
		return d, err
	}
	if d.RemoveHeaders, err = asStrings("decision.remove_headers", field("remove_headers")); err != nil {
		return d, err
	}
	if d.ResponseHeaders, err = asStringMap("decision.response_headers", field("response_headers")); err != nil {
		return d, err
	}
	if d.Redact, err = decodeDirectives(field("redact")); err != nil {
		return d, err
	}
	if x := field("enforce"); x != nil {
		if d.Enforce, err = decodeEnforcement(x); err != nil {
			return d, err
		}
	}
	if x := field("break_glass"); x != nil {
		if d.BreakGlass, err = decodeBreakGlass(x); err != nil {
			return d, err
		}
	}
	if d.Obligations, err = decodeObligations(field("obligations")); err != nil {
		return d, err
	}
	if x := field("cache"); x != nil {
		o, ok := x.(ast.Object)
		if !ok {
			return d, &shapeError{"decision.cache", "object", x}
		}
		if u := termValue(o.Get(ast.InternedTerm("until_ns"))); u != nil {
			n, isNum := u.(ast.Number)
			i, isInt := n.Int64()
			if !isNum || !isInt || i < 0 {
				return d, &shapeError{"decision.cache.until_ns", "non-negative integer", u}
			}
			d.CacheUntilNS = i
		}
	}
	if x := field("audit"); x != nil {
		o, ok := x.(ast.Object)
		if !ok {
			return d, &shapeError{"decision.audit", "object", x}
		}
		get := func(k string) ast.Value { return termValue(o.Get(ast.InternedTerm(k))) }
		if d.Audit.Patients, err = asStrings("decision.audit.patients", get("patients")); err != nil {
			return d, err
		}
		if d.Audit.Rules, err = asStrings("decision.audit.rules", get("rules")); err != nil {
			return d, err
		}
		if p := get("purpose"); p != nil {
			if d.Audit.Purpose, err = asString("decision.audit.purpose", p); err != nil {
				return d, err
			}
		}
	}
	return d, nil
}

func termValue(t *ast.Term) ast.Value {
	if t == nil {
		return nil
	}
	return t.Value
}

func asString(path string, v ast.Value) (string, error) {
	s, ok := v.(ast.String)
	if !ok {
		return "", &shapeError{path, "string", v}
	}
	return string(s), nil
}

func asInt(path string, v ast.Value) (int, error) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, &shapeError{path, "number", v}
	}
	i, ok := n.Int()
	if !ok {
		return 0, fmt.Errorf("%s: %s is not an integer", path, n)
	}
	return i, nil
}

// asStrings accepts an array or a set of strings; missing means none.
func asStrings(path string, v ast.Value) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	var out []string
	var err error
	visit := func(i int, t *ast.Term) {
		if err != nil {
			return
		}
		s, ok := t.Value.(ast.String)
		if !ok {
			err = &shapeError{path + "[" + strconv.Itoa(i) + "]", "string", t.Value}
			return
		}
		out = append(out, string(s))
	}
	switch c := v.(type) {
	case *ast.Array:
		out = make([]string, 0, c.Len())
		for i := 0; i < c.Len(); i++ {
			visit(i, c.Elem(i))
		}
	case ast.Set:
		arr := c.Sorted()
		out = make([]string, 0, arr.Len())
		for i := 0; i < arr.Len(); i++ {
			visit(i, arr.Elem(i))
		}
	default:
		return nil, &shapeError{path, "array or set of strings", v}
	}
	return out, err
}

func asStringMap(path string, v ast.Value) (map[string]string, error) {
	if v == nil {
		return nil, nil
	}
	o, ok := v.(ast.Object)
	if !ok {
		return nil, &shapeError{path, "object of strings", v}
	}
	if o.Len() == 0 {
		return nil, nil
	}
	out := make(map[string]string, o.Len())
	var err error
	o.Foreach(func(k, val *ast.Term) {
		if err != nil {
			return
		}
		ks, ok := k.Value.(ast.String)
		if !ok {
			err = &shapeError{path + " key", "string", k.Value}
			return
		}
		vs, ok := val.Value.(ast.String)
		if !ok {
			err = &shapeError{path + "[" + strconv.Quote(string(ks)) + "]", "string", val.Value}
			return
		}
		out[string(ks)] = string(vs)
	})
	return out, err
}

func each(path string, v ast.Value, fn func(p string, t ast.Value) error) error {
	if v == nil {
		return nil
	}
	switch c := v.(type) {
	case *ast.Array:
		for i := 0; i < c.Len(); i++ {
			if err := fn(path+"["+strconv.Itoa(i)+"]", c.Elem(i).Value); err != nil {
				return err
			}
		}
	case ast.Set:
		return each(path, c.Sorted(), fn)
	default:
		return &shapeError{path, "array", v}
	}
	return nil
}

func decodeDirectives(v ast.Value) ([]filters.Directive, error) {
	var out []filters.Directive
	err := each("decision.redact", v, func(p string, x ast.Value) error {
		o, ok := x.(ast.Object)
		if !ok {
			return &shapeError{p, "object", x}
		}
		var d filters.Directive
		var err error
		for _, f := range []struct {
			name string
			dst  *string
		}{{"path", &d.Path}, {"key_id", &d.KeyID}, {"format", &d.Format}, {"profile", &d.Profile}} {
			if t := o.Get(ast.InternedTerm(f.name)); t != nil {
				if *f.dst, err = asString(p+"."+f.name, t.Value); err != nil {
					return err
				}
			}
		}
		act, err := asString(p+".action", termValue(o.Get(ast.InternedTerm("action"))))
		if err != nil {
			return err
		}
		d.Action = filters.Action(act)
		switch d.Action {
		case filters.ActionRemove, filters.ActionMask, filters.ActionTokenize, filters.ActionAllow, filters.ActionDeidentify:
		default:
			return fmt.Errorf("%s.action: unknown action %q", p, act)
		}
		if d.Keep, err = asStrings(p+".keep", termValue(o.Get(ast.InternedTerm("keep")))); err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

func decodeEnforcement(v ast.Value) (*filters.Enforcement, error) {
	o, ok := v.(ast.Object)
	if !ok {
		return nil, &shapeError{"decision.enforce", "object", v}
	}
	if o.Len() == 0 {
		return nil, nil
	}
	e := &filters.Enforcement{}
	var err error
	if e.Patients, err = asStrings("decision.enforce.patients", termValue(o.Get(ast.InternedTerm("patients")))); err != nil {
		return nil, err
	}
	if t := o.Get(ast.InternedTerm("any_patient")); t != nil {
		b, ok := t.Value.(ast.Boolean)
		if !ok {
			return nil, &shapeError{"decision.enforce.any_patient", "boolean", t.Value}
		}
		e.AnyPatient = bool(b)
	}
	if e.PermittedLabels, err = asStrings("decision.enforce.permitted_labels", termValue(o.Get(ast.InternedTerm("permitted_labels")))); err != nil {
		return nil, err
	}
	if e.ResourceTypes, err = asStrings("decision.enforce.resource_types", termValue(o.Get(ast.InternedTerm("resource_types")))); err != nil {
		return nil, err
	}
	return e, nil
}

func decodeBreakGlass(v ast.Value) (authz.BreakGlass, error) {
	var bg authz.BreakGlass
	o, ok := v.(ast.Object)
	if !ok {
		return bg, &shapeError{"decision.break_glass", "object", v}
	}
	if t := o.Get(ast.InternedTerm("active")); t != nil {
		b, ok := t.Value.(ast.Boolean)
		if !ok {
			return bg, &shapeError{"decision.break_glass.active", "boolean", t.Value}
		}
		bg.Active = bool(b)
	}
	var err error
	if t := o.Get(ast.InternedTerm("reason")); t != nil {
		if bg.Reason, err = asString("decision.break_glass.reason", t.Value); err != nil {
			return bg, err
		}
	}
	if t := o.Get(ast.InternedTerm("expires")); t != nil {
		if bg.Expires, err = asString("decision.break_glass.expires", t.Value); err != nil {
			return bg, err
		}
	}
	return bg, nil
}

func decodeObligations(v ast.Value) ([]authz.Obligation, error) {
	var out []authz.Obligation
	err := each("decision.obligations", v, func(p string, x ast.Value) error {
		o, ok := x.(ast.Object)
		if !ok {
			return &shapeError{p, "object", x}
		}
		typ, err := asString(p+".type", termValue(o.Get(ast.InternedTerm("type"))))
		if err != nil {
			return err
		}
		params, err := asStringMap(p+".params", termValue(o.Get(ast.InternedTerm("params"))))
		if err != nil {
			return err
		}
		out = append(out, authz.Obligation{Type: typ, Params: params})
		return nil
	})
	return out, err
}
