// Package bench is the load generator for phigate's authorization path.
//
// It drives an ext_authz server (envoy.service.auth.v3.Authorization/Check,
// over TCP or a unix socket) or an HTTP listener (Envoy in front of a
// service) with realistic FHIR traffic drawn from a seeded scenario, and
// reports latency percentiles, throughput, outcomes, and the CPU and memory
// of the target process.
//
// Two loops answer two questions. The open loop sends at a fixed rate and
// measures every latency from the time the request was due, not from the
// time it was sent, so that a stalled target cannot hide its stall by
// slowing the generator down (coordinated omission). The closed loop keeps
// a fixed number of requests in flight to find saturation throughput.
//
// Every result is stated next to a reference run in the same invocation:
// the built-in no-op ext_authz server (Config.Baseline) or a second address
// supplied by the caller (Config.Compare), because an absolute figure from a
// shared machine means little on its own.
//
// RunSetup starts the targets a run compares when the caller names none:
// phigate in-process (with generated care-team data, a second audit
// directory as the reference, or the decision cache off), or the legacy
// service behind two Envoys, with and without phigate's filters. It imports
// the demo's service, which is why the bench lives in phigate-demo and
// never in the production binary.
package bench
