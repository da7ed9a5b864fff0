package policy

import (
	"errors"
	"fmt"
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

// Error is the coded error of this package.
type Error struct {
	Code   Code
	Source string
	Err    error
}

func (e *Error) Error() string {
	if e.Source != "" {
		return fmt.Sprintf("policy %s (%s): %v", e.Code, e.Source, e.Err)
	}
	return fmt.Sprintf("policy %s: %v", e.Code, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches another *Error by code alone.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code && t.Err == nil
}
