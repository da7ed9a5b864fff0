package regolib

import (
	"context"
	"slices"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/phigate/phigate/authz"
)

// The library refuses (400) any interaction outside its own set, so the
// set must be exactly the words the parser writes: one missing refuses
// every request of that kind, one extra accepts a word no request has.
func TestInteractionsMatchParser(t *testing.T) {
	res, store := load(t)
	opts := []func(*rego.Rego){
		rego.Query("data.phigate.request.interactions"),
		rego.Store(store),
		rego.SetRegoVersion(ast.RegoV1),
	}
	for _, m := range policyModules(res) {
		opts = append(opts, rego.ParsedModule(m))
	}
	rs, err := rego.New(opts...).Eval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		t.Fatalf("data.phigate.request.interactions: %v", rs)
	}
	var got []string
	for _, v := range rs[0].Expressions[0].Value.([]any) {
		got = append(got, v.(string))
	}
	var want []string
	for _, i := range authz.Interactions() {
		want = append(want, string(i))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("library interactions = %v, parser's = %v", got, want)
	}
}
