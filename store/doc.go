// Package store holds phigate's state that outlives a request: break-glass
// grants. The in-memory store is the embedded default for a single
// replica; a shared backend is needed when several replicas serve one
// Envoy fleet.
package store
