package envoy_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	actionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/matcher/action/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	luav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/envoy/envoytest"
)

func TestBootstrapValidatesWithEnvoy(t *testing.T) {
	// TLS to phigate is validated by a real Envoy in the end-to-end mTLS
	// test, which has real certificates.
	cases := []struct {
		name string
		cfg  envoy.BootstrapConfig
	}{
		{"tcp", envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", Phigate: "127.0.0.1:9191"}},
		{"unix socket and gzip", envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", Phigate: "unix:///tmp/phigate.sock", Compress: true}},
		{"no authz baseline", envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", NoAuthz: true}},
		{"names, gzip", envoy.BootstrapConfig{Upstream: "legacy.clinical.svc.cluster.local:8080", Phigate: "localhost:9191", Compress: true}},
		{"local rate limit", envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", Phigate: "127.0.0.1:9191",
			LocalRateLimit: &envoy.LocalRateLimit{MaxTokens: 200, TokensPerFill: 100, FillInterval: 500 * time.Millisecond}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y, err := envoy.Bootstrap(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := envoytest.Validate(y); err != nil {
				t.Fatalf("envoy rejects the bootstrap: %v\n%s", err, y)
			}
			hasAuthz := strings.Contains(string(y), "failure_mode_allow: false")
			if hasAuthz == tc.cfg.NoAuthz {
				t.Errorf("fail-closed ext_authz present = %v, want %v", hasAuthz, !tc.cfg.NoAuthz)
			}
		})
	}
}

func TestBootstrapConfigErrors(t *testing.T) {
	cases := []struct {
		name  string
		cfg   envoy.BootstrapConfig
		field string
	}{
		{"missing upstream", envoy.BootstrapConfig{Phigate: "127.0.0.1:9191"}, "envoy.upstream"},
		{"upstream not a host name", envoy.BootstrapConfig{Upstream: "leg_acy:8080", Phigate: "127.0.0.1:9191"}, "envoy.upstream"},
		{"upstream port zero", envoy.BootstrapConfig{Upstream: "legacy:0", Phigate: "127.0.0.1:9191"}, "envoy.upstream"},
		{"phigate not a host name", envoy.BootstrapConfig{Upstream: "legacy:8080", Phigate: "php gate:9191"}, "envoy.phigate"},
		{"admin off loopback", envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "127.0.0.1:2", Admin: "0.0.0.0:9901"}, "envoy.admin"},
		{"no phigate", envoy.BootstrapConfig{Upstream: "127.0.0.1:1"}, "envoy.phigate"},
		{"bad phigate port", envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "127.0.0.1:x"}, "envoy.phigate"},
		{"tls over a unix socket", envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "unix:///s",
			PhigateTLS: &envoy.UpstreamTLS{CA: "ca", ServerName: "p"}}, "envoy.phigate_tls"},
		{"tls without a ca", envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "127.0.0.1:2",
			PhigateTLS: &envoy.UpstreamTLS{ServerName: "p"}}, "envoy.phigate_tls"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := envoy.Bootstrap(tc.cfg)
			if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
}

// typedBootstrap decodes generated YAML into go-control-plane's types, so
// a test reads fields, not text, and a misspelt field fails to decode.
func typedBootstrap(t *testing.T, y []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(y, &doc); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(j, &b); err != nil {
		t.Fatalf("bootstrap does not decode: %v", err)
	}
	return &b
}

func connectionManager(t *testing.T, b *bootstrapv3.Bootstrap) *hcmv3.HttpConnectionManager {
	t.Helper()
	var hcm hcmv3.HttpConnectionManager
	tc := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
	if err := tc.UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	return &hcm
}

// TestBootstrapLimits: the generated Envoy answers oversize and malformed
// requests instead of closing the connection: its codec limits are set,
// a long request target gets 414 before any other filter, the codec's own
// replies carry an OperationOutcome, and ext_proc, whose wait on a reply to
// a codec error would outlive the connection, skips Envoy's own replies.
// The end-to-end proof is TestOversizeRequestsAnswered.
func TestBootstrapLimits(t *testing.T) {
	cases := []struct {
		name               string
		cfg                envoy.BootstrapConfig
		kb, headers, path  int
		authz, compression bool
	}{
		{"defaults", envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", Phigate: "127.0.0.1:9191"}, 96, 100, envoy.MaxCheckPath, true, false},
		{"set", envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", Phigate: "127.0.0.1:9191", Compress: true,
			MaxRequestHeadersKB: 40, MaxRequestHeaders: 60, MaxRequestPath: 2048}, 40, 60, 2048, true, true},
		{"no authz baseline keeps the limits", envoy.BootstrapConfig{Upstream: "127.0.0.1:8080", NoAuthz: true}, 96, 100, envoy.MaxCheckPath, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y, err := envoy.Bootstrap(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := envoytest.Validate(y); err != nil {
				t.Fatalf("envoy rejects the bootstrap: %v\n%s", err, y)
			}
			hcm := connectionManager(t, typedBootstrap(t, y))
			if got := hcm.GetMaxRequestHeadersKb().GetValue(); int(got) != tc.kb {
				t.Errorf("max_request_headers_kb = %d, want %d", got, tc.kb)
			}
			if got := hcm.GetCommonHttpProtocolOptions().GetMaxHeadersCount().GetValue(); int(got) != tc.headers {
				t.Errorf("max_headers_count = %d, want %d", got, tc.headers)
			}
			if got := hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); got != corev3.HttpProtocolOptions_REJECT_REQUEST {
				t.Errorf("headers_with_underscores_action = %v", got)
			}
			mappers := hcm.GetLocalReplyConfig().GetMappers()
			if len(mappers) == 0 {
				t.Fatal("no local reply mappers")
			}
			for i, m := range mappers {
				var cel celv3.ExpressionFilter
				if err := m.GetFilter().GetExtensionFilter().GetTypedConfig().UnmarshalTo(&cel); err != nil {
					t.Fatalf("mapper %d: %v", i, err)
				}
				// Only the codec's replies and phigate's failures (code
				// details ext_authz_error, ext_proc_error): phigate's
				// denials (ext_authz_denied) keep their body and reference.
				expr := cel.GetExpression()
				codec := strings.Contains(expr, "response.code_details.startsWith('http1.')")
				failure := expr == "response.code_details.startsWith('ext_authz_error') || response.code_details.startsWith('ext_proc_error')"
				wall := expr == "response.code_details == 'local_rate_limited'"
				if !codec && !failure && !wall {
					t.Errorf("mapper %d matches more than the codec's replies, the first wall's and phigate's failures: %s", i, expr)
				}
				if failure && m.GetStatusCode().GetValue() != 503 {
					t.Errorf("mapper %d: phigate's failures answer %d, want 503", i, m.GetStatusCode().GetValue())
				}
				var oo map[string]any
				if err := json.Unmarshal([]byte(m.GetBody().GetInlineString()), &oo); err != nil || oo["resourceType"] != "OperationOutcome" {
					t.Errorf("mapper %d body is not an OperationOutcome: %q", i, m.GetBody().GetInlineString())
				}
				if ct := m.GetBodyFormatOverride().GetContentType(); ct != "application/fhir+json" {
					t.Errorf("mapper %d content type %q", i, ct)
				}
			}
			filters := hcm.GetHttpFilters()
			if filters[0].GetName() != "envoy.filters.http.lua" {
				t.Fatalf("first filter is %s, want the request target check", filters[0].GetName())
			}
			var lua luav3.Lua
			if err := filters[0].GetTypedConfig().UnmarshalTo(&lua); err != nil {
				t.Fatal(err)
			}
			src := lua.GetDefaultSourceCode().GetInlineString()
			if !strings.Contains(src, fmt.Sprintf("#path > %d then", tc.path)) || !strings.Contains(src, `"414"`) || !strings.Contains(src, `OperationOutcome`) {
				t.Errorf("request target check does not answer 414 over %d bytes:\n%s", tc.path, src)
			}
			var sawAuthz, sawProc, sawGzip bool
			for _, f := range filters {
				switch f.GetName() {
				case "envoy.filters.http.ext_authz":
					sawAuthz = true
					var ea extauthzv3.ExtAuthz
					if err := f.GetTypedConfig().UnmarshalTo(&ea); err != nil {
						t.Fatal(err)
					}
					if !ea.GetEncodeRawHeaders() || ea.GetFailureModeAllow() {
						t.Errorf("ext_authz: encode_raw_headers %v, failure_mode_allow %v", ea.GetEncodeRawHeaders(), ea.GetFailureModeAllow())
					}
				case "envoy.filters.http.ext_proc":
					sawProc = true
					checkProcSkipsLocalReplies(t, f)
				case "envoy.filters.http.compressor":
					sawGzip = true
				}
			}
			if sawAuthz != tc.authz || sawProc != tc.authz || sawGzip != tc.compression {
				t.Errorf("ext_authz %v, ext_proc %v, gzip %v; want %v, %v, %v", sawAuthz, sawProc, sawGzip, tc.authz, tc.authz, tc.compression)
			}
		})
	}
}

// checkProcSkipsLocalReplies: the ext_proc filter is wrapped in a matcher
// whose one rule skips it for local replies, and only for those; the
// processor inside still fails closed.
func checkProcSkipsLocalReplies(t *testing.T, f *hcmv3.HttpFilter) {
	t.Helper()
	var wm matchingv3.ExtensionWithMatcher
	if err := f.GetTypedConfig().UnmarshalTo(&wm); err != nil {
		t.Fatalf("ext_proc is not wrapped in a matcher: %v", err)
	}
	var proc extprocv3.ExternalProcessor
	if err := wm.GetExtensionConfig().GetTypedConfig().UnmarshalTo(&proc); err != nil {
		t.Fatal(err)
	}
	if proc.GetFailureModeAllow() {
		t.Error("ext_proc fails open")
	}
	ms := wm.GetXdsMatcher().GetMatcherList().GetMatchers()
	if len(ms) != 1 || wm.GetXdsMatcher().GetOnNoMatch() != nil {
		t.Fatalf("ext_proc matcher has %d rules and on_no_match %v, want one rule", len(ms), wm.GetXdsMatcher().GetOnNoMatch())
	}
	p := ms[0].GetPredicate().GetSinglePredicate()
	var in matcherv3.HttpResponseLocalReplyMatchInput
	if err := p.GetInput().GetTypedConfig().UnmarshalTo(&in); err != nil {
		t.Fatalf("rule input is not the local reply input: %v", err)
	}
	if p.GetValueMatch().GetExact() != "true" {
		t.Errorf("rule matches %v, want exactly \"true\"", p.GetValueMatch())
	}
	var skip actionv3.SkipFilter
	if err := ms[0].GetOnMatch().GetAction().GetTypedConfig().UnmarshalTo(&skip); err != nil {
		t.Errorf("rule action is not SkipFilter: %v", err)
	}
}

func TestBootstrapLimitErrors(t *testing.T) {
	base := func(f func(*envoy.BootstrapConfig)) envoy.BootstrapConfig {
		c := envoy.BootstrapConfig{Upstream: "127.0.0.1:1", Phigate: "127.0.0.1:2"}
		f(&c)
		return c
	}
	cases := []struct {
		name  string
		cfg   envoy.BootstrapConfig
		field string
	}{
		{"path over phigate's limit", base(func(c *envoy.BootstrapConfig) { c.MaxRequestPath = envoy.MaxCheckPath + 1 }), "envoy.max_request_path"},
		{"headers over phigate's limit", base(func(c *envoy.BootstrapConfig) { c.MaxRequestHeaders = envoy.MaxCheckHeaders }), "envoy.max_request_headers"},
		{"header block over phigate's limit", base(func(c *envoy.BootstrapConfig) { c.MaxRequestHeadersKB = envoy.MaxCheckHeaderBytes >> 10 }), "envoy.max_request_headers_kb"},
		{"header block without room for the target", base(func(c *envoy.BootstrapConfig) { c.MaxRequestHeadersKB = 10 }), "envoy.max_request_headers_kb"},
		{"rate limit without tokens", base(func(c *envoy.BootstrapConfig) { c.LocalRateLimit = &envoy.LocalRateLimit{} }), "envoy.local_rate_limit"},
		{"rate limit refilling more than it holds", base(func(c *envoy.BootstrapConfig) {
			c.LocalRateLimit = &envoy.LocalRateLimit{MaxTokens: 5, TokensPerFill: 6}
		}), "envoy.local_rate_limit"},
		{"rate limit fill too fast", base(func(c *envoy.BootstrapConfig) {
			c.LocalRateLimit = &envoy.LocalRateLimit{MaxTokens: 5, FillInterval: 10 * time.Millisecond}
		}), "envoy.local_rate_limit.fill_interval"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := envoy.Bootstrap(tc.cfg)
			if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
}
