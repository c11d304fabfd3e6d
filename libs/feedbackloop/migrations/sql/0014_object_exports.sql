-- Exports to object storage, incremental by time: when each stored feedback event and logged
-- response reached the trainer (an event reported late still lands in the next increment), and
-- how far each tenant's exports have gone.
ALTER TABLE trainer.feedback ADD COLUMN stored_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE trainer.responses ADD COLUMN stored_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX trainer_feedback_by_stored ON trainer.feedback (tenant_id, stored_at);
CREATE INDEX trainer_responses_by_stored ON trainer.responses (tenant_id, stored_at);
CREATE INDEX trainer_examples_by_updated ON trainer.examples (tenant_id, updated_at);

CREATE TABLE trainer.object_exports (
    tenant_id    text NOT NULL,
    stream       text NOT NULL CHECK (stream IN ('examples', 'feedback', 'responses')),
    exported_to  timestamptz NOT NULL,
    objects      integer NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, stream)
);
