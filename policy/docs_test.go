package policy

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/phigate/phigate/authz"
)

// docRows returns, for each table row of docs/policy.md whose first cell
// is a code span, that span and the whole row.
func docRows(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	first := regexp.MustCompile("^\\| `([^`]+)` \\|")
	rows := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if m := first.FindStringSubmatch(line); m != nil {
			rows[m[1]] = line
		}
	}
	return rows
}

// documentedInput walks the policy input type by its JSON tags: each field of
// a struct is a path; the fields of a slice's element structs are listed
// (as element names) on the slice's own row.
func documentedInput(prefix string, typ reflect.Type, paths map[string][]string) {
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || name == "" {
			continue
		}
		p := prefix + "." + name
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			documentedInput(p, ft, paths)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			var elems []string
			if ft.Elem() != typ { // entries repeat the request's own fields
				for j := range ft.Elem().NumField() {
					n, _, _ := strings.Cut(ft.Elem().Field(j).Tag.Get("json"), ",")
					if n != "" && n != "-" {
						elems = append(elems, n)
					}
				}
			}
			paths[p] = elems
		default:
			paths[p] = nil
		}
	}
}

// TestPolicyDocsInput: the guide's input table lists every field of the
// input phigate writes, and no field that does not exist.
func TestPolicyDocsInput(t *testing.T) {
	rows := docRows(t)
	paths := map[string][]string{}
	documentedInput("input", reflect.TypeFor[authz.Request](), paths)
	for p, elems := range paths {
		row, ok := rows[p]
		if !ok {
			t.Errorf("docs/policy.md does not describe %s", p)
			continue
		}
		for _, e := range elems {
			if !strings.Contains(row, "`"+e+"`") {
				t.Errorf("docs/policy.md: %s does not name its element field %s", p, e)
			}
		}
	}
	for span := range rows {
		if strings.HasPrefix(span, "input.") {
			if _, ok := paths[span]; !ok {
				t.Errorf("docs/policy.md describes %s, which the input does not have", span)
			}
		}
	}
}

// TestPolicyDocsDecision: the guide's decision table lists every key the
// decoder reads, and no key it refuses.
func TestPolicyDocsDecision(t *testing.T) {
	rows := docRows(t)
	fields := DecisionFields()
	for _, f := range fields {
		if _, ok := rows[f]; !ok {
			t.Errorf("docs/policy.md does not describe decision field %s", f)
		}
	}
	decisionish := regexp.MustCompile(`^[a-z_]+(\[\])?(\.[a-z_]+)?$`)
	for span := range rows {
		if strings.HasPrefix(span, "input.") || strings.HasPrefix(span, "phigate ") || !decisionish.MatchString(span) {
			continue
		}
		if !slices.Contains(fields, span) {
			t.Errorf("docs/policy.md describes decision field %s, which the decoder refuses", span)
		}
	}
}

// TestPolicyDocsInteractions: the guide names every interaction word the
// parser can write, which is what a policy author matches on.
func TestPolicyDocsInteractions(t *testing.T) {
	row := docRows(t)["input.fhir.interaction"]
	for _, i := range authz.Interactions() {
		if !strings.Contains(row, "`"+string(i)+"`") {
			t.Errorf("docs/policy.md: input.fhir.interaction does not name %q", i)
		}
	}
}
