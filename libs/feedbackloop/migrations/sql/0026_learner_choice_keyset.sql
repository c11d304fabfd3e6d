-- The learner reads choices in the keyset order (recorded_at, event_id), and remembers how far
-- it read as such a pair: a batch insert gives its choices one recorded_at, and a refit or an
-- incremental step that stopped within them (at its limit) skipped the rest for good when its
-- mark was the time alone. `*_through_event` is the event_id of the last choice read at
-- `*_through`; the greatest uuid (every row before this migration) reads "all at that time",
-- which is what those rows meant.
ALTER TABLE learner.refit_state
    ADD COLUMN fitted_through_event uuid NOT NULL
        DEFAULT 'ffffffff-ffff-ffff-ffff-ffffffffffff',
    ADD COLUMN updated_through_event uuid NOT NULL
        DEFAULT 'ffffffff-ffff-ffff-ffff-ffffffffffff';

-- The order the incremental steps page in, replacing 0006's, its prefix. Built in the
-- migration's transaction like 0025's; IF NOT EXISTS keeps one an operator built CONCURRENTLY
-- under this name first (docs/deployment.md).
CREATE INDEX IF NOT EXISTS choices_by_recorded_event
    ON learner.choices (tenant_id, recorded_at, event_id);
DROP INDEX IF EXISTS learner.choices_by_recorded;
