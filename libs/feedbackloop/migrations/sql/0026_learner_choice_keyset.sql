-- The learner reads choices in the keyset order (recorded_at, event_id), and remembers how far
-- it read as such a pair: a batch insert gives its choices one recorded_at, and a refit or an
-- incremental step that stopped within them (at its limit) skipped the rest for good when its
-- mark was the time alone.
--
-- The order the incremental steps page in, replacing 0006's, its prefix. Built first, in the
-- migration's transaction like 0025's, so the ALTER TABLE below holds its lock on
-- learner.refit_state for a moment, not for the build. IF NOT EXISTS keeps one an operator
-- built CONCURRENTLY under this name first (docs/deployment.md); a name alone is not trusted:
-- an index of this name that is INVALID (a CONCURRENTLY build that failed) or defined
-- otherwise stops the migration with what to do.
DO $$
DECLARE
    wanted constant text := 'CREATE INDEX choices_by_recorded_event ON learner.choices USING btree (tenant_id, recorded_at, event_id)';
    existing record;
BEGIN
    SELECT c.relkind, i.indisvalid, pg_get_indexdef(c.oid) AS definition INTO existing
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_index i ON i.indexrelid = c.oid
    WHERE n.nspname = 'learner' AND c.relname = 'choices_by_recorded_event';
    IF NOT FOUND THEN
        RETURN;
    ELSIF existing.relkind <> 'i' THEN
        RAISE EXCEPTION 'learner.choices_by_recorded_event exists and is not an index; rename or drop it, then migrate again';
    ELSIF NOT existing.indisvalid THEN
        RAISE EXCEPTION 'index learner.choices_by_recorded_event is INVALID (a failed CREATE INDEX CONCURRENTLY); DROP INDEX CONCURRENTLY learner.choices_by_recorded_event and build it again, or drop it and let the migration build it';
    ELSIF existing.definition <> wanted THEN
        RAISE EXCEPTION 'index learner.choices_by_recorded_event is "%", not "%"; drop it and build it as the latter, or let the migration build it',
            existing.definition, wanted;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS choices_by_recorded_event
    ON learner.choices (tenant_id, recorded_at, event_id);
DROP INDEX IF EXISTS learner.choices_by_recorded;

-- `*_through_event` is the event_id of the last choice read at `*_through`; the greatest uuid
-- (every row before this migration) reads "all at that time", which is what those rows meant.
ALTER TABLE learner.refit_state
    ADD COLUMN fitted_through_event uuid NOT NULL
        DEFAULT 'ffffffff-ffff-ffff-ffff-ffffffffffff',
    ADD COLUMN updated_through_event uuid NOT NULL
        DEFAULT 'ffffffff-ffff-ffff-ffff-ffffffffffff';
