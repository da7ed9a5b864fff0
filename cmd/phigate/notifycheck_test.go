package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/internal/stacktest"
)

// TestConfigCheckNotifyTargets: config check holds the shipped policy's
// break-glass recipient (data.phigate.emergency.notify, privacy-office) to
// the configured sinks: an error when sinks are configured and none is
// named so, a warning when none are configured, ok when one is; a sink's
// own fields are named when wrong.
func TestConfigCheckNotifyTargets(t *testing.T) {
	dir, good := stacktest.ValidConfig(t)
	for _, tc := range []struct {
		name, extra string
		code        int
		want        string
	}{
		{"no sinks", "", 0, "warning: notify: the policy's data.phigate.emergency.notify (\"privacy-office\") names a recipient, and no notify.sinks are configured"},
		{"the recipient configured", "notify:\n  sinks:\n    privacy-office:\n      webhook: {url: \"https://po.example.org/hook\"}\n", 0, ": ok"},
		{"another sink only", "notify:\n  sinks:\n    siem:\n      syslog: {network: udp, address: \"127.0.0.1:514\"}\n", 1, "names privacy-office, which notify.sinks does not configure"},
		{"a sink's bad field", "notify:\n  sinks:\n    privacy-office:\n      webhook: {url: \"ftp://po\"}\n", 1, "notify.sinks.privacy-office.webhook.url"},
		{"a misspelt field", "notify:\n  sinks:\n    privacy-office:\n      webhok: {url: \"https://po\"}\n", 1, "notify.sinks: unknown field webhok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(p, []byte(good+tc.extra), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runCmd(t, "config", "check", p)
			if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
				t.Errorf("exit %d, want %d; output %s%s; want it to contain %q", code, tc.code, stdout, stderr, tc.want)
			}
		})
	}
}
