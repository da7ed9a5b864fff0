package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version and revision are set at link time by `make build`
// (-ldflags -X); a binary built otherwise falls back to what the Go
// toolchain stamped, when it stamped anything.
var version, revision string

// buildInfo is what the binary knows of its own build: the module version
// (a tag when built with go install module@version, else "(devel)"), the
// VCS revision and whether the tree was modified, and the Go version.
type buildInfo struct {
	Version, Revision, GoVersion string
	Modified                     bool
}

func readBuildInfo() (b buildInfo) {
	b = buildInfo{Version: "unknown", Revision: "unknown", GoVersion: "unknown"}
	defer func() {
		if version != "" {
			b.Version = version
		}
		if revision != "" {
			b.Revision = revision
		}
	}()
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.GoVersion = bi.GoVersion
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

func cmdVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "usage: phigate version")
		return 2
	}
	b := readBuildInfo()
	mod := ""
	if b.Modified {
		mod = " (modified)"
	}
	fmt.Fprintf(stdout, "phigate %s\nrevision %s%s\n%s\n", b.Version, b.Revision, mod, b.GoVersion)
	return 0
}

// registerBuildInfo exposes phigate_build_info, a gauge fixed at 1 whose
// labels say which build is serving, so a fleet's versions can be counted.
func registerBuildInfo(reg prometheus.Registerer) {
	b := readBuildInfo()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "phigate_build_info",
		Help: "Build of the serving binary; always 1.",
		ConstLabels: prometheus.Labels{
			"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion,
			"modified": fmt.Sprint(b.Modified),
		},
	})
	g.Set(1)
	reg.MustRegister(g)
}
