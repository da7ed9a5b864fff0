package decisionlog

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzEventCarriesNoIdentifier: whatever a patient id is, the event for a
// request naming it (in its path, query, patients, compartment, break-glass
// reason, roles, reason and rules) holds it no more often than the event
// for the same request naming a neutral id: the id itself never gets out.
// The masked list is left out of the comparison, since an id that masks
// more adds pointers, and so are ids inside the mask text.
func FuzzEventCarriesNoIdentifier(f *testing.F) {
	for _, s := range []string{patient, "123", "pat-0001", "physician", "allow", "Observation", "read", "a b c", "dr-SUBJECT-hal9"} {
		f.Add(s)
	}
	const neutral = "qqqqqqqqqqqqqqqq"
	encode := func(id string) string {
		req, d := phiRequest(0)
		req.Path = "/fhir/Patient/" + id
		req.Query = map[string][]string{"patient": {id}}
		req.FHIR.Patients = []string{id}
		req.FHIR.Compartment.ID = id
		req.BreakGlass.Reason = "emergency for " + id
		req.Identity.Roles = []string{"physician", id}
		d.Reason = "deny:" + id
		d.Audit.Patients = []string{id}
		d.Audit.Rules = []string{"allow:break_glass", id}
		ev := NewEvent(req, d, map[string]string{"id": "inst"})
		ev.Masked = nil
		b, err := json.Marshal(ev)
		if err != nil {
			panic(err)
		}
		return string(b)
	}
	base := encode(neutral)
	f.Fuzz(func(t *testing.T, id string) {
		id = strings.TrimSpace(id)
		if id == "" || strings.Contains(Mask, id) || strings.Contains(id, neutral) {
			t.Skip()
		}
		q, err := json.Marshal(id)
		if err != nil {
			t.Skip()
		}
		needle := strings.Trim(string(q), `"`) // as it would appear in the JSON
		got, want := strings.Count(encode(id), needle), strings.Count(base, needle)
		if got > want {
			t.Fatalf("id %q appears %d times in its event, %d in a neutral one:\n%s", id, got, want, encode(id))
		}
	})
}
