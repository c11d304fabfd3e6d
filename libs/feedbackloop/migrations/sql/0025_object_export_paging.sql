-- Exports to object storage read a stretch in pages by keyset: (stored_at, event_id) for
-- feedback, (stored_at, response_id) for responses, (updated_at, example_id) for examples.
-- With only (tenant_id, time) to go by, every page rescanned the rows sharing the last
-- page's time (every row that existed at 0014 shares one stored_at): quadratic. These indexes
-- are the page's order, so a page starts where the last one ended. They replace 0014's, which
-- are their prefix. Built like every index before them: in the migration's transaction (the
-- runner applies each file in one; CREATE INDEX CONCURRENTLY cannot run in one), so writes to
-- the table wait while each is built. IF NOT EXISTS: an operator with large tables may build
-- them CONCURRENTLY under these names before upgrading (docs/deployment.md).
CREATE INDEX IF NOT EXISTS trainer_feedback_by_stored_event
    ON trainer.feedback (tenant_id, stored_at, event_id);
CREATE INDEX IF NOT EXISTS trainer_responses_by_stored_response
    ON trainer.responses (tenant_id, stored_at, response_id);
CREATE INDEX IF NOT EXISTS trainer_examples_by_updated_example
    ON trainer.examples (tenant_id, updated_at, example_id);
DROP INDEX IF EXISTS trainer.trainer_feedback_by_stored;
DROP INDEX IF EXISTS trainer.trainer_responses_by_stored;
DROP INDEX IF EXISTS trainer.trainer_examples_by_updated;
