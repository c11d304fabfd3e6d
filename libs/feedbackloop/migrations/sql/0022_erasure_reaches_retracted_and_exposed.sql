-- Erasure reaches what was removed before it, and what metrics keeps of a user.
--
-- trainer: a retraction keeps the erased-user digests of the example's users (never the ids),
-- so an erasure after an opt-out or a superseding change still finds the examples the user's
-- data made: it records an `erasure` retraction of each (published on the training-examples
-- topic, so the webhooks consumer drops their deliveries) and the object exports rewrite the
-- increments holding them. Rows from before this migration have no digests: an erasure cannot
-- find those (the README says so).
ALTER TABLE trainer.example_retractions ADD COLUMN user_digests text[];
CREATE INDEX trainer_retractions_by_user ON trainer.example_retractions USING gin (user_digests);

-- metrics: the tombstones of erased users, for the experiment units (the one place metrics
-- keeps a user, as a digest): an exposure that happened before the erasure but arrives after
-- it is not counted as a unit again.
CREATE TABLE metrics.erased_users (
    tenant_id    text NOT NULL,
    user_digest  text NOT NULL,
    erased_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_digest)
);
