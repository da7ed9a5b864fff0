// Package regolib holds phigate's shipped policy library: Rego modules (each
// with its _test.rego beside it) and their default data. The files are
// embedded so the binary always has a policy to serve. The package is not
// named rego so it does not collide with OPA's rego package at import sites.
package regolib

import "embed"

// FS holds every .rego module (tests included) and data.json.
//
//go:embed *.rego data.json
var FS embed.FS
