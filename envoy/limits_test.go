package envoy

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"

	"github.com/phigate/phigate/authz"
)

// secret stands beside every bad byte in the cases below: neither it nor
// the bad bytes may reach the client's body or the log.
const secret = "pat-SECRET"

func checkReq(method, path string, headers map[string]string, body []byte) *authv3.CheckRequest {
	if headers == nil {
		headers = map[string]string{}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "req-7f3a", Method: method, Path: path, Headers: headers, RawBody: body,
		}},
	}}
}

// rawHeaders is a CheckRequest as Envoy sends it with encode_raw_headers.
func rawHeaders(hv ...*corev3.HeaderValue) *authv3.CheckRequest {
	r := checkReq("POST", "/fhir/Patient", nil, nil)
	r.Attributes.Request.Http.Headers = nil
	r.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: hv}
	return r
}

var jsonHeaders = map[string]string{"content-type": "application/fhir+json"}

func manyHeaders(n int) map[string]string {
	h := make(map[string]string, n)
	for i := range n {
		h[fmt.Sprintf("x-h%d", i)] = "v"
	}
	return h
}

// TestCheckRefusesBadBytes: NUL bytes and bytes that are not UTF-8, in any
// part of a CheckRequest phigate reads, are refused with 400 before the
// decision path runs, whatever sent the CheckRequest; the log names the
// field and the offset, and neither the log nor the body repeats the bytes.
func TestCheckRefusesBadBytes(t *testing.T) {
	body := func(s string) []byte { return []byte(`{"resourceType":"Patient","name":[{"text":"` + s + `"}]}`) }
	cases := []struct {
		name    string
		req     *authv3.CheckRequest
		field   string
		offset  int
		badSeqs []string // the bad bytes as sent, none of which may be echoed
	}{
		{"NUL in path", checkReq("GET", "/fhir/Patient/"+secret+"\x00x", nil, nil), "path", 24, []string{"\x00"}},
		{"NUL in query, percent-encoded", checkReq("GET", "/fhir/Patient?name="+secret+"%00", nil, nil), "path (decoded)", 29, []string{"%00", "\x00"}},
		{"invalid UTF-8 in path", checkReq("GET", "/fhir/Patient/"+secret+"\xff", nil, nil), "path", 24, []string{"\xff"}},
		{"overlong slash in query, percent-encoded", checkReq("GET", "/fhir/Patient?name="+secret+"%C0%AF", nil, nil), "path (decoded)", 29, []string{"%C0%AF", "\xc0\xaf"}},
		{"lone surrogate in query, percent-encoded", checkReq("GET", "/fhir/Patient?name="+secret+"%ED%A0%80", nil, nil), "path (decoded)", 29, []string{"%ED%A0%80", "\xed\xa0\x80"}},
		{"Latin-1 in query, percent-encoded", checkReq("GET", "/fhir/Patient?name="+secret+"%E9", nil, nil), "path (decoded)", 29, []string{"%E9", "\xe9"}},
		{"NUL in method", checkReq("GE\x00T", "/fhir/Patient", nil, nil), "method", 2, []string{"\x00"}},
		{"NUL in header value", checkReq("GET", "/fhir/Patient", map[string]string{"x-note": secret + "\x00"}, nil), "header value", 10, []string{"\x00"}},
		{"NUL in header name", checkReq("GET", "/fhir/Patient", map[string]string{"x-" + secret + "\x00": "v"}, nil), "header name", 12, []string{"\x00"}},
		{"invalid UTF-8 in header value", checkReq("GET", "/fhir/Patient", map[string]string{"x-note": secret + "\xfe\xff"}, nil), "header value", 10, []string{"\xfe\xff"}},
		{"invalid UTF-8 in header name", checkReq("GET", "/fhir/Patient", map[string]string{"x-" + secret + "\x80": "v"}, nil), "header name", 12, []string{"\x80"}},
		{"overlong NUL in header value", checkReq("GET", "/fhir/Patient", map[string]string{"x-note": secret + "\xc0\x80"}, nil), "header value", 10, []string{"\xc0\x80"}},
		{"overlong three-byte form in header value", checkReq("GET", "/fhir/Patient", map[string]string{"x-note": secret + "\xe0\x80\xaf"}, nil), "header value", 10, []string{"\xe0\x80\xaf"}},
		{"lone high surrogate in header value", checkReq("GET", "/fhir/Patient", map[string]string{"x-note": secret + "\xed\xa0\x80"}, nil), "header value", 10, []string{"\xed\xa0\x80"}},
		{"lone low surrogate in header name", checkReq("GET", "/fhir/Patient", map[string]string{"x-" + secret + "\xed\xbf\xbf": "v"}, nil), "header name", 12, []string{"\xed\xbf\xbf"}},
		{"beyond U+10FFFF in header value", checkReq("GET", "/fhir/Patient", map[string]string{"x-note": secret + "\xf4\x90\x80\x80"}, nil), "header value", 10, []string{"\xf4\x90\x80\x80"}},
		{"truncated sequence in header value", checkReq("GET", "/fhir/Patient", map[string]string{"x-note": secret + "\xe2\x82"}, nil), "header value", 10, []string{"\xe2\x82"}},
		{"NUL in JSON body", checkReq("POST", "/fhir/Patient", jsonHeaders, body(secret+"\x00")), "body", 53, []string{"\x00"}},
		{"invalid UTF-8 in JSON body", checkReq("POST", "/fhir/Patient", jsonHeaders, body(secret+"\xff")), "body", 53, []string{"\xff"}},
		{"overlong form in JSON body", checkReq("POST", "/fhir/Patient", jsonHeaders, body(secret+"\xc1\xbf")), "body", 53, []string{"\xc1\xbf"}},
		{"lone surrogate in JSON body", checkReq("POST", "/fhir/Patient", jsonHeaders, body(secret+"\xed\xb2\x80")), "body", 53, []string{"\xed\xb2\x80"}},
		{"NUL in form body", checkReq("POST", "/fhir/Patient/_search", map[string]string{"content-type": "application/x-www-form-urlencoded"},
			[]byte("name="+secret+"\x00")), "body", 15, []string{"\x00"}},
		{"NUL in a body without content-type", checkReq("POST", "/fhir/Patient", nil, body(secret+"\x00")), "body", 53, []string{"\x00"}},
		{"NUL in a body sent as text", func() *authv3.CheckRequest {
			r := checkReq("POST", "/fhir/Patient", jsonHeaders, nil)
			r.Attributes.Request.Http.Body = string(body(secret + "\x00"))
			return r
		}(), "body", 53, []string{"\x00"}},
		{"invalid UTF-8 in a raw header value", rawHeaders(&corev3.HeaderValue{Key: "x-note", RawValue: []byte(secret + "\xff")}), "header value", 10, []string{"\xff"}},
		{"NUL in a raw header value", rawHeaders(&corev3.HeaderValue{Key: "x-note", RawValue: []byte(secret + "\x00")}), "header value", 10, []string{"\x00"}},
		{"lone surrogate in a raw header name", rawHeaders(&corev3.HeaderValue{Key: "x-" + secret + "\xed\xa0\x80", RawValue: []byte("v")}), "header name", 12, []string{"\xed\xa0\x80"}},
		{"NUL in a body whose raw content-type is JSON", func() *authv3.CheckRequest {
			r := rawHeaders(&corev3.HeaderValue{Key: "content-type", RawValue: []byte("application/json")})
			r.Attributes.Request.Http.RawBody = body(secret + "\x00")
			return r
		}(), "body", 53, []string{"\x00"}},
		{"NUL in a body whose second raw content-type line makes it unreadable", func() *authv3.CheckRequest {
			r := rawHeaders(&corev3.HeaderValue{Key: "content-type", RawValue: []byte("application/octet-stream")},
				&corev3.HeaderValue{Key: "content-type", RawValue: []byte("application/json")})
			r.Attributes.Request.Http.RawBody = body(secret + "\x00")
			return r
		}(), "body", 53, []string{"\x00"}},
		{"invalid UTF-8 in the peer principal", func() *authv3.CheckRequest {
			r := checkReq("GET", "/fhir/Patient", nil, nil)
			r.Attributes.Source = &authv3.AttributeContext_Peer{Principal: "spiffe://" + secret + "\xff"}
			return r
		}(), "source principal", 19, []string{"\xff"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			f := &fakeAuthorizer{d: authz.Decision{Allow: true, Status: 200, ID: "d1"}}
			s, err := NewAuthServer(f, zap.New(core), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := s.Check(t.Context(), tc.req)
			if err != nil {
				t.Fatalf("Check returned a gRPC error %v", err)
			}
			if f.got != nil {
				t.Fatal("the decision path ran")
			}
			if got := codes.Code(resp.GetStatus().GetCode()); got != codes.PermissionDenied {
				t.Fatalf("code = %v, want PermissionDenied", got)
			}
			dr := resp.GetDeniedResponse()
			if got := dr.GetStatus().GetCode(); got != 400 {
				t.Fatalf("status = %d, want 400", got)
			}
			assertOutcome(t, dr, "req-7f3a", append(tc.badSeqs, secret))
			entries := logs.All()
			if len(entries) != 1 {
				t.Fatalf("%d log entries, want 1", len(entries))
			}
			fields := entries[0].ContextMap()
			if fields["field"] != tc.field || fields["offset"] != int64(tc.offset) {
				t.Errorf("logged field %v at %v, want %s at %d", fields["field"], fields["offset"], tc.field, tc.offset)
			}
			line := entries[0].Message + fmt.Sprint(fields)
			for _, leak := range append(tc.badSeqs, secret, "SECRET") {
				if strings.Contains(line, leak) {
					t.Errorf("log repeats %q: %q", leak, line)
				}
			}
		})
	}
}

// assertOutcome checks a denial's body: a minimal OperationOutcome of
// application/fhir+json that names the reference and none of leaks.
func assertOutcome(t *testing.T, dr *authv3.DeniedHttpResponse, reference string, leaks []string) {
	t.Helper()
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if err := json.Unmarshal([]byte(dr.GetBody()), &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) != 1 {
		t.Fatalf("body is not a minimal OperationOutcome: %q", dr.GetBody())
	}
	if reference != "" && !strings.Contains(oo.Issue[0].Diagnostics, reference) {
		t.Errorf("body lacks the reference %s: %q", reference, dr.GetBody())
	}
	for _, leak := range leaks {
		if strings.Contains(dr.GetBody(), leak) {
			t.Errorf("body repeats %q", leak)
		}
	}
	var ct string
	for _, h := range dr.GetHeaders() {
		if h.GetHeader().GetKey() == "content-type" {
			ct = h.GetHeader().GetValue()
		}
	}
	if ct != "application/fhir+json" {
		t.Errorf("content-type = %q", ct)
	}
}

// TestCheckBoundaryLimits: phigate's own limits on a CheckRequest's size
// hold for a direct gRPC client, at the limit and one past it.
func TestCheckBoundaryLimits(t *testing.T) {
	target := func(n int) string { return "/fhir/Patient?name=" + strings.Repeat("q", n-len("/fhir/Patient?name=")) }
	cases := []struct {
		name   string
		req    *authv3.CheckRequest
		status int // 0: reaches the decision path
	}{
		{"request target at MaxCheckPath", checkReq("GET", target(MaxCheckPath), nil, nil), 0},
		{"request target over MaxCheckPath", checkReq("GET", target(MaxCheckPath+1), nil, nil), 414},
		{"MaxCheckHeaders headers", checkReq("GET", "/fhir/Patient", manyHeaders(MaxCheckHeaders), nil), 0},
		{"one header over MaxCheckHeaders", checkReq("GET", "/fhir/Patient", manyHeaders(MaxCheckHeaders+1), nil), 431},
		{"headers at MaxCheckHeaderBytes", checkReq("GET", "/fhir/Patient",
			map[string]string{"x-big": strings.Repeat("h", MaxCheckHeaderBytes-len("x-big"))}, nil), 0},
		{"headers over MaxCheckHeaderBytes", checkReq("GET", "/fhir/Patient",
			map[string]string{"x-big": strings.Repeat("h", MaxCheckHeaderBytes-len("x-big")+1)}, nil), 431},
		{"headers sent both ways", func() *authv3.CheckRequest {
			r := rawHeaders(&corev3.HeaderValue{Key: "x-a", RawValue: []byte("1")})
			r.Attributes.Request.Http.Headers = map[string]string{"x-a": "2"}
			return r
		}(), 400},
		{"raw headers over MaxCheckHeaders", func() *authv3.CheckRequest {
			var hv []*corev3.HeaderValue
			for i := range MaxCheckHeaders + 1 {
				hv = append(hv, &corev3.HeaderValue{Key: "x-h", RawValue: []byte{byte('a' + i%26)}})
			}
			return rawHeaders(hv...)
		}(), 431},
		{"UTF-8 text beyond ASCII", checkReq("POST", "/fhir/Patient", map[string]string{"content-type": "application/fhir+json", "x-note": "José 日本 😀"},
			[]byte(`{"resourceType":"Patient","name":[{"text":"Zoë 𝄞"}]}`)), 0},
		{"encoded UTF-8 in the query", checkReq("GET", "/fhir/Patient?name=Jos%C3%A9", nil, nil), 0},
		{"a malformed escape is the parser's to refuse", checkReq("GET", "/fhir/Patient?name=%zz%", nil, nil), 0},
		{"an opaque body is the parser's to judge", checkReq("POST", "/fhir/Binary", map[string]string{"content-type": "application/octet-stream"},
			[]byte{0, 0xff, 0xc0, 0x80}), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeAuthorizer{d: authz.Decision{Allow: true, Status: 200, ID: "d1"}}
			s, err := NewAuthServer(f, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := s.Check(t.Context(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.status == 0 {
				if f.got == nil {
					t.Fatalf("refused with %d, want it to reach the decision path", resp.GetDeniedResponse().GetStatus().GetCode())
				}
				return
			}
			if f.got != nil {
				t.Fatal("the decision path ran")
			}
			dr := resp.GetDeniedResponse()
			if got := int(dr.GetStatus().GetCode()); got != tc.status {
				t.Fatalf("status = %d, want %d", got, tc.status)
			}
			assertOutcome(t, dr, "req-7f3a", []string{"qqqq", "hhhh", "x-h1"})
		})
	}
}

// TestRequestParserLimitsThroughCheckInput: the request parser's caps that
// no other test holds, reached through the CheckRequest conversion.
func TestRequestParserLimitsThroughCheckInput(t *testing.T) {
	p, err := authz.NewRequestParser(authz.RequestConfig{})
	if err != nil {
		t.Fatal(err)
	}
	params := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("p%d=v", i)
		}
		return "/fhir/Observation?" + strings.Join(s, "&")
	}
	segments := func(n int) string { return "/fhir" + strings.Repeat("/x", n-1) }
	cases := []struct {
		name    string
		path    string
		headers map[string]string
		refused bool
	}{
		{"256 query parameters", params(256), nil, false},
		{"257 query parameters", params(257), nil, true},
		{"16 path segments", segments(16), nil, false},
		{"17 path segments", segments(17), nil, true},
		{"a 512-byte break-glass reason", "/fhir/Patient/pat-1", map[string]string{"x-break-glass": strings.Repeat("r", 512)}, false},
		{"a 513-byte break-glass reason", "/fhir/Patient/pat-1", map[string]string{"x-break-glass": strings.Repeat("r", 513)}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := checkInput(checkReq("GET", tc.path, tc.headers, nil), time.Now())
			_, err := p.Parse(in)
			if tc.refused {
				if authz.CodeOf(err) != authz.CodeAmbiguous || authz.StatusOf(err) != 400 {
					t.Fatalf("err = %v (status %d), want a 400 refusal", err, authz.StatusOf(err))
				}
				return
			}
			// Under the cap the request may still be refused for what it
			// asks, but never for its size.
			if err != nil && strings.Contains(err.Error(), "too") {
				t.Fatalf("refused under the cap: %v", err)
			}
		})
	}
}

// TestRawHeadersMapping: headers Envoy sends unsanitized (encode_raw_headers)
// reach the decision path as one map, repeated lines joined as Envoy joins
// them in the headers map.
func TestRawHeadersMapping(t *testing.T) {
	f := &fakeAuthorizer{d: authz.Decision{Allow: true, Status: 200, ID: "d1"}}
	s, err := NewAuthServer(f, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := rawHeaders(
		&corev3.HeaderValue{Key: ":path", RawValue: []byte("/fhir/Patient")},
		&corev3.HeaderValue{Key: "accept", RawValue: []byte("application/fhir+json")},
		&corev3.HeaderValue{Key: "x-note", RawValue: []byte("José")},
		&corev3.HeaderValue{Key: "accept", RawValue: []byte("application/json")},
		&corev3.HeaderValue{Key: "x-plain", Value: "v"},
	)
	if _, err := s.Check(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if f.got == nil {
		t.Fatal("the decision path did not run")
	}
	want := map[string]string{":path": "/fhir/Patient", "accept": "application/fhir+json,application/json", "x-note": "José", "x-plain": "v"}
	if len(f.got.Headers) != len(want) {
		t.Errorf("headers = %v, want %v", f.got.Headers, want)
	}
	for k, v := range want {
		if f.got.Headers[k] != v {
			t.Errorf("header %s = %q, want %q", k, f.got.Headers[k], v)
		}
	}
}
