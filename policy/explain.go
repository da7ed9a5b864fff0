package policy

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

type traceBuffer struct {
	tracer *topdown.BufferTracer
}

func newTraceBuffer() *traceBuffer { return &traceBuffer{tracer: topdown.NewBufferTracer()} }

// lines renders the evaluation trace as OPA's pretty trace does, with
// locations so an author can find each rule.
func (t *traceBuffer) lines() []string {
	var b bytes.Buffer
	topdown.PrettyTraceWithLocation(&b, *t.tracer)
	return strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
}

// maxFailed bounds the comparisons a summary lists, maxLine each line.
const (
	maxFailed = 40
	maxLine   = 240
)

// summary is what an author reads first: the rules of the library that
// held, with file and line, and the comparisons that failed along the way
// with the values they compared. The full trace (lines) is thousands of
// lines for one decision.
func (t *traceBuffer) summary() []string {
	type held struct{ name, loc string }
	var rules []held
	seenRule := map[string]bool{}
	var failed []string
	seenFail := map[string]bool{}
	for _, e := range *t.tracer {
		switch e.Op {
		case topdown.ExitOp:
			r, ok := e.Node.(*ast.Rule)
			if !ok || r.Module == nil {
				continue
			}
			pkg := r.Module.Package.Path.String()
			if strings.HasSuffix(pkg, "_test") {
				continue
			}
			name := pkg + "." + r.Head.Ref().String()
			loc := location(r.Location)
			if key := name + "@" + loc; !seenRule[key] {
				seenRule[key] = true
				rules = append(rules, held{name, loc})
			}
		case topdown.FailOp:
			x, ok := e.Node.(*ast.Expr)
			if !ok || !comparison(x) || len(failed) >= maxFailed {
				continue
			}
			line := fmt.Sprintf("%s  %s", location(x.Location), plugged(x, e.Locals))
			if len(line) > maxLine {
				line = line[:maxLine-3] + "..."
			}
			if !seenFail[line] {
				seenFail[line] = true
				failed = append(failed, line)
			}
		}
	}
	out := []string{"rules that held:"}
	for _, r := range rules {
		out = append(out, "  "+r.loc+"  "+r.name)
	}
	out = append(out, "comparisons that failed:")
	for _, f := range failed {
		out = append(out, "  "+f)
	}
	if len(failed) == maxFailed {
		out = append(out, fmt.Sprintf("  (the first %d; --explain=full has them all)", maxFailed))
	}
	return out
}

func location(l *ast.Location) string {
	if l == nil {
		return "?"
	}
	return fmt.Sprintf("%s:%d", l.File, l.Row)
}

var comparisonOps = []string{"equal", "neq", "lt", "lte", "gt", "gte", "internal.member_2", "startswith", "endswith"}

// comparison reports whether x compares values: the expressions whose
// failure tells an author why a rule did not hold.
func comparison(x *ast.Expr) bool {
	op := x.Operator()
	return op != nil && slices.Contains(comparisonOps, op.String())
}

// plugged renders x with its variables replaced by the values they held
// at the failure, so the line reads as the comparison that was made:
// internal.member_2("pat-0002", {"pat-0001", "pat-0061"}).
func plugged(x *ast.Expr, locals *ast.ValueMap) string {
	if locals == nil {
		return x.String()
	}
	out, err := ast.TransformVars(x.Copy(), func(v ast.Var) (ast.Value, error) {
		if val := locals.Get(v); val != nil {
			return val, nil
		}
		return v, nil
	})
	if err != nil {
		return x.String()
	}
	return fmt.Sprint(out)
}
