package server_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/internal/stacktest"
)

// rawResponse is what came back on a raw connection: a response, or the
// error that ended the connection without one.
type rawResponse struct {
	status int
	header http.Header
	body   []byte
	err    error
}

// sendRaw writes one HTTP/1.1 request on its own connection while reading
// the answer, so an answer sent before the request is fully written is still
// seen, and a reset is reported as such rather than hidden by a client's
// retry.
func sendRaw(t *testing.T, addr, target string, headers []string) rawResponse {
	t.Helper()
	return sendRawBody(t, addr, "GET", target, headers, "")
}

func sendRawBody(t *testing.T, addr, method, target string, headers []string, body string) rawResponse {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: phigate.test\r\n", method, target)
	if body != "" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	for _, h := range headers {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	wrote := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, b.String())
		wrote <- err
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return rawResponse{err: fmt.Errorf("no answer (write: %v): %w", <-wrote, err)}
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: got, err: err}
}

// minimalOutcome reports why body is not the minimal OperationOutcome a
// client gets with a refusal: JSON, one issue, and nothing of the request.
func minimalOutcome(r rawResponse, echo string) string {
	if ct := r.header.Get("content-type"); ct != "application/fhir+json" {
		return fmt.Sprintf("content-type %q", ct)
	}
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Severity, Code, Diagnostics string
		} `json:"issue"`
	}
	if err := json.Unmarshal(r.body, &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) != 1 {
		return fmt.Sprintf("body is not a minimal OperationOutcome: %q", r.body)
	}
	if echo != "" && strings.Contains(string(r.body), echo) {
		return "body echoes the request"
	}
	return ""
}

// TestOversizeRequestsAnswered: a request over Envoy's limits gets a status
// and a minimal OperationOutcome, not a closed connection, and reaches
// neither phigate's policy nor the legacy service.
func TestOversizeRequestsAnswered(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	good := s.Token(stacktest.Physician(1))
	auth := "Authorization: Bearer " + good
	many := []string{auth}
	for i := range 120 {
		many = append(many, fmt.Sprintf("x-extra-%d: v", i))
	}
	cases := []struct {
		name    string
		target  string
		headers []string
		status  int
		echo    string
	}{
		{"64 KiB query", "/fhir/Observation?code=" + strings.Repeat("q", 64<<10), []string{auth}, 414, "qqqqqqqq"},
		// The target counts against max_request_headers_kb too: one that
		// overflows the whole header block gets the codec's 431 first.
		{"200 KiB query", "/fhir/Observation?code=" + strings.Repeat("q", 200<<10), []string{auth}, 431, "qqqqqqqq"},
		{"path just over the limit", "/fhir/Observation?code=" + strings.Repeat("q", 8<<10), []string{auth}, 414, "qqqqqqqq"},
		{"1 MiB header", "/fhir/Patient/pat-0001", []string{auth, "x-big: " + strings.Repeat("h", 1<<20)}, 431, "hhhhhhhh"},
		{"header block just over the limit", "/fhir/Patient/pat-0001", []string{auth, "x-big: " + strings.Repeat("h", 96<<10)}, 431, "hhhhhhhh"},
		{"too many headers", "/fhir/Patient/pat-0001", many, 431, "x-extra"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.Up.Reset()
			r := sendRaw(t, s.Envoy.Listen, tc.target, tc.headers)
			if r.err != nil {
				t.Fatalf("%v; want %d with an OperationOutcome", r.err, tc.status)
			}
			if r.status != tc.status {
				t.Fatalf("status = %d, want %d; body %.200q", r.status, tc.status, r.body)
			}
			if why := minimalOutcome(r, tc.echo); why != "" {
				t.Errorf("%s", why)
			}
			if n := len(s.Up.Requests()); n != 0 {
				t.Errorf("upstream saw %d requests, want 0", n)
			}
		})
	}
	// Envoy reads up to max_request_headers_kb, answers and then closes
	// the connection, so the size of what follows does not matter to a
	// client that reads while it writes, as net/http does; there is no
	// ceiling to find here. (A client that writes everything before
	// reading still gets the answer on loopback, followed by a reset, at
	// 16 MiB; on a network that depends on the socket buffers between.)
	for _, size := range []int{1 << 20, 8 << 20} {
		t.Run(fmt.Sprintf("net/http client, %d MiB header", size>>20), func(t *testing.T) {
			req, err := http.NewRequest("GET", s.Envoy.URL("/fhir/Patient/pat-0001"), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("authorization", "Bearer "+good)
			req.Header.Set("x-big", strings.Repeat("h", size))
			resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
			if err != nil {
				t.Fatalf("%v; want 431", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			r := rawResponse{status: resp.StatusCode, header: resp.Header, body: b}
			if r.status != 431 {
				t.Fatalf("status = %d, want 431", r.status)
			}
			if why := minimalOutcome(r, "hhhhhhhh"); why != "" {
				t.Errorf("%s", why)
			}
		})
	}
	t.Run("body over max_request_body", func(t *testing.T) {
		s.Up.Reset()
		big := `{"resourceType":"Observation","note":[{"text":"` + strings.Repeat("b", 2<<20) + `"}]}`
		r := sendRawBody(t, s.Envoy.Listen, "POST", "/fhir/Observation", []string{auth, "Content-Type: application/fhir+json"}, big)
		if r.err != nil || r.status != 413 {
			t.Fatalf("status = %d, err %v, want 413; body %.200q", r.status, r.err, r.body)
		}
		if why := minimalOutcome(r, "bbbbbbbb"); why != "" {
			t.Errorf("%s", why)
		}
		if n := len(s.Up.Requests()); n != 0 {
			t.Errorf("upstream saw %d requests, want 0", n)
		}
	})
	t.Run("ordinary requests still pass", func(t *testing.T) {
		r := sendRaw(t, s.Envoy.Listen, "/fhir/Observation?patient=pat-0001&code="+strings.Repeat("q", 2<<10),
			[]string{auth, "x-note: " + strings.Repeat("n", 8<<10)})
		if r.err != nil || r.status != 200 {
			t.Fatalf("status = %d, err %v, want 200; body %.200q", r.status, r.err, r.body)
		}
	})
	t.Run("a request target at the limit passes", func(t *testing.T) {
		target := "/fhir/Observation?patient=pat-0001&code="
		target += strings.Repeat("q", envoy.MaxCheckPath-len(target))
		r := sendRaw(t, s.Envoy.Listen, target, []string{auth})
		if r.err != nil || r.status != 200 {
			t.Fatalf("status = %d, err %v, want 200; body %.200q", r.status, r.err, r.body)
		}
	})
	t.Run("60 KiB of headers pass", func(t *testing.T) {
		r := sendRaw(t, s.Envoy.Listen, "/fhir/Patient/pat-0001", []string{auth, "x-note: " + strings.Repeat("n", 60<<10)})
		if r.err != nil || r.status != 200 {
			t.Fatalf("status = %d, err %v, want 200; body %.200q", r.status, r.err, r.body)
		}
	})
}

// TestLimitsBadBytesRefused: NUL bytes and bytes that are not UTF-8 get a
// 400 with a minimal OperationOutcome through the real Envoy, whether
// Envoy's codec refuses them first (NUL in a header) or phigate does (what
// Envoy passes on: percent-encoded bytes, obs-text in a header value, a
// body), and never reach the legacy service.
func TestLimitsBadBytesRefused(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	auth := "Authorization: Bearer " + s.Token(stacktest.Physician(1))
	body := func(text string) string {
		return `{"resourceType":"Patient","id":"pat-0001","name":[{"text":"` + text + `"}]}`
	}
	cases := []struct {
		name    string
		method  string
		target  string
		headers []string
		body    string
	}{
		{"NUL in a header value", "GET", "/fhir/Patient/pat-0001", []string{auth, "x-note: SECRET\x00x"}, ""},
		{"invalid UTF-8 in a header value", "GET", "/fhir/Patient/pat-0001", []string{auth, "x-note: SECRET\xff\xfe"}, ""},
		{"lone surrogate in a header value", "GET", "/fhir/Patient/pat-0001", []string{auth, "x-note: SECRET\xed\xa0\x80"}, ""},
		{"invalid UTF-8 in a header name", "GET", "/fhir/Patient/pat-0001", []string{auth, "x-SECRET\xff: v"}, ""},
		{"NUL in the path", "GET", "/fhir/Patient/SECRET\x00", []string{auth}, ""},
		{"invalid UTF-8 in the path", "GET", "/fhir/Patient/SECRET\xc0\xaf", []string{auth}, ""},
		{"percent-encoded NUL in the query", "GET", "/fhir/Observation?patient=pat-0001&code=SECRET%00", []string{auth}, ""},
		{"percent-encoded overlong form in the query", "GET", "/fhir/Observation?patient=pat-0001&code=SECRET%C0%AF", []string{auth}, ""},
		{"percent-encoded surrogate in the query", "GET", "/fhir/Observation?patient=pat-0001&code=SECRET%ED%A0%80", []string{auth}, ""},
		{"NUL in a JSON body", "PUT", "/fhir/Patient/pat-0001", []string{auth, "Content-Type: application/fhir+json"}, body("SECRET\x00")},
		{"invalid UTF-8 in a JSON body", "PUT", "/fhir/Patient/pat-0001", []string{auth, "Content-Type: application/fhir+json"}, body("SECRET\xff")},
		{"overlong form in a JSON body", "PUT", "/fhir/Patient/pat-0001", []string{auth, "Content-Type: application/fhir+json"}, body("SECRET\xc0\xaf")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.Up.Reset()
			r := sendRawBody(t, s.Envoy.Listen, tc.method, tc.target, tc.headers, tc.body)
			if r.err != nil {
				t.Fatalf("%v; want 400 with an OperationOutcome", r.err)
			}
			if r.status != 400 {
				t.Fatalf("status = %d, want 400; body %.200q", r.status, r.body)
			}
			if why := minimalOutcome(r, "SECRET"); why != "" {
				t.Errorf("%s", why)
			}
			if n := len(s.Up.Requests()); n != 0 {
				t.Errorf("upstream saw %d requests, want 0", n)
			}
		})
	}
}
