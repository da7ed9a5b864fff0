package upstream

import (
	"errors"
	"net/http"
)

// Code classifies a failed FHIR interaction; it is the OperationOutcome
// issue code the client receives.
type Code string

const (
	CodeNotFound     Code = "not-found"
	CodeDeleted      Code = "deleted"
	CodeInvalid      Code = "invalid"
	CodeNotSupported Code = "not-supported"
	CodeConflict     Code = "conflict"
	CodeTooLarge     Code = "too-costly"
	CodeException    Code = "exception"
)

// fhirError is the one error type of the server: a status, an issue code
// and a diagnostic written for the client. Diagnostics are fixed phrases
// and never echo ids or other request data.
type fhirError struct {
	status int
	code   Code
	diag   string
}

func (e *fhirError) Error() string { return string(e.code) + ": " + e.diag }

// Is matches on the code alone, so errors.Is(err, &fhirError{code: c}) works.
func (e *fhirError) Is(target error) bool {
	var t *fhirError
	return errors.As(target, &t) && t.code == e.code
}

func errNotFound() *fhirError {
	return &fhirError{http.StatusNotFound, CodeNotFound, "resource not found"}
}
func errGone() *fhirError {
	return &fhirError{http.StatusGone, CodeDeleted, "resource deleted"}
}
func errInvalid(diag string) *fhirError {
	return &fhirError{http.StatusBadRequest, CodeInvalid, diag}
}
func errUnknownType() *fhirError {
	return &fhirError{http.StatusNotFound, CodeNotSupported, "unknown resource type"}
}
func errMethod() *fhirError {
	return &fhirError{http.StatusMethodNotAllowed, CodeNotSupported, "interaction not supported"}
}

func operationOutcome(e *fhirError) Resource {
	severity := "error"
	if e.status >= 500 {
		severity = "fatal"
	}
	return Resource{
		"resourceType": "OperationOutcome",
		"issue": []any{map[string]any{
			"severity":    severity,
			"code":        string(e.code),
			"diagnostics": e.diag,
		}},
	}
}
