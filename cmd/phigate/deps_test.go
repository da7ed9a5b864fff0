package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProductionBinaryCarriesNoDemoOrBench: the demo's FHIR service, its
// keys and the load generator are phigate-demo's; none of them may reach
// the binary that serves real traffic, not even through a package that
// imports them for convenience.
func TestProductionBinaryCarriesNoDemoOrBench(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const mod = "github.com/phigate/phigate/"
	deps := strings.Fields(string(out))
	if len(deps) == 0 || deps[len(deps)-1] != mod+"cmd/phigate" {
		t.Fatalf("go list -deps did not list this command last; output:\n%s", out)
	}
	for _, d := range deps {
		p, ok := strings.CutPrefix(d, mod)
		if !ok {
			continue
		}
		for _, banned := range []string{"demo", "bench", "internal/stacktest"} {
			if p == banned || strings.HasPrefix(p, banned+"/") {
				t.Errorf("the production binary depends on %s", d)
			}
		}
	}
}
