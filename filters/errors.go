package filters

import (
	"fmt"

	"github.com/phigate/phigate/internal/errs"
)

// Code classifies why a body could not be filtered. Codes are stable words,
// usable with errors.Is and as metric labels. Every code means the same thing
// to the caller: no byte of the original body may reach the client.
type Code string

const (
	// CodeUnsupportedMedia: the content type is not one the engine can
	// redact, so it cannot promise that directives were applied.
	CodeUnsupportedMedia Code = "unsupported_media_type"
	// CodeMalformed: the body does not parse (invalid JSON, not a FHIR
	// resource, not an ER7 message) or parses differently for different
	// readers (a JSON key twice in one object, ER7 headers declaring
	// different delimiters).
	CodeMalformed Code = "malformed_body"
	// CodeTooLarge: the body exceeds Config.MaxBody.
	CodeTooLarge Code = "body_too_large"
	// CodeBadDirective: a rule cannot be applied to this body (an element
	// with no HL7 v2 mapping, a value outside FF1's domain, a key this
	// engine does not hold) or was never compiled. Directives themselves
	// are checked earlier, by plan.Compile, with the same word.
	CodeBadDirective Code = "bad_directive"
	// CodeUnsupportedSegment: an HL7 v2 message holds a segment the engine
	// has no field mapping for (a Z-segment, a segment outside the known
	// set), so it cannot show that directives reached everything in it.
	CodeUnsupportedSegment Code = "unsupported_segment"
	// CodeBadConfig: the engine configuration is invalid.
	CodeBadConfig Code = "bad_config"
)

// Prefix implements errs.Code.
func (Code) Prefix() string { return "filters: " }

// Error is the one error type of the package. Detail is for operators' logs:
// it names elements and positions, never values, so it holds no PHI.
// errors.Is(err, ErrMalformed) (or any &Error{Code: c}) matches on the
// code alone.
type Error = errs.Error[Code]

// Sentinels for errors.Is.
var (
	ErrUnsupportedMedia = &Error{Code: CodeUnsupportedMedia}
	ErrMalformed        = &Error{Code: CodeMalformed}
	ErrTooLarge         = &Error{Code: CodeTooLarge}
	ErrBadDirective     = &Error{Code: CodeBadDirective}
	ErrBadConfig        = &Error{Code: CodeBadConfig}

	ErrUnsupportedSegment = &Error{Code: CodeUnsupportedSegment}
)

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err, or "" when err is not an *Error.
func CodeOf(err error) Code { return errs.CodeOf[Code](err) }
