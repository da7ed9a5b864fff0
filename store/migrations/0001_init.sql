-- phigate's shared state, version 1. Applied by `phigate store migrate`
-- inside one transaction under an advisory lock; never edited once
-- released: a change is a new numbered file.

CREATE TABLE phigate_grants (
    subject    text   NOT NULL,
    patient    text   NOT NULL,
    reason     text   NOT NULL,
    expires_ns bigint NOT NULL,
    PRIMARY KEY (subject, patient)
);

CREATE TABLE phigate_relationships (
    practitioner text        NOT NULL,
    patient      text        NOT NULL,
    role         text        NOT NULL,
    source       text        NOT NULL,
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz,
    PRIMARY KEY (practitioner, patient, role, source),
    CHECK (valid_until IS NULL OR valid_until >= valid_from)
);

CREATE INDEX phigate_relationships_patient ON phigate_relationships (patient);

CREATE TABLE phigate_consents (
    id          text        PRIMARY KEY,
    patient     text        NOT NULL,
    effect      text        NOT NULL CHECK (effect IN ('deny', 'restrict')),
    purpose     text        NOT NULL DEFAULT '',
    label       text        NOT NULL DEFAULT '',
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz,
    CHECK (purpose <> '' OR label <> ''),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);

CREATE INDEX phigate_consents_patient ON phigate_consents (patient);

CREATE TABLE phigate_elevations (
    subject    text        NOT NULL,
    role       text        NOT NULL,
    reason     text        NOT NULL,
    granted_by text        NOT NULL,
    expires    timestamptz NOT NULL,
    PRIMARY KEY (subject, role)
);
