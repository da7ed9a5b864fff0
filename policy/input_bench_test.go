package policy

import (
	"testing"

	"github.com/phigate/phigate/authz"
)

// BenchmarkInputValue is the policy input of a typical read, built as AST
// on every evaluation the decision cache does not answer.
func BenchmarkInputValue(b *testing.B) {
	req := cacheRequest(1)
	req.Identity.Scopes = []authz.Scope{{Raw: "user/*.rs", Context: "user", Resource: "*", Permissions: "rs"}}
	b.ReportAllocs()
	for b.Loop() {
		_ = inputValue(req)
	}
}
