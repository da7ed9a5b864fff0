package envoy

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phigate/phigate/filters"
	"github.com/phigate/phigate/plan"
)

type recorded struct{ events []FilterEvent }

func (r *recorded) RecordFiltering(_ context.Context, ev FilterEvent) error {
	r.events = append(r.events, ev)
	return nil
}

// procKey is the marker key the test processor verifies with.
var procKey = func() *MarkerKey {
	k, err := NewMarkerKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		panic(err)
	}
	return k
}()

func startProc(t *testing.T) (extprocv3.ExternalProcessorClient, *recorded) {
	t.Helper()
	eng, err := filters.NewEngine(filters.Config{Keys: map[string][]byte{"k1": []byte("0123456789abcdef0123456789abcdef")}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorded{}
	ps, err := NewProcServer(eng, rec, nil, nil, WithMarkerKey(procKey))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(g, ps)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn), rec
}

// marked is what ext_authz leaves for request rid: the plan and its marker.
func marked(k *MarkerKey, rid, plan string) *corev3.Metadata {
	return withMarker(plan, k.Sign(rid, []byte(plan)))
}

func withMarker(plan, marker string) *corev3.Metadata {
	f := map[string]*structpb.Value{}
	if plan != "" {
		f[MetadataKey] = structpb.NewStringValue(plan)
	}
	if marker != "" {
		f[MarkerMetadataKey] = structpb.NewStringValue(marker)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{AuthzNamespace: {Fields: f}}}
}

// attrs is what Envoy sends with the response headers: the request's id.
func attrs(rid string) map[string]*structpb.Struct {
	return map[string]*structpb.Struct{procAttributesNamespace: {Fields: map[string]*structpb.Value{
		RequestIDAttribute: structpb.NewStringValue(rid)}}}
}

func headers(kv ...string) *extprocv3.HttpHeaders {
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.HttpHeaders{Headers: hm}
}

// planJSON is what ext_authz writes for request r1: the plan compiled on a
// decision side that holds k1, as startProc's engine does, and k9, which
// the engine does not, and encoded.
func planJSON(t *testing.T, decisionID string, redact []plan.Directive, enforce *plan.Enforcement) string {
	t.Helper()
	p, err := plan.Compile(redact, enforce, plan.NewKeys("k1", "k9"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := (&plan.Metadata{Plan: p, DecisionID: decisionID, RequestID: "r1"}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestProcess(t *testing.T) {
	client, rec := startProc(t)
	removeTelecom := planJSON(t, "d1", []plan.Directive{{Path: "Patient.telecom", Action: plan.ActionRemove}}, nil)
	otherPatient := planJSON(t, "d2", nil, &plan.Enforcement{Patients: []string{"pat-0001"}})
	empty := planJSON(t, "d3", nil, nil)
	// Signed, but what the filter side cannot apply or read: a key it does
	// not hold, a plan without a version, a later version.
	keyNotHeld := planJSON(t, "d4", []plan.Directive{{Path: "Patient.identifier.value", Action: plan.ActionTokenize, KeyID: "k9"}}, nil)
	unversioned := strings.Replace(empty, `"v":2,`, ``, 1)
	laterVersion := strings.Replace(empty, `"v":2,`, `"v":3,`, 1)
	if unversioned == empty || laterVersion == empty {
		t.Fatalf("plan encoding lacks its version: %s", empty)
	}
	otherKey, err := NewMarkerKey([]byte("another key, as long as the first"))
	if err != nil {
		t.Fatal(err)
	}
	patient := `{"resourceType":"Patient","id":"pat-0002","telecom":[{"system":"phone","value":"555-0100"}],"gender":"female"}`
	fhir := headers("content-type", "application/fhir+json")
	cases := []struct {
		name       string
		md         *corev3.Metadata
		hdrs       *extprocv3.HttpHeaders
		body       string
		wantNone   bool   // mode override: body not buffered
		wantStatus int    // immediate response status; 0 means continue
		wantBody   string // must not survive
		wantReason string // the refusal recorded for the audit trail
	}{
		{"empty plan: one header round trip", marked(procKey, "r1", empty), fhir, "", true, 0, "", ""},
		{"redaction", marked(procKey, "r1", removeTelecom), headers("content-type", "application/fhir+json; charset=utf-8"), patient, false, 0, "telecom", ""},
		{"another patient's resource", marked(procKey, "r1", otherPatient), fhir, patient, false, 403, "", RefusedOutsideGrant},
		{"compressed body refused", marked(procKey, "r1", removeTelecom), headers("content-type", "application/fhir+json", "content-encoding", "gzip"), "", false, 502, "", RefusedContentEncoding},
		{"unfilterable media type refused", marked(procKey, "r1", removeTelecom), headers("content-type", "text/html"), "", false, 502, "", string(filters.CodeUnsupportedMedia)},
		{"malformed JSON refused", marked(procKey, "r1", removeTelecom), fhir, `{"resourceType":"Patient","telecom":[`, false, 502, "", string(filters.CodeMalformed)},
		{"duplicate key refused as unreadable, not as another patient", marked(procKey, "r1", otherPatient), fhir, `{"resourceType":"Patient","id":"pat-0001","id":"pat-0002"}`, false, 502, "", string(filters.CodeMalformed)},
		{"signed plan that does not parse refused", marked(procKey, "r1", "{not json"), fhir, "", false, 502, "", RefusedMarkerInvalid},
		{"no metadata at all refused", nil, fhir, "", false, 502, "", RefusedMarkerMissing},
		{"plan without a marker refused", withMarker(empty, ""), fhir, "", false, 502, "", RefusedMarkerInvalid},
		{"marker without a plan refused", withMarker("", procKey.Sign("r1", []byte(empty))), fhir, "", false, 502, "", RefusedMarkerInvalid},
		{"marker of another request refused", marked(procKey, "r2", empty), fhir, "", false, 502, "", RefusedMarkerInvalid},
		{"marker of another key refused", marked(otherKey, "r1", empty), fhir, "", false, 502, "", RefusedMarkerInvalid},
		{"plan altered after signing refused", withMarker(empty, procKey.Sign("r1", []byte(removeTelecom))), fhir, "", false, 502, "", RefusedMarkerInvalid},
		{"signed plan naming a key not held refused", marked(procKey, "r1", keyNotHeld), fhir, patient, false, 502, "", string(filters.CodeBadDirective)},
		{"signed plan without a version refused", marked(procKey, "r1", unversioned), fhir, "", false, 502, "", RefusedMarkerInvalid},
		{"signed plan of a later version refused", marked(procKey, "r1", laterVersion), fhir, "", false, 502, "", RefusedMarkerInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(rec.events)
			defer func() {
				if t.Failed() || tc.wantReason == "" {
					return
				}
				if len(rec.events) == before {
					t.Fatalf("no audit event for the refusal")
				}
				ev := rec.events[len(rec.events)-1]
				if ev.Refused != tc.wantReason || ev.Status != tc.wantStatus {
					t.Errorf("audit event refused %q status %d, want %q %d", ev.Refused, ev.Status, tc.wantReason, tc.wantStatus)
				}
				if ev.Forbidden != (tc.wantStatus == 403) {
					t.Errorf("audit event forbidden %v for status %d", ev.Forbidden, tc.wantStatus)
				}
			}()
			stream, err := client.Process(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer stream.CloseSend()
			if err := stream.Send(&extprocv3.ProcessingRequest{MetadataContext: tc.md, Attributes: attrs("r1"),
				Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: tc.hdrs}}); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantNone {
				if resp.GetModeOverride().GetResponseBodyMode() != filterv3.ProcessingMode_NONE || resp.GetResponseHeaders() == nil {
					t.Fatalf("got %v, want headers response with body mode NONE", resp)
				}
				return
			}
			if imm := resp.GetImmediateResponse(); imm != nil {
				if int(imm.GetStatus().GetCode()) != tc.wantStatus {
					t.Fatalf("immediate status %d, want %d", imm.GetStatus().GetCode(), tc.wantStatus)
				}
				checkOutcome(t, imm)
				return
			}
			if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: []byte(tc.body), EndOfStream: true}}}); err != nil {
				t.Fatal(err)
			}
			resp, err = stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if imm := resp.GetImmediateResponse(); imm != nil || tc.wantStatus != 0 {
				if imm == nil || int(imm.GetStatus().GetCode()) != tc.wantStatus {
					t.Fatalf("got %v, want immediate %d", resp, tc.wantStatus)
				}
				checkOutcome(t, imm)
				return
			}
			cr := resp.GetResponseBody().GetResponse()
			body := cr.GetBodyMutation().GetBody()
			if len(body) == 0 || !json.Valid(body) {
				t.Fatalf("no valid body mutation: %v", resp)
			}
			if tc.wantBody != "" && bytes.Contains(body, []byte(tc.wantBody)) {
				t.Errorf("%q survived: %s", tc.wantBody, body)
			}
			var cl string
			for _, h := range cr.GetHeaderMutation().GetSetHeaders() {
				if h.GetHeader().GetKey() == "content-length" {
					cl = string(h.GetHeader().GetRawValue())
				}
			}
			if cl != strconv.Itoa(len(body)) {
				t.Errorf("content-length %q, body %d bytes", cl, len(body))
			}
		})
	}
	if len(rec.events) == 0 {
		t.Error("no filtering event was recorded for the audit trail")
	}
}

// checkOutcome holds a refusal to a minimal OperationOutcome that names no
// patient and no reason.
func checkOutcome(t *testing.T, imm *extprocv3.ImmediateResponse) {
	t.Helper()
	var oo struct {
		ResourceType string            `json:"resourceType"`
		Issue        []json.RawMessage `json:"issue"`
	}
	if err := json.Unmarshal(imm.GetBody(), &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) != 1 {
		t.Fatalf("refusal body is not a minimal OperationOutcome: %s", imm.GetBody())
	}
	for _, leak := range []string{"pat-000", "marker", "outside", "malformed"} {
		if bytes.Contains(imm.GetBody(), []byte(leak)) {
			t.Errorf("refusal body reveals %q: %s", leak, imm.GetBody())
		}
	}
}

func TestJudgeLocation(t *testing.T) {
	grant := map[string]bool{"pat-0001": true}
	cases := []struct {
		raw    string
		drop   bool
		target string
	}{
		{"/fhir/Patient/pat-0001/_history/2", false, ""},
		{"http://legacy/fhir/Patient/pat-0001", false, ""},
		{"/fhir/Patient/pat-0002", true, ""},
		{"http://legacy/fhir/Patient/pat-0002/_history/1", true, ""},
		{"/fhir/Patient%2Fpat-0002", true, ""},
		{"/fhir/Patient/pat-0002/Observation", true, ""},
		{"/fhir/Observation/obs-7/_history/1", false, "Observation/obs-7"},
		{"http://legacy/fhir/Observation/obs-7", false, "Observation/obs-7"},
		{"/fhir/Organization/org-1/_history/1", false, ""},
		{"/fhir/Observation?patient=pat-0001", false, ""},
		{"/fhir/Observation?patient=pat-0002", true, ""},
		{"/fhir/Observation?subject=Patient/pat-0002", true, ""},
		{"/fhir/Observation?subject=http://x/fhir/Patient/pat-0002", true, ""},
		{"/fhir/Observation?subject:Patient=pat-0001,pat-0002", true, ""},
		{"/fhir/Observation?subject:identifier=MRN0002", true, ""},
		{"/fhir/Observation?patient.name=Smith", true, ""},
		{"/fhir/Patient?_id=pat-0002", true, ""},
		{"/fhir/Observation?code=8867-4", false, ""},
		{"/fhir/Observation?subject=Group/g1", false, ""},
		{"http://[::1", true, ""},
	}
	for _, tc := range cases {
		drop, target := judgeLocation(tc.raw, grant)
		if drop != tc.drop || target != tc.target {
			t.Errorf("judgeLocation(%q) = %v %q, want %v %q", tc.raw, drop, target, tc.drop, tc.target)
		}
	}
}

// TestProcessLocationHeaders: a Location or Content-Location that names a
// patient outside the grant is dropped, and one naming patient data other
// than a Patient stays only when the body is that resource.
func TestProcessLocationHeaders(t *testing.T) {
	client, rec := startProc(t)
	grant := planJSON(t, "d1", nil, &plan.Enforcement{Patients: []string{"pat-0001"}})
	anyPatient := planJSON(t, "d2", nil, &plan.Enforcement{AnyPatient: true})
	obs := `{"resourceType":"Observation","id":"obs-7","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/pat-0001"}}`
	cases := []struct {
		name    string
		plan    string
		header  string
		value   string
		body    string // "" sends the headers with end of stream
		removed bool
	}{
		{"another patient, no body", grant, "location", "/fhir/Patient/pat-0002/_history/1", "", true},
		{"the granted patient, no body", grant, "location", "/fhir/Patient/pat-0001/_history/1", "", false},
		{"patient data no body vouches for", grant, "location", "/fhir/Observation/obs-7/_history/1", "", true},
		{"patient data the body vouches for", grant, "content-location", "/fhir/Observation/obs-7/_history/1", obs, false},
		{"patient data the body contradicts", grant, "content-location", "/fhir/Observation/obs-8", obs, true},
		{"another patient beside a granted body", grant, "content-location", "/fhir/Patient/pat-0002", obs, true},
		{"not patient data", grant, "location", "/fhir/Organization/org-1/_history/1", "", false},
		{"grant of any patient", anyPatient, "location", "/fhir/Patient/pat-0002/_history/1", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(rec.events)
			stream, err := client.Process(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer stream.CloseSend()
			h := headers("content-type", "application/fhir+json", tc.header, tc.value)
			h.EndOfStream = tc.body == ""
			if err := stream.Send(&extprocv3.ProcessingRequest{MetadataContext: marked(procKey, "r1", tc.plan), Attributes: attrs("r1"),
				Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: h}}); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			removed := resp.GetResponseHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders()
			if tc.body != "" {
				if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
					ResponseBody: &extprocv3.HttpBody{Body: []byte(tc.body), EndOfStream: true}}}); err != nil {
					t.Fatal(err)
				}
				if resp, err = stream.Recv(); err != nil {
					t.Fatal(err)
				}
				if resp.GetImmediateResponse() != nil {
					t.Fatalf("refused: %v", resp)
				}
				removed = append(removed, resp.GetResponseBody().GetResponse().GetHeaderMutation().GetRemoveHeaders()...)
			}
			if got := slices.Contains(removed, tc.header); got != tc.removed {
				t.Fatalf("%s removed = %v (%v), want %v", tc.header, got, removed, tc.removed)
			}
			if tc.removed {
				if len(rec.events) == before || !slices.Contains(rec.events[len(rec.events)-1].Removed, "header."+tc.header) {
					t.Errorf("the dropped header is not in the audit event: %+v", rec.events[before:])
				}
			}
		})
	}
}

// TestProcessEnvoyReplies: Envoy's own replies (a denial ext_authz asked
// for) carry no plan and pass; a response from the upstream never passes
// without one, whatever else the request says.
func TestProcessEnvoyReplies(t *testing.T) {
	client, _ := startProc(t)
	for _, tc := range []struct {
		details string
		pass    bool
	}{
		{"ext_authz_denied", true},
		{"via_upstream", false},
		{"", false},
	} {
		stream, err := client.Process(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		a := attrs("r1")
		if tc.details != "" {
			a[procAttributesNamespace].Fields[ResponseDetailsAttribute] = structpb.NewStringValue(tc.details)
		}
		if err := stream.Send(&extprocv3.ProcessingRequest{Attributes: a,
			Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: headers("content-type", "application/fhir+json")}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if passed := resp.GetResponseHeaders() != nil; passed != tc.pass {
			t.Errorf("code details %q: passed %v, want %v (%v)", tc.details, passed, tc.pass, resp)
		}
		_ = stream.CloseSend()
	}
}
