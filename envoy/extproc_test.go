package envoy

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strconv"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phigate/phigate/filters"
)

type recorded struct{ events []FilterEvent }

func (r *recorded) RecordFiltering(_ context.Context, ev FilterEvent) error {
	r.events = append(r.events, ev)
	return nil
}

func startProc(t *testing.T) (extprocv3.ExternalProcessorClient, *recorded) {
	t.Helper()
	eng, err := filters.NewEngine(filters.Config{Keys: map[string][]byte{"k1": []byte("0123456789abcdef0123456789abcdef")}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorded{}
	ps, err := NewProcServer(eng, rec, nil, nil)
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

func metadata(plan string) *corev3.Metadata {
	if plan == "" {
		return nil
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		AuthzNamespace: {Fields: map[string]*structpb.Value{MetadataKey: structpb.NewStringValue(plan)}},
	}}
}

func headers(kv ...string) *extprocv3.HttpHeaders {
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.HttpHeaders{Headers: hm}
}

func TestProcess(t *testing.T) {
	client, rec := startProc(t)
	removeTelecom, _ := json.Marshal(Plan{Plan: filters.Plan{DecisionID: "d1", Redact: []filters.Directive{{Path: "Patient.telecom", Action: filters.ActionRemove}}}})
	otherPatient, _ := json.Marshal(Plan{Plan: filters.Plan{DecisionID: "d2", Enforce: &filters.Enforcement{Patients: []string{"pat-0001"}}}})
	patient := `{"resourceType":"Patient","id":"pat-0002","telecom":[{"system":"phone","value":"555-0100"}],"gender":"female"}`
	cases := []struct {
		name       string
		plan       string
		hdrs       *extprocv3.HttpHeaders
		body       string
		wantNone   bool // mode override: body not buffered
		wantStatus int  // immediate response status; 0 means continue
		wantBody   string
	}{
		{"no plan: one header round trip", "", headers("content-type", "application/fhir+json"), "", true, 0, ""},
		{"redaction", string(removeTelecom), headers("content-type", "application/fhir+json; charset=utf-8"), patient, false, 0, "telecom"},
		{"another patient's resource", string(otherPatient), headers("content-type", "application/fhir+json"), patient, false, 403, ""},
		{"compressed body refused", string(removeTelecom), headers("content-type", "application/fhir+json", "content-encoding", "gzip"), "", false, 502, ""},
		{"unfilterable media type refused", string(removeTelecom), headers("content-type", "text/html"), "", false, 502, ""},
		{"malformed JSON refused", string(removeTelecom), headers("content-type", "application/fhir+json"), `{"resourceType":"Patient","telecom":[`, false, 502, ""},
		{"unreadable plan refused", "{not json", headers("content-type", "application/fhir+json"), "", false, 502, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := client.Process(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer stream.CloseSend()
			if err := stream.Send(&extprocv3.ProcessingRequest{MetadataContext: metadata(tc.plan),
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
