package envoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// BootstrapConfig describes the sidecar: one listener in front of one
// legacy upstream, with phigate consulted for every request.
type BootstrapConfig struct {
	// Listen is the address clients connect to (host:port).
	Listen string `yaml:"listen"`
	// Admin is Envoy's admin address; it is always on loopback.
	Admin string `yaml:"admin"`
	// Upstream is the legacy service (host:port).
	Upstream string `yaml:"upstream"`
	// Phigate is phigate's gRPC address: host:port or unix:///path.
	Phigate string `yaml:"phigate"`
	// PhigateTLS makes Envoy speak TLS to phigate's TCP listener, and mTLS
	// when it names a client certificate.
	PhigateTLS *UpstreamTLS `yaml:"phigate_tls"`
	// ListenTLS terminates TLS on the client-facing listener, and mTLS
	// when it names a client CA.
	ListenTLS *DownstreamTLS `yaml:"listen_tls"`
	// SecretsDir holds the SDS files that name the certificates of
	// ListenTLS and PhigateTLS (SecretFiles writes them). Envoy reads its
	// certificates through them rather than inline, because only a secret
	// delivered by SDS is reloaded when its files change: a rotated
	// certificate is served without restarting Envoy. Required with
	// either TLS setting.
	SecretsDir string `yaml:"secrets_dir"`
	// NoAuthz leaves phigate's filters out: the same Envoy without
	// authorization, for comparisons in benchmarks. Never for production.
	NoAuthz bool `yaml:"-"`
	// ProcOnlyPrefix adds a route for paths under this prefix (rewritten
	// to "/") on which ext_authz is disabled and ext_proc still runs: what
	// a misconfigured route looks like, for the test that proves ext_proc
	// refuses a response whose request carries no decision. Never for
	// production.
	ProcOnlyPrefix string `yaml:"-"`
	// CheckTimeout bounds one ext_authz call; ProcessTimeout one ext_proc message.
	CheckTimeout   time.Duration `yaml:"check_timeout"`
	ProcessTimeout time.Duration `yaml:"process_timeout"`
	// MaxRequestBody is the largest request body sent to ext_authz (batch
	// and transaction Bundles); larger requests are refused with 413.
	MaxRequestBody int `yaml:"max_request_body"`
	// MaxResponseBody is the buffer limit for responses phigate must read;
	// a larger response is never released.
	MaxResponseBody int `yaml:"max_response_body"`
	// Compress re-applies gzip for clients after redaction. The upstream is
	// never asked for a compressed body.
	Compress bool `yaml:"compress"`
	// MaxRequestHeadersKB bounds the request line and headers together, in
	// KiB (Envoy's max_request_headers_kb); a larger block is answered with
	// 431. Default 96, at most 120 so that what Envoy passes, with the
	// headers it adds, stays under phigate's MaxCheckHeaderBytes.
	MaxRequestHeadersKB int `yaml:"max_request_headers_kb"`
	// MaxRequestHeaders bounds the number of request headers; more are
	// answered with 431. Default 100, at most MaxCheckHeaders-16.
	MaxRequestHeaders int `yaml:"max_request_headers"`
	// MaxRequestPath bounds the request target (path and query) in bytes; a
	// longer one is answered with 414. Default and maximum MaxCheckPath.
	MaxRequestPath int `yaml:"max_request_path"`
	// LocalRateLimit puts Envoy's local rate limit in front of phigate: a
	// coarse first wall for this Envoy as a whole, answered with 429 and
	// an OperationOutcome before phigate is asked. phigate's own buckets
	// (abuse.buckets) count per identity, client or address.
	LocalRateLimit *LocalRateLimit `yaml:"local_rate_limit"`
}

// LocalRateLimit is one token bucket for every request this Envoy takes.
type LocalRateLimit struct {
	MaxTokens     int           `yaml:"max_tokens"`
	TokensPerFill int           `yaml:"tokens_per_fill"`
	FillInterval  time.Duration `yaml:"fill_interval"`
}

// UpstreamTLS names the files Envoy uses to reach phigate over TLS.
type UpstreamTLS struct {
	CA         string `yaml:"ca"`          // verifies phigate's certificate
	Cert       string `yaml:"cert"`        // Envoy's client certificate (mTLS), optional
	Key        string `yaml:"key"`         // its key
	ServerName string `yaml:"server_name"` // SNI and the DNS name phigate's certificate must carry
}

// DownstreamTLS names the files of the client-facing listener's TLS.
// TLS 1.2 is the minimum. With ClientCA every client must present a
// certificate that CA issued, or the handshake fails; the certificate's
// identity (its first URI SAN, a SPIFFE ID, else its subject) reaches
// phigate as the request's source principal.
type DownstreamTLS struct {
	Cert     string `yaml:"cert"`      // the listener's certificate chain (PEM)
	Key      string `yaml:"key"`       // its private key
	ClientCA string `yaml:"client_ca"` // CA bundle for client certificates: mTLS, optional
}

// Validate fills defaults and checks every address.
func (c *BootstrapConfig) Validate() error {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:10000"
	}
	if c.Admin == "" {
		c.Admin = "127.0.0.1:9901"
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = time.Second
	}
	if c.ProcessTimeout == 0 {
		c.ProcessTimeout = 2 * time.Second
	}
	if c.MaxRequestBody == 0 {
		c.MaxRequestBody = 1 << 20
	}
	if c.MaxResponseBody == 0 {
		c.MaxResponseBody = 8 << 20
	}
	if c.MaxRequestHeadersKB == 0 {
		c.MaxRequestHeadersKB = 96
	}
	if c.MaxRequestHeaders == 0 {
		c.MaxRequestHeaders = 100
	}
	if l := c.LocalRateLimit; l != nil {
		if l.TokensPerFill == 0 {
			l.TokensPerFill = l.MaxTokens
		}
		if l.FillInterval == 0 {
			l.FillInterval = time.Second
		}
		if l.MaxTokens < 1 || l.TokensPerFill < 1 || l.TokensPerFill > l.MaxTokens {
			return errors.New("envoy.local_rate_limit: max_tokens at least 1, tokens_per_fill between 1 and max_tokens")
		}
		// Envoy refuses a fill interval under 50ms.
		if l.FillInterval < 50*time.Millisecond || l.FillInterval%time.Millisecond != 0 {
			return errors.New("envoy.local_rate_limit.fill_interval: whole milliseconds, at least 50ms")
		}
	}
	if c.MaxRequestPath == 0 {
		c.MaxRequestPath = MaxCheckPath
	}
	for _, f := range []struct{ name, v string }{{"envoy.listen", c.Listen}, {"envoy.admin", c.Admin}} {
		if _, _, err := splitHostPort(f.v); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if h, _, err := splitHostOrName(c.Upstream); err != nil {
		return fmt.Errorf("envoy.upstream: %w", err)
	} else if len(h) > 253 {
		return fmt.Errorf("envoy.upstream: host name over 253 bytes")
	}
	if host, _, _ := splitHostPort(c.Admin); !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("envoy.admin: %q is not a loopback address; Envoy's admin must not be reachable from the network", c.Admin)
	}
	if !c.NoAuthz {
		if c.Phigate == "" {
			return errors.New("envoy.phigate: phigate's gRPC address is required")
		}
		if !strings.HasPrefix(c.Phigate, "unix://") {
			if _, _, err := splitHostOrName(c.Phigate); err != nil {
				return fmt.Errorf("envoy.phigate: %w", err)
			}
		}
	}
	if t := c.PhigateTLS; t != nil {
		switch {
		case strings.HasPrefix(c.Phigate, "unix://"):
			return errors.New("envoy.phigate_tls: TLS is for the TCP listener; a Unix socket is protected by its file mode")
		case t.CA == "" || t.ServerName == "":
			return errors.New("envoy.phigate_tls: ca and server_name are required")
		case (t.Cert == "") != (t.Key == ""):
			return errors.New("envoy.phigate_tls: cert and key go together")
		}
		if err := filesExist("envoy.phigate_tls", map[string]string{"ca": t.CA, "cert": t.Cert, "key": t.Key}); err != nil {
			return err
		}
	}
	if t := c.ListenTLS; t != nil {
		if t.Cert == "" || t.Key == "" {
			return errors.New("envoy.listen_tls: cert and key are both required")
		}
		if err := filesExist("envoy.listen_tls", map[string]string{"cert": t.Cert, "key": t.Key, "client_ca": t.ClientCA}); err != nil {
			return err
		}
	}
	if (c.ListenTLS != nil || c.PhigateTLS != nil) && c.SecretsDir == "" {
		return errors.New("envoy.secrets_dir: required with TLS: Envoy reads its certificates through SDS files there")
	}
	if c.MaxRequestBody < 0 || c.MaxResponseBody < 1024 {
		return errors.New("envoy.max_request_body/max_response_body: out of range")
	}
	switch {
	case c.MaxRequestPath < 256 || c.MaxRequestPath > MaxCheckPath:
		return fmt.Errorf("envoy.max_request_path: %d is outside 256..%d", c.MaxRequestPath, MaxCheckPath)
	case c.MaxRequestHeaders < 16 || c.MaxRequestHeaders > MaxCheckHeaders-16:
		return fmt.Errorf("envoy.max_request_headers: %d is outside 16..%d", c.MaxRequestHeaders, MaxCheckHeaders-16)
	case c.MaxRequestHeadersKB > MaxCheckHeaderBytes>>10-8:
		return fmt.Errorf("envoy.max_request_headers_kb: %d is over %d", c.MaxRequestHeadersKB, MaxCheckHeaderBytes>>10-8)
	case c.MaxRequestHeadersKB<<10 < c.MaxRequestPath+4<<10:
		// The request target counts against the header block: without
		// room beside it, a long target would get 431 and never 414.
		return fmt.Errorf("envoy.max_request_headers_kb: %d KiB leaves no room beside a %d-byte request target", c.MaxRequestHeadersKB, c.MaxRequestPath)
	}
	return nil
}

// filesExist names the first of files (field → path; empty paths are
// unset fields) that cannot be read, so a typo fails at generation rather
// than as a listener Envoy never opens.
func filesExist(section string, files map[string]string) error {
	for _, field := range slices.Sorted(maps.Keys(files)) {
		path := files[field]
		if path == "" {
			continue
		}
		st, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("%s.%s: %w", section, field, err)
		}
		if st.IsDir() {
			return fmt.Errorf("%s.%s: %s is a directory", section, field, path)
		}
	}
	return nil
}

func splitHostPort(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", hp)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q has no valid port", hp)
	}
	if net.ParseIP(h) == nil {
		return "", 0, fmt.Errorf("%q: the host must be an IP address", hp)
	}
	return h, port, nil
}

// splitHostOrName is splitHostPort for a cluster's address, which may also
// be a DNS name (a Kubernetes service, a host in /etc/hosts): Envoy then
// resolves it itself (STRICT_DNS) and follows its changes.
func splitHostOrName(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", hp)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("%q has no valid port", hp)
	}
	if net.ParseIP(h) == nil && !dnsName.MatchString(h) {
		return "", 0, fmt.Errorf("%q: the host is neither an IP address nor a DNS name", hp)
	}
	return h, port, nil
}

// dnsName is a host name of RFC 1123 labels, at most 253 bytes.
var dnsName = regexp.MustCompile(`^(?i)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$`)

// clusterType is STATIC for an IP address and STRICT_DNS for a name.
func clusterType(host string) string {
	if net.ParseIP(host) != nil {
		return "STATIC"
	}
	return "STRICT_DNS"
}

// Bootstrap renders Envoy's static bootstrap configuration as YAML.
func Bootstrap(c BootstrapConfig) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	v := map[string]any{"C": c}
	addr := func(hp string) map[string]any {
		h, p, _ := splitHostOrName(hp)
		return map[string]any{"Host": h, "Port": p, "Type": clusterType(h)}
	}
	v["Listen"], v["Admin"], v["Upstream"] = addr(c.Listen), addr(c.Admin), addr(c.Upstream)
	if path, ok := strings.CutPrefix(c.Phigate, "unix://"); ok {
		v["PhigatePipe"] = path
	} else if !c.NoAuthz {
		v["Phigate"] = addr(c.Phigate)
	}
	if c.ListenTLS != nil || c.PhigateTLS != nil {
		v["SDS"] = map[string]string{}
		for _, name := range secretNames(c) {
			v["SDS"].(map[string]string)[name] = filepath.Join(c.SecretsDir, name+".yaml")
		}
	}
	v["CheckTimeout"] = durationString(c.CheckTimeout)
	v["ProcessTimeout"] = durationString(c.ProcessTimeout)
	v["Outcome414"] = yamlOutcome(http.StatusRequestURITooLong)
	mappers := make([]localReply, len(localReplies))
	for i, m := range localReplies {
		m.Body = yamlOutcome(m.outcome)
		mappers[i] = m
	}
	v["Mappers"] = mappers
	var b bytes.Buffer
	if err := bootstrapTemplate.Execute(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// The SDS secrets a configuration uses, by name; each lives in
// SecretsDir/<name>.yaml.
const (
	secretListenCert        = "listen-cert"
	secretListenClientCA    = "listen-client-ca"
	secretPhigateCA         = "phigate-ca"
	secretPhigateClientCert = "phigate-client-cert"
)

func secretNames(c BootstrapConfig) []string {
	var names []string
	if t := c.ListenTLS; t != nil {
		names = append(names, secretListenCert)
		if t.ClientCA != "" {
			names = append(names, secretListenClientCA)
		}
	}
	if t := c.PhigateTLS; t != nil {
		names = append(names, secretPhigateCA)
		if t.Cert != "" {
			names = append(names, secretPhigateClientCert)
		}
	}
	return names
}

// SecretFiles renders the SDS files the bootstrap refers to, by file name
// within c.SecretsDir; nil without TLS. They name the certificate files
// and never change themselves: Envoy watches the directories of the files
// they name and reloads a secret when one of them is replaced by a move
// (a rename into place, or Kubernetes' swap of a secret volume's ..data
// link). A pair that fails to load (a key that does not match its
// certificate) is rejected and the previous one keeps serving.
func SecretFiles(c BootstrapConfig) (map[string][]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, name := range secretNames(c) {
		var body string
		switch name {
		case secretListenCert:
			body = "tls_certificate:\n    certificate_chain: {filename: " + quote(c.ListenTLS.Cert) + "}\n    private_key: {filename: " + quote(c.ListenTLS.Key) + "}"
		case secretListenClientCA:
			body = "validation_context:\n    trusted_ca: {filename: " + quote(c.ListenTLS.ClientCA) + "}"
		case secretPhigateCA:
			body = "validation_context:\n    trusted_ca: {filename: " + quote(c.PhigateTLS.CA) + "}"
		case secretPhigateClientCert:
			body = "tls_certificate:\n    certificate_chain: {filename: " + quote(c.PhigateTLS.Cert) + "}\n    private_key: {filename: " + quote(c.PhigateTLS.Key) + "}"
		}
		out[name+".yaml"] = []byte("# SDS secret for Envoy. Generated by phigate envoy bootstrap.\nresources:\n" +
			"- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n" +
			"  name: " + name + "\n  " + body + "\n")
	}
	return out, nil
}

// WriteSecretFiles writes SecretFiles into c.SecretsDir, creating it.
func WriteSecretFiles(c BootstrapConfig) error {
	files, err := SecretFiles(c)
	if err != nil || len(files) == 0 {
		return err
	}
	if err := os.MkdirAll(c.SecretsDir, 0o755); err != nil {
		return fmt.Errorf("envoy.secrets_dir: %w", err)
	}
	for name, b := range files {
		// Written aside and moved into place: Envoy may be watching.
		tmp := filepath.Join(c.SecretsDir, "."+name+".tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fmt.Errorf("envoy.secrets_dir: %w", err)
		}
		if err := os.Rename(tmp, filepath.Join(c.SecretsDir, name)); err != nil {
			return fmt.Errorf("envoy.secrets_dir: %w", err)
		}
	}
	return nil
}

// quote makes s a YAML double-quoted scalar (a JSON string is one), so a
// path with spaces, quotes or colons stays one value.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// yamlOutcome is the minimal OperationOutcome for status as a YAML scalar
// (a JSON string is a YAML double-quoted scalar).
func yamlOutcome(status int) string {
	q, _ := json.Marshal(string(operationOutcome(status, "")))
	return string(q)
}

// localReply is one local_reply_config mapper: the replies Envoy makes
// itself that match Expr get a minimal OperationOutcome for outcome as
// their body, and Status as their status when it is set.
type localReply struct {
	Comment []string
	Expr    string
	Status  int
	outcome int
	Body    string
}

// localReplies match the codec's own replies (details http1.* and
// http2.*), a body over max_request_body, and phigate's failures; never
// phigate's denials, which carry their own body and reference.
var localReplies = []localReply{
	{Expr: "response.code == 431 && (response.code_details.startsWith('http1.') || response.code_details.startsWith('http2.'))", outcome: http.StatusRequestHeaderFieldsTooLarge},
	{Expr: "response.code == 413 && (response.code_details == 'request_payload_too_large' || response.code_details.startsWith('http1.') || response.code_details.startsWith('http2.'))", outcome: http.StatusRequestEntityTooLarge},
	{Expr: "response.code_details.startsWith('http1.') || response.code_details.startsWith('http2.')", outcome: http.StatusBadRequest},
	{
		Comment: []string{"Envoy's local rate limit (the first wall): 429 with an OperationOutcome."},
		Expr:    "response.code_details == 'local_rate_limited'",
		outcome: http.StatusTooManyRequests,
	},
	{
		Comment: []string{
			"phigate unreachable or failing (ext_authz's status_on_error,",
			"ext_proc's error reply): 503 with an OperationOutcome, not an",
			"empty 403 or 500. Nothing from the upstream was released.",
		},
		Expr:    "response.code_details.startsWith('ext_authz_error') || response.code_details.startsWith('ext_proc_error')",
		Status:  http.StatusServiceUnavailable,
		outcome: http.StatusServiceUnavailable,
	},
}

func durationString(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// The filter order matters on the way back: response filters run in
// reverse, so ext_proc redacts before the compressor compresses.
var bootstrapTemplate = template.Must(template.New("bootstrap").Funcs(template.FuncMap{"quote": quote, "duration": durationString,
	"retryAfter": func(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }}).Parse(`# Envoy bootstrap for phigate (sidecar pattern). Generated by phigate envoy bootstrap.
{{- if .SDS}}
# SDS, even from files, needs the node named.
node: {id: phigate-sidecar, cluster: phigate}
{{- end}}
admin:
  address:
    socket_address: {address: {{.Admin.Host}}, port_value: {{.Admin.Port}}}
static_resources:
  listeners:
  # No stat_prefix on the listener: its statistics (listener.*.ssl.* among
  # them) are then named by its address, which /stats/prometheus gives as
  # the envoy_listener_address label the alert rules group by.
  - name: ingress
    address:
      socket_address: {address: {{.Listen.Host}}, port_value: {{.Listen.Port}}}
    per_connection_buffer_limit_bytes: {{.C.MaxResponseBody}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          generate_request_id: true
          normalize_path: false
          merge_slashes: false
          path_with_escaped_slashes_action: KEEP_UNCHANGED
          # CGI, WSGI and PHP-style servers read x_phigate_user as
          # x-phigate-user: a header phigate owns could be smuggled past the
          # policy beside the real one. Refuse such requests outright.
          common_http_protocol_options:
            headers_with_underscores_action: REJECT_REQUEST
            max_headers_count: {{.C.MaxRequestHeaders}}
          # Oversize and malformed requests get an answer. Envoy's codec
          # refuses a header block over max_request_headers_kb, more than
          # max_headers_count headers and malformed HTTP with 431 or 400; the
          # mappers give those replies a minimal OperationOutcome in place of
          # Envoy's text. They match the codec's own replies (details
          # http1.* and http2.*) and a body over max_request_body, never
          # phigate's denials, which carry their own body and reference.
          # Over HTTP/2, Envoy documents a stream reset instead of an answer
          # for headers over the limits.
          max_request_headers_kb: {{.C.MaxRequestHeadersKB}}
          local_reply_config:
            mappers:
{{- range .Mappers}}
{{- range .Comment}}
            # {{.}}
{{- end}}
            - filter:
                extension_filter:
                  name: envoy.access_loggers.extension_filters.cel
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
                    expression: "{{.Expr}}"
{{- with .Status}}
              status_code: {{.}}
{{- end}}
              body: {inline_string: {{.Body}}}
              body_format_override: {text_format_source: {inline_string: "%LOCAL_REPLY_BODY%"}, content_type: application/fhir+json}
{{- end}}
          route_config:
            name: legacy
            virtual_hosts:
            - name: legacy
              domains: ["*"]
              routes:
{{- with .C.ProcOnlyPrefix}}
              - match: {prefix: "{{.}}"}
                route: {cluster: legacy, timeout: 30s, prefix_rewrite: "/"}
                request_headers_to_remove: ["accept-encoding"]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
{{- end}}
              - match: {prefix: "/"}
                route: {cluster: legacy, timeout: 30s}
                request_headers_to_remove: ["accept-encoding"]
          http_filters:
{{- with .C.LocalRateLimit}}
          # The first wall: one bucket for every request this Envoy takes,
          # refused before any other filter (phigate included) runs.
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: first_wall
              token_bucket: {max_tokens: {{.MaxTokens}}, tokens_per_fill: {{.TokensPerFill}}, fill_interval: {{duration .FillInterval}}}
              filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}, runtime_key: first_wall_enabled}
              filter_enforced: {default_value: {numerator: 100, denominator: HUNDRED}, runtime_key: first_wall_enforced}
              response_headers_to_add:
              - append_action: OVERWRITE_IF_EXISTS_OR_ADD
                header: {key: retry-after, value: "{{retryAfter .FillInterval}}"}
{{- end}}
          # The request target counts against max_request_headers_kb, but a
          # long one deserves 414, which Envoy has no setting for: this
          # check answers before any other filter runs, so the request
          # reaches neither phigate nor the upstream.
          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code:
                inline_string: |
                  function envoy_on_request(request)
                    local path = request:headers():get(":path")
                    if path ~= nil and #path > {{.C.MaxRequestPath}} then
                      request:respond({[":status"] = "414", ["content-type"] = "application/fhir+json"}, {{.Outcome414}})
                    end
                  end
{{- if .C.Compress}}
          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              response_direction_config:
                common_config:
                  min_content_length: 256
                  # Matched as prefixes, so a charset parameter still compresses.
                  content_type_matcher:
                  - {prefix: "application/fhir+json"}
                  - {prefix: "application/json"}
                  - {prefix: "application/fhir+xml"}
                  - {prefix: "application/xml"}
                  - {prefix: "text/plain"}
              compressor_library:
                name: gzip
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
{{- end}}
{{- if not .C.NoAuthz}}
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: {code: ServiceUnavailable}
              include_peer_certificate: true
              # Headers reach phigate as sent, not with bytes that are not
              # UTF-8 replaced by "!": phigate refuses what the upstream
              # would otherwise read differently from the policy.
              encode_raw_headers: true
              with_request_body:
                max_request_bytes: {{.C.MaxRequestBody}}
                allow_partial_message: false
                pack_as_bytes: true
              grpc_service:
                envoy_grpc: {cluster_name: phigate}
                timeout: {{.CheckTimeout}}
          # Envoy's own replies (a denial, a refused oversize request) carry
          # nothing from the upstream, so ext_proc skips them. It must: a
          # reply to a codec error waits on ext_proc while the connection
          # closes, and the client gets no answer at all.
          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher
              xds_matcher:
                matcher_list:
                  matchers:
                  - predicate:
                      single_predicate:
                        input:
                          name: local_reply
                          typed_config:
                            "@type": type.googleapis.com/envoy.type.matcher.v3.HttpResponseLocalReplyMatchInput
                        value_match: {exact: "true"}
                    on_match:
                      action:
                        name: skip
                        typed_config:
                          "@type": type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter
              extension_config:
                name: envoy.filters.http.ext_proc
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
                  failure_mode_allow: false
                  allow_mode_override: true
                  message_timeout: {{.ProcessTimeout}}
                  processing_mode:
                    request_header_mode: SKIP
                    request_body_mode: NONE
                    request_trailer_mode: SKIP
                    response_header_mode: SEND
                    response_body_mode: BUFFERED
                    response_trailer_mode: SKIP
                  metadata_options:
                    forwarding_namespaces:
                      untyped: ["envoy.filters.http.ext_authz"]
                  # The request id binds the decision's plan marker to the
                  # response it is checked against; the code details tell
                  # Envoy's own replies (a denial) from the upstream's.
                  response_attributes: ["request.id", "response.code_details"]
                  grpc_service:
                    envoy_grpc: {cluster_name: phigate}
                    timeout: {{.ProcessTimeout}}
{{- end}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{{- with .C.ListenTLS}}
      # Certificates come through SDS files so that Envoy reloads them when
      # they are rotated. A client certificate's first URI SAN (a SPIFFE
      # ID), else its subject, reaches ext_authz as source.principal.
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
{{- if .ClientCA}}
          # mTLS: a client without a certificate from client_ca fails the
          # handshake, before any request exists.
          require_client_certificate: true
{{- end}}
          common_tls_context:
            tls_params: {tls_minimum_protocol_version: TLSv1_2}
            alpn_protocols: ["h2", "http/1.1"]
            tls_certificate_sds_secret_configs:
            - name: listen-cert
              sds_config: {path_config_source: {path: {{index $.SDS "listen-cert" | quote}}}, resource_api_version: V3}
{{- if .ClientCA}}
            validation_context_sds_secret_config:
              name: listen-client-ca
              sds_config: {path_config_source: {path: {{index $.SDS "listen-client-ca" | quote}}}, resource_api_version: V3}
{{- end}}
{{- end}}
  clusters:
  - name: legacy
    type: {{.Upstream.Type}}
    dns_lookup_family: V4_PREFERRED
    connect_timeout: 1s
    per_connection_buffer_limit_bytes: {{.C.MaxResponseBody}}
    load_assignment:
      cluster_name: legacy
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: {{.Upstream.Host}}, port_value: {{.Upstream.Port}}}
{{- if not .C.NoAuthz}}
  - name: phigate
{{- if .PhigatePipe}}
    type: STATIC
{{- else}}
    type: {{.Phigate.Type}}
    dns_lookup_family: V4_PREFERRED
{{- end}}
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
{{- with .C.PhigateTLS}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {{quote .ServerName}}
        common_tls_context:
          tls_params: {tls_minimum_protocol_version: TLSv1_2}
          alpn_protocols: ["h2"]
          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names:
              - san_type: DNS
                matcher: {exact: {{quote .ServerName}}}
            validation_context_sds_secret_config:
              name: phigate-ca
              sds_config: {path_config_source: {path: {{index $.SDS "phigate-ca" | quote}}}, resource_api_version: V3}
{{- if .Cert}}
          tls_certificate_sds_secret_configs:
          - name: phigate-client-cert
            sds_config: {path_config_source: {path: {{index $.SDS "phigate-client-cert" | quote}}}, resource_api_version: V3}
{{- end}}
{{- end}}
    load_assignment:
      cluster_name: phigate
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
{{- if .PhigatePipe}}
              pipe: {path: "{{.PhigatePipe}}"}
{{- else}}
              socket_address: {address: {{.Phigate.Host}}, port_value: {{.Phigate.Port}}}
{{- end}}
{{- end}}
`))
