package envoy

import (
	"bytes"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

// What phigate reads from one CheckRequest, checked before anything is
// converted. Envoy's own limits (BootstrapConfig) sit below these, with room
// for the headers Envoy adds, so a request Envoy passes is never refused
// here for its size; a client speaking gRPC to phigate directly meets these
// on their own.
const (
	// MaxCheckPath bounds the request target (path and query), in bytes;
	// a longer one is refused with 414.
	MaxCheckPath = 8 << 10
	// MaxCheckHeaders bounds the number of headers, pseudo-headers
	// included; more are refused with 431.
	MaxCheckHeaders = 128
	// MaxCheckHeaderBytes bounds the sum of header name and value lengths;
	// more is refused with 431.
	MaxCheckHeaderBytes = 128 << 10
)

// Why a CheckRequest was refused at the boundary, as logged. Fixed words,
// never request data.
const (
	boundaryPathTooLong   = "path_too_long"
	boundaryTooManyHeader = "too_many_headers"
	boundaryHeadersLarge  = "headers_too_large"
	boundaryNUL           = "nul_byte"
	boundaryBadUTF8       = "invalid_utf8"
	boundaryTwoHeaderSets = "headers_twice"
)

// boundaryFault is a CheckRequest refused before conversion: the status the
// client gets, why, and where (a field name and a byte offset in it, never
// the bytes).
type boundaryFault struct {
	status int
	why    string
	field  string // "path", "path (decoded)", "header name", "header value", "body", "source principal"
	header string // the header's name when it is a plain token and the fault is in its value
	offset int    // byte offset of the fault in the field, -1 when the fault is a size
}

// checkBoundary refuses a CheckRequest whose request target, headers or
// text body hold a NUL byte or bytes that are not UTF-8 (overlong forms and
// encoded surrogates included), or that is over phigate's size limits.
//
// The request target is checked as sent and again after percent-decoding,
// since "%00" and "%C0%AF" are what the upstream would read. A body is
// checked when its media type is one phigate reads as text: JSON, XML and
// form types (every body the request parser reads), anything under text/,
// and a body without a readable content-type. Other bodies are opaque bytes
// to phigate and pass to the parser, which refuses them where FHIR is
// expected.
func checkBoundary(req *authv3.CheckRequest) *boundaryFault {
	a := req.GetAttributes()
	h := a.GetRequest().GetHttp()
	path := h.GetPath()
	if len(path) > MaxCheckPath {
		return &boundaryFault{status: http.StatusRequestURITooLong, why: boundaryPathTooLong, field: "path", offset: -1}
	}
	headers, raw := h.GetHeaders(), h.GetHeaderMap().GetHeaders()
	if len(headers) > 0 && len(raw) > 0 {
		// Two sets of headers: which one the upstream acts on is unknown.
		return &boundaryFault{status: http.StatusBadRequest, why: boundaryTwoHeaderSets, field: "headers", offset: -1}
	}
	if len(headers)+len(raw) > MaxCheckHeaders {
		return &boundaryFault{status: http.StatusRequestHeaderFieldsTooLarge, why: boundaryTooManyHeader, field: "headers", offset: -1}
	}
	n := 0
	for k, v := range headers {
		n += len(k) + len(v)
	}
	for _, hv := range raw {
		n += len(hv.GetKey()) + len(hv.GetValue()) + len(hv.GetRawValue())
	}
	if n > MaxCheckHeaderBytes {
		return &boundaryFault{status: http.StatusRequestHeaderFieldsTooLarge, why: boundaryHeadersLarge, field: "headers", offset: -1}
	}
	if f := textFault(path, "path"); f != nil {
		return f
	}
	if f := decodedFault(path); f != nil {
		return f
	}
	if f := textFault(h.GetMethod(), "method"); f != nil {
		return f
	}
	for k, v := range headers {
		if f := headerFault(k, v, nil); f != nil {
			return f
		}
	}
	for _, hv := range raw {
		if f := headerFault(hv.GetKey(), hv.GetValue(), hv.GetRawValue()); f != nil {
			return f
		}
	}
	if f := textFault(a.GetSource().GetPrincipal(), "source principal"); f != nil {
		return f
	}
	if textMedia(contentTypeOf(headers, raw)) {
		if raw := h.GetRawBody(); len(raw) > 0 {
			if f := bytesFault(raw, "body"); f != nil {
				return f
			}
		} else if f := textFault(h.GetBody(), "body"); f != nil {
			return f
		}
	}
	return nil
}

func headerFault(k, v string, rawValue []byte) *boundaryFault {
	if f := textFault(k, "header name"); f != nil {
		return f
	}
	f := textFault(v, "header value")
	if f == nil {
		f = bytesFault(rawValue, "header value")
	}
	if f != nil && plainToken(k) {
		f.header = k
	}
	return f
}

func contentTypeOf(headers map[string]string, raw []*corev3.HeaderValue) string {
	if len(raw) == 0 {
		return headers["content-type"]
	}
	// Joined as headersOf joins them, so the check reads the value the
	// request parser will.
	var ct string
	seen := false
	for _, hv := range raw {
		if hv.GetKey() == "content-type" {
			if seen {
				ct += ","
			}
			ct += headerText(hv)
			seen = true
		}
	}
	return ct
}

func headerText(hv *corev3.HeaderValue) string {
	if raw := hv.GetRawValue(); len(raw) > 0 {
		return string(raw)
	}
	return hv.GetValue()
}

// headersOf returns the request's headers as one map. With
// encode_raw_headers Envoy sends them unsanitized in header_map, one entry
// per header line; lines with the same name are joined with "," as Envoy
// joins them in the headers map. Without it, bytes that are not UTF-8 reach
// phigate as "!" while the upstream gets them as sent, which is why the
// generated bootstrap turns it on.
func headersOf(h *authv3.AttributeContext_HttpRequest) map[string]string {
	raw := h.GetHeaderMap().GetHeaders()
	if len(raw) == 0 {
		if m := h.GetHeaders(); m != nil {
			return m
		}
		return map[string]string{}
	}
	m := make(map[string]string, len(raw))
	for _, hv := range raw {
		k, v := hv.GetKey(), headerText(hv)
		if prev, ok := m[k]; ok {
			v = prev + "," + v
		}
		m[k] = v
	}
	return m
}

func textFault(s, field string) *boundaryFault {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return &boundaryFault{status: http.StatusBadRequest, why: boundaryNUL, field: field, offset: i}
	}
	if utf8.ValidString(s) {
		return nil
	}
	return &boundaryFault{status: http.StatusBadRequest, why: boundaryBadUTF8, field: field, offset: invalidAt(s)}
}

func bytesFault(b []byte, field string) *boundaryFault {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return &boundaryFault{status: http.StatusBadRequest, why: boundaryNUL, field: field, offset: i}
	}
	if utf8.Valid(b) {
		return nil
	}
	return &boundaryFault{status: http.StatusBadRequest, why: boundaryBadUTF8, field: field, offset: invalidAt(string(b))}
}

// invalidAt returns the offset of the first byte that does not begin a
// valid UTF-8 sequence.
func invalidAt(s string) int {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return -1
}

// decodedFault checks the request target after percent-decoding. A
// malformed escape is left as it is: the request parser refuses it. The
// offset is the one in the raw target where the bad decoded byte's escape
// begins, so the log can point at it without showing it.
func decodedFault(path string) *boundaryFault {
	if strings.IndexByte(path, '%') < 0 {
		return nil
	}
	var buf [1024]byte
	dec := buf[:0]
	eachDecoded(path, func(_ int, c byte) bool { dec = append(dec, c); return true })
	f := bytesFault(dec, "path (decoded)")
	if f != nil && f.offset >= 0 {
		n, want := 0, f.offset
		eachDecoded(path, func(raw int, _ byte) bool {
			if n == want {
				f.offset = raw
				return false
			}
			n++
			return true
		})
	}
	return f
}

// eachDecoded calls fn with each byte of path after percent-decoding and
// the raw offset it starts at, until fn returns false. Escapes that are
// not two hex digits are passed as they are.
func eachDecoded(path string, fn func(raw int, c byte) bool) {
	for i := 0; i < len(path); i++ {
		at, c := i, path[i]
		if c == '%' && i+2 < len(path) && isHexDigit(path[i+1]) && isHexDigit(path[i+2]) {
			v, _ := strconv.ParseUint(path[i+1:i+3], 16, 8)
			c = byte(v)
			i += 2
		}
		if !fn(at, c) {
			return
		}
	}
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// plainToken reports whether a header name is safe to log: lower-case
// letters, digits and dashes, and short.
func plainToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == ':' && i == 0) {
			return false
		}
	}
	return true
}

// textMedia reports whether a body of this content-type is text to
// phigate. A missing or unreadable content-type counts as text: such a
// body is never let past unchecked.
func textMedia(ct string) bool {
	if strings.TrimSpace(ct) == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return true
	}
	switch {
	case strings.HasPrefix(mt, "text/"),
		strings.Contains(mt, "json"),
		strings.Contains(mt, "xml"),
		mt == "application/x-www-form-urlencoded":
		return true
	}
	return false
}

// safeReference returns the request id when it can be shown to the client
// and written to the log as it is (letters, digits and dashes, as Envoy
// generates them), and "" otherwise.
func safeReference(id string) string {
	if len(id) == 0 || len(id) > 64 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return ""
		}
	}
	return id
}

// boundaryDenial is the answer to a CheckRequest refused at the boundary:
// the status and a minimal OperationOutcome naming only the request id.
// No decision was made, so no decision id is sent.
func boundaryDenial(status int, reference string) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: []*corev3.HeaderValueOption{header("content-type", fhirJSON)},
			Body:    string(operationOutcome(status, reference)),
		}},
	}
}
