package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
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

// unknownFieldError names a key of the decision document that no field
// of the decoder reads. Ignoring it would fail open: a misspelt "redcat"
// would mean no redaction at all.
type unknownFieldError struct {
	path  string   // the key's path, the key written by keyName
	known []string // the keys its object may carry
}

func (e *unknownFieldError) Error() string {
	return fmt.Sprintf("%s: unknown field (known: %s)", e.path, strings.Join(e.known, ", "))
}

// keyName writes a key for an error message. A key that reads as a field
// name is written as it is; any other (a computed key may carry an input
// value, a patient's name or id) only by its length, so no error repeats
// what a request carried.
func keyName(k ast.Value) string {
	s, ok := k.(ast.String)
	if !ok {
		return "<" + ast.ValueName(k) + " key>"
	}
	if isFieldName(string(s)) {
		return string(s)
	}
	return "<" + strconv.Itoa(len(s)) + "-byte key>"
}

// isFieldName: lower-case letters, digits and underscores, starting with
// a letter, as every field of the document is spelt.
func isFieldName(s string) bool {
	if s == "" || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// A field decodes one key of an object of the decision document into a T.
// The tables of fields below are the decoder: a key is read exactly when
// its object's table has it, and a key no table has refuses the decision.
// The load-time check (checkDecisionKeys) and DecisionFields read the same
// tables, so the three cannot disagree.
type field[T any] struct {
	decode func(dst *T, path string, v ast.Value) error
	// inner is what the key checks know of the value's own keys; nil when
	// it has none to check (scalars, lists of strings, header maps).
	inner *docShape
}

type fields[T any] map[string]field[T]

// docShape is the decision document as far as its keys go: an object with
// exactly keys (each with the shape of its value), or an array or set
// whose elements have the shape elems.
type docShape struct {
	keys  map[string]*docShape
	elems *docShape
}

func (fs fields[T]) shape() *docShape {
	s := &docShape{keys: make(map[string]*docShape, len(fs))}
	for k, f := range fs {
		s.keys[k] = f.inner
	}
	return s
}

func (fs fields[T]) names() []string {
	out := make([]string, 0, len(fs))
	for k := range fs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// decodeObject decodes v, an object, into dst. Every key must be one of
// fs, and every key in required present; unknown keys are refused before
// any field is decoded, so the error names the misspelling.
func decodeObject[T any](path string, v ast.Value, fs fields[T], dst *T, required ...string) error {
	o, ok := v.(ast.Object)
	if !ok {
		return &shapeError{path, "object", v}
	}
	var unknown []string
	o.Foreach(func(k, _ *ast.Term) {
		if s, ok := k.Value.(ast.String); !ok || !hasField(fs, string(s)) {
			unknown = append(unknown, keyName(k.Value))
		}
	})
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return &unknownFieldError{path: path + "." + unknown[0], known: fs.names()}
	}
	for _, k := range required {
		if o.Get(ast.InternedTerm(k)) == nil {
			// The field's own decoder says what it wants.
			if err := fs[k].decode(dst, path+"."+k, nil); err != nil {
				return err
			}
		}
	}
	var err error
	o.Foreach(func(k, x *ast.Term) {
		if err == nil {
			name := string(k.Value.(ast.String))
			err = fs[name].decode(dst, path+"."+name, x.Value)
		}
	})
	return err
}

func hasField[T any](fs fields[T], k string) bool {
	_, ok := fs[k]
	return ok
}

// decoded is a decision while its fields are read: the directives and the
// enforcement wait here until the whole document is read, and only then
// compile into the decision's plan.
type decoded struct {
	authz.Decision
	redact  []plan.Directive
	enforce *plan.Enforcement
}

// decodeDecision turns the policy's decision object into authz.Decision,
// its plan compiled against keys: a directive that could not be applied
// (a bad path, a key id not configured) refuses the decision here, not its
// response later. It reads the AST directly: no intermediate interface{}
// tree, no JSON.
func decodeDecision(v ast.Value, keys plan.Keys) (authz.Decision, error) {
	var d decoded
	if err := decodeObject("decision", v, decisionFields, &d, "allow"); err != nil {
		return authz.Decision{}, err
	}
	p, err := plan.Compile(d.redact, d.enforce, keys)
	if err != nil {
		return authz.Decision{}, fmt.Errorf("decision.redact: %w", err)
	}
	d.Plan = p
	return d.Decision, nil
}

// DecodeDecision decodes a decision document as the engine does, for tools
// that evaluate the policy themselves. A document of the wrong shape, an
// unknown field or a directive that does not compile included, is an
// error of code CodeShape naming the field. Tools hold no token keys, so
// key ids are not checked here (plan.AnyKey): the serving engine checks
// them against Config.TokenKeys, and the response side again.
func DecodeDecision(v ast.Value) (authz.Decision, error) {
	d, err := decodeDecision(v, plan.AnyKey())
	if err != nil {
		return authz.Decision{}, &Error{Code: CodeShape, Err: err}
	}
	return d, nil
}

// DecisionFields names every field the decoder reads, as paths below the
// decision: "allow", "enforce.patients", "redact[].action" (a field of
// each element of the array). A field whose value is a map of keys the
// policy chooses (headers, obligation params) is named without them. A
// decision with any other key is refused.
func DecisionFields() []string {
	var out []string
	var walk func(prefix string, s *docShape)
	walk = func(prefix string, s *docShape) {
		for k, inner := range s.keys {
			p := prefix + k
			out = append(out, p)
			if inner == nil {
				continue
			}
			if inner.elems != nil {
				walk(p+"[].", inner.elems)
			} else {
				walk(p+".", inner)
			}
		}
	}
	walk("", decisionShape)
	slices.Sort(out)
	return out
}

// decisionShape is the key tree of the whole document.
var decisionShape = decisionFields.shape()

var decisionFields = fields[decoded]{
	"allow": {decode: func(d *decoded, p string, v ast.Value) (err error) {
		d.Allow, err = asBool(p, v)
		return err
	}},
	"status": {decode: func(d *decoded, p string, v ast.Value) (err error) {
		if d.Status, err = asInt(p, v); err != nil {
			return err
		}
		if d.Status < 100 || d.Status > 599 {
			return fmt.Errorf("%s: %d is not an HTTP status", p, d.Status)
		}
		return nil
	}},
	"reason": {decode: func(d *decoded, p string, v ast.Value) (err error) {
		d.Reason, err = asString(p, v)
		return err
	}},
	"headers": {decode: func(d *decoded, p string, v ast.Value) (err error) {
		d.Headers, err = asStringMap(p, v)
		return err
	}},
	"remove_headers": {decode: func(d *decoded, p string, v ast.Value) (err error) {
		d.RemoveHeaders, err = asStrings(p, v)
		return err
	}},
	"response_headers": {decode: func(d *decoded, p string, v ast.Value) (err error) {
		d.ResponseHeaders, err = asStringMap(p, v)
		return err
	}},
	"redact": {inner: &docShape{elems: directiveFields.shape()}, decode: func(d *decoded, p string, v ast.Value) (err error) {
		d.redact, err = decodeDirectives(p, v)
		return err
	}},
	"enforce": {inner: enforcementFields.shape(), decode: func(d *decoded, p string, v ast.Value) error {
		// An empty object asks for no response-side enforcement.
		if o, ok := v.(ast.Object); ok && o.Len() == 0 {
			return nil
		}
		e := &plan.Enforcement{}
		if err := decodeObject(p, v, enforcementFields, e); err != nil {
			return err
		}
		d.enforce = e
		return nil
	}},
	"break_glass": {inner: breakGlassFields.shape(), decode: func(d *decoded, p string, v ast.Value) error {
		return decodeObject(p, v, breakGlassFields, &d.BreakGlass)
	}},
	"obligations": {inner: &docShape{elems: obligationFields.shape()}, decode: func(d *decoded, p string, v ast.Value) error {
		return each(p, v, func(p string, x ast.Value) error {
			var o authz.Obligation
			if err := decodeObject(p, x, obligationFields, &o, "type"); err != nil {
				return err
			}
			d.Obligations = append(d.Obligations, o)
			return nil
		})
	}},
	"audit": {inner: auditFields.shape(), decode: func(d *decoded, p string, v ast.Value) error {
		return decodeObject(p, v, auditFields, &d.Audit)
	}},
	"cache": {inner: cacheFields.shape(), decode: func(d *decoded, p string, v ast.Value) error {
		return decodeObject(p, v, cacheFields, &d.Decision)
	}},
}

var cacheFields = fields[authz.Decision]{
	"until_ns": {decode: func(d *authz.Decision, p string, v ast.Value) error {
		n, isNum := v.(ast.Number)
		i, isInt := n.Int64()
		if !isNum || !isInt || i < 0 {
			return &shapeError{p, "non-negative integer", v}
		}
		d.CacheUntilNS = i
		return nil
	}},
}

var auditFields = fields[authz.AuditInfo]{
	"patients": {decode: func(a *authz.AuditInfo, p string, v ast.Value) (err error) {
		a.Patients, err = asStrings(p, v)
		return err
	}},
	"rules": {decode: func(a *authz.AuditInfo, p string, v ast.Value) (err error) {
		a.Rules, err = asStrings(p, v)
		return err
	}},
	"purpose": {decode: func(a *authz.AuditInfo, p string, v ast.Value) (err error) {
		a.Purpose, err = asString(p, v)
		return err
	}},
}

var breakGlassFields = fields[authz.BreakGlass]{
	"active": {decode: func(bg *authz.BreakGlass, p string, v ast.Value) (err error) {
		bg.Active, err = asBool(p, v)
		return err
	}},
	"reason": {decode: func(bg *authz.BreakGlass, p string, v ast.Value) (err error) {
		bg.Reason, err = asString(p, v)
		return err
	}},
	"expires": {decode: func(bg *authz.BreakGlass, p string, v ast.Value) (err error) {
		bg.Expires, err = asString(p, v)
		return err
	}},
}

var obligationFields = fields[authz.Obligation]{
	"type": {decode: func(o *authz.Obligation, p string, v ast.Value) (err error) {
		o.Type, err = asString(p, v)
		return err
	}},
	"params": {decode: func(o *authz.Obligation, p string, v ast.Value) (err error) {
		o.Params, err = asStringMap(p, v)
		return err
	}},
}

var enforcementFields = fields[plan.Enforcement]{
	"patients": {decode: func(e *plan.Enforcement, p string, v ast.Value) (err error) {
		e.Patients, err = asStrings(p, v)
		return err
	}},
	"any_patient": {decode: func(e *plan.Enforcement, p string, v ast.Value) (err error) {
		e.AnyPatient, err = asBool(p, v)
		return err
	}},
	"permitted_labels": {decode: func(e *plan.Enforcement, p string, v ast.Value) (err error) {
		e.PermittedLabels, err = asStrings(p, v)
		return err
	}},
	"resource_types": {decode: func(e *plan.Enforcement, p string, v ast.Value) (err error) {
		e.ResourceTypes, err = asStrings(p, v)
		return err
	}},
}

// directiveString is a directive field holding a string.
func directiveString(dst func(*plan.Directive) *string) field[plan.Directive] {
	return field[plan.Directive]{decode: func(d *plan.Directive, p string, v ast.Value) (err error) {
		*dst(d), err = asString(p, v)
		return err
	}}
}

var directiveFields = fields[plan.Directive]{
	"path":    directiveString(func(d *plan.Directive) *string { return &d.Path }),
	"key_id":  directiveString(func(d *plan.Directive) *string { return &d.KeyID }),
	"format":  directiveString(func(d *plan.Directive) *string { return &d.Format }),
	"profile": directiveString(func(d *plan.Directive) *string { return &d.Profile }),
	"action": {decode: func(d *plan.Directive, p string, v ast.Value) error {
		act, err := asString(p, v)
		if err != nil {
			return err
		}
		d.Action = plan.Action(act)
		switch d.Action {
		case plan.ActionRemove, plan.ActionMask, plan.ActionTokenize, plan.ActionAllow, plan.ActionDeidentify:
			return nil
		}
		return fmt.Errorf("%s: unknown action %q", p, act)
	}},
	"keep": {decode: func(d *plan.Directive, p string, v ast.Value) (err error) {
		d.Keep, err = asStrings(p, v)
		return err
	}},
}

func decodeDirectives(path string, v ast.Value) ([]plan.Directive, error) {
	var out []plan.Directive
	err := each(path, v, func(p string, x ast.Value) error {
		var d plan.Directive
		if err := decodeObject(p, x, directiveFields, &d, "action"); err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

func asBool(path string, v ast.Value) (bool, error) {
	b, ok := v.(ast.Boolean)
	if !ok {
		return false, &shapeError{path, "boolean", v}
	}
	return bool(b), nil
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
