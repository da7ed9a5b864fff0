package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// withoutPatientChecks writes the shipped policy library with its
// request-side patient checks taken out: no relationship denies a request,
// and the response may carry only the caller's own patients, whatever the
// request named. It is how the tests prove the response side alone; it is
// never a configuration phigate ships.
func withoutPatientChecks(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("..", "rego")
	files, err := filepath.Glob(filepath.Join(src, "*"))
	if err != nil {
		t.Fatal(err)
	}
	edits := map[string][][2]string{
		"relationship.rego": {{"deny_target(f) := {deny_reason} if {\n\tsome p in f.patients\n\tnot covered(p)\n}\n\nelse := set()",
			"deny_target(_) := set()"}},
		"authz.rego": {{"enforce_patients := request.touched if {\n\tcount(request.touched) > 0\n\tnot request.any_all_patients\n} else := relationship.mine",
			"enforce_patients := relationship.mine"}},
	}
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasSuffix(name, "_test.rego") || !(strings.HasSuffix(name, ".rego") || name == "data.json") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, e := range edits[name] {
			if !strings.Contains(s, e[0]) {
				t.Fatalf("%s no longer holds the rule this test takes out; update the test", name)
			}
			s = strings.Replace(s, e[0], e[1], 1)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestResponseSideAlone runs searches that name, or could match, patients
// outside prac-001's care team, twice: with the request side on, and with
// its patient checks taken out. In both, nothing about another patient may
// reach the client: no entry, included or contained resource, paging link,
// OperationOutcome text, or Location header naming one.
func TestResponseSideAlone(t *testing.T) {
	// prac-001 cares for pat-0001, pat-0061, pat-0121, ... (every 60th).
	own := func(id string) bool {
		var n int
		if _, err := fmtSscanf(id, &n); err != nil {
			return false
		}
		return (n-1)%60 == 0
	}
	patientID := regexp.MustCompile(`pat-\d{4}`)
	searches := []string{
		"/fhir/Observation?patient=pat-0002",
		"/fhir/Observation?subject=pat-0002",
		"/fhir/Observation?subject=Patient/pat-0002",
		"/fhir/Observation?subject:Patient=pat-0002",
		"/fhir/Observation?subject.name=Smith",
		"/fhir/Observation?patient.identifier=MRN0002",
		"/fhir/Observation?subject:Patient._id=pat-0002",
		"/fhir/Patient?name=a",
		"/fhir/Patient?identifier=MRN0002",
		"/fhir/Patient?_id=pat-0002",
		"/fhir/Patient?_id=pat-0001,pat-0002",
		"/fhir/Patient?_has:Observation:patient:code=8867-4",
		"/fhir/Observation?code=8867-4&_include=Observation:patient",
		"/fhir/Patient?_id=pat-0001&_revinclude=Observation:patient",
		"/fhir/Observation?code=8867-4&_include:iterate=Observation:patient",
		"/fhir/Encounter?_revinclude=Observation:encounter",
		"/fhir/Observation?_list=list-1",
		"/fhir?_type=Patient,Observation",
		"/fhir/Observation?_filter=subject eq Patient/pat-0002",
		"/fhir/Patient?_query=everything",
		"/fhir/Patient/pat-0002/Observation",
		"/fhir/Patient/pat-0002/*",
		"/fhir/Patient/pat-0002/$everything",
		"/fhir/Patient/pat-0002",
		"/fhir/Observation/obs-pat-0002-01",
		"/fhir/Patient/pat-0002/_history",
		"/fhir/Observation?_count=1",
		"/fhir/Patient?_count=2&_offset=1",
	}
	for _, mode := range []struct {
		name   string
		mutate func(*server.Config)
	}{
		{"request side on", nil},
		{"response side alone", func(c *server.Config) {
			c.Policy.Dir = withoutPatientChecks(t)
			c.Policy.RunTests = false
		}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			s := stacktest.Start(t, stacktest.Options{Mutate: mode.mutate})
			doc := s.Token(stacktest.Physician(1))
			for _, path := range searches {
				t.Run(path, func(t *testing.T) {
					r := s.Do("GET", strings.ReplaceAll(path, " ", "%20"), doc, nil, nil)
					for _, id := range patientID.FindAllString(string(r.Body), -1) {
						if !own(id) {
							t.Errorf("status %d: %s reached the client: %.400s", r.Status, id, r.Body)
							break
						}
					}
					for _, h := range []string{"Location", "Content-Location"} {
						for _, id := range patientID.FindAllString(r.Header.Get(h), -1) {
							if !own(id) {
								t.Errorf("%s header names %s", h, id)
							}
						}
					}
				})
			}
		})
	}
}

func fmtSscanf(id string, n *int) (int, error) { return fmt.Sscanf(id, "pat-%d", n) }
