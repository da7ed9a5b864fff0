-- The central copy of every replica's audit trail (docs/central-audit.md).
-- Each replica ships its records' exact frame bytes, so each chain can be
-- verified here as on the replica, with the columns a query selects on
-- beside them. Nothing in this file depends on another migration: it may
-- be applied before or after 0002, and beside 0003_alerts, which was
-- written at the same time and shares its number.

-- One row per shipping trail. genesis is the hash of the trail's record 1:
-- a second chain claiming the same replica id is refused by it.
CREATE TABLE phigate_audit_replicas (
    replica       text        PRIMARY KEY,
    key_id        text        NOT NULL,
    genesis       bytea       NOT NULL CHECK (length(genesis) = 32),
    host          text        NOT NULL DEFAULT '',
    -- The newest durable sequence the replica had when it last shipped:
    -- records up to it that the centre lacks are a gap verify names.
    local_head    bigint      NOT NULL DEFAULT 0,
    reported_at   timestamptz,
    registered_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE phigate_audit_records (
    replica     text        NOT NULL REFERENCES phigate_audit_replicas (replica),
    seq         bigint      NOT NULL CHECK (seq > 0),
    frame       bytea       NOT NULL, -- header, payload and record hash, as in the segment
    kind        text        NOT NULL,
    recorded    timestamptz,
    decision_id text        NOT NULL DEFAULT '',
    user_id     text        NOT NULL DEFAULT '',
    fhir_user   text        NOT NULL DEFAULT '',
    patients    text[]      NOT NULL DEFAULT '{}',
    outcome     text        NOT NULL DEFAULT '',
    break_glass boolean     NOT NULL DEFAULT false,
    shipped_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (replica, seq)
);

CREATE INDEX phigate_audit_records_recorded ON phigate_audit_records (recorded);
CREATE INDEX phigate_audit_records_decision ON phigate_audit_records (decision_id) WHERE decision_id <> '';
CREATE INDEX phigate_audit_records_user ON phigate_audit_records (user_id);
CREATE INDEX phigate_audit_records_fhir_user ON phigate_audit_records (fhir_user) WHERE fhir_user <> '';
CREATE INDEX phigate_audit_records_patients ON phigate_audit_records USING gin (patients);

-- Signed checkpoints, as the replica wrote them; a signature names one
-- statement, so it is the key.
CREATE TABLE phigate_audit_checkpoints (
    replica    text   NOT NULL REFERENCES phigate_audit_replicas (replica),
    size       bigint NOT NULL,
    head       text   NOT NULL,
    segment    text   NOT NULL,
    byte_offset bigint NOT NULL,
    signed_at  text   NOT NULL,
    key_id     text   NOT NULL,
    sig        text   NOT NULL,
    PRIMARY KEY (replica, sig)
);

CREATE INDEX phigate_audit_checkpoints_size ON phigate_audit_checkpoints (replica, size);

-- A record offered for a (replica, seq) the centre holds with other bytes.
-- The stored record is kept; the offered one is kept here as evidence, and
-- the replica stops shipping until someone looks.
CREATE TABLE phigate_audit_conflicts (
    replica     text        NOT NULL,
    seq         bigint      NOT NULL,
    offered     bytea       NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now()
);
