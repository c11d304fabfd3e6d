-- trainer: training examples built from feedback joined with its response, stored for export
-- and published on the training-examples topic through an outbox (published_revision).

-- The conversation an event belongs to: the train/eval split is a hash of it.
ALTER TABLE trainer.responses ADD COLUMN IF NOT EXISTS session_id text;
ALTER TABLE trainer.feedback ADD COLUMN IF NOT EXISTS session_id text;

CREATE SEQUENCE trainer.example_seq;

CREATE TABLE trainer.examples (
    example_id          uuid PRIMARY KEY,
    tenant_id           text NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('sft', 'preference', 'kto', 'eval')),
    split               text NOT NULL CHECK (split IN ('train', 'eval')),
    conversation_id     text NOT NULL,
    response_id         text NOT NULL,
    -- The (hashed) users whose events the example came from: opt-out and erasure find it here.
    user_ids            text[] NOT NULL DEFAULT '{}',
    model               text,
    action_type         text,
    quality             real NOT NULL,
    occurred_at         timestamptz NOT NULL,
    record              jsonb NOT NULL,
    dedupe_group        text NOT NULL,
    content_hash        text NOT NULL,
    sketch              bigint[] NOT NULL,
    -- Set when an equal or near-equal example of the same tenant and group was stored first;
    -- such an example is neither published nor exported.
    duplicate_of        uuid,
    revision            integer NOT NULL DEFAULT 1,
    published_revision  integer NOT NULL DEFAULT 0,
    -- Publishing order: a new revision takes a new place, after what is already queued.
    seq                 bigint NOT NULL DEFAULT nextval('trainer.example_seq'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    published_at        timestamptz
);

CREATE INDEX trainer_examples_by_response ON trainer.examples (tenant_id, response_id);
CREATE INDEX trainer_examples_by_user ON trainer.examples USING gin (user_ids);
CREATE INDEX trainer_examples_exact ON trainer.examples (tenant_id, dedupe_group, content_hash);
CREATE INDEX trainer_examples_sketch ON trainer.examples USING gin (sketch);
CREATE INDEX trainer_examples_export ON trainer.examples (tenant_id, kind, split, occurred_at);
CREATE INDEX trainer_examples_unpublished ON trainer.examples (seq)
    WHERE published_revision < revision AND duplicate_of IS NULL;

-- Examples deleted after they were published (erasure, opt-out, superseded): the relay
-- publishes a retraction so consumers of the topic delete them too.
CREATE TABLE trainer.example_retractions (
    seq              bigint PRIMARY KEY DEFAULT nextval('trainer.example_seq'),
    example_id       uuid NOT NULL,
    tenant_id        text NOT NULL,
    conversation_id  text NOT NULL,
    reason           text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz
);

CREATE INDEX trainer_retractions_unpublished ON trainer.example_retractions (seq)
    WHERE published_at IS NULL;

-- Why a down-voted reply failed, as an OpenAI-compatible chat model explains it (optional,
-- off by default). One row per down-voted feedback event once the explainer has tried it.
CREATE TABLE trainer.failure_explanations (
    tenant_id          text NOT NULL,
    feedback_event_id  uuid NOT NULL,
    response_id        text NOT NULL,
    user_id            text,
    status             text NOT NULL CHECK (status IN ('explained', 'failed')),
    explanation        text,
    model              text,
    attempts           integer NOT NULL DEFAULT 1,
    error              text,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, feedback_event_id)
);

CREATE INDEX trainer_failure_explanations_by_response
    ON trainer.failure_explanations (tenant_id, response_id);
CREATE INDEX trainer_feedback_down ON trainer.feedback (occurred_at) WHERE thumb = 'down';

-- The retraining job's history: each run's export of the worst prompts' examples, kept for
-- manual review or submitted as a fine-tuning job to an OpenAI-compatible provider.
CREATE TABLE trainer.retraining_jobs (
    job_id            uuid PRIMARY KEY,
    tenant_id         text NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('review', 'fine_tune')),
    method            text NOT NULL CHECK (method IN ('supervised', 'dpo')),
    status            text NOT NULL,
    prompt_count      integer NOT NULL,
    example_count     integer NOT NULL,
    file_path         text,
    provider          text,
    base_url          text,
    model             text,
    provider_file_id  text,
    provider_job_id   text,
    fine_tuned_model  text,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX trainer_retraining_jobs_by_tenant ON trainer.retraining_jobs (tenant_id, created_at);

-- When the retraining job last ran (with or without finding prompts to retrain on).
CREATE TABLE trainer.retraining_runs (
    run_id      bigserial PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    jobs        integer NOT NULL
);
