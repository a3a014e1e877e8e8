-- Dashboard sessions: a browser logs in with a management token once and
-- then holds only a session cookie. The row keeps the token it was opened
-- with, so revoking the token ends its sessions too; logging out deletes
-- the row. Only the SHA-256 of the cookie's secret is stored.
CREATE TABLE ui_sessions (
    id_hash     TEXT PRIMARY KEY,
    token_id    TEXT NOT NULL REFERENCES api_tokens (id),
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
