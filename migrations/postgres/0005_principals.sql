-- Principals: the people and services tokens belong to. Four-eyes approval
-- compares principals, not token names, so a second token of the same
-- person is still the same person.
CREATE TABLE principals (
    name        TEXT PRIMARY KEY,
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

-- The token's name is its label; the principal is who it belongs to.
ALTER TABLE api_tokens ADD COLUMN principal TEXT REFERENCES principals (name);
UPDATE api_tokens SET principal = CASE WHEN name = 'bootstrap-admin' THEN 'admin' ELSE name END;
ALTER TABLE api_tokens ALTER COLUMN principal SET NOT NULL;
CREATE INDEX api_tokens_principal ON api_tokens (principal);

-- What the bootstrap token created is now the admin's: without this, the
-- admin could approve a draft they wrote before the upgrade.
UPDATE campaigns SET created_by = 'admin' WHERE created_by = 'bootstrap-admin';
UPDATE campaigns SET approved_by = 'admin' WHERE approved_by = 'bootstrap-admin';
UPDATE packages SET created_by = 'admin' WHERE created_by = 'bootstrap-admin';
