-- Reproducible exports: a snapshot keeps the documents an export wrote, in order, so the same
-- snapshot exports the same bytes later whatever feedback arrives meanwhile. An erased user's
-- rows are deleted from snapshots too; an opted-out user's are left out when it is exported.
CREATE TABLE trainer.export_snapshots (
    snapshot_id    uuid PRIMARY KEY,
    tenant_id      text NOT NULL,
    export_format  text NOT NULL,
    filters        jsonb NOT NULL,
    lines          integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trainer.snapshot_examples (
    snapshot_id  uuid NOT NULL REFERENCES trainer.export_snapshots ON DELETE CASCADE,
    line         integer NOT NULL,
    tenant_id    text NOT NULL,
    example_id   uuid NOT NULL,
    user_ids     text[] NOT NULL,
    -- json, not jsonb: the document comes back with its keys in the order it was written.
    document     json NOT NULL,
    PRIMARY KEY (snapshot_id, line)
);
CREATE INDEX trainer_snapshot_examples_by_user ON trainer.snapshot_examples USING gin (user_ids);
