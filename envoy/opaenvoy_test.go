package envoy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/phigate/phigate/authz"
)

// documentedRequest is the CheckRequest of OPA's documented v3 example
// input (OPA documentation, "Envoy › Policy Primer via Examples",
// "Example Input"): POST /people?lang=en with a JSON body.
func documentedRequest() *authv3.CheckRequest {
	addr := func(ip string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}
	}
	body := `{"firstname":"Charlie", "lastname":"Opa"}`
	at, _ := time.Parse(time.RFC3339Nano, "2020-11-20T09:47:47.722473Z")
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      addr("172.17.0.1", 61402),
		Destination: addr("172.17.0.6", 8000),
		Request: &authv3.AttributeContext_Request{Time: timestamppb.New(at), Http: &authv3.AttributeContext_HttpRequest{
			Id: "13519049518330544501", Method: "POST", Host: "192.168.99.206:30164", Path: "/people?lang=en",
			Protocol: "HTTP/1.1", Body: body, Size: int64(len(body)),
			Headers: map[string]string{
				":authority": "192.168.99.206:30164", ":method": "POST", ":path": "/people?lang=en",
				"accept": "*/*", "authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig",
				"content-length": "41", "content-type": "application/json", "user-agent": "curl/7.54.0",
				"x-forwarded-proto": "http", "x-request-id": "7bca5c86-bf55-432c-b212-8c0f1dc999ec",
			},
		}},
		MetadataContext: &corev3.Metadata{},
	}}
}

// documentedInput is the documented example input for that request. The
// one departure is size: the documentation writes 41, while the protobuf
// JSON mapping the plugin uses writes an int64 as a string.
const documentedInput = `{
  "attributes": {
    "source": {"address": {"socketAddress": {"address": "172.17.0.1", "portValue": 61402}}},
    "destination": {"address": {"socketAddress": {"address": "172.17.0.6", "portValue": 8000}}},
    "request": {
      "time": "2020-11-20T09:47:47.722473Z",
      "http": {
        "id": "13519049518330544501",
        "method": "POST",
        "headers": {
          ":authority": "192.168.99.206:30164", ":method": "POST", ":path": "/people?lang=en",
          "accept": "*/*", "authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig",
          "content-length": "41", "content-type": "application/json", "user-agent": "curl/7.54.0",
          "x-forwarded-proto": "http", "x-request-id": "7bca5c86-bf55-432c-b212-8c0f1dc999ec"
        },
        "host": "192.168.99.206:30164",
        "path": "/people?lang=en",
        "protocol": "HTTP/1.1",
        "body": "{\"firstname\":\"Charlie\", \"lastname\":\"Opa\"}",
        "size": "41"
      }
    },
    "metadataContext": {}
  },
  "parsed_body": {"firstname": "Charlie", "lastname": "Opa"},
  "parsed_path": ["people"],
  "parsed_query": {"lang": ["en"]},
  "truncated_body": false,
  "version": {"encoding": "protojson", "ext_authz": "v3"}
}`

func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return v
}

func opaEnvoyInput(t *testing.T, req *authv3.CheckRequest, skip bool) map[string]any {
	t.Helper()
	b, err := OPAEnvoyInput(req, skip)
	if err != nil {
		t.Fatal(err)
	}
	return decodeAny(t, b).(map[string]any)
}

// TestOPAEnvoyInputDocumented: the documented example request renders
// as the documented input; so does the same request as phigate's Envoy
// sends it (a raw header map, the body as bytes).
func TestOPAEnvoyInputDocumented(t *testing.T) {
	want := decodeAny(t, []byte(documentedInput))
	if got := opaEnvoyInput(t, documentedRequest(), false); !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", "  ")
		t.Fatalf("input:\n%s\nwant the documented:\n%s", g, documentedInput)
	}
	raw := documentedRequest()
	h := raw.Attributes.Request.Http
	for k, v := range h.Headers {
		h.HeaderMap = &corev3.HeaderMap{Headers: append(h.GetHeaderMap().GetHeaders(), &corev3.HeaderValue{Key: k, RawValue: []byte(v)})}
	}
	h.Headers, h.RawBody, h.Body = nil, []byte(h.Body), ""
	if got := opaEnvoyInput(t, raw, false); !reflect.DeepEqual(got, want) {
		t.Fatalf("raw headers and body: %v\nwant the documented input", got)
	}
}

func TestOPAEnvoyInputEdges(t *testing.T) {
	req := func(path, ctype, cl, body string) *authv3.CheckRequest {
		r := documentedRequest()
		h := r.Attributes.Request.Http
		h.Path, h.Body = path, body
		h.Headers["content-type"], h.Headers["content-length"] = ctype, cl
		return r
	}
	t.Run("truncated body", func(t *testing.T) {
		in := opaEnvoyInput(t, req("/people", "application/json", "100", `{"a":`), false)
		if in["parsed_body"] != nil || in["truncated_body"] != true {
			t.Errorf("parsed_body %v truncated_body %v, want null and true", in["parsed_body"], in["truncated_body"])
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		in := opaEnvoyInput(t, req("/", "application/fhir+json", "2", `{}`), false)
		if in["parsed_body"] != nil || in["truncated_body"] != false {
			t.Errorf("parsed_body %v truncated_body %v, want null and false", in["parsed_body"], in["truncated_body"])
		}
		if !reflect.DeepEqual(in["parsed_path"], []any{""}) || !reflect.DeepEqual(in["parsed_query"], map[string]any{}) {
			t.Errorf("parsed_path %v parsed_query %v, want [\"\"] and {}", in["parsed_path"], in["parsed_query"])
		}
	})
	t.Run("skip-request-body-parse", func(t *testing.T) {
		in := opaEnvoyInput(t, documentedRequest(), true)
		if _, ok := in["parsed_body"]; ok {
			t.Error("parsed_body present")
		}
		if _, ok := in["truncated_body"]; ok {
			t.Error("truncated_body present")
		}
	})
	t.Run("decoded path and repeated query", func(t *testing.T) {
		in := opaEnvoyInput(t, req("/fhir/Patient/a%20b?id=1&id=2", "", "0", ""), false)
		if !reflect.DeepEqual(in["parsed_path"], []any{"fhir", "Patient", "a b"}) ||
			!reflect.DeepEqual(in["parsed_query"], map[string]any{"id": []any{"1", "2"}}) {
			t.Errorf("parsed_path %v parsed_query %v", in["parsed_path"], in["parsed_query"])
		}
	})
	for name, r := range map[string]*authv3.CheckRequest{
		"JSON that does not decode":   req("/", "application/json", "3", `{"a`),
		"content-length not a number": req("/", "application/json", "many", `{}`),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := OPAEnvoyInput(r, false); authz.CodeOf(err) == "" {
				t.Fatalf("err %v, want a coded refusal", err)
			}
		})
	}
}

// TestOPAEnvoyAdapter: with WithOPAEnvoyInput the decision path gets the
// document, and the policy's dynamic metadata reaches Envoy beside
// phigate's, never in place of it.
func TestOPAEnvoyAdapter(t *testing.T) {
	f := &fakeAuthorizer{d: authz.Decision{Allow: true, Status: 200, ID: "d1", Metadata: map[string]any{"team": "a"}}}
	s, err := NewAuthServer(f, nil, nil, WithOPAEnvoyInput(false))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Check(t.Context(), documentedRequest())
	if err != nil {
		t.Fatal(err)
	}
	if f.got.Foreign == nil || f.got.ForeignErr != nil || !strings.Contains(string(f.got.Foreign), `"parsed_path":["people"]`) {
		t.Fatalf("foreign %s, %v", f.got.Foreign, f.got.ForeignErr)
	}
	md := resp.GetDynamicMetadata().GetFields()
	if md["team"].GetStringValue() != "a" || md[MetadataKey].GetStringValue() == "" || md[MarkerMetadataKey].GetStringValue() == "" {
		t.Fatalf("metadata %v: want the policy's key beside the plan and marker", md)
	}
	f.d.Metadata = map[string]any{MarkerMetadataKey: "forged"}
	resp, _ = s.Check(t.Context(), documentedRequest())
	if resp.GetDeniedResponse() == nil {
		t.Fatalf("a decision with phigate's metadata key was allowed: %v", resp)
	}
}
