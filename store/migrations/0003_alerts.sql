-- Alerts raised on an identity (a bulk read over its limit, say) until a
-- person clears them. At most one open alert per subject and kind: raising
-- it again keeps the first.

CREATE TABLE phigate_alerts (
    id          bigserial   PRIMARY KEY,
    subject     text        NOT NULL,
    kind        text        NOT NULL,
    raised_at   timestamptz NOT NULL,
    state       text        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'escalated', 'cleared')),
    resolved_by text        NOT NULL DEFAULT '',
    resolved_at timestamptz,
    note        text        NOT NULL DEFAULT ''
);

CREATE UNIQUE INDEX phigate_alerts_one_open ON phigate_alerts (subject, kind) WHERE state <> 'cleared';
CREATE INDEX phigate_alerts_state ON phigate_alerts (state, raised_at);
