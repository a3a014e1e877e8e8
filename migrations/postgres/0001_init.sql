-- Vehicle inventory. JSONB columns hold tags (array), attributes (object),
-- ecus (object name -> {hw, sw}) and provenance (field path -> source).
-- Timestamps are unix milliseconds, as in the SQLite schema, so both backends
-- share one row codec.
CREATE TABLE vehicles (
    vin        TEXT PRIMARY KEY,
    model      TEXT,
    model_year INTEGER,
    platform   TEXT,
    gateway    TEXT,
    protocol   TEXT,
    region     TEXT,
    country    TEXT,
    tags       JSONB NOT NULL DEFAULT '[]',
    attributes JSONB NOT NULL DEFAULT '{}',
    ecus       JSONB NOT NULL DEFAULT '{}',
    provenance JSONB NOT NULL DEFAULT '{}',
    last_seen  BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX vehicles_model ON vehicles (model, vin);
CREATE INDEX vehicles_region ON vehicles (region, vin);
CREATE INDEX vehicles_platform ON vehicles (platform, vin);
CREATE INDEX vehicles_gateway ON vehicles (gateway, vin);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
