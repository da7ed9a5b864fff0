package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"

	regolib "github.com/phigate/phigate/rego"
)

// Source names where policies come from. At most one of Dir and BundleFile
// is set; when both are empty the embedded default library is used.
type Source struct {
	Dir        string `yaml:"dir"`
	BundleFile string `yaml:"bundle"`
}

// Validate checks that the source is unambiguous and exists.
func (s Source) Validate() error {
	if s.Dir != "" && s.BundleFile != "" {
		return errors.New("policy: set policy.dir or policy.bundle, not both")
	}
	if s.Dir != "" {
		st, err := os.Stat(s.Dir)
		if err != nil || !st.IsDir() {
			return fmt.Errorf("policy.dir: %q is not a readable directory", s.Dir)
		}
	}
	if s.BundleFile != "" {
		st, err := os.Stat(s.BundleFile)
		if err != nil || st.IsDir() {
			return fmt.Errorf("policy.bundle: %q is not a readable file", s.BundleFile)
		}
	}
	return nil
}

// String names the source for logs.
func (s Source) String() string {
	switch {
	case s.Dir != "":
		return "dir:" + s.Dir
	case s.BundleFile != "":
		return "bundle:" + s.BundleFile
	default:
		return "embedded"
	}
}

// Load reads the source as an OPA bundle (modules, tests included, and data).
func (s Source) Load() (*bundle.Bundle, error) {
	fl := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).WithProcessAnnotation(true)
	var (
		b   *bundle.Bundle
		err error
	)
	switch {
	case s.Dir != "":
		b, err = fl.AsBundle(s.Dir)
	case s.BundleFile != "":
		b, err = fl.AsBundle(s.BundleFile)
	default:
		b, err = fl.WithFS(regolib.FS).AsBundle(".")
	}
	if err != nil {
		return nil, &Error{Code: CodeLoad, Source: s.String(), Err: err}
	}
	return b, nil
}

// revision is a hash of the bundle's content alone: the modules' bytes
// and the data, not where the files were read from. One policy loaded
// embedded, from rego/, from an absolute path or from a copy is one
// revision, so "which policy decided" in the trail and in a replay has one
// answer.
func revision(b *bundle.Bundle) string {
	if b.Manifest.Revision != "" {
		return b.Manifest.Revision
	}
	sums := make([][32]byte, len(b.Modules))
	for i, m := range b.Modules {
		sums[i] = sha256.Sum256(m.Raw)
	}
	slices.SortFunc(sums, func(x, y [32]byte) int { return bytes.Compare(x[:], y[:]) })
	h := sha256.New()
	for _, s := range sums {
		h.Write(s[:])
	}
	// encoding/json writes object keys sorted, so equal data hash equally.
	data, err := json.Marshal(b.Data)
	if err != nil {
		fmt.Fprintf(h, "%v", b.Data)
	} else {
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// isTest reports whether a module file holds policy tests only.
func isTest(path string) bool { return strings.HasSuffix(path, "_test.rego") }
