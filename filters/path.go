package filters

import (
	"slices"
	"strings"
)

// elemPath is a compiled FHIR element path: a resource type ("*" for any)
// and the steps beneath it. The supported FHIRPath subset is what policies
// need to name elements: member navigation, choice elements ("value[x]")
// and where(field='literal') filters on repeating elements.
type elemPath struct {
	rtype string
	steps []step
}

type step struct {
	name   string
	choice bool // name[x]: matches nameString, nameQuantity, ...
	where  []cond
}

type cond struct {
	field []string // member path below the element: "system", "type.coding.code"
	value string
}

func (s step) matches(key []byte) bool {
	if !s.choice {
		return string(key) == s.name
	}
	if len(key) <= len(s.name) || string(key[:len(s.name)]) != s.name {
		return false
	}
	c := key[len(s.name)]
	return c >= 'A' && c <= 'Z'
}

// parsePath compiles a path such as
// "Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn').value".
// Errors name the path, which policies author; it never holds PHI.
func parsePath(p string) (elemPath, error) {
	segs, err := splitPath(p)
	if err != nil {
		return elemPath{}, err
	}
	ep := elemPath{rtype: segs[0]}
	if !isIdent(ep.rtype) && ep.rtype != "*" {
		return elemPath{}, errorf(CodeBadDirective, "path %q: bad resource type", p)
	}
	for _, s := range segs[1:] {
		if strings.HasPrefix(s, "where(") {
			if len(ep.steps) == 0 {
				return elemPath{}, errorf(CodeBadDirective, "path %q: where() needs an element before it", p)
			}
			c, err := parseWhere(p, s)
			if err != nil {
				return elemPath{}, err
			}
			last := &ep.steps[len(ep.steps)-1]
			last.where = append(last.where, c...)
			continue
		}
		st := step{name: s}
		if strings.HasSuffix(s, "[x]") {
			st.name, st.choice = strings.TrimSuffix(s, "[x]"), true
		}
		if !isIdent(st.name) {
			return elemPath{}, errorf(CodeBadDirective, "path %q: unsupported segment %q", p, s)
		}
		ep.steps = append(ep.steps, st)
	}
	return ep, nil
}

// splitPath splits on dots outside quotes and parentheses.
func splitPath(p string) ([]string, error) {
	var segs []string
	depth, quote, start := 0, false, 0
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case quote:
			if c == '\\' {
				i++
			} else if c == '\'' {
				quote = false
			}
		case c == '\'':
			quote = true
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, errorf(CodeBadDirective, "path %q: unbalanced parenthesis", p)
			}
		case c == '.' && depth == 0:
			segs = append(segs, p[start:i])
			start = i + 1
		}
	}
	if quote || depth != 0 {
		return nil, errorf(CodeBadDirective, "path %q: unterminated literal or call", p)
	}
	segs = append(segs, p[start:])
	for _, s := range segs {
		if s == "" {
			return nil, errorf(CodeBadDirective, "path %q: empty segment", p)
		}
	}
	return segs, nil
}

// parseWhere accepts where(a='x'), where(a.b='x') and where(a='x' and b='y').
func parseWhere(p, s string) ([]cond, error) {
	body := strings.TrimSuffix(strings.TrimPrefix(s, "where("), ")")
	if len(body) == len(s)-len("where(") {
		return nil, errorf(CodeBadDirective, "path %q: bad where()", p)
	}
	var out []cond
	for part := range strings.SplitSeq(body, " and ") {
		field, lit, ok := strings.Cut(strings.TrimSpace(part), "=")
		field, lit = strings.TrimSpace(field), strings.TrimSpace(lit)
		names := strings.Split(field, ".")
		if !ok || slices.ContainsFunc(names, func(s string) bool { return !isIdent(s) }) || len(lit) < 2 || lit[0] != '\'' || lit[len(lit)-1] != '\'' {
			return nil, errorf(CodeBadDirective, "path %q: where() supports field='literal' only", p)
		}
		lit = strings.ReplaceAll(lit[1:len(lit)-1], `\'`, `'`)
		out = append(out, cond{field: names, value: lit})
	}
	return out, nil
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')) {
			return false
		}
	}
	return true
}

func (s step) accepts(n *node) bool {
	for _, c := range s.where {
		found := false
		eachAt(n, c.field, func(v *node) { found = found || v.strIs(c.value) })
		if !found {
			return false
		}
	}
	return true
}

// visit calls fn for every value the steps select beneath obj. fn returns
// what to do with the value: keep it, or drop it from its parent (the
// member, or the element of a repeating member). Containers emptied by a
// drop are dropped too, because FHIR forbids empty objects and arrays.
// visit reports whether anything changed.
func visit(obj *node, steps []step, fn func(v *node) (changed, drop bool)) bool {
	if obj == nil || obj.kind != kObj || len(steps) == 0 {
		return false
	}
	obj.x()
	s, last := steps[0], len(steps) == 1
	changed := false
	out := obj.mem[:0]
	for _, m := range obj.mem {
		if !s.matches(m.key) {
			out = append(out, m)
			continue
		}
		keep := true
		one := func(v *node) (drop bool) {
			if !s.accepts(v) {
				return false
			}
			if last {
				c, d := fn(v)
				changed = changed || c || d
				return d
			}
			if visit(v, steps[1:], fn) {
				changed = true
				return v.kind == kObj && len(v.mem) == 0
			}
			return false
		}
		if m.val.kind == kArr {
			m.val.x()
			orig := len(m.val.arr)
			elems := m.val.arr[:0]
			for _, e := range m.val.arr {
				if !one(e) {
					elems = append(elems, e)
				}
			}
			if len(elems) != len(m.val.arr) {
				clear(m.val.arr[len(elems):])
				m.val.arr = elems
				m.val.dirty = true
			}
			keep = len(elems) > 0 || orig == 0
		} else {
			keep = !one(m.val)
		}
		if keep {
			out = append(out, m)
		}
	}
	if len(out) != len(obj.mem) {
		clear(obj.mem[len(out):])
		obj.mem = out
		obj.dirty = true
	}
	return changed
}
