package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/phigate/phigate/internal/credential"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
)

// jsonPolicyInput is the policy input as it was encoded before encode.go:
// a filtered copy of req through json.Marshal.
func jsonPolicyInput(t testing.TB, req *authz.Request) json.RawMessage {
	t.Helper()
	cp := *req
	if req.Headers != nil {
		cp.Headers = make(map[string]string, len(req.Headers))
		for k, v := range req.Headers {
			lk := strings.ToLower(k)
			if credential.Header(lk, v) {
				continue
			}
			cp.Headers[lk] = v
		}
	}
	b, err := json.Marshal(&cp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jsonDecisionRecord is the stored record as json.Marshal writes it.
func jsonDecisionRecord(t testing.TB, ev *AuditEvent, req *authz.Request, d *authz.Decision) []byte {
	t.Helper()
	b, err := json.Marshal(&storedRecord{V: 1, Kind: KindDecision, Event: ev, Input: jsonPolicyInput(t, req), DecisionID: d.ID, Decision: d})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameBytes fails with the first difference between got and want.
func sameBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(0, i-60)
	t.Fatalf("%s differs from encoding/json at byte %d:\n got  …%s\n want …%s", what, i,
		got[from:min(len(got), i+60)], want[from:min(len(want), i+60)])
}

// checkDecisionEncoding compares the hand-written encoding of one decision
// record, and of its event alone (what sinks receive), with encoding/json.
func checkDecisionEncoding(t testing.TB, req *authz.Request, d *authz.Decision, stopped bool) {
	t.Helper()
	ev := Builder{Server: "phigate<&>", Site: "site \u2028"}.Decision(req, d, time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC), stopped)
	sameBytes(t, "decision record", encodeDecision([]byte("prefix"), ev, req, d)[len("prefix"):], jsonDecisionRecord(t, ev, req, d))
	wantEv, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "event", appendEvent(nil, ev), wantEv)
	in, err := PolicyInput(req)
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "policy input", in, jsonPolicyInput(t, req))
}

// awkward holds strings encoding/json escapes in every way it can: HTML
// characters, quotes, backslashes, control bytes, DEL, invalid UTF-8, the
// JavaScript line separators and multi-byte runes.
const awkward = "<script>alert('x')</script> & \"q\" \\ \x00\x01\b\f\n\r\t\x1f\x7f \xff\xfe \xe2\x80 \u2028\u2029 é 患者 🩺"

func TestRecordEncodingMatchesEncodingJSON(t *testing.T) {
	empty := &authz.Request{}
	emptyNonNil := &authz.Request{Query: map[string][]string{}, Headers: map[string]string{},
		Identity:   authz.Identity{Roles: []string{}, Scopes: []authz.Scope{}, AMR: []string{}},
		FHIR:       authz.FHIRRequest{Patients: []string{}, Include: []string{}, Entries: []authz.FHIRRequest{}},
		BreakGlass: authz.BreakGlassRequest{Grants: []authz.Grant{}}}
	emptyDecision := &authz.Decision{Headers: map[string]string{}, RemoveHeaders: []string{}, ResponseHeaders: map[string]string{},
		Plan: plan.Plan{Redact: []plan.Rule{}, Enforce: &plan.Enforcement{}}, Obligations: []authz.Obligation{{Params: map[string]string{}}},
		Audit: authz.AuditInfo{Patients: []string{}, Rules: []string{}}}

	headers := testRequest(7, "u7", "p7")
	headers.Headers = map[string]string{
		"Authorization": "Bearer a", "COOKIE": "s=1", "x-api-key": "k", "proxy-authorization": "Basic x",
		"x-forwarded-token": "  BeArEr leaked", "x-bearer-note": "bearer", "x-almost": "Bearerx",
		"Accept": "application/fhir+json", "x-" + awkward: awkward, "content-type": "",
	}

	search := testRequest(8, "u8", "p8")
	search.FHIR = authz.FHIRRequest{Interaction: "search-compartment", ResourceType: "Observation",
		Compartment: &authz.Compartment{Type: "Patient", ID: "p8"}, Patients: []string{"p8"}, Include: []string{"Observation:subject"}}
	search.Query = map[string][]string{"code": {"8867-4", "a&b<c>"}, "empty": {}, "nil": nil, awkward: {awkward}}

	batch := testRequest(9, "u9", "p1")
	batch.Method, batch.Path = "POST", "/fhir"
	batch.FHIR = authz.FHIRRequest{Interaction: "batch", Patients: []string{"p1", "p2"}, Entries: []authz.FHIRRequest{
		{Interaction: "read", ResourceType: "Patient", ID: "p1", Patients: []string{"p1"}, Method: "GET"},
		{Interaction: "transaction", Patients: nil, Entries: []authz.FHIRRequest{{Interaction: "create", ResourceType: "Observation", Method: "POST"}}},
		{Interaction: "vread", ResourceType: "Patient", ID: "p2", Version: "3", Patients: []string{"p2"}, Method: "GET"},
	}}

	breakGlass := testRequest(10, "u10", "p3")
	breakGlass.BreakGlass = authz.BreakGlassRequest{Requested: true, Reason: "unconscious <patient> & family",
		Grants: []authz.Grant{{Patient: "p3", Reason: "er", ExpiresNS: 1772370000000000000}, {Patient: "p4", ExpiresNS: -1}}}
	breakGlass.Identity.IssuedAt, breakGlass.Identity.Expires, breakGlass.Identity.MFA = 1772366400, 1772370000, true
	breakGlass.Identity.AMR, breakGlass.Identity.ACR, breakGlass.Identity.Patient = []string{"pwd", "otp"}, "urn:acr:2", "p3"
	bgDecision := testDecision(10, true)
	bgDecision.BreakGlass = authz.BreakGlass{Active: true, Reason: "emergency: " + awkward, Expires: "2026-03-01T13:00:00Z"}
	bgDecision.Obligations = []authz.Obligation{{Type: "notify-privacy-office", Params: map[string]string{"patient": "p3", "z": "", "a": awkward}}, {Type: "log"}}
	bgDecision.Audit = authz.AuditInfo{Patients: []string{"p3", "p5"}, Purpose: "ETREAT", Rules: []string{"data.phigate.bg.allow", awkward}}

	redact := testDecision(11, true)
	redact.Headers = map[string]string{"x-phigate-decision": "dec-11", "b": "<b>", "a": "&a"}
	redact.RemoveHeaders = []string{"x-internal"}
	redact.ResponseHeaders = map[string]string{"cache-control": "no-store"}
	redact.Redact = asRules(
		plan.Directive{Path: "Patient.telecom", Action: plan.ActionRemove},
		plan.Directive{Path: "Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn').value", Action: plan.ActionTokenize, KeyID: "k1", Format: "ff1"},
		plan.Directive{Path: "*.text", Action: plan.ActionMask},
		plan.Directive{Path: "Patient", Action: plan.ActionAllow, Keep: []string{"id", "name", "birthDate"}},
		plan.Directive{Action: plan.ActionDeidentify, Profile: "safe-harbor"},
		plan.Directive{Action: ""},
	)
	redact.Enforce = &plan.Enforcement{Patients: []string{"p1"}, AnyPatient: true, PermittedLabels: []string{"PSY", "ETH"}}

	anon := testRequest(12, "", "p1")
	anon.Identity = authz.Identity{Error: "expired <token>"}
	anon.Source = authz.Peer{Address: "[2001:db8::1]:443", Principal: "spiffe://example.org/ns/a/sa/b"}
	failed := testDecision(12, false)
	failed.Status, failed.Reason = 503, "policy_error"

	mtls := testRequest(13, "", "p1")
	mtls.Identity = authz.Identity{Authenticated: true, Service: true, Subject: "svc", Purpose: "HOPERAT"}
	mtls.Source = authz.Peer{Principal: "spiffe://example.org/ns/a/sa/b"}
	mtls.Purpose = ""

	unicode := testRequest(14, "ü\u2029", "患者")
	unicode.ID, unicode.Path = awkward, "/fhir/Patient/"+awkward
	unicodeDecision := testDecision(14, false)
	unicodeDecision.ID, unicodeDecision.Reason = awkward, awkward

	samePurpose := testDecision(16, true)
	samePurpose.Audit = authz.AuditInfo{Purpose: "TREAT", Patients: []string{"p1", "", "p0", "p1"}}

	cases := []struct {
		name    string
		req     *authz.Request
		d       *authz.Decision
		stopped bool
	}{
		{"plain read", testRequest(1, "u1", "p1"), testDecision(1, true), false},
		{"denied", testRequest(2, "u2", "p2"), testDecision(2, false), false},
		{"zero request and decision", empty, &authz.Decision{}, false},
		{"empty but not nil", emptyNonNil, emptyDecision, false},
		{"credential and odd headers", headers, testDecision(7, true), false},
		{"compartment search with odd query", search, testDecision(8, true), false},
		{"batch entries", batch, testDecision(9, true), false},
		{"break-glass", breakGlass, bgDecision, false},
		{"override stopped", testRequest(15, "u10", "p3"), testDecision(15, true), true},
		{"redaction directives", testRequest(11, "u11", "p1"), redact, false},
		{"unauthenticated, our failure", anon, failed, false},
		{"workload over mTLS", mtls, testDecision(13, true), false},
		{"unicode and HTML in ids", unicode, unicodeDecision, false},
		{"same purpose and patient twice", testRequest(16, "u16", "p1"), samePurpose, false},
		{"every field set", filled[authz.Request](t), filled[authz.Decision](t), true},
	}
	for _, bd := range benchDecisions() {
		cases = append(cases, struct {
			name    string
			req     *authz.Request
			d       *authz.Decision
			stopped bool
		}{"bench " + bd.name, bd.req, bd.d, false})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkDecisionEncoding(t, tc.req, tc.d, tc.stopped)
		})
	}
}

func TestFilteringEncodingMatchesEncodingJSON(t *testing.T) {
	for _, fe := range []FilterEvent{
		{},
		{RequestID: "r1", DecisionID: "d1", Removed: []string{"Patient.telecom", awkward}, Withheld: 3},
		{DecisionID: awkward, Forbidden: true},
		{RequestID: "r2", DecisionID: "d2", Subject: awkward, Issuer: "https://i", FHIRUser: "Practitioner/1", Patients: []string{"p1", awkward}},
	} {
		ev := Builder{Server: "p", Site: "s"}.Filtering(fe, time.Date(2026, 3, 1, 12, 0, 0, 5, time.UTC))
		want, err := json.Marshal(&storedRecord{V: 1, Kind: KindFiltering, Event: ev, DecisionID: fe.DecisionID})
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "filtering record", encodeFiltering(nil, ev, fe.DecisionID), want)
	}
}

func TestNotificationEncodingMatchesEncodingJSON(t *testing.T) {
	for _, ne := range []NotificationEvent{
		{},
		{DecisionID: "d1", Obligation: "notify", Sink: "privacy-office", Outcome: "delivered", Attempts: 1},
		{DecisionID: awkward, Obligation: "notify", Sink: awkward, Outcome: "failed", Attempts: 5, Error: "http_503"},
	} {
		ev := Builder{Server: "p", Site: "s"}.Notification(ne, time.Date(2026, 3, 1, 12, 0, 0, 5, time.UTC))
		want, err := json.Marshal(&storedRecord{V: 1, Kind: KindNotification, Event: ev, DecisionID: ne.DecisionID})
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "notification record", encodeNotification(nil, ev, ne.DecisionID), want)
	}
}

// TestEventEncodingEveryField sets every field of an AuditEvent, so a field
// added to the event types must be added to the encoder too.
func TestEventEncodingEveryField(t *testing.T) {
	ev := filled[AuditEvent](t)
	want, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "event", appendEvent(nil, ev), want)
	want, err = json.Marshal(&AuditEvent{})
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "zero event", appendEvent(nil, &AuditEvent{}), want)
}

// filled returns a T with every exported field set to a non-zero value
// (strings that need escaping, two-element slices and maps, nested values
// two levels deep), so that a field the hand-written encoder does not know
// shows up as a difference from encoding/json.
func filled[T any](t *testing.T) *T {
	t.Helper()
	v := new(T)
	fillValue(t, reflect.ValueOf(v).Elem(), reflect.TypeFor[T]().Name(), 0)
	return v
}

func fillValue(t *testing.T, v reflect.Value, path string, depth int) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString(path + " <&> " + awkward)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(-int64(len(path)) * 1_000_000_007)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			// A field encoding/json leaves out (json:"-") is not in the
			// record either, whatever its kind.
			if f := v.Type().Field(i); f.IsExported() && f.Tag.Get("json") != "-" {
				fillValue(t, v.Field(i), path+"."+f.Name, depth)
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillValue(t, v.Elem(), path, depth)
	case reflect.Slice:
		if depth >= 2 { // recursive types (FHIRRequest.Entries) stop here
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fillValue(t, v.Index(i), fmt.Sprintf("%s[%d]", path, i), depth+1)
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			t.Fatalf("%s: map key %s; teach encode.go and this test", path, v.Type().Key())
		}
		v.Set(reflect.MakeMap(v.Type()))
		for _, k := range []string{"b-" + path, "a-" + path} {
			e := reflect.New(v.Type().Elem()).Elem()
			fillValue(t, e, path+"["+k+"]", depth+1)
			v.SetMapIndex(reflect.ValueOf(k), e)
		}
	default:
		t.Fatalf("%s has kind %s; teach encode.go and this test", path, v.Kind())
	}
}

// FuzzRecordEncoding puts arbitrary strings and numbers in the fields of a
// decision record; the hand-written encoding must equal encoding/json's.
func FuzzRecordEncoding(f *testing.F) {
	f.Add("u1", "p1", "x-custom", "value", "reason", int64(0), true)
	f.Add(awkward, awkward, awkward, awkward, awkward, int64(-1), false)
	f.Add("", "", "", "", "", int64(1)<<62, true)
	f.Add("\xff", "\u2028", "Authorization", " bearer x", "<&>", int64(7), false)
	f.Fuzz(func(t *testing.T, user, patient, hkey, hval, reason string, n int64, allow bool) {
		req := testRequest(1, user, patient)
		req.TimeNS = n
		if _, dup := req.Headers[strings.ToLower(hkey)]; !dup {
			req.Headers[hkey] = hval // names differing only in case pick a value at random in the old encoding
		}
		req.Query = map[string][]string{hkey: {hval, reason}}
		req.Identity.Roles = append(req.Identity.Roles, reason)
		req.FHIR.Entries = []authz.FHIRRequest{{Interaction: authz.Interaction(reason), ID: patient, Patients: []string{patient}}}
		req.BreakGlass.Grants = []authz.Grant{{Patient: patient, Reason: reason, ExpiresNS: n}}
		d := testDecision(int(n%1000), allow)
		d.Reason, d.ID = reason, hval
		d.Status = int(n % 1000)
		d.Audit.Patients = []string{patient, user}
		d.Audit.Purpose, req.Purpose = user, patient
		d.Redact = asRules(plan.Directive{Path: hkey, Action: plan.Action(hval)})
		d.Obligations = []authz.Obligation{{Type: reason, Params: map[string]string{hkey: hval}}}
		d.BreakGlass = authz.BreakGlass{Active: !allow, Reason: reason, Expires: hval}
		checkDecisionEncoding(t, req, d, allow)
	})
}
