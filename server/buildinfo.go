package server

import (
	"fmt"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// BuildInfo is what a binary knows of its own build: the module version (a
// tag when built with go install module@version, else "(devel)"), the VCS
// revision and whether the tree was modified, and the Go version.
type BuildInfo struct {
	Version, Revision, GoVersion string
	Modified                     bool
}

// ReadBuildInfo reads what the Go toolchain stamped into the running
// binary; a field it did not stamp reads "unknown".
func ReadBuildInfo() BuildInfo {
	b := BuildInfo{Version: "unknown", Revision: "unknown", GoVersion: "unknown"}
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

// registerBuildInfo exposes phigate_build_info, a gauge fixed at 1 whose
// labels say which build is serving, so a fleet's versions can be counted.
func registerBuildInfo(reg prometheus.Registerer, b BuildInfo) {
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
