package main

import (
	"context"
	"fmt"
	"io"

	"github.com/phigate/phigate/server"
)

// version and revision are set at link time by `make build`
// (-ldflags -X); a binary built otherwise falls back to what the Go
// toolchain stamped, when it stamped anything.
var version, revision string

// buildInfo is what this binary reports, in `phigate version` and in
// phigate_build_info: the toolchain's stamp with the link-time values over
// it.
func buildInfo() server.BuildInfo {
	b := server.ReadBuildInfo()
	if version != "" {
		b.Version = version
	}
	if revision != "" {
		b.Revision = revision
	}
	return b
}

func cmdVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "usage: phigate version")
		return 2
	}
	b := buildInfo()
	mod := ""
	if b.Modified {
		mod = " (modified)"
	}
	fmt.Fprintf(stdout, "phigate %s\nrevision %s%s\n%s\n", b.Version, b.Revision, mod, b.GoVersion)
	return 0
}
