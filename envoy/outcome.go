package envoy

import (
	"encoding/json"
	"net/http"
)

// operationOutcome renders the minimal FHIR OperationOutcome a client gets
// with a denial. It names the kind of failure and a reference the operator
// can find in the audit trail and logs, never the reason or any internals.
func operationOutcome(status int, reference string) []byte {
	code, text := "forbidden", "Access denied."
	switch status {
	case http.StatusUnauthorized:
		code, text = "login", "Authentication required."
	case http.StatusBadRequest:
		code, text = "invalid", "The request is ambiguous or malformed."
	case http.StatusNotAcceptable:
		code, text = "not-supported", "This access can be served as FHIR JSON only; ask for application/fhir+json."
	case http.StatusNotFound:
		code, text = "not-found", "Nothing is served at this path."
	case http.StatusTooManyRequests:
		code, text = "throttled", "Too many requests."
	case http.StatusBadGateway, http.StatusInternalServerError:
		// Only the response side answers these.
		code, text = "exception", "The response could not be released."
	case http.StatusServiceUnavailable:
		// The request side: something a decision needs (the stored
		// resource's owner, the audit trail) could not be reached.
		code, text = "transient", "The request could not be decided now."
	case http.StatusRequestEntityTooLarge:
		code, text = "too-costly", "The request is too large."
	case http.StatusRequestURITooLong:
		code, text = "too-long", "The request target is too long."
	case http.StatusRequestHeaderFieldsTooLarge:
		code, text = "too-long", "The request headers are too large."
	}
	if reference != "" {
		text += " Reference: " + reference
	}
	type issue struct {
		Severity    string `json:"severity"`
		Code        string `json:"code"`
		Diagnostics string `json:"diagnostics"`
	}
	b, _ := json.Marshal(struct {
		ResourceType string  `json:"resourceType"`
		Issue        []issue `json:"issue"`
	}{"OperationOutcome", []issue{{"error", code, text}}})
	return b
}

const fhirJSON = "application/fhir+json"
