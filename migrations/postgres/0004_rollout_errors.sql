-- What the rollout loop last failed on for a campaign (an error, or a panic
-- it caught), so one broken campaign is visible on itself instead of
-- stopping the others: cleared by its next successful tick. failed_ticks
-- counts consecutive failures; past a threshold the rollout pauses it.
ALTER TABLE campaigns ADD COLUMN last_error TEXT;
ALTER TABLE campaigns ADD COLUMN last_error_at BIGINT;
ALTER TABLE campaigns ADD COLUMN failed_ticks INTEGER NOT NULL DEFAULT 0;
