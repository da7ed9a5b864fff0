package envoy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeAuthorizer records the input and answers with a fixed decision.
type fakeAuthorizer struct {
	got *authz.CheckInput
	d   authz.Decision
	err error
}

func (f *fakeAuthorizer) Authorize(_ context.Context, in *authz.CheckInput) (*authz.Request, authz.Decision, error) {
	f.got = in
	return &authz.Request{ID: in.ID}, f.d, f.err
}

func TestCheckInputMapping(t *testing.T) {
	f := &fakeAuthorizer{d: authz.Decision{Allow: true, Status: 200, ID: "d1"}}
	s, err := NewAuthServer(f, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address:   &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.1.2.3", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 5555}}}},
			Principal: "spiffe://cluster.local/ns/billing/sa/batch",
		},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "req-1", Method: "POST", Path: "/fhir?x=1", Headers: map[string]string{"content-type": "application/fhir+json"},
			RawBody: []byte(`{"resourceType":"Bundle"}`),
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	in := f.got
	checks := []struct{ name, got, want string }{
		{"id", in.ID, "req-1"},
		{"method", in.Method, "POST"},
		{"path", in.Path, "/fhir?x=1"},
		{"header", in.Headers["content-type"], "application/fhir+json"},
		{"body", string(in.Body), `{"resourceType":"Bundle"}`},
		{"source address", in.Source.Address, "10.1.2.3:5555"},
		{"principal", in.Source.Principal, "spiffe://cluster.local/ns/billing/sa/batch"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if in.Received.IsZero() {
		t.Error("received time not set")
	}
}

// TestForwardAuthorization: the client's Authorization reaches the
// upstream only when configured to; the break-glass reason never does.
func TestForwardAuthorization(t *testing.T) {
	d := authz.Decision{Allow: true, Status: 200, ID: "d1", RemoveHeaders: []string{"x-break-glass"}}
	for _, tc := range []struct {
		opts []Option
		want string
	}{
		{nil, "x-break-glass,authorization"},
		{[]Option{WithForwardAuthorization(false)}, "x-break-glass,authorization"},
		{[]Option{WithForwardAuthorization(true)}, "x-break-glass"},
	} {
		s, err := NewAuthServer(&fakeAuthorizer{d: d}, nil, nil, tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := s.Check(t.Context(), &authv3.CheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(resp.GetOkResponse().GetHeadersToRemove(), ","); got != tc.want {
			t.Errorf("%d options: headers to remove %q, want %q", len(tc.opts), got, tc.want)
		}
	}
}

func TestCheckResponseMapping(t *testing.T) {
	redact, err := plan.Compile([]plan.Directive{{Path: "Patient.telecom", Action: plan.ActionRemove}}, nil, plan.Keys{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		d          authz.Decision
		err        error
		wantCode   codes.Code
		wantStatus int
		wantPlan   bool
	}{
		{"allow with an empty plan, marked all the same", authz.Decision{Allow: true, Status: 200, ID: "d1",
			Headers: map[string]string{"x-phigate-user": "u1"}, RemoveHeaders: []string{"x-phigate-roles"},
			ResponseHeaders: map[string]string{"cache-control": "no-store"}}, nil, codes.OK, 0, true},
		{"allow with redaction plan", authz.Decision{Allow: true, Status: 200, ID: "d2", Plan: redact}, nil, codes.OK, 0, true},
		{"allow with enforcement only", authz.Decision{Allow: true, Status: 200, ID: "d3", Plan: plan.Plan{Enforce: &plan.Enforcement{Patients: []string{"p1"}}}}, nil, codes.OK, 0, true},
		{"unauthenticated", authz.Decision{Status: 401, ID: "d4", Reason: "identity.expired_token"}, nil, codes.Unauthenticated, 401, false},
		{"forbidden", authz.Decision{Status: 403, ID: "d5", Reason: "relationship.not_on_care_team"}, nil, codes.PermissionDenied, 403, false},
		{"ambiguous", authz.Decision{Status: 400, ID: "d6", Reason: "ambiguous_request"}, errors.New("detail with pat-0001"), codes.PermissionDenied, 400, false},
		{"policy failure", authz.Decision{Status: 503, ID: "d7", Reason: "policy_error"}, errors.New("boom"), codes.PermissionDenied, 503, false},
		{"deny with a non-error status is still a denial", authz.Decision{Status: 200, ID: "d8"}, nil, codes.PermissionDenied, 403, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewAuthServer(&fakeAuthorizer{d: tc.d, err: tc.err}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := s.Check(t.Context(), &authv3.CheckRequest{})
			if err != nil {
				t.Fatalf("Check returned a gRPC error %v; every outcome must be a CheckResponse", err)
			}
			if got := codes.Code(resp.GetStatus().GetCode()); got != tc.wantCode {
				t.Fatalf("status code = %v, want %v", got, tc.wantCode)
			}
			if tc.wantCode != codes.OK {
				dr := resp.GetDeniedResponse()
				if int(dr.GetStatus().GetCode()) != tc.wantStatus {
					t.Errorf("http status = %d, want %d", dr.GetStatus().GetCode(), tc.wantStatus)
				}
				var oo map[string]any
				if err := json.Unmarshal([]byte(dr.GetBody()), &oo); err != nil || oo["resourceType"] != "OperationOutcome" {
					t.Errorf("body is not an OperationOutcome: %s", dr.GetBody())
				}
				for _, leak := range []string{tc.d.Reason, "pat-0001", "boom"} {
					if leak != "" && strings.Contains(dr.GetBody(), leak) {
						t.Errorf("denial body reveals %q: %s", leak, dr.GetBody())
					}
				}
				if !strings.Contains(dr.GetBody(), tc.d.ID) {
					t.Errorf("denial body lacks the reference %s", tc.d.ID)
				}
				return
			}
			ok := resp.GetOkResponse()
			hdr := map[string]string{}
			for _, h := range ok.GetHeaders() {
				hdr[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			if hdr[DecisionHeader] != tc.d.ID {
				t.Errorf("decision header = %q, want %q", hdr[DecisionHeader], tc.d.ID)
			}
			for k, v := range tc.d.Headers {
				if hdr[k] != v {
					t.Errorf("header %s = %q, want %q", k, hdr[k], v)
				}
			}
			// The policy's removals, then the break-glass reason and the
			// client's credentials, which never reach the upstream.
			wantRemove := append(append([]string{}, tc.d.RemoveHeaders...), "x-break-glass", "authorization")
			if strings.Join(ok.GetHeadersToRemove(), ",") != strings.Join(wantRemove, ",") {
				t.Errorf("headers to remove = %v, want %v", ok.GetHeadersToRemove(), wantRemove)
			}
			// The policy's response headers, and the decision id.
			got := map[string]string{}
			for _, h := range ok.GetResponseHeadersToAdd() {
				got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			want := map[string]string{DecisionHeader: tc.d.ID}
			for k, v := range tc.d.ResponseHeaders {
				want[k] = v
			}
			if !maps.Equal(got, want) {
				t.Errorf("response headers = %v, want %v", got, want)
			}
			md := resp.GetDynamicMetadata().GetFields()[MetadataKey]
			if (md != nil) != tc.wantPlan {
				t.Fatalf("plan in metadata = %v, want %v", md != nil, tc.wantPlan)
			}
			if md != nil {
				p, err := plan.DecodeMetadata([]byte(md.GetStringValue()), plan.Keys{})
				if err != nil {
					t.Fatal(err)
				}
				if p.DecisionID != tc.d.ID || len(p.Redact) != len(tc.d.Redact) || (p.Enforce == nil) != (tc.d.Enforce == nil) {
					t.Errorf("plan = %+v, want the decision's directives", p)
				}
			}
		})
	}
}

// TestRequestIDIsXRequestID: the request is known in the trail by its
// x-request-id, so records join with Envoy's access log, the upstream's
// and ext_proc's; Envoy's stream id stands in when the header is absent
// or too long to be a reasonable id.
func TestRequestIDIsXRequestID(t *testing.T) {
	for _, tc := range []struct {
		headers map[string]string
		want    string
	}{
		{map[string]string{"x-request-id": "3f1c-77"}, "3f1c-77"},
		{map[string]string{}, "10215338968434533503"},
		{map[string]string{"x-request-id": ""}, "10215338968434533503"},
		{map[string]string{"x-request-id": strings.Repeat("a", maxRequestIDLen+1)}, "10215338968434533503"},
	} {
		in := checkInput(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Id: "10215338968434533503", Method: "GET", Path: "/fhir/metadata", Headers: tc.headers}}}}, time.Now())
		if in.ID != tc.want {
			t.Errorf("headers %v: id %q, want %q", tc.headers, in.ID, tc.want)
		}
	}
}

// TestDenialChallengeAndReasonLabel: a 401 carries the RFC 6750 Bearer
// challenge (with error="invalid_token" only when a token was refused),
// and phigate_decisions_total counts denials by reason code, with batch
// indexes dropped and anything not shaped like a code counted as other.
func TestDenialChallengeAndReasonLabel(t *testing.T) {
	reg := prometheus.NewRegistry()
	cases := []struct {
		d         authz.Decision
		challenge string
		label     string
	}{
		{authz.Decision{Status: 401, ID: "a", Reason: "identity.missing_token"}, `Bearer realm="phigate"`, "identity.missing_token"},
		{authz.Decision{Status: 401, ID: "b", Reason: "identity.expired"}, `Bearer realm="phigate", error="invalid_token"`, "identity.expired"},
		{authz.Decision{Status: 403, ID: "c", Reason: "entry[3].relationship.not_on_care_team"}, "", "relationship.not_on_care_team"},
		{authz.Decision{Status: 403, ID: "d", Reason: "Smith, John is not yours"}, "", "other"},
		{authz.Decision{Allow: true, Status: 200, ID: "e"}, "", ""},
	}
	var s *AuthServer
	for _, tc := range cases {
		var err error
		s, err = NewAuthServer(&fakeAuthorizer{d: tc.d}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.d.Allow {
			continue
		}
		resp, err := s.Check(t.Context(), &authv3.CheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got string
		for _, h := range resp.GetDeniedResponse().GetHeaders() {
			if h.GetHeader().GetKey() == "www-authenticate" {
				got = h.GetHeader().GetValue()
			}
		}
		if got != tc.challenge {
			t.Errorf("%s: www-authenticate %q, want %q", tc.d.Reason, got, tc.challenge)
		}
	}
	// One server counts every case.
	ctr := &fakeAuthorizer{}
	s, err := NewAuthServer(ctr, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		ctr.d = tc.d
		if _, err := s.Check(t.Context(), &authv3.CheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	var out strings.Builder
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "phigate_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					fmt.Fprintf(&out, "%s;", l.GetValue())
				}
			}
		}
	}
	for _, tc := range cases {
		if !strings.Contains(";"+out.String(), ";"+tc.label+";") {
			t.Errorf("reason label %q missing from %q", tc.label, out.String())
		}
	}
	if strings.Contains(out.String(), "Smith") {
		t.Errorf("a reason that is not a code reached a label: %q", out.String())
	}
	// The label set is bounded.
	for i := range maxReasonLabels + 10 {
		ctr.d = authz.Decision{Status: 403, ID: "x", Reason: fmt.Sprintf("ext.site.r%d", i)}
		if _, err := s.Check(t.Context(), &authv3.CheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.reasons.seen); n != maxReasonLabels {
		t.Errorf("%d reason labels kept, want the cap %d", n, maxReasonLabels)
	}
}
