package regolib

import (
	"context"
	"fmt"
	"testing"

	"github.com/open-policy-agent/opa/v1/profiler"
	"github.com/open-policy-agent/opa/v1/rego"
)

func TestProfX(t *testing.T) {
	pq := prepare(t)
	var in any
	for _, tc := range loadCases(t) {
		if tc.Name == "core/physician reads own patient" {
			in = tc.Input
		}
	}
	p := profiler.New()
	for range 200 {
		pq.Eval(context.Background(), rego.EvalInput(in), rego.EvalQueryTracer(p))
	}
	for _, s := range p.ReportTopNResults(25, []string{"total_time_ns"}) {
		fmt.Printf("%8d µs/eval %6d evals  %s:%d\n", s.ExprTimeNs/200/1000, s.NumEval/200, s.Location.File, s.Location.Row)
	}
}
