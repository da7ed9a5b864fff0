package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
)

// testRequest builds a policy input for patient p read by user u.
func testRequest(i int, user, patient string) *authz.Request {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	return &authz.Request{
		ID: fmt.Sprintf("req-%d", i), Time: now, TimeNS: now.UnixNano(), Method: "GET",
		Path: "/fhir/Patient/" + patient, Query: map[string][]string{},
		Headers: map[string]string{"authorization": "Bearer secret-token-" + user, "x-request-id": fmt.Sprintf("req-%d", i)},
		Source:  authz.Peer{Address: "10.1.2.3:5555"},
		Identity: authz.Identity{Authenticated: true, Subject: user, Issuer: "https://idp.example",
			FHIRUser: "Practitioner/" + user, Roles: []string{"physician"}, Scopes: []authz.Scope{}, ClientID: "ehr-app"},
		FHIR:    authz.FHIRRequest{Interaction: "read", ResourceType: "Patient", ID: patient, Patients: []string{patient}},
		Purpose: "TREAT",
	}
}

func testDecision(i int, allow bool) *authz.Decision {
	d := &authz.Decision{Allow: allow, Status: 200, ID: fmt.Sprintf("dec-%d", i),
		Audit: authz.AuditInfo{Rules: []string{"data.phigate.rbac.allow"}}}
	if !allow {
		d.Status, d.Reason = 403, "role_not_permitted"
	}
	return d
}

// openTest opens a log in a fresh directory with test-friendly settings.
func openTest(t *testing.T, mod func(*Config), opts ...Option) (*Log, Config) {
	t.Helper()
	cfg := Config{Dir: t.TempDir(), CheckpointEvery: 5, SegmentMaxBytes: 16 << 10}
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	l, err := Open(cfg, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l, cfg
}

// fill appends n decision records, alternating users and patients.
func fill(t *testing.T, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		req := testRequest(i, fmt.Sprintf("u%d", i%3), fmt.Sprintf("p%d", i%4))
		if err := l.Record(t.Context(), req, testDecision(i, i%5 != 0)); err != nil {
			t.Fatalf("Record %d: %v", i, err)
		}
	}
}

// abandon stops the committer without a final checkpoint, as a crash would.
func (l *Log) abandon() {
	l.mu.Lock()
	l.closed = true
	close(l.reqs)
	l.mu.Unlock()
	<-l.done
	close(l.cpWant)
	<-l.cpDone
	for _, s := range l.sinks {
		s.close()
	}
	l.closeFiles()
}

// segFrames returns the frames of a segment file.
func segFrames(t *testing.T, dir, name string) ([]byte, []frame) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	frames, serr := parseFrames(data)
	if serr != nil {
		t.Fatalf("parse %s: %+v", name, serr)
	}
	return data, frames
}

func segNames(t *testing.T, dir string) []string {
	t.Helper()
	names, _, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

type benchDecision struct {
	name string
	req  *authz.Request
	d    *authz.Decision
}

// benchDecisions are the records BenchmarkEncodeDecision encodes.
func benchDecisions() []benchDecision {
	search := testRequest(2, "u2", "p9")
	search.Method, search.Path = "GET", "/fhir/Observation"
	search.Query = map[string][]string{"patient": {"p9"}, "code": {"8867-4", "8480-6"}, "_count": {"50"}}
	search.Headers["accept"] = "application/fhir+json"
	search.Headers["x-purpose-of-use"] = "ETREAT"
	search.Headers["x-break-glass"] = "unconscious patient"
	search.Headers["user-agent"] = "ehr/4.2"
	search.FHIR = authz.FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: []string{"p9"}}
	search.Identity.Scopes = []authz.Scope{{Raw: "user/Observation.rs", Context: "user", Resource: "Observation", Permissions: "rs"}}
	search.BreakGlass = authz.BreakGlassRequest{Requested: true, Reason: "unconscious patient", Grants: []authz.Grant{}}
	bg := testDecision(2, true)
	bg.Headers = map[string]string{"x-phigate-decision": "dec-2", "x-phigate-purpose": "ETREAT"}
	bg.Redact = asRules(plan.Directive{Path: "Patient.telecom", Action: plan.ActionRemove},
		plan.Directive{Path: "Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn').value", Action: plan.ActionTokenize, KeyID: "k1"})
	bg.Enforce = &plan.Enforcement{Patients: []string{"p9"}, PermittedLabels: []string{"PSY"}}
	bg.BreakGlass = authz.BreakGlass{Active: true, Reason: "unconscious patient", Expires: "2026-03-01T13:00:00Z"}
	bg.Obligations = []authz.Obligation{{Type: "notify-privacy-office", Params: map[string]string{"patient": "p9"}}}
	bg.Audit.Rules = append(bg.Audit.Rules, "data.phigate.breakglass.allow")
	return []benchDecision{
		{"read", testRequest(1, "u1", "p1"), testDecision(1, true)},
		{"search", search, bg},
	}
}

// asRules wraps directives as a decision's rules. The stored record holds
// each rule's directive only, so these need not compile: the encoding is
// tested on any value, sound or not.
func asRules(ds ...plan.Directive) []plan.Rule {
	out := make([]plan.Rule, len(ds))
	for i, d := range ds {
		out[i] = plan.Rule{Directive: d}
	}
	return out
}
