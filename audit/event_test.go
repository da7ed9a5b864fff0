package audit

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
)

func codesOf(cs []Coding) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Code)
	}
	return out
}

func TestDecisionEventShape(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	search := testRequest(2, "u2", "p9")
	search.FHIR = authz.FHIRRequest{Interaction: "search-type", ResourceType: "Observation", Patients: []string{"p9"}}
	search.Query = map[string][]string{"patient": {"p9"}, "code": {"8867-4"}}
	bg := testDecision(3, true)
	bg.BreakGlass = authz.BreakGlass{Active: true, Reason: "unconscious patient", Expires: "2026-03-01T13:00:00Z"}
	bg.Audit.Patients = []string{"p7"}
	failed := testDecision(4, false)
	failed.Status, failed.Reason = 503, "policy_error"
	repeats := testDecision(7, true)
	repeats.Audit.Purpose, repeats.Audit.Patients = "TREAT", []string{"p1", "", "p0", "p1"}
	anon := testRequest(5, "", "p1")
	anon.Identity = authz.Identity{Error: "missing_token"}
	evaluated := testDecision(8, true)
	evaluated.Policy = authz.Provenance{Revision: "3f2a9c", EvaluatedNS: at.UnixNano()}
	reused := testDecision(9, true)
	reused.Policy = authz.Provenance{Revision: "3f2a9c", EvaluatedNS: at.Add(-90 * time.Second).UnixNano(), Reused: true}

	cases := []struct {
		name        string
		req         *authz.Request
		d           *authz.Decision
		stopped     bool
		action      string
		outcome     string
		subtypes    []string
		patients    []string
		resource    string
		query       string
		user        string
		profile     string
		purposes    []string
		wantDetails []string
		noDetails   []string // detail types that must be absent
	}{
		{name: "allowed read", req: testRequest(1, "u1", "p1"), d: testDecision(1, true),
			action: "R", outcome: "0", subtypes: []string{"read"}, patients: []string{"p1"}, resource: "Patient/p1",
			user: "u1", profile: "IHE.BasicAudit.PatientRead", purposes: []string{"TREAT"},
			wantDetails: []string{"status=200", "rule=data.phigate.rbac.allow"}},
		{name: "denied search", req: search, d: testDecision(2, false),
			action: "E", outcome: "4", subtypes: []string{"search-type"}, patients: []string{"p9"},
			query: "code=8867-4&patient=p9", user: "u2", purposes: []string{"TREAT"}, wantDetails: []string{"status=403"}},
		{name: "break-glass", req: testRequest(3, "u3", "p1"), d: bg,
			action: "R", outcome: "0", subtypes: []string{"read", CodeOverrideStarted}, patients: []string{"p1", "p7"},
			resource: "Patient/p1", user: "u3", profile: "IHE.BasicAudit.PatientRead", purposes: []string{"TREAT", "BTG"},
			wantDetails: []string{"break-glass-expires=2026-03-01T13:00:00Z"}},
		{name: "override ended", req: testRequest(6, "u3", "p1"), d: testDecision(6, true), stopped: true,
			action: "R", outcome: "0", subtypes: []string{"read", CodeOverrideStopped}, patients: []string{"p1"},
			resource: "Patient/p1", user: "u3", profile: "IHE.BasicAudit.PatientRead", purposes: []string{"TREAT"}},
		{name: "our failure", req: testRequest(4, "u4", "p1"), d: failed,
			action: "R", outcome: "8", subtypes: []string{"read"}, patients: []string{"p1"}, resource: "Patient/p1",
			user: "u4", purposes: []string{"TREAT"}},
		{name: "policy repeats purpose and patients", req: testRequest(7, "u7", "p1"), d: repeats,
			action: "R", outcome: "0", subtypes: []string{"read"}, patients: []string{"p0", "p1"}, resource: "Patient/p1",
			user: "u7", profile: "IHE.BasicAudit.PatientRead", purposes: []string{"TREAT"}},
		{name: "evaluated by a policy revision", req: testRequest(8, "u8", "p1"), d: evaluated,
			action: "R", outcome: "0", subtypes: []string{"read"}, patients: []string{"p1"}, resource: "Patient/p1",
			user: "u8", profile: "IHE.BasicAudit.PatientRead", purposes: []string{"TREAT"},
			wantDetails: []string{"policy-revision=3f2a9c"}, noDetails: []string{DetailReusedFrom}},
		{name: "reused from the decision cache", req: testRequest(9, "u9", "p1"), d: reused,
			action: "R", outcome: "0", subtypes: []string{"read"}, patients: []string{"p1"}, resource: "Patient/p1",
			user: "u9", profile: "IHE.BasicAudit.PatientRead", purposes: []string{"TREAT"},
			wantDetails: []string{"policy-revision=3f2a9c", "reused-from=2026-03-01T11:58:30Z"}},
		{name: "unauthenticated", req: anon, d: testDecision(5, false),
			action: "R", outcome: "4", subtypes: []string{"read"}, patients: []string{"p1"}, resource: "Patient/p1",
			purposes: []string{"TREAT"}},
	}
	b := Builder{Server: "phigate-test"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := b.Decision(tc.req, tc.d, at, tc.stopped)
			if ev.ResourceType != "AuditEvent" || ev.ID != tc.d.ID || ev.Type.Code != "rest" {
				t.Fatalf("header = %s/%s type %s", ev.ResourceType, ev.ID, ev.Type.Code)
			}
			if ev.Action != tc.action || ev.Outcome != tc.outcome {
				t.Fatalf("action/outcome = %s/%s, want %s/%s", ev.Action, ev.Outcome, tc.action, tc.outcome)
			}
			if got := codesOf(ev.Subtype); !slices.Equal(got, tc.subtypes) {
				t.Fatalf("subtypes = %v, want %v", got, tc.subtypes)
			}
			if got := ev.Patients(); !slices.Equal(got, tc.patients) {
				t.Fatalf("patients = %v, want %v", got, tc.patients)
			}
			if sub, _ := ev.User(); sub != tc.user {
				t.Fatalf("user = %q, want %q", sub, tc.user)
			}
			if ev.Recorded != "2026-03-01T12:00:00Z" {
				t.Fatalf("recorded = %s", ev.Recorded)
			}
			var res, q string
			for _, e := range ev.Entity {
				if e.Role != nil && e.Role.Code == "4" {
					res = e.What.Reference
				}
				if e.Role != nil && e.Role.Code == "24" {
					raw, _ := base64.StdEncoding.DecodeString(e.Query)
					q = string(raw)
				}
			}
			if res != tc.resource || q != tc.query {
				t.Fatalf("resource/query = %q/%q, want %q/%q", res, q, tc.resource, tc.query)
			}
			var purposes []string
			for _, p := range ev.PurposeOfEvent {
				purposes = append(purposes, p.Coding[0].Code)
			}
			if !slices.Equal(purposes, tc.purposes) {
				t.Fatalf("purposes = %v, want %v", purposes, tc.purposes)
			}
			profile := ""
			if ev.Meta != nil {
				profile = ev.Meta.Profile[0]
			}
			if !strings.HasSuffix(profile, tc.profile) || (tc.profile == "") != (profile == "") {
				t.Fatalf("profile = %q, want %q", profile, tc.profile)
			}
			if ev.RequestID() != tc.req.ID || ev.DecisionID() != tc.d.ID {
				t.Fatalf("ids = %s/%s", ev.RequestID(), ev.DecisionID())
			}
			details := map[string]bool{}
			for _, e := range ev.Entity {
				for _, d := range e.Detail {
					details[d.Type+"="+d.ValueString] = true
				}
			}
			for _, w := range tc.wantDetails {
				if !details[w] {
					t.Fatalf("detail %s missing from %v", w, details)
				}
			}
			for kv := range details {
				if typ, _, _ := strings.Cut(kv, "="); slices.Contains(tc.noDetails, typ) ||
					(tc.d.Policy.Revision == "" && typ == DetailPolicyRevision) {
					t.Fatalf("detail %s present, want none of type %s", kv, typ)
				}
			}
			// Agents: the user (requestor), the client (110153) and phigate (110152).
			if len(ev.Agent) != 3 || !ev.Agent[0].Requestor || ev.Agent[1].Type.Coding[0].Code != "110153" ||
				ev.Agent[2].Type.Coding[0].Code != "110152" || ev.Agent[2].Who.Display != "phigate-test" {
				t.Fatalf("agents = %+v", ev.Agent)
			}
			if tc.user != "" && (ev.Agent[1].Who.Identifier.Value != "ehr-app" || ev.Agent[0].Network.Address != "10.1.2.3" ||
				ev.Agent[0].Who.Reference != "Practitioner/"+tc.user) {
				t.Fatalf("user/client agent = %+v / %+v", ev.Agent[0], ev.Agent[1])
			}
		})
	}
}

func TestPolicyInputDropsCredentials(t *testing.T) {
	req := testRequest(1, "u1", "p1")
	req.Headers["cookie"] = "session=abc"
	req.Headers["x-custom-auth"] = "Bearer leaked"
	req.Headers["accept"] = "application/fhir+json"
	in, err := PolicyInput(req)
	if err != nil {
		t.Fatal(err)
	}
	s := string(in)
	for _, bad := range []string{"secret-token", "session=abc", "leaked", `"authorization"`} {
		if strings.Contains(s, bad) {
			t.Fatalf("policy input keeps %q: %s", bad, s)
		}
	}
	var back authz.Request
	if err := json.Unmarshal(in, &back); err != nil || back.Headers["accept"] != "application/fhir+json" || back.Identity.Subject != "u1" {
		t.Fatalf("input does not round-trip: %v %+v", err, back)
	}
	if req.Headers["authorization"] == "" {
		t.Fatal("PolicyInput modified the caller's request")
	}
}

func TestFilteringEvent(t *testing.T) {
	ev := Builder{Server: "p"}.Filtering(FilterEvent{RequestID: "r1", DecisionID: "d1",
		Removed: []string{"Patient.telecom", "Patient.identifier"}, Withheld: 2}, time.Now())
	if ev.DecisionID() != "d1" || ev.RequestID() != "r1" || ev.Outcome != "0" || ev.ID != "d1-f" {
		t.Fatalf("event = %+v", ev)
	}
	var removed []string
	for _, e := range ev.Entity {
		for _, d := range e.Detail {
			if d.Type == "removed" {
				removed = append(removed, d.ValueString)
			}
		}
	}
	if !slices.Equal(removed, []string{"Patient.telecom", "Patient.identifier"}) {
		t.Fatalf("removed = %v", removed)
	}
	if ev := (Builder{}).Filtering(FilterEvent{DecisionID: "d2", Forbidden: true}, time.Now()); ev.Outcome != "4" {
		t.Fatalf("forbidden outcome = %s, want 4", ev.Outcome)
	}
}

// TestFilteringEventNamesUserAndPatients: a filtering event that carries
// its user and patients has them as the requestor agent and patient
// entities, where queries by user and patient look.
func TestFilteringEventNamesUserAndPatients(t *testing.T) {
	ev := Builder{Server: "p"}.Filtering(FilterEvent{DecisionID: "d1", Subject: "prac-001", Issuer: "https://i",
		FHIRUser: "Practitioner/prac-001", Patients: []string{"p1", "p2"}}, time.Now())
	sub, fu := ev.User()
	if sub != "prac-001" || fu != "Practitioner/prac-001" || !slices.Equal(ev.Patients(), []string{"p1", "p2"}) || ev.DecisionID() != "d1" {
		t.Fatalf("user %q %q patients %v decision %q", sub, fu, ev.Patients(), ev.DecisionID())
	}
	if ev := (Builder{}).Filtering(FilterEvent{DecisionID: "d2"}, time.Now()); len(ev.Patients()) != 0 || hasRequestor(ev) {
		t.Fatalf("an event without them names %v", ev.Agent)
	}
}

// TestNotificationEvent: a notification record is joined to its decision
// and a success only when delivered.
func TestNotificationEvent(t *testing.T) {
	ok := Builder{Server: "p"}.Notification(NotificationEvent{DecisionID: "d1", Obligation: "notify", Sink: "po", Outcome: "delivered", Attempts: 1}, time.Now())
	if ok.DecisionID() != "d1" || ok.Outcome != OutcomeSuccess || ok.ID != "d1-n-po" {
		t.Fatalf("event = %+v", ok)
	}
	bad := Builder{Server: "p"}.Notification(NotificationEvent{DecisionID: "d1", Obligation: "notify", Sink: "po", Outcome: "failed", Attempts: 5, Error: "http_503"}, time.Now())
	if bad.Outcome != OutcomeSerious || bad.OutcomeDesc != "notification failed: po (http_503)" {
		t.Fatalf("failed event outcome %s %q", bad.Outcome, bad.OutcomeDesc)
	}
}

// Every interaction the parser can name must reach the record as an R4
// restful-interaction code (or none, for a legacy route), and as one of the
// AuditEvent action codes; a new Interaction that this mapping misses fails here.
func TestInteractionCodes(t *testing.T) {
	r4 := []string{"read", "vread", "update", "patch", "delete", "history", "history-instance",
		"history-type", "history-system", "create", "search", "search-type", "search-system",
		"capabilities", "transaction", "batch", "operation"}
	for _, i := range authz.Interactions() {
		code := restCode(i)
		switch {
		case i == authz.InteractionNonFHIR:
			if code != "" {
				t.Errorf("restCode(%q) = %q, want none", i, code)
			}
		case !slices.Contains(r4, code):
			t.Errorf("restCode(%q) = %q, not an R4 restful-interaction code", i, code)
		}
		if a := actionOf(i); !slices.Contains([]string{"C", "R", "U", "D", "E"}, a) {
			t.Errorf("actionOf(%q) = %q", i, a)
		}
	}
}

// TestLegacyRouteEvent: a read through a legacy route (an HL7 v2 feed) is
// recorded as a read of that route's kind, not as an execution of nothing,
// and audit query's table says so.
func TestLegacyRouteEvent(t *testing.T) {
	for _, tc := range []struct{ method, action string }{{"GET", "R"}, {"POST", "C"}, {"DELETE", "D"}} {
		req := testRequest(1, "billing-1", "pat-0003")
		req.Method, req.Path = tc.method, "/legacy/hl7/pat-0003"
		req.FHIR = authz.FHIRRequest{Interaction: authz.InteractionNonFHIR, Kind: "hl7-adt", Patients: []string{"pat-0003"}}
		ev := Builder{Server: "s"}.Decision(req, testDecision(1, true), req.Time, false)
		if ev.Action != tc.action {
			t.Errorf("%s: action %q, want %q", tc.method, ev.Action, tc.action)
		}
		if got := what(ev); got != "legacy:hl7-adt" {
			t.Errorf("%s: query shows %q, want legacy:hl7-adt", tc.method, got)
		}
	}
}
