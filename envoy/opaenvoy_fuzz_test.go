package envoy

import (
	"encoding/json"
	"testing"

	"github.com/phigate/phigate/authz"
)

// FuzzOPAEnvoyInput holds the OPA-Envoy rendering to either a coded
// refusal or a JSON object with the documented keys, whatever the path,
// content type, length and body.
func FuzzOPAEnvoyInput(f *testing.F) {
	f.Add("/people?lang=en", "application/json", "41", `{"firstname":"Charlie", "lastname":"Opa"}`, false)
	f.Add("/", "application/fhir+json", "2", `{}`, true)
	f.Add("/a%20b?id=1&id=2", "application/json", "100", `{"a":`, false)
	f.Add("/%zz", "text/plain", "x", "", false)
	f.Fuzz(func(t *testing.T, path, ctype, cl, body string, skip bool) {
		r := documentedRequest()
		h := r.Attributes.Request.Http
		h.Path, h.Body = path, body
		h.Headers["content-type"], h.Headers["content-length"] = ctype, cl
		out, err := OPAEnvoyInput(r, skip)
		if err != nil {
			if authz.CodeOf(err) == "" {
				t.Skip("not representable in protobuf JSON") // invalid UTF-8 in a string field
			}
			return
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("not a JSON object: %v", err)
		}
		for _, k := range []string{"attributes", "parsed_path", "parsed_query", "version"} {
			if _, ok := doc[k]; !ok {
				t.Fatalf("no %s", k)
			}
		}
		if _, ok := doc["parsed_body"]; ok == skip {
			t.Fatalf("parsed_body present=%v with skip=%v", ok, skip)
		}
	})
}
