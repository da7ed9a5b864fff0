package plan

import (
	"fmt"

	"github.com/phigate/phigate/internal/errs"
)

// Code says why a plan is refused. Codes are stable words, usable with
// errors.Is and as metric labels and audit reasons.
type Code string

const (
	// CodeBadDirective: a directive cannot be compiled (unknown action,
	// bad path, unknown key id, format or profile). The word is the one
	// the response filters used when they compiled directives themselves,
	// so audit trails and dashboards keep reading the same reason.
	CodeBadDirective Code = "bad_directive"
	// CodeVersion: encoded metadata carries no version, or one this
	// release does not read.
	CodeVersion Code = "plan_version"
	// CodeMalformed: encoded metadata does not decode as a plan.
	CodeMalformed Code = "plan_malformed"
)

// Prefix implements errs.Code.
func (Code) Prefix() string { return "plan: " }

// Error is the error type of the package. Detail names directives by
// index, paths, key ids and fields, which policies author; never a value
// from a request or a body. errors.Is(err, ErrBadDirective) matches on
// the code alone.
type Error = errs.Error[Code]

// Sentinels for errors.Is.
var (
	ErrBadDirective = &Error{Code: CodeBadDirective}
	ErrVersion      = &Error{Code: CodeVersion}
	ErrMalformed    = &Error{Code: CodeMalformed}
)

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err, or "" when err is not an *Error.
func CodeOf(err error) Code { return errs.CodeOf[Code](err) }
