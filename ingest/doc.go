// Package ingest is how hospitals publish care relationships to
// phigate: HL7 v2 ADT messages over MLLP (the doctors a visit's PV1
// names, related to the patient PID-3 names, until discharge plus a
// grace period) and FHIR CareTeam and Encounter resources over HTTP
// (participants related to the subject for the resource's period).
//
// Every message is applied exactly once and in order per patient (or
// resource) through store.Ingester, in one transaction with the record
// that it was, so replicas sharing a PostgreSQL store agree; it is then
// recorded in the audit trail, and only then acknowledged. The parser of
// HL7 v2 is this package's own: it is strict about structure, and its
// errors name a position (segment, field) and never a value, so they can
// go to the sender, the log and the audit trail alike.
package ingest
