package plan_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDecisionPathDoesNotImportFilters: the decision path (and the plan it
// carries) must build without the redaction engine, FF1 and HL7 v2, so
// that what decides never depends on what filters bodies. The import graph
// is read from the go tool, as the build sees it.
func TestDecisionPathDoesNotImportFilters(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool on PATH")
	}
	const filters = "github.com/phigate/phigate/filters"
	for _, pkg := range []string{"./authz", "./policy", "./plan"} {
		cmd := exec.CommandContext(t.Context(), "go", "list", "-deps", pkg)
		cmd.Dir = ".."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) == 0 {
			t.Fatalf("go list -deps %s listed nothing", pkg)
		}
		if slices.Contains(deps, filters) {
			t.Errorf("%s depends on %s", pkg, filters)
		}
	}
}
