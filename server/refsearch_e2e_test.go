package server_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/phigate/phigate/internal/stacktest"
)

// TestReferenceSearchNamesThePatient: a reference search parameter that
// can point at a Patient names that patient on the request side, whatever
// the form of its value (bare id, typed, absolute on another base, with
// :Patient or a chain through _id) and whichever parameter carries it.
// A physician asking about a patient outside the care team is refused
// before the legacy service is asked, through the real Envoy; the same
// forms naming the physician's own patient pass.
func TestReferenceSearchNamesThePatient(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	doc := s.Token(stacktest.Physician(1)) // cares for pat-0001, not pat-0002
	forms := []struct{ name, query string }{
		{"bare subject", "subject=%s"},
		{"bare subject beside a code", "code=8867-4&subject=%s"},
		{"absolute on another server", "subject=" + url.QueryEscape("https://elsewhere.example/r4/Patient/") + "%s"},
		{"absolute versioned on the base", "subject=" + url.QueryEscape("http://localhost/fhir/Patient/") + "%s" + url.QueryEscape("/_history/1")},
		{"type modifier", "subject:Patient=%s"},
		{"chain through _id", "subject._id=%s"},
		{"bare performer", "performer=%s"},
		{"bare in an OR list", "subject=Patient/pat-0001,%s"},
		{"focus beside an own pin", "patient=pat-0001&focus=%s"},
	}
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			s.Up.Reset()
			other := "/fhir/Observation?" + strings.ReplaceAll(f.query, "%s", "pat-0002")
			r := s.Do("GET", other, doc, nil, nil)
			if r.Status != 403 || !stacktest.IsOutcome(r) {
				t.Fatalf("GET %s: status %d, want 403 with an OperationOutcome", other, r.Status)
			}
			if strings.Contains(string(r.Body), "pat-0002") {
				t.Errorf("refusal echoes the patient id: %.200s", r.Body)
			}
			if n := len(s.Up.Requests()); n != 0 {
				t.Errorf("upstream saw %d requests for a refused search", n)
			}
			own := "/fhir/Observation?" + strings.ReplaceAll(f.query, "%s", "pat-0001")
			if r := s.Do("GET", own, doc, nil, nil); r.Status != 200 {
				t.Errorf("GET %s: status %d, want 200", own, r.Status)
			} else if strings.Contains(string(r.Body), "pat-0002") {
				t.Errorf("own-patient search returned another patient: %.200s", r.Body)
			}
		})
	}
}
