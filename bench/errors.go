package bench

import (
	"fmt"

	"github.com/phigate/phigate/internal/errs"
)

// Code classifies a bench failure.
type Code string

const (
	// CodeConfig: a Config field is invalid.
	CodeConfig Code = "config"
	// CodeScenario: a scenario file or built-in name is invalid.
	CodeScenario Code = "scenario"
	// CodeKey: the signing key or the JWKS file could not be read or written.
	CodeKey Code = "key"
	// CodeTarget: the target could not be reached or prepared.
	CodeTarget Code = "target"
	// CodeProcess: the target process could not be found or read.
	CodeProcess Code = "process"
	// CodeReport: a report could not be written.
	CodeReport Code = "report"
)

// Prefix implements errs.Code.
func (Code) Prefix() string { return "bench: " }

// Error is the one error type of package bench. Field names the offending
// config or scenario field when there is one, so that a user can fix the
// right line. errors.Is(err, &Error{Code: c}) matches on the code alone.
type Error = errs.Error[Code]

func fieldErr(code Code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Detail: fmt.Sprintf(format, args...)}
}

func wrapErr(code Code, detail string, err error) *Error {
	return &Error{Code: code, Detail: detail, Err: err}
}
