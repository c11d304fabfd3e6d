-- Exports to object storage read a stretch in pages by keyset: (stored_at, event_id) for
-- feedback, (stored_at, response_id) for responses, (updated_at, example_id) for examples.
-- With only (tenant_id, time) to go by, every page rescanned the rows sharing the last
-- page's time (every row that existed at 0014 shares one stored_at): quadratic. These indexes
-- are the page's order, so a page starts where the last one ended. They replace 0014's, which
-- are their prefix. Built like every index before them: in the migration's transaction (the
-- runner applies each file in one; CREATE INDEX CONCURRENTLY cannot run in one), so writes to
-- the table wait while each is built. IF NOT EXISTS: an operator with large tables may build
-- them CONCURRENTLY under these names before upgrading (docs/deployment.md), and a name
-- alone is not trusted: an index of one of these names that is INVALID (a CONCURRENTLY build
-- that failed) or defined otherwise stops the migration with what to do.
DO $$
DECLARE
    wanted record;
    existing record;
BEGIN
    FOR wanted IN SELECT * FROM (VALUES
        ('trainer_feedback_by_stored_event',
         'CREATE INDEX trainer_feedback_by_stored_event ON trainer.feedback USING btree (tenant_id, stored_at, event_id)'),
        ('trainer_responses_by_stored_response',
         'CREATE INDEX trainer_responses_by_stored_response ON trainer.responses USING btree (tenant_id, stored_at, response_id)'),
        ('trainer_examples_by_updated_example',
         'CREATE INDEX trainer_examples_by_updated_example ON trainer.examples USING btree (tenant_id, updated_at, example_id)')
    ) AS w (name, definition) LOOP
        SELECT c.relkind, i.indisvalid, pg_get_indexdef(c.oid) AS definition INTO existing
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_index i ON i.indexrelid = c.oid
        WHERE n.nspname = 'trainer' AND c.relname = wanted.name;
        CONTINUE WHEN NOT FOUND;
        IF existing.relkind <> 'i' THEN
            RAISE EXCEPTION 'trainer.% exists and is not an index; rename or drop it, then migrate again',
                wanted.name;
        ELSIF NOT existing.indisvalid THEN
            RAISE EXCEPTION 'index trainer.% is INVALID (a failed CREATE INDEX CONCURRENTLY); DROP INDEX CONCURRENTLY trainer.% and build it again, or drop it and let the migration build it',
                wanted.name, wanted.name;
        ELSIF existing.definition <> wanted.definition THEN
            RAISE EXCEPTION 'index trainer.% is "%", not "%"; drop it and build it as the latter, or let the migration build it',
                wanted.name, existing.definition, wanted.definition;
        END IF;
    END LOOP;
END
$$;
CREATE INDEX IF NOT EXISTS trainer_feedback_by_stored_event
    ON trainer.feedback (tenant_id, stored_at, event_id);
CREATE INDEX IF NOT EXISTS trainer_responses_by_stored_response
    ON trainer.responses (tenant_id, stored_at, response_id);
CREATE INDEX IF NOT EXISTS trainer_examples_by_updated_example
    ON trainer.examples (tenant_id, updated_at, example_id);
DROP INDEX IF EXISTS trainer.trainer_feedback_by_stored;
DROP INDEX IF EXISTS trainer.trainer_responses_by_stored;
DROP INDEX IF EXISTS trainer.trainer_examples_by_updated;
