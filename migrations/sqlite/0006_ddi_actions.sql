-- The numbers the hawkBit DDI API hands out for actions. DDI clients keep
-- an action id in a signed 32-bit integer (SWUpdate, Zephyr), and ours are
-- 64-bit; each (action, attempt) gets a number of its own here, at most
-- 2^31 - 1, the same in every process and after restarts. A retry is a new
-- attempt and so a new number: clients skip an action id they already
-- finished.
CREATE TABLE ddi_actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id <= 2147483647),
    action_id   TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    UNIQUE (action_id, attempt)
);
