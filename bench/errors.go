package bench

import (
	"errors"
	"fmt"
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

// Error is the one error type of package bench. Field names the offending
// config or scenario field when there is one, so that a user can fix the
// right line.
type Error struct {
	Code   Code
	Field  string
	Detail string
	Err    error
}

func (e *Error) Error() string {
	msg := "bench: " + string(e.Code)
	if e.Field != "" {
		msg += ": " + e.Field
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is lets errors.Is(err, &Error{Code: c}) match on the code alone.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code && t.Field == "" && t.Detail == "" && t.Err == nil
	}
	return false
}

func fieldErr(code Code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Detail: fmt.Sprintf(format, args...)}
}

func wrapErr(code Code, detail string, err error) *Error {
	return &Error{Code: code, Detail: detail, Err: err}
}
