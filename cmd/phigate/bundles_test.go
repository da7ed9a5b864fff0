package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phigate/phigate/internal/bundletest"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/policy"
)

// TestConfigCheckAsksTheBundleServer: config check downloads the bundle
// once and says ok only when it verifies and compiles.
func TestConfigCheckAsksTheBundleServer(t *testing.T) {
	signer := bundletest.NewSigner(t, "release")
	bs := bundletest.NewServer(t, "/bundles/phigate.tar.gz")
	lib, err := policy.Source{}.Load()
	if err != nil {
		t.Fatal(err)
	}
	dir, good := stacktest.ValidConfig(t)
	cfg := filepath.Join(dir, "phigate.yaml")
	yaml := good + "policy:\n  bundle_server:\n    url: " + bs.URL + "\n    signing:\n      keys:\n        release: {key_file: " + signer.PublicFile + "}\n" +
		"decision_logs:\n  url: http://127.0.0.1:1\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() (int, string) {
		var out bytes.Buffer
		cmd := exec.Command(binary(t), "config", "check", cfg)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), out.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, out.String()
	}
	bs.Publish(bundletest.FromBundle(t, lib, "library-1", signer))
	code, out := run()
	if code != 0 || !strings.Contains(out, "ok (policy revision library-1)") {
		t.Fatalf("signed library: exit %d, %s", code, out)
	}
	t.Logf("signed: %s", out)
	bs.Publish(bundletest.FromBundle(t, lib, "library-2", nil))
	if code, out = run(); code == 0 || !strings.Contains(out, "signatures") {
		t.Fatalf("unsigned bundle: exit %d, %s; want a failure naming the missing signature", code, out)
	}
	t.Logf("unsigned: exit %d: %s", code, out)
}
