package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
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

// revision is a content hash of the bundle, stable across loads of the same
// files, so operators can tell which policy decided.
func revision(b *bundle.Bundle) string {
	if b.Manifest.Revision != "" {
		return b.Manifest.Revision
	}
	h := sha256.New()
	mods := append([]bundle.ModuleFile(nil), b.Modules...)
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	for _, m := range mods {
		fmt.Fprintf(h, "%s\x00%d\x00", m.Path, len(m.Raw))
		h.Write(m.Raw)
	}
	fmt.Fprintf(h, "%v", b.Data)
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// isTest reports whether a module file holds policy tests only.
func isTest(path string) bool { return strings.HasSuffix(path, "_test.rego") }
