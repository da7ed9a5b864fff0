package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// TestUnderscoreHeadersRefused: servers in the CGI, WSGI and PHP style read
// x_phigate_user as x-phigate-user, so a client could smuggle a header
// phigate owns past the policy beside the real one. Envoy must refuse the
// request with a 400 and a minimal OperationOutcome before it reaches
// phigate or the upstream.
func TestUnderscoreHeadersRefused(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	good := s.Token(stacktest.Physician(1))
	for _, name := range []string{"x_phigate_user", "X_Phigate_Roles", "x_forwarded_for"} {
		t.Run(name, func(t *testing.T) {
			s.Up.Reset()
			req, err := http.NewRequest("GET", s.Envoy.URL("/fhir/Patient/pat-0001"), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("authorization", "Bearer "+good)
			req.Header.Set(name, "admin")
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(body), `"OperationOutcome"`) {
				t.Errorf("status = %d body %.200s, want 400 with an OperationOutcome", resp.StatusCode, body)
			}
			for _, seen := range s.Up.Requests() {
				for k := range seen.Headers {
					if strings.Contains(k, "_") {
						t.Errorf("upstream received header %q", k)
					}
				}
			}
			if n := len(s.Up.Requests()); n != 0 {
				t.Errorf("upstream saw %d requests, want 0", n)
			}
		})
	}
	t.Run("the same request without the header passes", func(t *testing.T) {
		if r := s.Do("GET", "/fhir/Patient/pat-0001", good, nil, nil); r.Status != 200 {
			t.Errorf("status = %d, want 200", r.Status)
		}
	})
}

// TestEmergencyPurposeNeedsBreakGlass: a physician whose token names no
// purpose sends X-Purpose-Of-Use: ETREAT. Without an activated break-glass
// the emergency purpose must open nothing: no PSY-labelled Condition, and
// nothing flagged as break-glass either.
func TestEmergencyPurposeNeedsBreakGlass(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	spec := stacktest.Physician(1)
	spec.Purpose = ""
	doc := s.Token(spec)
	psy := "cond-pat-0001-psy"

	t.Run("ETREAT header alone", func(t *testing.T) {
		r := s.Do("GET", "/fhir/Condition/"+psy, doc, map[string]string{"x-purpose-of-use": "ETREAT"}, nil)
		if r.Status != 403 || strings.Contains(string(r.Body), "PSY") {
			t.Fatalf("status %d body %.200s, want 403 without the label", r.Status, r.Body)
		}
		r = s.Do("GET", "/fhir/Condition?patient=pat-0001", doc, map[string]string{"x-purpose-of-use": "ETREAT"}, nil)
		if strings.Contains(string(r.Body), psy) {
			t.Fatalf("search under ETREAT returned the PSY condition (status %d)", r.Status)
		}
	})
	t.Run("ETREAT inside an activated break-glass", func(t *testing.T) {
		spec := spec
		spec.AMR = []string{"pwd", "otp"}
		mfa := s.Token(spec)
		// Break-glass opens exactly one named patient.
		r := s.Do("GET", "/fhir/Condition?patient=pat-0001", mfa, map[string]string{
			"x-purpose-of-use": "ETREAT", "x-break-glass": "unconscious in ED"}, nil)
		if r.Status != 200 || !strings.Contains(string(r.Body), psy) {
			t.Fatalf("status %d body %.200s, want 200 with the condition", r.Status, r.Body)
		}
	})
}

// TestIncludeIsItsOwnTarget: an admin may search Organization but not
// Patient. _include and _revinclude must not carry back what a direct
// search would be refused, and the response side must withhold a type the
// caller may not read even when the request side let the search pass.
func TestIncludeIsItsOwnTarget(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	admin := s.Token(demokeys.TokenSpec{Subject: "admin-1", Roles: []string{"admin"}})
	billing := s.Token(demokeys.TokenSpec{Subject: "billing-1", Roles: []string{"billing"}, Purpose: "HPAYMT"})

	cases := []struct {
		name, token, path string
	}{
		{"admin: direct Patient search", admin, "/fhir/Patient"},
		{"admin: revinclude Patient", admin, "/fhir/Organization?_count=50&_revinclude=Patient:organization"},
		{"admin: revinclude iterate", admin, "/fhir/Organization?_revinclude:iterate=Patient:organization"},
		{"admin: include any type", admin, "/fhir/Organization?_revinclude=*"},
		{"billing: revinclude Observation", billing, "/fhir/Patient?_id=pat-0001&_revinclude=Observation:patient"},
		{"billing: revinclude Condition", billing, "/fhir/Encounter?patient=pat-0001&_revinclude=Condition:encounter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.Up.Reset()
			r := s.Do("GET", tc.path, tc.token, nil, nil)
			if r.Status != 403 || !stacktest.IsOutcome(r) {
				t.Fatalf("status %d body %.300s, want 403 with an OperationOutcome", r.Status, r.Body)
			}
			if n := len(s.Up.Requests()); n != 0 {
				t.Errorf("the upstream saw %d requests, want none", n)
			}
		})
	}
	t.Run("admin: the Organization search alone passes", func(t *testing.T) {
		r := s.Do("GET", "/fhir/Organization?_count=5", admin, nil, nil)
		if r.Status != 200 || strings.Contains(string(r.Body), `"resourceType":"Patient"`) {
			t.Fatalf("status %d body %.300s", r.Status, r.Body)
		}
	})
	t.Run("response side alone withholds a type the caller may not read", func(t *testing.T) {
		// An upstream that answers an Organization search with Patient
		// entries (a bug, or an include parameter it reads differently).
		s.Up.Override("/fhir/Organization", "application/fhir+json", `{"resourceType":"Bundle","type":"searchset",`+
			`"entry":[{"resource":{"resourceType":"Organization","id":"org-1","name":"Clinic"},"search":{"mode":"match"}},`+
			`{"resource":{"resourceType":"Patient","id":"pat-0002","name":[{"family":"Leaked"}],`+
			`"identifier":[{"system":"http://hl7.org/fhir/sid/us-ssn","value":"123-45-6789"}]},"search":{"mode":"include"}}]}`)
		r := s.Do("GET", "/fhir/Organization", admin, nil, nil)
		if r.Status != 200 {
			t.Fatalf("status %d body %.300s", r.Status, r.Body)
		}
		if strings.Contains(string(r.Body), "Leaked") || strings.Contains(string(r.Body), "123-45-6789") {
			t.Fatalf("a Patient reached an admin: %s", r.Body)
		}
		if !strings.Contains(string(r.Body), "org-1") {
			t.Errorf("the Organization itself was withheld: %s", r.Body)
		}
	})
}

// poisonBatch is the attack body: a batch of entries each searching
// Observations of thousands of patients, just under Envoy's request limit.
func poisonBatch(entries, idsPerEntry int) string {
	var b strings.Builder
	b.WriteString(`{"resourceType":"Bundle","type":"batch","entry":[`)
	for e := 0; e < entries; e++ {
		if e > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"request":{"method":"GET","url":"Observation?patient=`)
		for i := 0; i < idsPerEntry; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "q%d", e*idsPerEntry+i)
		}
		b.WriteString(`"}}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestAuditPoisoningRefused: one unauthenticated request naming 140k
// patients once produced a 37 MB audit record that broke verify, query and
// the next start. It must be refused without policy work, leave a small
// record, and leave a trail that verifies and reopens.
func TestAuditPoisoningRefused(t *testing.T) {
	var dir string
	s := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) { dir = c.Audit.Dir }})
	body := poisonBatch(10, 14000)
	if len(body) > 1<<20 {
		t.Fatalf("attack body is %d bytes, more than Envoy forwards", len(body))
	}
	doc := s.Token(stacktest.Physician(1))
	for _, tc := range []struct {
		name   string
		token  string
		status int
	}{
		// The caps refuse the body before identity is even looked at.
		{"unauthenticated", "", 400},
		{"authenticated, over the caps", doc, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.Up.Reset()
			start := time.Now()
			r := s.Do("POST", "/fhir", tc.token, map[string]string{"content-type": "application/fhir+json"}, strings.NewReader(body))
			if r.Status != tc.status || !stacktest.IsOutcome(r) {
				t.Fatalf("status %d body %.300s, want %d with an OperationOutcome", r.Status, r.Body, tc.status)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("refusal took %v", d)
			}
			if n := len(s.Up.Requests()); n != 0 {
				t.Errorf("upstream saw %d requests", n)
			}
		})
	}
	// Bytes held, not counting the zeros the live segment is filled with
	// ahead of its records.
	var total int64
	_ = filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Error(rerr)
			}
			total += int64(len(bytes.TrimRight(b, "\x00")))
		}
		return nil
	})
	if total > 256<<10 {
		t.Errorf("the audit directory grew to %d bytes for two refused requests", total)
	}
	entries, err := audit.Query(dir, audit.Filter{}, audit.QueryOptions{})
	if err != nil {
		t.Fatalf("audit query over the trail: %v", err)
	}
	if len(entries) < 2 {
		t.Errorf("trail holds %d records, want the two refusals", len(entries))
	}
	// The trail reopens: a second phigate on the same directory starts and serves.
	s.StopPhigate()
	s2 := stacktest.Start(t, stacktest.Options{Mutate: func(c *server.Config) { c.Audit.Dir = dir }})
	if r := s2.Do("GET", "/fhir/Patient/pat-0001", s2.Token(stacktest.Physician(1)), nil, nil); r.Status != 200 {
		t.Fatalf("after a restart on the same trail: status %d", r.Status)
	}
}

// TestWritesAuthorizedOnTheStoredOwner: a write is decided on the patient
// who owns the resource being changed, read from the upstream before the
// decision, not on whatever patient the new body names. prac-001 cares for
// pat-0001, prac-002 for pat-0002.
func TestWritesAuthorizedOnTheStoredOwner(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	outsider := s.Token(stacktest.Physician(1))
	own := s.Token(stacktest.Physician(2))
	const obs = "/fhir/Observation/obs-pat-0002-01"
	observation := func(patient string) string {
		return `{"resourceType":"Observation","id":"obs-pat-0002-01","status":"final",` +
			`"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/` + patient + `"}}`
	}
	fhirJSON := map[string]string{"content-type": "application/fhir+json"}
	cases := []struct {
		name, method, token, body string
		headers                   map[string]string
		status                    int
	}{
		{"outsider moves B's observation to A", "PUT", outsider, observation("pat-0001"), fhirJSON, 403},
		{"outsider rewrites B's observation in place", "PUT", outsider, observation("pat-0002"), fhirJSON, 403},
		{"outsider patches B's observation", "PATCH", outsider,
			`[{"op":"replace","path":"/status","value":"entered-in-error"}]`, map[string]string{"content-type": "application/json-patch+json"}, 403},
		{"B's physician moves it to a patient outside their team", "PUT", own, observation("pat-0001"), fhirJSON, 403},
		{"B's physician updates it", "PUT", own, observation("pat-0002"), fhirJSON, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.Do(tc.method, obs, tc.token, tc.headers, strings.NewReader(tc.body))
			if r.Status != tc.status {
				t.Fatalf("status %d body %.300s, want %d", r.Status, r.Body, tc.status)
			}
			status, stored := stacktest.GetBody(t, "http://"+s.Up.Addr+obs)
			if status != 200 || !strings.Contains(stored, `"Patient/pat-0002"`) {
				t.Fatalf("the stored observation changed owner or vanished: status %d %.300s", status, stored)
			}
		})
	}
}

// TestResponseShapesOfAnotherPatient: enforcement limited to prac-001's
// patient pat-0001 must withhold patient pat-0002 in every shape a FHIR
// server can put it: a Task, a Binary, an AuditEvent, a Device, a Patient
// inside Parameters, a contained resource, and a deleted entry known only
// by its URLs.
func TestResponseShapesOfAnotherPatient(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	doc := s.Token(stacktest.Physician(1))
	entry := func(res string) string { return `{"resource":` + res + `,"search":{"mode":"match"}}` }
	own := `{"resourceType":"Observation","id":"obs-own","status":"final","code":{"text":"hr"},"subject":{"reference":"Patient/pat-0001"}}`
	shapes := map[string]string{
		"task":       entry(`{"resourceType":"Task","id":"t1","status":"ready","intent":"order","for":{"reference":"Patient/pat-0002"}}`),
		"binary":     entry(`{"resourceType":"Binary","id":"b1","contentType":"text/plain","securityContext":{"reference":"Patient/pat-0002"},"data":"TGVha2Vk"}`),
		"auditevent": entry(`{"resourceType":"AuditEvent","id":"a1","entity":[{"what":{"reference":"Patient/pat-0002"}}]}`),
		"device":     entry(`{"resourceType":"Device","id":"d1","patient":{"reference":"Patient/pat-0002"}}`),
		"parameters": entry(`{"resourceType":"Parameters","id":"p1","parameter":[{"name":"p","resource":{"resourceType":"Patient","id":"pat-0002","name":[{"family":"Leaked"}]}}]}`),
		"contained": entry(`{"resourceType":"Observation","id":"obs-c","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/pat-0001"},` +
			`"contained":[{"resourceType":"Patient","id":"c1","name":[{"family":"Leaked"}],"link":[{"other":{"reference":"Patient/pat-0002"},"type":"seealso"}]},` +
			`{"resourceType":"Observation","id":"c2","status":"final","code":{"text":"y"},"subject":{"reference":"Patient/pat-0002"}}]}`),
		"deleted": `{"fullUrl":"http://127.0.0.1/fhir/Observation/obs-pat-0002-01","request":{"method":"DELETE","url":"Observation/obs-pat-0002-01"},` +
			`"response":{"status":"410"}},{"fullUrl":"http://127.0.0.1/fhir/Patient/pat-0002","request":{"method":"DELETE","url":"Patient/pat-0002"}}`,
	}
	for name, e := range shapes {
		t.Run(name, func(t *testing.T) {
			typ := "searchset"
			if name == "deleted" {
				typ = "history"
			}
			s.Up.Override("/fhir/Observation", "application/fhir+json",
				`{"resourceType":"Bundle","type":"`+typ+`","entry":[`+entry(own)+`,`+e+`]}`)
			r := s.Do("GET", "/fhir/Observation?patient=pat-0001", doc, nil, nil)
			body := string(r.Body)
			if strings.Contains(body, "pat-0002") || strings.Contains(body, "Leaked") {
				t.Fatalf("status %d: another patient reached the client: %s", r.Status, body)
			}
			if r.Status == 200 && !strings.Contains(body, "obs-own") {
				t.Errorf("the caller's own observation was withheld too: %s", body)
			}
		})
	}
}

// TestSafeHarborEveryDate: a researcher's de-identified data keeps no exact
// date anywhere, meta.lastUpdated included, while effectiveDateTime was
// already coarsened.
func TestSafeHarborEveryDate(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	researcher := s.Token(demokeys.TokenSpec{Subject: "researcher-1", Roles: []string{"researcher"}, Purpose: "HRESCH"})
	for _, tc := range []struct {
		path string
		meta bool // the resource carries meta.lastUpdated upstream
	}{{"/fhir/Observation/obs-pat-0001-01", true}, {"/fhir/Observation?patient=pat-0001", false}} {
		t.Run(tc.path, func(t *testing.T) {
			r := s.Do("GET", tc.path, researcher, nil, nil)
			if r.Status != 200 {
				t.Fatalf("status %d body %.300s", r.Status, r.Body)
			}
			if exact := regexp.MustCompile(`"\d{4}-\d{2}(-\d{2})?(T[^"]*)?"`).Find(r.Body); exact != nil {
				t.Errorf("a date finer than the year reached a researcher: %s in %.400s", exact, r.Body)
			}
			if tc.meta && !strings.Contains(string(r.Body), `"lastUpdated":"20`) {
				t.Errorf("meta.lastUpdated vanished instead of being coarsened: %.300s", r.Body)
			}
		})
	}
}
