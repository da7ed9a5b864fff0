package authz

import (
	"fmt"

	"github.com/phigate/phigate/internal/errs"
)

// Code classifies a failure on the decision path. Codes are stable words,
// usable with errors.Is and as metric labels.
type Code string

const (
	CodeMissingToken Code = "missing_token"
	CodeInvalidToken Code = "invalid_token"
	CodeExpiredToken Code = "expired_token"
	CodeAmbiguous    Code = "ambiguous_request"
	CodeUnsupported  Code = "unsupported_request"
	CodePolicy       Code = "policy_error"
	CodeAudit        Code = "audit_error"
	CodeCanceled     Code = "canceled"
	// CodeOverLimit: the request names more patients, ids in one parameter
	// value, or bundle entries than RequestConfig allows. The caps bound the
	// work and the audit record one request can cause.
	CodeOverLimit Code = "over_limit"
	// CodeTooLarge: the request body exceeds RequestConfig.MaxBody.
	CodeTooLarge Code = "body_too_large"
	// CodeNotFound: an OwnerResolver found no stored resource to read the
	// owner from. Only an update may then proceed, as a create.
	CodeNotFound Code = "not_found"
	// CodeOwnerUnresolved: the patients owning the resource a write changes
	// could not be read (no resolver, upstream error, timeout, unreadable
	// resource). The write is refused: it cannot be authorized on the
	// record it changes.
	CodeOwnerUnresolved Code = "owner_unresolved"
	// CodeNoRoute: the path is neither under the FHIR base nor a configured
	// legacy route. Nothing is there to authorize, so the answer is 404,
	// whoever asks.
	CodeNoRoute Code = "no_route"
	// CodeStoreUnavailable: the shared store could not answer for state
	// the decision needs (a consent, a relationship, a grant, an
	// elevation), and no fresh-enough copy was cached; or a break-glass
	// grant could not be kept.
	CodeStoreUnavailable Code = "store_unavailable"
	// CodeCountersUnavailable: the throttle's or the usage limits'
	// counters could not be read or written.
	CodeCountersUnavailable Code = "counters_unavailable"
)

// Prefix implements errs.Code: the decision path's codes stand alone
// in logs and audit records.
func (Code) Prefix() string { return "" }

// Error is the one error type of the decision path. Detail is for operators'
// logs and must hold no PHI; the client only ever sees the status.
// errors.Is(err, &Error{Code: c}) matches on the code alone.
type Error = errs.Error[Code]

// Errorf builds an Error with a formatted detail.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err, or "" when err is not an *Error.
func CodeOf(err error) Code { return errs.CodeOf[Code](err) }

// StatusOf maps a failure to the HTTP status the client receives. One table,
// so every path agrees.
func StatusOf(err error) int {
	switch CodeOf(err) {
	case CodeMissingToken, CodeInvalidToken, CodeExpiredToken:
		return 401
	case CodeAmbiguous, CodeUnsupported, CodeOverLimit:
		return 400
	case CodeNoRoute:
		return 404
	case CodeTooLarge:
		return 413
	case CodeCanceled, CodePolicy, CodeAudit, CodeOwnerUnresolved, CodeStoreUnavailable, CodeCountersUnavailable:
		// Our own failure, not the caller's: still no data, but an honest status.
		return 503
	default:
		return 403
	}
}
