package server_test

import (
	"strings"
	"testing"

	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
)

// TestUnfilterableFormat, through the real Envoy: a request whose decision
// needs its response filtered, asking for XML (which phigate cannot
// filter), gets 406 with an OperationOutcome before the upstream is asked;
// asking for JSON beside XML is served; a response the upstream sends as
// XML anyway is refused with 406 too. (Where nothing needs filtering, XML
// passes: authz's TestUnfilterableFormat; the shipped policy always asks
// for response checks.)
func TestUnfilterableFormat(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	billing := s.Token(demokeys.TokenSpec{Subject: "bill-1", Roles: []string{"billing"}, Purpose: "HPAYMT"})
	for _, c := range []struct {
		name, path string
		headers    map[string]string
		want       int
		upstream   bool
	}{
		{"_format=xml", "/fhir/Patient/pat-0001?_format=xml", nil, 406, false},
		{"Accept XML only", "/fhir/Patient/pat-0001", map[string]string{"accept": "application/fhir+xml"}, 406, false},
		{"Accept XML or JSON: the upstream is asked for JSON", "/fhir/Patient/pat-0001", map[string]string{"accept": "application/fhir+xml, application/fhir+json;q=0.9"}, 200, true},
		{"no preference", "/fhir/Patient/pat-0001", nil, 200, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s.Up.Reset()
			r := s.Do("GET", c.path, billing, c.headers, nil)
			if r.Status != c.want {
				t.Fatalf("status %d, want %d (body %.200s)", r.Status, c.want, r.Body)
			}
			if c.want == 406 && !stacktest.IsOutcome(r) {
				t.Errorf("406 without an OperationOutcome: %.200s", r.Body)
			}
			seen := s.Up.Requests()
			if got := len(seen) > 0; got != c.upstream {
				t.Errorf("upstream asked = %v, want %v", got, c.upstream)
			}
			if len(seen) > 0 && strings.Contains(seen[0].Headers.Get("accept"), "xml") {
				t.Errorf("upstream asked for %q", seen[0].Headers.Get("accept"))
			}
		})
	}
	t.Run("upstream answers XML anyway", func(t *testing.T) {
		s.Up.Override("/fhir/Patient/pat-0003", "application/fhir+xml", `<Patient xmlns="http://hl7.org/fhir"><id value="pat-0003"/></Patient>`)
		r := s.Do("GET", "/fhir/Patient/pat-0003", billing, nil, nil)
		if r.Status != 406 || strings.Contains(string(r.Body), "pat-0003") {
			t.Fatalf("status %d body %.200s, want 406 without the resource", r.Status, r.Body)
		}
	})

}
