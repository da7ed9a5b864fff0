package authz

import (
	"slices"
	"strings"
	"testing"
)

// FuzzApprovalScope: an approval covers a kick-off's canonical scope, so
// the scope must not depend on how the parameters were written (the order
// of values, the order and repetition of _type's types), and it must be
// one line that names the method first.
func FuzzApprovalScope(f *testing.F) {
	for _, s := range []string{
		"/fhir/$export?_type=Patient,Observation", "/fhir/Group/g1/$export?_since=2026-01-01T01:00:00%2B01:00",
		"/fhir/Patient/$export?_type=Observation&_type=Patient,Patient&_outputFormat=ndjson",
		"/fhir/$export?_typeFilter=Observation%3Fcode%3Dx&_typeFilter=Patient%3Factive%3Dtrue",
	} {
		f.Add(s)
	}
	p := newTestParser(f)
	f.Fuzz(func(t *testing.T, path string) {
		req, err := p.Parse(&CheckInput{Method: "GET", Path: path, Headers: map[string]string{}})
		if err != nil || req.FHIR.Interaction != InteractionOperation {
			return
		}
		s1 := ApprovalScope(req)
		if !strings.HasPrefix(s1, "GET ") || strings.ContainsAny(s1, "\n\r\x00") {
			t.Fatalf("scope %q", s1)
		}
		// The same request with every parameter's values reversed, and
		// _type's lists reversed and doubled.
		q := make(map[string][]string, len(req.Query))
		for k, vs := range req.Query {
			vs = slices.Clone(vs)
			slices.Reverse(vs)
			if k == "_type" {
				for i, v := range vs {
					ts := strings.Split(v, ",")
					slices.Reverse(ts)
					vs[i] = strings.Join(append(ts, ts...), ",")
				}
			}
			q[k] = vs
		}
		alt := *req
		alt.Query = q
		if s2 := ApprovalScope(&alt); s2 != s1 {
			t.Fatalf("one kick-off, two scopes:\n%q\n%q", s1, s2)
		}
	})
}
