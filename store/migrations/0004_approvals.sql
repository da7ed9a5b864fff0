-- Two-person approvals (bulk exports and other configured operations),
-- just-in-time elevation requests, and reviews of audited decisions.
-- Self-contained: it reads and alters no table of another migration, so
-- it applies the same before or after versions 2 and 3.

CREATE TABLE phigate_approvals (
    id        text        PRIMARY KEY,
    kind      text        NOT NULL CHECK (kind IN ('operation', 'elevation')),
    requester text        NOT NULL,
    scope     text        NOT NULL,
    reason    text        NOT NULL DEFAULT '',
    ttl_ns    bigint      NOT NULL CHECK (ttl_ns > 0),
    state     text        NOT NULL CHECK (state IN ('pending', 'approved', 'denied')),
    approver  text        NOT NULL DEFAULT '',
    created   timestamptz NOT NULL,
    decided   timestamptz,
    expires   timestamptz NOT NULL,
    used      timestamptz,
    CHECK (approver = '' OR approver <> requester)
);

CREATE INDEX phigate_approvals_requester ON phigate_approvals (requester, kind, state);
CREATE INDEX phigate_approvals_ends ON phigate_approvals (kind, expires) WHERE state = 'approved';

CREATE TABLE phigate_reviews (
    decision_id text        PRIMARY KEY,
    reviewer    text        NOT NULL,
    note        text        NOT NULL DEFAULT '',
    at          timestamptz NOT NULL
);
