package policy

import (
	"os"
	"path/filepath"
	"strings"

	regolib "github.com/phigate/phigate/rego"
)

// SourceFor names the policy at path the way the command line does: a
// path ending in .tar.gz is a bundle file, anything else a directory.
func SourceFor(path string) Source {
	if strings.HasSuffix(path, ".tar.gz") {
		return Source{BundleFile: path}
	}
	return Source{Dir: path}
}

// DataFile returns the data.json of the policy directory dir, or of the
// shipped library when dir is empty: the data tools outside the engine
// read (the roles an entitlement review checks).
func DataFile(dir string) ([]byte, error) {
	if dir == "" {
		return regolib.FS.ReadFile("data.json")
	}
	return os.ReadFile(filepath.Join(dir, "data.json"))
}
