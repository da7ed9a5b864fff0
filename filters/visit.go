package filters

import "github.com/phigate/phigate/plan"

// accepts reports whether an element passes the step's where() tests.
func accepts(s plan.Step, n *node) bool {
	for _, c := range s.Where {
		found := false
		eachAt(n, c.Field, func(v *node) { found = found || v.strIs(c.Value) })
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
func visit(obj *node, steps []plan.Step, fn func(v *node) (changed, drop bool)) bool {
	if obj == nil || obj.kind != kObj || len(steps) == 0 {
		return false
	}
	obj.x()
	s, last := steps[0], len(steps) == 1
	changed := false
	out := obj.mem[:0]
	for _, m := range obj.mem {
		if !s.Matches(m.key) {
			out = append(out, m)
			continue
		}
		keep := true
		one := func(v *node) (drop bool) {
			if !accepts(s, v) {
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
