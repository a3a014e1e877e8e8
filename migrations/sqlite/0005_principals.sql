-- Principals: the people and services tokens belong to. Four-eyes approval
-- compares principals, not token names, so a second token of the same
-- person is still the same person.
CREATE TABLE principals (
    name        TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('person', 'service')),
    -- The principal who provisioned this one ('system' for the bootstrap,
    -- 'migration' for principals made from the tokens of an earlier schema).
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Every existing token becomes a person named after the token, so earlier
-- databases keep working as before: four-eyes compared token names then.
-- The bootstrap admin token's person is 'admin' (it shares that principal
-- with a token named 'admin', if one exists).
INSERT INTO principals (name, kind, created_by, created_at)
SELECT CASE WHEN name = 'bootstrap-admin' THEN 'admin' ELSE name END, 'person', 'migration', MIN(created_at)
FROM api_tokens
GROUP BY CASE WHEN name = 'bootstrap-admin' THEN 'admin' ELSE name END;

-- SQLite cannot add a NOT NULL foreign key column: rebuild the table.
CREATE TABLE api_tokens_new (
    id           TEXT PRIMARY KEY NOT NULL,
    -- The token's label; the principal is who it belongs to.
    name         TEXT NOT NULL,
    principal    TEXT NOT NULL REFERENCES principals (name),
    role         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
INSERT INTO api_tokens_new (id, name, principal, role, token_hash, created_at, revoked_at)
SELECT id, name, CASE WHEN name = 'bootstrap-admin' THEN 'admin' ELSE name END, role, token_hash, created_at, revoked_at
FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;
CREATE INDEX api_tokens_principal ON api_tokens (principal);

-- What the bootstrap token created is now the admin's: without this, the
-- admin could approve a draft they wrote before the upgrade.
UPDATE campaigns SET created_by = 'admin' WHERE created_by = 'bootstrap-admin';
UPDATE campaigns SET approved_by = 'admin' WHERE approved_by = 'bootstrap-admin';
UPDATE packages SET created_by = 'admin' WHERE created_by = 'bootstrap-admin';
