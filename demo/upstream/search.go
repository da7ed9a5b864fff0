package upstream

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// values walks a dotted path through objects and arrays and returns every
// value found at its end.
func values(v any, path string) []any {
	cur := []any{v}
	for _, seg := range strings.Split(path, ".") {
		var next []any
		for _, c := range cur {
			m, ok := c.(map[string]any)
			if !ok {
				continue
			}
			switch x := m[seg].(type) {
			case nil:
			case []any:
				next = append(next, x...)
			default:
				next = append(next, x)
			}
		}
		cur = next
	}
	return cur
}

// criterion is one parsed search parameter occurrence: the resource matches
// when any of its values match (comma = OR); occurrences are ANDed.
type criterion struct {
	name   string
	p      searchParam
	mod    string
	values []string
}

// parsedSearch is a validated search request.
type parsedSearch struct {
	typ        string
	criteria   []criterion
	count      int
	offset     int
	include    []string
	revinclude []string
	used       url.Values // parameters honoured, for the self link
	ignored    []string   // parameter names ignored (lenient handling)
}

// parseSearch interprets q for a search of typ. Unknown parameters are an
// error under strict handling and ignored otherwise, as FHIR specifies.
func (s *Server) parseSearch(typ string, q url.Values, strict bool) (*parsedSearch, *fhirError) {
	ps := &parsedSearch{typ: typ, count: s.cfg.DefaultCount, used: url.Values{}}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		vals := q[name]
		base, mod := splitModifier(name)
		switch base {
		case "_count":
			n, err := strconv.Atoi(vals[len(vals)-1])
			if err != nil || n < 0 {
				return nil, errInvalid("invalid _count")
			}
			ps.count = min(n, s.cfg.MaxCount)
			ps.used.Set("_count", strconv.Itoa(ps.count))
			continue
		case "_offset":
			n, err := strconv.Atoi(vals[len(vals)-1])
			if err != nil || n < 0 {
				return nil, errInvalid("invalid _offset")
			}
			ps.offset = n
			continue
		case "_include":
			ps.include = append(ps.include, vals...)
			ps.used[name] = vals
			continue
		case "_revinclude":
			ps.revinclude = append(ps.revinclude, vals...)
			ps.used[name] = vals
			continue
		}
		if _, ok := resultParams[base]; ok {
			continue
		}
		p, ok := lookupParam(typ, base)
		if !ok || !modifierOK(p, mod) {
			if strict {
				return nil, errInvalid("unknown or unsupported search parameter")
			}
			ps.ignored = append(ps.ignored, name)
			continue
		}
		for _, v := range vals {
			ps.criteria = append(ps.criteria, criterion{name: base, p: p, mod: mod, values: strings.Split(v, ",")})
		}
		ps.used[name] = vals
	}
	return ps, nil
}

func modifierOK(p searchParam, mod string) bool {
	switch mod {
	case "":
		return true
	case "exact", "contains":
		return p.kind == kindString
	case "not":
		return p.kind == kindToken
	default:
		// A type modifier on a reference, e.g. subject:Patient.
		return p.kind == kindReference && isKnownType(mod)
	}
}

func (ps *parsedSearch) matches(r Resource) bool {
	for _, c := range ps.criteria {
		if !c.matches(r) {
			return false
		}
	}
	return true
}

func (c criterion) matches(r Resource) bool {
	var found []any
	for _, p := range c.p.paths {
		found = append(found, values(r, p)...)
	}
	if c.mod == "not" {
		for _, want := range c.values {
			for _, f := range found {
				if tokenMatch(f, want) {
					return false
				}
			}
		}
		return true
	}
	for _, want := range c.values {
		for _, f := range found {
			switch c.p.kind {
			case kindToken:
				if tokenMatch(f, want) {
					return true
				}
			case kindString:
				if stringMatch(f, want, c.mod) {
					return true
				}
			case kindReference:
				if refMatch(f, want, c.p.target, c.mod) {
					return true
				}
			case kindDate:
				if d, ok := f.(string); ok && dateMatch(d, want) {
					return true
				}
			}
		}
	}
	return false
}

// tokenMatch matches "system|code", "|code", "system|" or "code" against a
// code, Coding, CodeableConcept, Identifier or ContactPoint.
func tokenMatch(v any, want string) bool {
	system, code, hasSystem := strings.Cut(want, "|")
	if !hasSystem {
		code, system = system, ""
	}
	check := func(sys, val string) bool {
		if hasSystem && system != sys {
			return false
		}
		return code == "" || strings.EqualFold(code, val)
	}
	switch x := v.(type) {
	case string:
		return !hasSystem && check("", x)
	case map[string]any:
		if cod, ok := x["coding"].([]any); ok {
			for _, c := range cod {
				if tokenMatch(c, want) {
					return true
				}
			}
			return false
		}
		sys, _ := x["system"].(string)
		for _, key := range []string{"code", "value"} {
			if val, ok := x[key].(string); ok {
				return check(sys, val)
			}
		}
	}
	return false
}

// stringMatch is FHIR string search: case-insensitive prefix by default,
// over every string inside the element (a HumanName's parts, say).
func stringMatch(v any, want, mod string) bool {
	switch x := v.(type) {
	case string:
		switch mod {
		case "exact":
			return x == want
		case "contains":
			return strings.Contains(strings.ToLower(x), strings.ToLower(want))
		default:
			return strings.HasPrefix(strings.ToLower(x), strings.ToLower(want))
		}
	case []any:
		for _, e := range x {
			if stringMatch(e, want, mod) {
				return true
			}
		}
	case map[string]any:
		for _, e := range x {
			if stringMatch(e, want, mod) {
				return true
			}
		}
	}
	return false
}

// refMatch matches a Reference against "Type/id", a bare "id" or an
// absolute URL ending in "Type/id".
func refMatch(v any, want, target, mod string) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	ref, _ := m["reference"].(string)
	if ref == "" {
		return false
	}
	if target == "" {
		target = mod
	}
	if i := strings.LastIndex(want, "/"); i >= 0 && strings.Contains(want, "://") {
		// Absolute URL: compare on the last two segments.
		parts := strings.Split(strings.TrimRight(want, "/"), "/")
		if len(parts) >= 2 {
			want = parts[len(parts)-2] + "/" + parts[len(parts)-1]
		}
	}
	if strings.Contains(want, "/") {
		if target != "" && !strings.HasPrefix(want, target+"/") {
			return false
		}
		return ref == want
	}
	if target != "" {
		return ref == target+"/"+want
	}
	_, id, ok := strings.Cut(ref, "/")
	return ok && id == want
}

// dateMatch supports the eq (default), ge, le, gt, lt prefixes against the
// date part of the value, which is all the demo needs.
func dateMatch(have, want string) bool {
	prefix := "eq"
	if len(want) > 2 && strings.ContainsAny(want[:1], "eglnsa") && !strings.ContainsAny(want[:2], "0123456789") {
		prefix, want = want[:2], want[2:]
	}
	h := have
	if len(h) > len(want) {
		h = h[:len(want)]
	}
	switch prefix {
	case "eq":
		return h == want
	case "ne":
		return h != want
	case "ge":
		return h >= want
	case "le":
		return h <= want
	case "gt":
		return h > want
	case "lt":
		return h < want
	}
	return false
}

// references lists the "Type/id" references found at paths in r.
func references(r Resource, paths []string) []string {
	var out []string
	for _, p := range paths {
		for _, v := range values(r, p) {
			if m, ok := v.(map[string]any); ok {
				if ref, ok := m["reference"].(string); ok && strings.Count(ref, "/") == 1 {
					out = append(out, ref)
				}
			}
		}
	}
	return out
}

// inCompartment reports whether r belongs to Patient/id's compartment.
func inCompartment(r Resource, typ, patientID string) bool {
	want := "Patient/" + patientID
	if typ == "Patient" && r["id"] == patientID {
		return true
	}
	for _, name := range compartmentParams[typ] {
		p, ok := lookupParam(typ, name)
		if !ok {
			continue
		}
		for _, ref := range references(r, p.paths) {
			if ref == want {
				return true
			}
		}
	}
	return false
}
