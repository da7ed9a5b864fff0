// Package authz is phigate's decision path, free of Envoy protos.
//
// A Check arrives as a CheckInput (what any proxy can tell us about a request).
// The Authorizer verifies the caller's identity, builds the canonical Request
// model (FHIR interaction, resource, patients touched, purpose of use,
// break-glass), asks the policy Evaluator for a Decision, hands the pair to
// the Recorder (the audit trail) and only then returns the Decision. Every
// step fails closed: an error anywhere becomes a denial with a status, never
// an allow.
package authz
