-- When each inventory field's current value (or its source) was set, by the
-- same field paths as `provenance`, in milliseconds since the epoch. Fields
-- written before this migration have no time and show none.
ALTER TABLE vehicles ADD COLUMN provenance_at TEXT NOT NULL DEFAULT '{}';
