package audit

import (
	"encoding/json"
	"maps"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/internal/credential"
)

// TestStoredInputIsThePolicyInput: the headers the trail stores are
// exactly those the request parser gave the policy. Were the two lists of
// credential headers to differ, `audit replay` would evaluate another
// input than the policy saw (or the policy would see a credential).
func TestStoredInputIsThePolicyInput(t *testing.T) {
	p, err := authz.NewRequestParser(authz.RequestConfig{Base: "/fhir"})
	if err != nil {
		t.Fatal(err)
	}
	headers := map[string]string{
		"accept":                    "application/fhir+json",
		"x-purpose-of-use":          "TREAT",
		"x-forwarded-authorization": "Bearer abc.def.ghi",
		"x-note":                    "bearer-less",
	}
	for _, n := range credential.Names() {
		headers[n] = "secret-" + n
	}
	req, err := p.Parse(&authz.CheckInput{ID: "r1", Method: "GET", Path: "/fhir/Patient/1", Headers: headers, Received: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	for k := range req.Headers {
		if credential.Header(k, req.Headers[k]) {
			t.Errorf("policy input holds credential header %q", k)
		}
	}
	if len(req.Headers) != 3 {
		t.Errorf("policy input headers %v, want accept, x-purpose-of-use, x-note", slicesKeys(req.Headers))
	}
	raw, err := PolicyInput(req)
	if err != nil {
		t.Fatal(err)
	}
	var stored struct {
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(raw, &stored); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(stored.Headers, req.Headers) {
		t.Fatalf("stored headers %v, policy saw %v", stored.Headers, req.Headers)
	}
}

func slicesKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
