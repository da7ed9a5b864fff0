// Package audit is phigate's tamper-evident audit trail.
//
// Every authorization decision becomes one record: a FHIR R4 AuditEvent
// shaped after IHE Basic Audit Log Patterns (BALP), kept together with the
// policy input document that produced it (minus credentials) so the decision
// can be replayed under another policy. Responses that were redacted or had
// entries withheld get a second, linked record that names the removed element
// paths (never their values), and the user and patients of the request when
// the plan metadata carried them. A notification an obligation asked for (a
// break-glass access reported to the privacy office) gets a linked record of
// its outcome (KindNotification).
//
// # Durability
//
// Log.Record returns only once its record is on stable storage. Concurrent
// callers are group-committed: whichever records are waiting when the writer
// goroutine becomes free are encoded into one buffer, written with one
// write(2) and made durable with one fsync(2), so the cost of an fsync is
// shared by every writer waiting on it and throughput grows with concurrency.
// A failed write or fsync poisons the Log: the state of the file after a
// failed fsync is unknown, so every later Record fails (and the decision path
// denies) until the process reopens the directory, which repairs the tail.
//
// # On-disk format
//
// The directory holds segment files named seg-<first sequence, 20 digits>.pga,
// a checkpoints file checkpoints.jsonl and a copy of the public key
// (signing.pub). The Ed25519 signing key and the witness (a copy of the
// newest checkpoint) live outside it, so whoever can rewrite the directory
// holds neither what signs it nor what remembers how far it was signed. A
// segment is a run of frames:
//
//	magic "PG" | version 1 | flags | payload length u32 | sequence u64 | previous hash [32] | payload | record hash [32]
//
// All integers are big endian. The record hash is SHA-256 over a domain
// string followed by the 48 header bytes and the payload exactly as stored,
// so the canonical bytes are the stored bytes and nothing is re-serialized to
// check them. Sequence numbers start at 1 and the previous hash of record 1
// is 32 zero bytes; the chain runs across segment boundaries, so removing or
// reordering whole segments breaks it just like removing a record does.
//
// A checkpoint is a signed statement "the log had N records, the N-th record
// hash is H, and it ended at byte offset O of segment S, at time T". One is
// appended to checkpoints.jsonl at every rotation, at least every
// CheckpointEvery records, and on Close. The ones between rotations are
// signed and synced by a goroutine of their own, beside the committer, so a
// commit never waits on a checkpoint's fsyncs; if that goroutine falls
// behind it writes the newest head and skips the ones it replaces, which
// the newer checkpoint vouches for too. Records written after the newest
// checkpoint are protected by the chain alone: an attacker who can write the
// directory can drop them from the tail undetected, which is why
// CheckpointEvery bounds that window. Checkpoints can also be shipped to a
// SIEM through the sinks, so deleting the newest checkpoints is detectable
// off-host.
//
// # Keys, witness and pinning
//
// Open creates a signing key only for a trail that was never written: over
// existing records, checkpoints or a witness, a missing key is an error. At
// every checkpoint the witness file is replaced and the checkpoint goes to
// every sink; Open refuses a trail shorter than the witness or with another
// record at its size, which is what defeats cutting checkpoints.jsonl back
// and rewriting the records after it. Verify takes the trusted keys as an
// argument (VerifyTrusted, LoadTrustedKeys): a verifier pins a copy of the
// public key held elsewhere, since one read from the directory would accept
// a trail re-signed with a new key.
//
// # Size limit and quarantine
//
// No frame payload exceeds MaxFramePayload, the reader's limit; a decision
// whose record would exceed Config.MaxRecordBytes is stored as a compact
// substitute (Compact) that keeps who, the decision, the outcome and counts
// of what was dropped. If Open finds bytes it cannot read that are not a
// crash's torn write (an oversized or corrupt frame, or damage inside the
// checkpointed region), it moves everything from there to the end of the
// trail into <segment>.quarantine files, appends a KindQuarantine record
// naming the range, and keeps recording: one bad record must not stop
// phigate, and through it, everything Envoy serves. Verify reports such a
// trail with ErrQuarantined (the trail verifies around it); damage in older
// segments, which Open does not read, is left for Verify to report.
//
// # Encryption at rest
//
// With an encryption key, each record's payload is sealed on its own with
// AES-256-GCM (per-record sealing: a random 96-bit nonce prefixed to the
// ciphertext, the frame's sequence number as additional data). The chain and
// checkpoints cover the sealed bytes, so Verify checks integrity without the
// key, and with the key also proves every record opens. Per-record sealing
// keeps each frame independently readable (Query can stop anywhere) at a cost
// of 28 bytes a record. A jsonl sink seals its event lines with the same key
// (ReadJSONLines opens them); a syslog sink to an address that is not
// loopback must use TLS.
//
// # Tools
//
// Verify, Query and Replay read a directory without opening it for writing,
// so they can run beside a live phigate. WriteVerifyReport, WriteTable,
// WriteJSON, WriteBundle and WriteChanges render their results; ExitCode
// maps an error to a distinct process exit status per failure class
// (chain broken, checkpoint mismatch, bad signature, truncated, decrypt).
//
// # Central copy
//
// With a PostgreSQL store, a Shipper copies the trail to the fleet's
// centre in the background (ship.go, docs/central-audit.md): the frames'
// exact bytes, by replica id and sequence, at least once and stored once,
// and the signed checkpoints. It reads durable records from the segments
// and never holds up Record. VerifyCentral and QueryCentral read the
// centre as Verify and Query read a directory, naming every gap.
//
// # Record shape decisions
//
// The request id is carried the BALP way, as an entity of type XrequestId
// (BasicAuditEntityType) whose what.identifier.value is the id. The decision
// id is the AuditEvent id and is also an entity (audit-entity-type 2, System
// Object) whose what.identifier uses the system urn:phigate:decision-id; the
// policy rules that decided, the decision status and reason are details of
// that entity (type "rule", "status", "reason"). Entity details are used
// rather than extensions because every FHIR R4 consumer displays them without
// knowing a phigate StructureDefinition.
//
// Break-glass: a decision whose BreakGlass.Active is true carries subtype
// DCM 110127 "Emergency Override Started" and purpose of use BTG; the first
// later decision for the same user without an active override carries DCM
// 110138 "Emergency Override Stopped". The "stopped" tracking is per process:
// after a restart the first override decision of a user is again "started".
package audit
