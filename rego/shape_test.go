package regolib_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/policy"
	regolib "github.com/phigate/phigate/rego"
)

// TestDecisionShape holds three accounts of the decision document to the
// same fields, each derived from code:
//
//   - what the shipped library writes, over every input of the equivalence
//     harness, decided with the shipped data and (every VariantEvery-th)
//     with the variant data;
//   - what the decoder reads, policy.DecisionFields, taken from the
//     decoder's own tables;
//   - the mirror struct the library's tests decode into, by its JSON tags.
//
// Every field the library writes is one the decoder reads, every field the
// decoder reads is one the library writes for some input, and the mirror
// has exactly those fields. Every decision also decodes through the real
// decoder, which refuses any field it does not read.
func TestDecisionShape(t *testing.T) {
	t.Parallel()
	known := policy.DecisionFields()
	inputs := regolib.EquivalenceInputs(t)
	written := map[string]int{}
	decided, refused := 0, 0
	decideAll := func(pq rego.PreparedEvalQuery, every int) {
		for i, raw := range inputs {
			if i%every != 0 {
				continue
			}
			d, ok := regolib.EvalJSON(t, pq, raw)
			if !ok {
				continue
			}
			decided++
			collectFields(d, "", known, written)
			v, err := ast.InterfaceToValue(d)
			if err != nil {
				t.Fatal(err)
			}
			_, err = policy.DecodeDecision(v)
			switch {
			case err == nil:
			case strings.Contains(err.Error(), "unknown field"):
				t.Fatalf("input %d: the decoder refuses a field of the library's decision: %v\ninput %s", i, err, raw)
			case isRequest(raw):
				t.Fatalf("input %d: the decoder refuses the library's decision: %v\ninput %s", i, err, raw)
			default:
				// An input phigate cannot send (time_ns 1e30) may give a
				// value the decoder refuses, a deny; its fields still count.
				refused++
			}
		}
	}
	decideAll(regolib.Prepare(t), 1)
	decideAll(regolib.PrepareWithData(t, regolib.VariantData(t)), regolib.VariantEvery)

	for f := range written {
		if !slices.Contains(known, f) {
			t.Errorf("the library writes decision.%s, which the decoder does not read", f)
		}
	}
	for _, f := range known {
		if written[f] == 0 {
			t.Errorf("the decoder reads decision.%s, which the library never writes over %d decisions", f, decided)
		}
	}
	if mirror := structFields(reflect.TypeFor[regolib.MirrorDecision](), ""); !slices.Equal(mirror, known) {
		t.Errorf("the mirror struct's fields differ from the decoder's\nmirror:  %v\ndecoder: %v", mirror, known)
	}
	t.Logf("%d decisions (%d of inputs phigate cannot send refused by type), %d fields", decided, refused, len(known))
}

// isRequest reports whether raw is an input phigate can send: it decodes
// into authz.Request, every key a field of it and every value of its type.
func isRequest(raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var r authz.Request
	return dec.Decode(&r) == nil
}

// collectFields counts the fields of a decided document under prefix,
// named as DecisionFields names them. It descends into a field only when
// the decoder reads fields below it: the keys of a header map are the
// policy's own.
func collectFields(v any, prefix string, known []string, written map[string]int) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			f := prefix + k
			written[f]++
			switch {
			case hasFieldsBelow(known, f+"."):
				collectFields(e, f+".", known, written)
			case hasFieldsBelow(known, f+"[]."):
				if arr, ok := e.([]any); ok {
					for _, el := range arr {
						collectFields(el, f+"[].", known, written)
					}
				}
			}
		}
	}
}

func hasFieldsBelow(known []string, prefix string) bool {
	return slices.ContainsFunc(known, func(f string) bool { return strings.HasPrefix(f, prefix) })
}

// structFields names the JSON fields of t as DecisionFields names them.
func structFields(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		p := prefix + name
		out = append(out, p)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, structFields(ft, p+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, structFields(ft.Elem(), p+"[].")...)
		}
	}
	slices.Sort(out)
	return out
}
