package envoy_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/phigate/phigate/envoy"
)

// metadataOperator is a format operator that copies a request's dynamic
// metadata or filter state into what it formats.
var metadataOperator = regexp.MustCompile(`%(DYNAMIC_METADATA|METADATA|UPSTREAM_METADATA|FILTER_STATE)\(`)

// logLeaks returns what in a YAML Envoy configuration could write dynamic
// metadata to a log: an access log anywhere (a listener's, a connection
// manager's, a filter's, the admin's), or a metadata format operator.
func logLeaks(t *testing.T, y []byte) []string {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(y, &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if k == "access_log" || k == "access_log_path" || k == "access_log_options" {
					out = append(out, path+"."+k)
				}
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range v {
				walk(path+"[]", e)
			}
		case string:
			if metadataOperator.MatchString(v) {
				out = append(out, path)
			}
		}
	}
	walk("", doc)
	return out
}

// TestBootstrapWritesNoMetadataToLogs: the plan metadata ext_authz leaves
// for ext_proc names the request's patients (version 2), so nothing in
// the generated bootstrap may write dynamic metadata anywhere: no access
// log at all, and no format that reads metadata. Envoy runs at warn,
// below the debug level at which it logs a stream's metadata. The
// shipped deployment's Envoy configuration is held to the same.
func TestBootstrapWritesNoMetadataToLogs(t *testing.T) {
	for _, c := range []envoy.BootstrapConfig{
		{Upstream: "127.0.0.1:8080", Phigate: "127.0.0.1:9191"},
		{Upstream: "127.0.0.1:8080", Phigate: "unix:///tmp/phigate.sock", Compress: true},
		{Upstream: "127.0.0.1:8080", Phigate: "127.0.0.1:9191", ProcOnlyPrefix: "/hl7/"},
	} {
		y, err := envoy.Bootstrap(c)
		if err != nil {
			t.Fatal(err)
		}
		if leaks := logLeaks(t, y); leaks != nil {
			t.Errorf("bootstrap %+v writes metadata to logs at %v", c, leaks)
		}
	}
	deployed, err := os.ReadFile("../deploy/kustomize/base/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if leaks := logLeaks(t, deployed); leaks != nil {
		t.Errorf("deploy/kustomize/base/envoy.yaml writes metadata to logs at %v", leaks)
	}
	// The check itself sees an access log and a metadata operator.
	if leaks := logLeaks(t, []byte("a:\n  access_log: [{name: x}]\n  f: \"%DYNAMIC_METADATA(envoy.filters.http.ext_authz)%\"\n")); len(leaks) != 2 {
		t.Errorf("the check found %v, want two leaks", leaks)
	}
	src, err := os.ReadFile("process.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), `"--log-level", "warn"`) {
		t.Error("Envoy is no longer started at log level warn")
	}
}
