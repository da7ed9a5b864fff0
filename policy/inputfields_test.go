package policy

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phigate/phigate/authz"
)

// The tests here reach every field of authz.Request by reflection, so a
// field added to the request is covered the day it is added: no list of
// paths to keep in step.

// step is one move from a value to a part of it: a struct field, a slice
// element or a map entry.
type step struct {
	field int    // struct field index, or -1
	index int    // slice element, or -1
	key   string // map key, when field and index are -1
}

// inputChange is one field of the policy input changed alone.
type inputChange struct {
	name   string   // Go path, for messages: Identity.Scopes[1].Raw
	path   []string // input path: JSON names, up to the first array
	steps  []step
	change func(v reflect.Value)
}

// filledRequest is a request with every field that reaches the policy
// input set, each to a value of its own; recursive fields (batch entries)
// two levels deep.
func filledRequest(t *testing.T) *authz.Request {
	t.Helper()
	r := new(authz.Request)
	fill(t, reflect.ValueOf(r).Elem(), "Request", 0)
	return r
}

func fill(t *testing.T, v reflect.Value, name string, depth int) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString(name)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(len(name)) * 1_000_003)
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() && jsonName(f) != "" {
				fill(t, v.Field(i), name+"."+f.Name, depth)
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), name, depth)
	case reflect.Slice:
		if depth >= 2 {
			// Empty, not nil: the input writes a nil list as [] where JSON
			// writes null, a difference the request parser never makes.
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(t, v.Index(i), fmt.Sprintf("%s[%d]", name, i), depth+1)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for _, k := range []string{"a-" + name, "b-" + name} {
			e := reflect.New(v.Type().Elem()).Elem()
			fill(t, e, name+"["+k+"]", depth+1)
			v.SetMapIndex(reflect.ValueOf(k), e)
		}
	default:
		t.Fatalf("%s has kind %s: teach inputValue, the cache key writer and this test", name, v.Kind())
	}
}

// jsonName is the input name of a struct field; "" for a field that is not
// policy input (tagged "-").
func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return f.Name
	}
	return name
}

// inputChanges lists a change of every field (and every slice, map and
// pointer as a whole) of the filled request.
func inputChanges(t *testing.T) []inputChange {
	var out []inputChange
	var walk func(v reflect.Value, name string, path []string, inArray bool, steps []step)
	add := func(name string, path []string, steps []step, change func(reflect.Value)) {
		out = append(out, inputChange{name: name, path: slices.Clone(path), steps: slices.Clone(steps), change: change})
	}
	walk = func(v reflect.Value, name string, path []string, inArray bool, steps []step) {
		extend := func(seg string) []string {
			if inArray {
				return path
			}
			return append(slices.Clone(path), seg)
		}
		switch v.Kind() {
		case reflect.String:
			add(name, path, steps, func(v reflect.Value) { v.SetString(v.String() + "'") })
			add(name+" emptied", path, steps, func(v reflect.Value) { v.SetString("") })
		case reflect.Bool:
			add(name, path, steps, func(v reflect.Value) { v.SetBool(!v.Bool()) })
		case reflect.Int, reflect.Int64:
			add(name, path, steps, func(v reflect.Value) { v.SetInt(v.Int() + 1) })
			add(name+" zeroed", path, steps, func(v reflect.Value) { v.SetInt(0) })
		case reflect.Struct:
			for i := range v.NumField() {
				f := v.Type().Field(i)
				if !f.IsExported() || jsonName(f) == "" {
					continue
				}
				walk(v.Field(i), name+"."+f.Name, extend(jsonName(f)), inArray, append(steps, step{field: i, index: -1}))
			}
		case reflect.Pointer:
			if v.IsNil() {
				return
			}
			add(name+" removed", path, steps, func(v reflect.Value) { v.SetZero() })
			walk(v.Elem(), name, path, inArray, steps)
		case reflect.Slice:
			if v.Len() == 0 {
				return
			}
			add(name+" shortened", path, steps, func(v reflect.Value) { v.Set(v.Slice(0, v.Len()-1)) })
			for i := range v.Len() {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", name, i), path, true, append(steps, step{field: -1, index: i}))
			}
		case reflect.Map:
			add(name+" grown", path, steps, func(v reflect.Value) {
				v.SetMapIndex(reflect.ValueOf("c-new"), reflect.New(v.Type().Elem()).Elem())
			})
			for _, k := range v.MapKeys() {
				// A map value is not addressable: it is changed by a copy
				// written back (see apply).
				walk(v.MapIndex(k), name+"["+k.String()+"]", extend(k.String()), inArray, append(steps, step{field: -1, index: -1, key: k.String()}))
			}
		}
	}
	walk(reflect.ValueOf(filledRequest(t)).Elem(), "Request", nil, false, nil)
	return out
}

// apply returns a filled request with c made to it.
func (c inputChange) apply(t *testing.T) *authz.Request {
	r := filledRequest(t)
	var at func(v reflect.Value, steps []step)
	at = func(v reflect.Value, steps []step) {
		if len(steps) == 0 {
			c.change(v)
			return
		}
		s := steps[0]
		switch {
		case v.Kind() == reflect.Pointer:
			at(v.Elem(), steps)
		case s.field >= 0:
			at(v.Field(s.field), steps[1:])
		case s.index >= 0:
			at(v.Index(s.index), steps[1:])
		default:
			k := reflect.ValueOf(s.key)
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			at(e, steps[1:])
			v.SetMapIndex(k, e)
		}
	}
	at(reflect.ValueOf(r).Elem(), c.steps)
	return r
}

// inputObjectPaths are the paths of every object of the input (the
// request, identity, fhir, fhir.compartment …), found by reflection.
func inputObjectPaths() [][]string {
	var out [][]string
	var walk func(t reflect.Type, path []string)
	walk = func(t reflect.Type, path []string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		out = append(out, path)
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && jsonName(f) != "" {
				walk(f.Type, append(slices.Clone(path), jsonName(f)))
			}
		}
	}
	walk(reflect.TypeFor[authz.Request](), nil)
	return out
}

// keyPaths are the cache key paths to test: every prefix of every field's
// input path, and beside every object a field that does not exist.
func keyPaths(t *testing.T) [][]string {
	seen := map[string]bool{}
	var out [][]string
	add := func(p []string) {
		if k := strings.Join(p, "\x00"); len(p) > 0 && !seen[k] {
			seen[k] = true
			out = append(out, slices.Clone(p))
		}
	}
	for _, c := range inputChanges(t) {
		for i := 1; i <= len(c.path); i++ {
			add(c.path[:i])
		}
	}
	for _, p := range inputObjectPaths() {
		add(append(slices.Clone(p), "no_such_field"))
	}
	return out
}

// TestEveryInputFieldReachesThePolicy: each field of the request, changed
// alone, changes the policy input.
func TestEveryInputFieldReachesThePolicy(t *testing.T) {
	base := inputValue(filledRequest(t))
	for _, c := range inputChanges(t) {
		if inputValue(c.apply(t)).Compare(base) == 0 {
			t.Errorf("%s (input.%s) changed alone leaves the policy input as it was", c.name, strings.Join(c.path, "."))
		}
	}
}

// TestEveryInputFieldChangesTheCacheKey: each field of the request,
// changed alone, changes the decision cache key of every path that covers
// it, and the key written from the request is the key of the AST input.
func TestEveryInputFieldChangesTheCacheKey(t *testing.T) {
	base := filledRequest(t)
	for _, c := range inputChanges(t) {
		changed := c.apply(t)
		if c.path[0] == timePath {
			continue // the one field the key leaves to until_ns
		}
		for i := 1; i <= len(c.path); i++ {
			dc := &decisionCache{paths: [][]string{c.path[:i]}}
			p := "input." + strings.Join(c.path[:i], ".")
			if dc.key(base) == dc.key(changed) {
				t.Errorf("%s changed alone: the key on %s stays the same", c.name, p)
			}
			for _, r := range []*authz.Request{base, changed} {
				if got, want := dc.key(r), keyFromAST(dc, r); got != want {
					t.Errorf("%s, key on %s:\nfast %q\nAST  %q", c.name, p, got, want)
				}
			}
		}
	}
}

func keyFromAST(dc *decisionCache, r *authz.Request) string {
	whole := inputValue(r).(ast.Object)
	return dc.keyFrom(func(name string) ast.Value {
		if t := whole.Get(ast.InternedTerm(name)); t != nil {
			return t.Value
		}
		return nil
	})
}
