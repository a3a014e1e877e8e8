-- What the admin dashboard reads without scanning a campaign's actions:
-- counters kept by triggers, the failed actions indexed apart, and each
-- action's recent history.

-- The hardware of the targeted ECU, from the inventory at targeting.
-- Actions created before this are unknown ('').
ALTER TABLE actions ADD COLUMN hardware TEXT NOT NULL DEFAULT '';

-- Every action counts once per dimension: in `state` (key ''), in its
-- `wave` (the index), `model`, `platform`, `gateway`, `region` and
-- `hardware` (the value), and once finished in the `minute` it finished
-- (unix minutes); `retries` (key and state '') sums attempts beyond the
-- first. The sum of a key's rows always equals a GROUP BY over actions:
-- the triggers below keep it current in the transaction that changes the
-- action. SQLite has one writer at a time, so the row triggers add to the
-- counters directly.
CREATE TABLE action_counts (
    campaign_id TEXT NOT NULL,
    dim         TEXT NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, dim, key, state)
);

-- PostgreSQL appends changes here and folds them (its writers run
-- concurrently); on SQLite it stays empty, so both read the same way.
CREATE TABLE action_count_deltas (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id TEXT NOT NULL,
    dim         TEXT NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           BIGINT NOT NULL
);
CREATE INDEX action_count_deltas_campaign ON action_count_deltas (campaign_id);

INSERT INTO action_counts (campaign_id, dim, key, state, n)
SELECT * FROM (
    SELECT a.campaign_id AS campaign_id, 'state' AS dim, '' AS key, a.state AS state, COUNT(*) AS n FROM actions a GROUP BY 1, 2, 3, 4
    UNION ALL SELECT a.campaign_id, 'wave', CAST(a.wave AS TEXT), a.state, COUNT(*) FROM actions a GROUP BY 1, 2, 3, 4
    UNION ALL SELECT a.campaign_id, 'model', a.model, a.state, COUNT(*) FROM actions a GROUP BY 1, 2, 3, 4
    UNION ALL SELECT a.campaign_id, 'platform', a.platform, a.state, COUNT(*) FROM actions a GROUP BY 1, 2, 3, 4
    UNION ALL SELECT a.campaign_id, 'gateway', a.gateway, a.state, COUNT(*) FROM actions a GROUP BY 1, 2, 3, 4
    UNION ALL SELECT a.campaign_id, 'region', a.region, a.state, COUNT(*) FROM actions a GROUP BY 1, 2, 3, 4
    UNION ALL SELECT a.campaign_id, 'hardware', a.hardware, a.state, COUNT(*) FROM actions a GROUP BY 1, 2, 3, 4
    UNION ALL SELECT a.campaign_id, 'minute', CAST(a.finished_at / 60000 AS TEXT), a.state, COUNT(*) FROM actions a WHERE a.finished_at IS NOT NULL GROUP BY 1, 2, 3, 4
    UNION ALL SELECT a.campaign_id, 'retries', '', '', SUM(MAX(a.attempts - 1, 0)) FROM actions a GROUP BY 1, 2, 3, 4
) WHERE n <> 0;

CREATE TRIGGER actions_counted_insert AFTER INSERT ON actions
BEGIN
    INSERT INTO action_counts (campaign_id, dim, key, state, n)
    SELECT campaign_id, dim, key, state, SUM(n) FROM (
        SELECT NEW.campaign_id AS campaign_id, 'state' AS dim, '' AS key, NEW.state AS state, 1 AS n
        UNION ALL SELECT NEW.campaign_id, 'wave', CAST(NEW.wave AS TEXT), NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'model', NEW.model, NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'platform', NEW.platform, NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'gateway', NEW.gateway, NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'region', NEW.region, NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'hardware', NEW.hardware, NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'minute', CAST(NEW.finished_at / 60000 AS TEXT), NEW.state, 1 WHERE NEW.finished_at IS NOT NULL
        UNION ALL SELECT NEW.campaign_id, 'retries', '', '', MAX(NEW.attempts - 1, 0)
    ) WHERE true GROUP BY campaign_id, dim, key, state HAVING SUM(n) <> 0
    ON CONFLICT (campaign_id, dim, key, state) DO UPDATE SET n = n + excluded.n;
END;

CREATE TRIGGER actions_counted_update AFTER UPDATE ON actions
    WHEN OLD.campaign_id IS NOT NEW.campaign_id OR OLD.state IS NOT NEW.state OR OLD.wave IS NOT NEW.wave OR OLD.model IS NOT NEW.model OR OLD.platform IS NOT NEW.platform OR OLD.gateway IS NOT NEW.gateway OR OLD.region IS NOT NEW.region OR OLD.hardware IS NOT NEW.hardware OR OLD.finished_at IS NOT NEW.finished_at OR OLD.attempts IS NOT NEW.attempts
BEGIN
    INSERT INTO action_counts (campaign_id, dim, key, state, n)
    SELECT campaign_id, dim, key, state, SUM(n) FROM (
        SELECT OLD.campaign_id AS campaign_id, 'state' AS dim, '' AS key, OLD.state AS state, -1 AS n
        UNION ALL SELECT OLD.campaign_id, 'wave', CAST(OLD.wave AS TEXT), OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'model', OLD.model, OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'platform', OLD.platform, OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'gateway', OLD.gateway, OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'region', OLD.region, OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'hardware', OLD.hardware, OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'minute', CAST(OLD.finished_at / 60000 AS TEXT), OLD.state, -1 WHERE OLD.finished_at IS NOT NULL
        UNION ALL SELECT OLD.campaign_id, 'retries', '', '', -(MAX(OLD.attempts - 1, 0))
        UNION ALL SELECT NEW.campaign_id, 'state', '', NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'wave', CAST(NEW.wave AS TEXT), NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'model', NEW.model, NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'platform', NEW.platform, NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'gateway', NEW.gateway, NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'region', NEW.region, NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'hardware', NEW.hardware, NEW.state, 1
        UNION ALL SELECT NEW.campaign_id, 'minute', CAST(NEW.finished_at / 60000 AS TEXT), NEW.state, 1 WHERE NEW.finished_at IS NOT NULL
        UNION ALL SELECT NEW.campaign_id, 'retries', '', '', MAX(NEW.attempts - 1, 0)
    ) WHERE true GROUP BY campaign_id, dim, key, state HAVING SUM(n) <> 0
    ON CONFLICT (campaign_id, dim, key, state) DO UPDATE SET n = n + excluded.n;
END;

CREATE TRIGGER actions_counted_delete AFTER DELETE ON actions
BEGIN
    INSERT INTO action_counts (campaign_id, dim, key, state, n)
    SELECT campaign_id, dim, key, state, SUM(n) FROM (
        SELECT OLD.campaign_id AS campaign_id, 'state' AS dim, '' AS key, OLD.state AS state, -1 AS n
        UNION ALL SELECT OLD.campaign_id, 'wave', CAST(OLD.wave AS TEXT), OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'model', OLD.model, OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'platform', OLD.platform, OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'gateway', OLD.gateway, OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'region', OLD.region, OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'hardware', OLD.hardware, OLD.state, -1
        UNION ALL SELECT OLD.campaign_id, 'minute', CAST(OLD.finished_at / 60000 AS TEXT), OLD.state, -1 WHERE OLD.finished_at IS NOT NULL
        UNION ALL SELECT OLD.campaign_id, 'retries', '', '', -(MAX(OLD.attempts - 1, 0))
    ) WHERE true GROUP BY campaign_id, dim, key, state HAVING SUM(n) <> 0
    ON CONFLICT (campaign_id, dim, key, state) DO UPDATE SET n = n + excluded.n;
END;

-- Failed, rejected and timed-out actions, by campaign and VIN: failure
-- groups, their VINs and their retry read these rows only. The state list
-- is the one the store writes (`sql_list(is_failure)`): SQLite uses a
-- partial index only for a query holding the same term.
CREATE INDEX actions_failures ON actions (campaign_id, vin)
    WHERE state IN ('failed','rejected','timed_out');

-- Each action's history: the status reports vehicles sent that applied,
-- and the platform's own transitions (protocol 'platform'); the last 100
-- per action are kept.
CREATE TABLE action_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id  TEXT NOT NULL,
    at         BIGINT NOT NULL,
    state      TEXT NOT NULL,
    progress   INTEGER NOT NULL DEFAULT 0,
    message    TEXT NOT NULL DEFAULT '',
    protocol   TEXT NOT NULL DEFAULT '',
    attempt    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX action_events_action ON action_events (action_id, id);
