package regolib

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// BenchmarkDecision measures one decision the way phigate runs it: a query
// prepared once, the input handed over as a ready ast.Value.
func BenchmarkDecision(b *testing.B) {
	pq := prepare(b)
	byName := map[string]decisionCase{}
	for _, tc := range loadCases(b) {
		byName[tc.Name] = tc
	}
	for _, name := range []string{
		"core/physician reads own patient",
		"core/physician searches all patients",
		"core/physician reads patient of another team",
		"core/break glass",
		"core/front desk weekday",
		"core/batch all good",
	} {
		tc, ok := byName[name]
		if !ok {
			b.Fatalf("no case %q", name)
		}
		input, err := ast.InterfaceToValue(tc.Input)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				rs, err := pq.Eval(ctx, rego.EvalParsedInput(input))
				if err != nil || len(rs) != 1 {
					b.Fatalf("eval: %v %v", rs, err)
				}
			}
		})
	}
}
