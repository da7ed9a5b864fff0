// Package envoy is everything in phigate that speaks Envoy: the ext_authz
// and ext_proc gRPC adapters, which translate between Envoy's protos and the
// proto-free types of authz and filters, and the generation of Envoy's
// bootstrap configuration for the sidecar pattern.
//
// The adapters hold no decision logic. The ext_authz adapter always answers
// with a CheckResponse (a gRPC error only when the call itself is broken),
// and the ext_proc adapter fails closed: a body it cannot read, parse or
// redact never reaches the client.
package envoy
