package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phigate/phigate/authz"
)

// inputValue builds the policy input straight into OPA's AST. The builders
// for each part (value<Type> in input_gen.go) are generated from
// authz.Request, so the input follows its JSON tags field for field;
// TestInputMatchesJSON checks the result against encoding/json.
func inputValue(r *authz.Request) ast.Value { return valueRequest(r) }

func item(k string, v ast.Value) [2]*ast.Term {
	return [2]*ast.Term{ast.InternedTerm(k), ast.NewTerm(v)}
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

func strArray(ss []string) ast.Value {
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.StringTerm(s)
	}
	return ast.NewArray(terms...)
}

func stringMap(m map[string]string) ast.Value {
	items := make([][2]*ast.Term, 0, len(m))
	for k, v := range m {
		items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.StringTerm(v)})
	}
	return ast.NewObject(items...)
}

func queryValue(q map[string][]string) ast.Value {
	items := make([][2]*ast.Term, 0, len(q))
	for k, v := range q {
		items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(strArray(v))})
	}
	return ast.NewObject(items...)
}
