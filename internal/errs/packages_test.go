package errs_test

import (
	"errors"
	"testing"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/bench"
	"github.com/phigate/phigate/filters"
	"github.com/phigate/phigate/policy"
)

// Packages share the type but not their codes: equal code words in two
// packages are different errors.
func TestPackagesApart(t *testing.T) {
	auditCfg := &audit.Error{Code: audit.CodeConfig, Detail: "d"}
	filtersCfg := &filters.Error{Code: filters.CodeBadConfig, Detail: "d"}
	if string(audit.CodeConfig) != string(filters.CodeBadConfig) {
		t.Fatal("the test needs two packages with one code word")
	}
	if errors.Is(auditCfg, filters.ErrBadConfig) || errors.Is(filtersCfg, audit.ErrConfig) {
		t.Error("a sentinel matched another package's error with the same code word")
	}
	if !errors.Is(auditCfg, audit.ErrConfig) || !errors.Is(filtersCfg, filters.ErrBadConfig) {
		t.Error("a sentinel missed its own package's error")
	}
	if authz.CodeOf(auditCfg) != "" || audit.CodeOf(filtersCfg) != "" {
		t.Error("CodeOf read another package's code")
	}
}

// The messages each package wrote before they shared one type.
func TestPackageMessages(t *testing.T) {
	cause := errors.New("cause")
	cases := []struct {
		err  error
		want string
	}{
		{&authz.Error{Code: authz.CodeAmbiguous, Detail: "dot segment"}, "ambiguous_request: dot segment"},
		{authz.Errorf(authz.CodePolicy, "n=%d", 3), "policy_error: n=3"},
		{&filters.Error{Code: filters.CodeMalformed, Detail: "d", Err: cause}, "filters: malformed_body: d: cause"},
		{&audit.Error{Code: audit.CodeChainBroken, Pos: &audit.Position{File: "seg-x", Seq: 3, Offset: 99}, Detail: "d"},
			"audit: chain_broken at seg-x seq 3 offset 99: d"},
		{&audit.Error{Code: audit.CodeIO, Err: cause}, "audit: io_error: cause"},
		{&bench.Error{Code: bench.CodeScenario, Field: "Scenario", Detail: "unknown"}, "bench: scenario: Scenario: unknown"},
		{&policy.Error{Code: policy.CodeCompile, Source: "dir:/p", Err: cause}, "policy compile (dir:/p): cause"},
		{&policy.Error{Code: policy.CodeEval, Err: cause}, "policy eval: cause"},
	}
	for _, tc := range cases {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
