package envoy

import (
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phigate/phigate/authz"
)

// The OPA-Envoy input document, as the OPA-Envoy plugin documents it (OPA
// documentation, "Envoy › Policy Primer via Examples", sections "Input
// Document" and "Example Input"):
//
//   - attributes: the CheckRequest's AttributeContext in the protobuf JSON
//     mapping of the v3 API: lower camel case keys, oneofs without their
//     wrapper (attributes.source.address.socketAddress.portValue,
//     attributes.request.http.headers, attributes.metadataContext, int64
//     fields such as size as strings, request.time as an RFC 3339 string);
//   - parsed_path: the request path split on "/" after its leading slashes
//     are dropped ("/" is [""]), percent-decoded;
//   - parsed_query: the query as an object of string arrays;
//   - parsed_body: the body decoded as JSON when the content-type contains
//     "application/json", null otherwise, and null when the body was cut
//     short; truncated_body: whether it was, that is whether content-length
//     is larger than the body Envoy sent. Both are left out when the body
//     is not parsed (skip-request-body-parse);
//   - version: {"ext_authz": "v3", "encoding": "protojson"}.
//
// phigate's Envoy sends the headers as a raw header map and the body as
// bytes (encode_raw_headers, pack_as_bytes), so that phigate sees exactly
// what the upstream will. The document shows them as the plugin's own
// documented Envoy configuration delivers them: a headers map (a repeated
// header's values joined with ",", as Envoy joins them) and a body string
// (a body that is not UTF-8 stays in rawBody).

// OPAEnvoyInput renders req as OPA-Envoy's input document, JSON. It
// carries the request's credentials: it is for the policy only, never a
// log or a record. An error means the plugin would have refused the
// request too (a path that does not parse, a JSON body that does not
// decode, a content-length that is not a number).
func OPAEnvoyInput(req *authv3.CheckRequest, skipBody bool) ([]byte, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	headers := headersOf(h)
	body := h.GetBody()
	if raw := h.GetRawBody(); len(raw) > 0 && utf8.Valid(raw) {
		body = string(raw)
	}
	if len(h.GetHeaderMap().GetHeaders()) > 0 || (body != "" && len(h.GetRawBody()) > 0) {
		req = proto.Clone(req).(*authv3.CheckRequest)
		hc := req.GetAttributes().GetRequest().GetHttp()
		hc.HeaderMap, hc.Headers = nil, headers
		if body != "" && len(hc.RawBody) > 0 {
			hc.RawBody, hc.Body = nil, body
		}
	}
	attrs, err := protojson.Marshal(req)
	if err != nil {
		return nil, err
	}
	doc := map[string]json.RawMessage{}
	if err := json.Unmarshal(attrs, &doc); err != nil {
		return nil, err
	}
	doc["version"] = json.RawMessage(`{"encoding":"protojson","ext_authz":"v3"}`)
	u, err := url.Parse(h.GetPath())
	if err != nil {
		return nil, authz.Errorf(authz.CodeAmbiguous, "the request target does not parse as a URL")
	}
	if doc["parsed_path"], err = json.Marshal(strings.Split(strings.TrimLeft(u.Path, "/"), "/")); err != nil {
		return nil, err
	}
	q := u.Query()
	if q == nil {
		q = url.Values{}
	}
	if doc["parsed_query"], err = json.Marshal(q); err != nil {
		return nil, err
	}
	if !skipBody {
		parsed, truncated, err := parsedBody(headers, body)
		if err != nil {
			return nil, err
		}
		doc["parsed_body"] = parsed
		doc["truncated_body"] = json.RawMessage(strconv.FormatBool(truncated))
	}
	return json.Marshal(doc)
}

// parsedBody is parsed_body and truncated_body: the JSON body decoded
// when the content-type says JSON, null for any other.
func parsedBody(headers map[string]string, body string) (json.RawMessage, bool, error) {
	null := json.RawMessage("null")
	if !strings.Contains(headers["content-type"], "application/json") || body == "" {
		return null, false, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, authz.Errorf(authz.CodeAmbiguous, "content-length is not a number")
		}
		if n > int64(len(body)) {
			return null, true, nil
		}
	}
	if !json.Valid([]byte(body)) {
		return nil, false, authz.Errorf(authz.CodeUnsupported, "the body is not the JSON its content-type names")
	}
	return json.RawMessage(body), false, nil
}

// WithOPAEnvoyInput makes the ext_authz adapter render every CheckRequest
// as OPA-Envoy's input document (OPAEnvoyInput) beside phigate's own
// input, for a policy written for the OPA-Envoy plugin. skipBody leaves
// parsed_body and truncated_body out, as the plugin's
// skip-request-body-parse does.
func WithOPAEnvoyInput(skipBody bool) Option {
	return func(o *options) { o.opaEnvoy, o.opaEnvoySkipBody = true, skipBody }
}

// policyMetadata adds a decision's own dynamic metadata to the response's,
// refusing any key phigate's keys start with, so that no policy can put a
// plan or a marker of its own beside phigate's.
func policyMetadata(dst *structpb.Struct, m map[string]any) error {
	for k, v := range m {
		if strings.HasPrefix(k, MetadataKey) {
			return errors.New("dynamic metadata key reserved for phigate")
		}
		val, err := structpb.NewValue(v)
		if err != nil {
			return err
		}
		dst.Fields[k] = val
	}
	return nil
}
