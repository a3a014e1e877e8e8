-- What the admin dashboard reads without scanning a campaign's actions:
-- counters kept by triggers, the failed actions indexed apart, and each
-- action's recent history.

-- No action is written while the counters are built and their triggers
-- created, so none is counted twice or missed.
LOCK TABLE actions IN SHARE ROW EXCLUSIVE MODE;

-- The hardware of the targeted ECU, from the inventory at targeting.
-- Actions created before this are unknown ('').
ALTER TABLE actions ADD COLUMN hardware TEXT NOT NULL DEFAULT '';

-- Every action counts once per dimension: in `state` (key ''), in its
-- `wave` (the index), `model`, `platform`, `gateway`, `region` and
-- `hardware` (the value), and once finished in the `minute` it finished
-- (unix minutes); `retries` (key and state '') sums attempts beyond the
-- first. The sum of a key's rows here and in action_count_deltas always
-- equals a GROUP BY over actions: the triggers below keep both current in
-- the transaction that changes the action.
CREATE TABLE action_counts (
    campaign_id TEXT NOT NULL,
    dim         TEXT NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, dim, key, state)
);

-- Changes to the counts, appended by each statement that writes actions
-- and folded into action_counts by the rollout leader. Appending takes no
-- lock another writer waits for: thousands of status reports a second
-- would otherwise queue on the few rows of a campaign's counters, and
-- writers upserting them in different orders could deadlock.
CREATE TABLE action_count_deltas (
    id          BIGSERIAL PRIMARY KEY,
    campaign_id TEXT NOT NULL,
    dim         TEXT NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           BIGINT NOT NULL
);
CREATE INDEX action_count_deltas_campaign ON action_count_deltas (campaign_id);

-- What one action adds to the counters (a simple SQL function, inlined by
-- the planner).
CREATE FUNCTION action_count_keys(a actions)
RETURNS TABLE (dim TEXT, key TEXT, state TEXT, n BIGINT)
LANGUAGE sql IMMUTABLE AS $$
    SELECT k.dim, k.key, k.state, k.n FROM (VALUES
        ('state', '', a.state, 1::BIGINT),
        ('wave', a.wave::TEXT, a.state, 1),
        ('model', a.model, a.state, 1),
        ('platform', a.platform, a.state, 1),
        ('gateway', a.gateway, a.state, 1),
        ('region', a.region, a.state, 1),
        ('hardware', a.hardware, a.state, 1),
        ('minute', (a.finished_at / 60000)::TEXT, a.state, 1),
        ('retries', '', '', GREATEST(a.attempts - 1, 0)::BIGINT)
    ) AS k(dim, key, state, n)
    WHERE k.key IS NOT NULL AND k.n <> 0
$$;

INSERT INTO action_counts (campaign_id, dim, key, state, n)
SELECT a.campaign_id, k.dim, k.key, k.state, SUM(k.n)
FROM actions a CROSS JOIN LATERAL action_count_keys(a) k
GROUP BY 1, 2, 3, 4;

-- Statement triggers: one aggregated append per statement, whatever the
-- number of rows it wrote.
CREATE FUNCTION actions_counted_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO action_count_deltas (campaign_id, dim, key, state, n)
    SELECT r.campaign_id, k.dim, k.key, k.state, SUM(k.n)
    FROM new_rows r CROSS JOIN LATERAL action_count_keys(r) k
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;

CREATE FUNCTION actions_counted_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO action_count_deltas (campaign_id, dim, key, state, n)
    SELECT d.campaign_id, d.dim, d.key, d.state, SUM(d.n) FROM (
        SELECT o.campaign_id, k.dim, k.key, k.state, -k.n AS n
        FROM old_rows o CROSS JOIN LATERAL action_count_keys(o) k
        UNION ALL
        SELECT r.campaign_id, k.dim, k.key, k.state, k.n
        FROM new_rows r CROSS JOIN LATERAL action_count_keys(r) k
    ) d
    GROUP BY d.campaign_id, d.dim, d.key, d.state
    HAVING SUM(d.n) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION actions_counted_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO action_count_deltas (campaign_id, dim, key, state, n)
    SELECT o.campaign_id, k.dim, k.key, k.state, -SUM(k.n)
    FROM old_rows o CROSS JOIN LATERAL action_count_keys(o) k
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;

CREATE TRIGGER actions_counted_insert AFTER INSERT ON actions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION actions_counted_insert();
CREATE TRIGGER actions_counted_update AFTER UPDATE ON actions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION actions_counted_update();
CREATE TRIGGER actions_counted_delete AFTER DELETE ON actions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION actions_counted_delete();

-- Failed, rejected and timed-out actions, by campaign and VIN: failure
-- groups, their VINs and their retry read these rows only. The message is
-- not in the key: a vehicle's message may be longer than a btree entry.
-- The state list is the one the store writes (`sql_list(is_failure)`), so
-- its queries match this predicate.
CREATE INDEX actions_failures ON actions (campaign_id, vin)
    WHERE state IN ('failed','rejected','timed_out');

-- Each action's history: the status reports vehicles sent that applied,
-- and the platform's own transitions (protocol 'platform'); the last 100
-- per action are kept.
CREATE TABLE action_events (
    id         BIGSERIAL PRIMARY KEY,
    action_id  TEXT NOT NULL,
    at         BIGINT NOT NULL,
    state      TEXT NOT NULL,
    progress   INTEGER NOT NULL DEFAULT 0,
    message    TEXT NOT NULL DEFAULT '',
    protocol   TEXT NOT NULL DEFAULT '',
    attempt    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX action_events_action ON action_events (action_id, id);
