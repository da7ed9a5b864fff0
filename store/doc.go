// Package store holds phigate's state that outlives a request and that
// every replica of a fleet must agree on: break-glass grants, care
// relationships (practitioner and patient, with role, source and validity
// window), patient consents and opt-outs, and time-boxed elevations of a
// user (just-in-time access).
//
// Two backends implement Store: Memory, the embedded default for a single
// node (nothing to install), and Postgres, for a fleet: replicas share one
// database, and a change made through any of them reaches the others
// through PostgreSQL's LISTEN/NOTIFY (Changes), so that a replica's caches
// can drop what a change would alter.
//
// AuditCentre, on the same database, holds the fleet's copy of every
// replica's audit trail (docs/central-audit.md): what audit.Shipper
// writes and what audit query and verify --central read.
//
// Every write validates its input first and changes nothing when it is
// refused. Identifiers and reasons are stored as given; they are not
// logged.
package store
