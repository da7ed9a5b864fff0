package envoy

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/plan"
)

func testKey(t *testing.T, fill byte) *MarkerKey {
	t.Helper()
	k, err := NewMarkerKey(bytes.Repeat([]byte{fill}, MinMarkerKeyBytes))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestMarkerVerify(t *testing.T) {
	k := testKey(t, 1)
	plan := []byte(`{"decision_id":"d1","request_id":"r1"}`)
	m := k.Sign("r1", plan)
	if !strings.HasPrefix(m, "v1.") {
		t.Fatalf("marker %q has no version", m)
	}
	flipped := []byte(m)
	flipped[len(flipped)-2] ^= 1
	cases := []struct {
		name    string
		key     *MarkerKey
		request string
		plan    []byte
		marker  string
		ok      bool
	}{
		{"as signed", k, "r1", plan, m, true},
		{"same key material, another instance", testKey(t, 1), "r1", plan, m, true},
		{"plan altered", k, "r1", []byte(`{"decision_id":"d1","request_id":"r1","enforce":null}`), m, false},
		{"plan emptied", k, "r1", nil, m, false},
		{"another request", k, "r2", plan, m, false},
		{"no request id", k, "", plan, m, false},
		{"id and plan shifted into one another", k, "r", append([]byte("1"), plan...), k.Sign("r1", plan), false},
		{"another key", testKey(t, 2), "r1", plan, m, false},
		{"mac altered", k, "r1", plan, string(flipped), false},
		{"no version", k, "r1", plan, strings.TrimPrefix(m, "v1."), false},
		{"another version", k, "r1", plan, "v2." + strings.TrimPrefix(m, "v1."), false},
		{"not base64", k, "r1", plan, "v1.!!!", false},
		{"empty", k, "r1", plan, "", false},
		{"truncated", k, "r1", plan, m[:len(m)-4], false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.key.Verify(tc.request, tc.plan, tc.marker)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestMarkerEmptyPlanIsSigned(t *testing.T) {
	k := testKey(t, 3)
	// An empty plan still has bytes, and its marker still binds them.
	empty := []byte(`{"decision_id":"d9","request_id":"r9"}`)
	if err := k.Verify("r9", empty, k.Sign("r9", empty)); err != nil {
		t.Fatal(err)
	}
	if k.Sign("r9", empty) == k.Sign("r8", empty) {
		t.Fatal("markers of two requests are equal")
	}
}

func TestMarkerKeys(t *testing.T) {
	if _, err := NewMarkerKey(make([]byte, MinMarkerKeyBytes-1)); err == nil {
		t.Error("a short key was accepted")
	}
	a, err := RandomMarkerKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := RandomMarkerKey()
	if err != nil {
		t.Fatal(err)
	}
	if b.Verify("r", nil, a.Sign("r", nil)) == nil {
		t.Error("two random keys accept each other's markers")
	}
	p1, err := ProcessMarkerKey()
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := ProcessMarkerKey()
	if p2.Verify("r", nil, p1.Sign("r", nil)) != nil {
		t.Error("the process key changed between calls")
	}

	dir := t.TempDir()
	secret := bytes.Repeat([]byte{0xa5}, MinMarkerKeyBytes)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw := write("raw", secret)
	hexed := write("hex", []byte(hex.EncodeToString(secret)+"\n"))
	short := write("short", []byte("0123456789abcdef\n"))
	kr, err := LoadMarkerKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	kh, err := LoadMarkerKey(hexed)
	if err != nil {
		t.Fatal(err)
	}
	if kh.Verify("r", []byte("p"), kr.Sign("r", []byte("p"))) != nil {
		t.Error("the hex and raw forms of one key disagree")
	}
	_, err = LoadMarkerKey(short)
	if err == nil {
		t.Fatal("a short key file was accepted")
	}
	if strings.Contains(err.Error(), "0123456789") {
		t.Errorf("error reveals the key: %v", err)
	}
	if _, err := LoadMarkerKey(filepath.Join(dir, "absent")); err == nil {
		t.Error("a missing key file was accepted")
	}
}

// headerAuthorizer answers d, with the request's headers as the parser
// keeps them.
type headerAuthorizer struct{ d authz.Decision }

func (h headerAuthorizer) Authorize(_ context.Context, in *authz.CheckInput) (*authz.Request, authz.Decision, error) {
	return &authz.Request{ID: in.ID, Headers: in.Headers}, h.d, nil
}

// TestCheckMarksEveryPlan: what ext_authz answers for an allowed request is
// what ext_proc accepts for that request, and only for it.
func TestCheckMarksEveryPlan(t *testing.T) {
	k := testKey(t, 4)
	for _, d := range []authz.Decision{
		{Allow: true, Status: 200, ID: "d1"},
		{Allow: true, Status: 200, ID: "d2", Plan: plan.Plan{Enforce: &plan.Enforcement{Patients: []string{"p1"}}}},
	} {
		s, err := NewAuthServer(headerAuthorizer{d}, nil, nil, WithMarkerKey(k))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := s.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Id: "1234", Method: "GET", Path: "/fhir/Patient/p1", Headers: map[string]string{"x-request-id": "req-7"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{AuthzNamespace: resp.GetDynamicMetadata()}}
		for _, tc := range []struct {
			name string
			key  *MarkerKey
			rid  string
			ok   bool
		}{
			{"same key, same request", k, "req-7", true},
			{"same key, another request", k, "req-8", false},
			{"another key", testKey(t, 5), "req-7", false},
		} {
			ps, err := NewProcServer(nil, nil, nil, nil, WithMarkerKey(tc.key))
			if err != nil {
				t.Fatal(err)
			}
			p, why := ps.planOf(&extprocv3.ProcessingRequest{MetadataContext: md, Attributes: attrs(tc.rid)})
			if (why == "") != tc.ok {
				t.Fatalf("%s, %s: refusal %q, want ok %v", d.ID, tc.name, why, tc.ok)
			}
			if tc.ok && (p.DecisionID != d.ID || p.RequestID != "req-7" || (p.Enforce == nil) != (d.Enforce == nil)) {
				t.Errorf("%s: plan %+v", d.ID, p)
			}
		}
	}
}

// BenchmarkMarker is what the marker adds to every allowed Check (Sign)
// and to every response (Verify), for a plan of typical size.
func BenchmarkMarker(b *testing.B) {
	k, err := RandomMarkerKey()
	if err != nil {
		b.Fatal(err)
	}
	plan := []byte(`{"enforce":{"patients":["pat-0001"],"permitted_labels":["ETH","HIV","SDV","SEX","STD","SUD"],"resource_types":["*"]},"decision_id":"fcb02472e3a7a70ebdb57c1e0591f960","request_id":"10215338968434533503"}`)
	rid := "642db1ed-4b15-4a07-8819-7cdc88e3d986"
	m := k.Sign(rid, plan)
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			_ = k.Sign(rid, plan)
		}
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if k.Verify(rid, plan, m) != nil {
				b.Fatal("does not verify")
			}
		}
	})
}
