package policy

import (
	"bytes"
	"strings"

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
