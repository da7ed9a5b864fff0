package envoy

import (
	"strings"
	"testing"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/phigate/phigate/authz"
)

// FuzzCheckBoundary: whatever a CheckRequest holds, Check answers it; what
// reaches the decision path is UTF-8 without NUL bytes and within the
// limits; and a refusal's body and log are made of fixed words and
// numbers only, so no byte of the request can come back in them.
func FuzzCheckBoundary(f *testing.F) {
	f.Add("/fhir/Patient/a\x00b", "x-note", "v", []byte(nil), "application/fhir+json")
	f.Add("/fhir/Patient?name=%C0%AF", "x-note", "v", []byte(nil), "")
	f.Add("/fhir/Patient?name=%ED%A0%80", "x-"+"\xed\xa0\x80", "v", []byte(nil), "")
	f.Add("/fhir/Patient", "x-note", "pat-1\xff", []byte(nil), "")
	f.Add("/fhir/Patient", "x-note", "José", []byte(`{"resourceType":"Patient","name":[{"text":"a\x00"}]}`), "application/json")
	f.Add("/fhir/Binary", "x-note", "v", []byte{0, 0xff}, "application/octet-stream")
	f.Add("/fhir/Patient?name="+strings.Repeat("q", MaxCheckPath), "x-note", "v", []byte(nil), "")
	fixed := map[string]bool{boundaryPathTooLong: true, boundaryTooManyHeader: true, boundaryHeadersLarge: true,
		boundaryNUL: true, boundaryBadUTF8: true, boundaryTwoHeaderSets: true}
	fields := map[string]bool{"path": true, "path (decoded)": true, "method": true, "headers": true,
		"header name": true, "header value": true, "body": true, "source principal": true}
	f.Fuzz(func(t *testing.T, path, name, value string, body []byte, ct string) {
		core, logs := observer.New(zapcore.DebugLevel)
		fa := &fakeAuthorizer{d: authz.Decision{Allow: true, Status: 200, ID: "d1"}}
		s, err := NewAuthServer(fa, zap.New(core), nil)
		if err != nil {
			t.Fatal(err)
		}
		headers := map[string]string{name: value}
		if ct != "" {
			headers["content-type"] = ct
		}
		resp, err := s.Check(t.Context(), checkReq("POST", path, headers, body))
		if err != nil || resp == nil {
			t.Fatalf("Check: %v, %v", resp, err)
		}
		if in := fa.got; in != nil {
			for _, v := range []string{in.Path, name, value} {
				if !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
					t.Fatalf("%q reached the decision path", v)
				}
			}
			if textMedia(ct) && (!utf8.Valid(in.Body) || strings.IndexByte(string(in.Body), 0) >= 0) {
				t.Fatalf("text body %q reached the decision path", in.Body)
			}
			if len(in.Path) > MaxCheckPath {
				t.Fatal("a target over MaxCheckPath reached the decision path")
			}
			return
		}
		dr := resp.GetDeniedResponse()
		status := int(dr.GetStatus().GetCode())
		if want := string(operationOutcome(status, "req-7f3a")); dr.GetBody() != want {
			t.Fatalf("body %q, want the fixed outcome %q", dr.GetBody(), want)
		}
		entries := logs.All()
		if len(entries) != 1 {
			t.Fatalf("%d log entries", len(entries))
		}
		for k, v := range entries[0].ContextMap() {
			switch k {
			case "why":
				if !fixed[v.(string)] {
					t.Fatalf("why = %q", v)
				}
			case "field":
				if !fields[v.(string)] {
					t.Fatalf("field = %q", v)
				}
			case "header":
				if h, _ := v.(string); !plainToken(h) || headers[h] == "" && h != name {
					t.Fatalf("header %q logged", v)
				}
			case "request_id":
				if v != "req-7f3a" {
					t.Fatalf("request_id = %q", v)
				}
			case "status", "offset":
			default:
				t.Fatalf("unexpected log field %s", k)
			}
		}
	})
}
