package policy

import (
	"github.com/phigate/phigate/internal/errs"
)

// Code classifies a policy failure.
type Code string

const (
	// CodeLoad: the source could not be read or parsed.
	CodeLoad Code = "load"
	// CodeCompile: the modules do not compile (strict mode).
	CodeCompile Code = "compile"
	// CodeTest: the bundle's own tests fail.
	CodeTest Code = "test"
	// CodeShape: the decision document has the wrong shape.
	CodeShape Code = "shape"
	// CodeEval: evaluation failed or produced no decision.
	CodeEval Code = "eval"
)

// Prefix implements errs.Code.
func (Code) Prefix() string { return "policy " }

// Error is the coded error of this package: "policy CODE (SOURCE): cause".
// errors.Is(err, &Error{Code: c}) matches on the code alone.
type Error = errs.Error[Code]
