-- Vehicle credentials: a vehicle authenticates with one on every protocol
-- (HTTP bearer, DDI TargetToken, MQTT password). Only a SHA-256 of the
-- secret is kept. A vehicle may hold several during a rotation.
CREATE TABLE vehicle_credentials (
    id          TEXT PRIMARY KEY,
    vin         TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX vehicle_credentials_vin ON vehicle_credentials (vin);
