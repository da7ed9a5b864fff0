package envoy

import (
	"context"
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
)

// identityAuthorizer answers for a known user about two patients, with a
// plan that removes Patient.telecom.
type identityAuthorizer struct{ d authz.Decision }

func (a identityAuthorizer) Authorize(_ context.Context, in *authz.CheckInput) (*authz.Request, authz.Decision, error) {
	r := &authz.Request{ID: "r1", Headers: map[string]string{"x-request-id": "r1"}}
	r.Identity = authz.Identity{Authenticated: true, Subject: "prac-001", Issuer: "https://issuer", FHIRUser: "Practitioner/prac-001"}
	r.FHIR.Patients = []string{"pat-0002"}
	return r, a.d, nil
}

// TestPlanMetadataVersions: ext_authz writes the version it is configured
// for, version 2 with the user and the patients (the request's and the
// policy's, sorted), version 1 without; ext_proc reads both, and the
// filtering event carries what the version carried.
func TestPlanMetadataVersions(t *testing.T) {
	p, err := plan.Compile([]plan.Directive{{Path: "Patient.telecom", Action: plan.ActionRemove}}, nil, plan.NewKeys())
	if err != nil {
		t.Fatal(err)
	}
	d := authz.Decision{Allow: true, Status: 200, ID: "d1", Plan: p, Audit: authz.AuditInfo{Patients: []string{"pat-0001", "pat-0002"}}}
	client, rec := startProc(t)
	patient := `{"resourceType":"Patient","id":"pat-0002","telecom":[{"system":"phone","value":"555-0100"}]}`
	for _, tc := range []struct {
		name     string
		opts     []Option
		prefix   string
		user     plan.User
		patients []string
	}{
		{"default", nil, `{"v":2,`, plan.User{Subject: "prac-001", Issuer: "https://issuer", FHIRUser: "Practitioner/prac-001"}, []string{"pat-0001", "pat-0002"}},
		{"version 2", []Option{WithPlanMetadataVersion(2)}, `{"v":2,`, plan.User{Subject: "prac-001", Issuer: "https://issuer", FHIRUser: "Practitioner/prac-001"}, []string{"pat-0001", "pat-0002"}},
		{"version 1", []Option{WithPlanMetadataVersion(1)}, `{"v":1,`, plan.User{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewAuthServer(identityAuthorizer{d}, nil, nil, append(tc.opts, WithMarkerKey(procKey))...)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := s.Check(t.Context(), &authv3.CheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			raw := resp.GetDynamicMetadata().GetFields()[MetadataKey].GetStringValue()
			if !strings.HasPrefix(raw, tc.prefix) {
				t.Fatalf("metadata %s, want it to start %s", raw, tc.prefix)
			}
			md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{AuthzNamespace: resp.GetDynamicMetadata()}}
			stream, err := client.Process(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer stream.CloseSend()
			before := len(rec.events)
			for _, req := range []*extprocv3.ProcessingRequest{
				{MetadataContext: md, Attributes: attrs("r1"), Request: &extprocv3.ProcessingRequest_ResponseHeaders{
					ResponseHeaders: headers("content-type", "application/fhir+json")}},
				{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(patient), EndOfStream: true}}},
			} {
				if err := stream.Send(req); err != nil {
					t.Fatal(err)
				}
				resp, err := stream.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if imm := resp.GetImmediateResponse(); imm != nil {
					t.Fatalf("refused: %v", imm)
				}
			}
			if len(rec.events) != before+1 {
				t.Fatalf("%d filtering events, want 1", len(rec.events)-before)
			}
			ev := rec.events[len(rec.events)-1]
			if ev.DecisionID != "d1" || ev.User != tc.user || !reflect.DeepEqual(ev.Patients, tc.patients) {
				t.Errorf("event %+v; want user %+v patients %v", ev, tc.user, tc.patients)
			}
		})
	}
	// An empty plan has no filtering record: it travels without them.
	s, err := NewAuthServer(identityAuthorizer{authz.Decision{Allow: true, Status: 200, ID: "d2"}}, nil, nil, WithMarkerKey(procKey))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Check(t.Context(), &authv3.CheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if raw := resp.GetDynamicMetadata().GetFields()[MetadataKey].GetStringValue(); raw != `{"v":2,"decision_id":"d2","request_id":"r1"}` {
		t.Errorf("empty plan metadata %s", raw)
	}
	for _, v := range []int{-1, 3} {
		if _, err := NewAuthServer(identityAuthorizer{}, nil, nil, WithPlanMetadataVersion(v)); err == nil {
			t.Errorf("version %d accepted", v)
		}
	}
}
