-- Duplicate detection compares a new example with the stored originals of its group only
-- (`duplicate_of IS NULL`). Indexing every example made each lookup visit all the near copies of
-- a popular text as well, so storing an example cost time proportional to the examples already
-- stored: a trainer drained a few hundred events a second and slowed as the table grew.
-- Indexing the originals alone keeps a lookup proportional to the distinct texts it could match.

DROP INDEX trainer.trainer_examples_exact;
DROP INDEX trainer.trainer_examples_sketch;
CREATE INDEX trainer_examples_exact ON trainer.examples (tenant_id, dedupe_group, content_hash, seq)
    WHERE duplicate_of IS NULL;
CREATE INDEX trainer_examples_sketch ON trainer.examples USING gin (sketch)
    WHERE duplicate_of IS NULL;
-- Near-duplicate candidates are the newest originals sharing a key with the example. When most
-- of a group shares keys (templated prompts), walking the group's originals newest first finds
-- them after a few rows, where the GIN index would return the whole group to be sorted.
CREATE INDEX trainer_examples_newest_originals ON trainer.examples (tenant_id, dedupe_group, seq DESC)
    WHERE duplicate_of IS NULL;

-- When an original is deleted, its oldest duplicate becomes the original: found by this index
-- rather than by reading every example.
CREATE INDEX trainer_examples_duplicates ON trainer.examples (duplicate_of, seq)
    WHERE duplicate_of IS NOT NULL;
