-- Campaign manager: packages, campaigns, per-vehicle actions, audit log; and
-- the transactional outbox every service relays to the event bus.
-- Timestamps are unix milliseconds; JSON is stored as TEXT so both backends
-- share one row codec.

CREATE TABLE packages (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    ecu           TEXT NOT NULL,
    compatible_hw TEXT NOT NULL DEFAULT '[]',
    artifacts     TEXT NOT NULL DEFAULT '[]',
    release_notes TEXT NOT NULL DEFAULT '',
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    in_use        BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (name, version)
);

CREATE TABLE campaigns (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    state          TEXT NOT NULL,
    spec           TEXT NOT NULL,
    -- The validated spec as JSON, with package references resolved to ids.
    plan           TEXT NOT NULL,
    priority       INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    approved_by    TEXT,
    state_reason   TEXT NOT NULL DEFAULT '',
    current_wave   INTEGER NOT NULL DEFAULT -1,
    wave_opened_at BIGINT,
    launched_at    BIGINT,
    -- Set once the launch scan has created every matching vehicle's action.
    targeted_at    BIGINT,
    -- Token bucket of the max_per_minute limit: actions that may still be
    -- released, and when it was last refilled.
    release_budget DOUBLE PRECISION NOT NULL DEFAULT 0,
    budget_at      BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX campaigns_state ON campaigns (state);

-- One row per (campaign, vehicle) the campaign targets.
CREATE TABLE actions (
    id            TEXT PRIMARY KEY,
    campaign_id   TEXT NOT NULL REFERENCES campaigns (id),
    vin           TEXT NOT NULL,
    ecu           TEXT NOT NULL,
    package_id    TEXT NOT NULL REFERENCES packages (id),
    rule_index    INTEGER NOT NULL,
    bucket        INTEGER NOT NULL,
    wave          INTEGER NOT NULL,
    state         TEXT NOT NULL,
    -- 1 for open (staged .. installing): at most one open action per (vin, ecu).
    open          SMALLINT NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_seq      BIGINT NOT NULL DEFAULT -1,
    progress      INTEGER NOT NULL DEFAULT 0,
    message       TEXT NOT NULL DEFAULT '',
    model         TEXT NOT NULL DEFAULT '',
    platform      TEXT NOT NULL DEFAULT '',
    gateway       TEXT NOT NULL DEFAULT '',
    region        TEXT NOT NULL DEFAULT '',
    staged_at     BIGINT,
    finished_at   BIGINT,
    state_at      BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (campaign_id, vin)
);
CREATE INDEX actions_campaign_state ON actions (campaign_id, state, bucket);
CREATE INDEX actions_vin ON actions (vin);
CREATE UNIQUE INDEX actions_one_open ON actions (vin, ecu) WHERE open = 1;
CREATE INDEX actions_open_staged ON actions (campaign_id, staged_at) WHERE open = 1;

CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    entity      TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    action      TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_entity ON audit_log (entity_id, id);

-- Events written in the same transaction as the change they describe, then
-- relayed to the bus and deleted.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    topic       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
