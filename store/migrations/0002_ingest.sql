-- The clinical event feeds (internal/ingest: HL7 v2 ADT over MLLP, FHIR
-- CareTeam and Encounter), version 2. Every replica that takes a feed
-- writes here, so they agree on which messages were applied and on what
-- each patient's (or resource's) last applied event said.

-- One row a message that was applied, or acknowledged without a change
-- (stale): a message that comes again is a duplicate and changes
-- nothing. sender is the sending application and facility (MSH-3, MSH-4)
-- for HL7, "" for FHIR; message_id is MSH-10, or the resource's
-- type/id/_history/version.
CREATE TABLE phigate_ingest_messages (
    source      text        NOT NULL,
    sender      text        NOT NULL,
    message_id  text        NOT NULL,
    subject     text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('applied', 'stale')),
    event_time  timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, sender, message_id)
);

CREATE INDEX phigate_ingest_messages_received ON phigate_ingest_messages (received_at);

-- What a feed last said about one subject (a patient for ADT, a resource
-- for FHIR): the practitioners named, with their roles, and what an undo
-- needs. event_time is the newest applied event's: an older one is stale.
CREATE TABLE phigate_ingest_state (
    source     text        NOT NULL,
    subject    text        NOT NULL,
    event_time timestamptz NOT NULL,
    state      jsonb       NOT NULL,
    PRIMARY KEY (source, subject)
);
