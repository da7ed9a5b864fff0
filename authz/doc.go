// Package authz is phigate's decision path, free of Envoy protos.
//
// A Check arrives as a CheckInput (what any proxy can tell us about a request).
// The Authorizer verifies the caller's identity, builds the canonical Request
// model (FHIR interaction, resource, patients touched, purpose of use,
// break-glass), asks the policy Evaluator for a Decision, hands the pair to
// the Recorder (the audit trail) and only then returns the Decision. Every
// step fails closed: an error anywhere becomes a denial with a status, never
// an allow.
//
// Identity: a bearer JWT (JWTVerifier: keys from a JWKS file or URL,
// asymmetric algorithms only, a key's type must implement the header's alg,
// verified tokens cached by SHA-256 until exp) always wins; without one, an
// mTLS principal listed in ServiceAccounts speaks for a workload.
//
// Request model: RequestParser refuses with CodeAmbiguous (400) whatever two
// reasonable implementations could read differently — encoded delimiters,
// dot segments, repeated or trailing slashes, path parameters, control
// bytes, resource types not spelled exactly as in R4, disagreeing repeats of
// a patient parameter, override headers, tokens in the query, duplicate JSON
// keys — so the upstream acts on exactly the request the policy saw. It
// lists every patient a request touches, per the R4 Patient
// CompartmentDefinition, and sets AllPatients when a request on patient data
// is not pinned to named patients. Only a plain patient parameter pins; a
// modifier or a chain (subject:Patient=, patient._id=) may be ignored by
// the upstream and reads as all patients. IncludedTypes lists every type
// an _include or _revinclude can bring, and an include that can bring
// other patients' data reads as all patients unless the search's own pin
// bounds it. Caps on patients, ids per parameter value and bundle entries
// (400) and on the body (413) bound the work one request can cause.
//
// Without an identity only the capability statement reaches the policy;
// anything else is refused with 401 before any policy work or owner read,
// and its record lists a few patients and counts the rest.
//
// Writes: an update, patch, delete or instance operation on patient data
// is decided on the patients who own the stored resource (read through an
// OwnerResolver and recorded as its own read before the decision) together
// with those its new body names. Owners that cannot be read refuse it.
package authz
