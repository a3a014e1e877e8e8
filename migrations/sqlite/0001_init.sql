-- Vehicle inventory. JSON columns hold tags (array), attributes (object),
-- ecus (object name -> {hw, sw}) and provenance (field path -> source).
-- Timestamps are unix milliseconds.
CREATE TABLE vehicles (
    vin        TEXT PRIMARY KEY NOT NULL,
    model      TEXT,
    model_year INTEGER,
    platform   TEXT,
    gateway    TEXT,
    protocol   TEXT,
    region     TEXT,
    country    TEXT,
    tags       TEXT NOT NULL DEFAULT '[]',
    attributes TEXT NOT NULL DEFAULT '{}',
    ecus       TEXT NOT NULL DEFAULT '{}',
    provenance TEXT NOT NULL DEFAULT '{}',
    last_seen  INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX vehicles_model ON vehicles (model, vin);
CREATE INDEX vehicles_region ON vehicles (region, vin);
CREATE INDEX vehicles_platform ON vehicles (platform, vin);
CREATE INDEX vehicles_gateway ON vehicles (gateway, vin);

-- Management API tokens; only a SHA-256 of the secret is kept.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
