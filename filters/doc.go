// Package filters redacts and checks response bodies on their way to the
// client: FHIR R4 JSON (single resources and Bundles) and HL7 v2 messages.
// It receives the plan a decision carried, compiled by package plan, and
// applies it; it never decides who may see what.
//
// The ext_proc adapter builds one Engine at start-up (NewEngine with the
// tokenization keys), decodes each request's plan against Engine.Keys and
// calls Apply per buffered response body. Every error means fail closed: no byte of the original
// body reaches the client. Result.Forbidden means the body is a single
// resource the caller may not see and the answer must be 403.
//
// FHIR JSON is never decoded into map[string]any: a validating scanner
// indexes the body in one pass, resources are expanded only where a
// directive or a check looks, and untouched spans are copied verbatim (see
// jsontree.go). The same pass refuses a key that occurs twice in one
// object, at any depth and compared after unescaping, and a key that is
// not valid UTF-8: readers disagree on which copy wins, so a check of
// either copy would not hold for the other. Every resource a directive changed loses its narrative and
// gains meta.security REDACTED; Bundle entries outside the grant, of a type
// the caller may not receive or with a non-permitted sensitivity label are
// withheld and explained by an OperationOutcome (issue code suppressed) that
// names no patient and no count. The same check reaches contained resources
// (which withhold their container), resources nested in Parameters or other
// resources (removed where they sit) and history entries that carry only
// URLs. Which elements place a resource in a patient's compartment comes
// from internal/compartment, the table the request side reads as well.
//
// HL7 v2 is filtered through a table of known segments (hl7map.go); a
// message holding any other segment, Z-segments included, is refused with
// CodeUnsupportedSegment; a batch whose headers declare other
// delimiters than the first is malformed, since every segment is read with
// the first one's.
package filters
