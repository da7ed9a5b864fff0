package policy

import "strings"

// SourceFor names the policy at path the way the command line does: a
// path ending in .tar.gz is a bundle file, anything else a directory.
func SourceFor(path string) Source {
	if strings.HasSuffix(path, ".tar.gz") {
		return Source{BundleFile: path}
	}
	return Source{Dir: path}
}
