-- trainer: feedback joined with the response it is about, and each user's training consent.
CREATE SCHEMA IF NOT EXISTS trainer;

CREATE TABLE trainer.processed_events (
    tenant_id    text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);

CREATE TABLE trainer.responses (
    tenant_id       text NOT NULL,
    response_id     text NOT NULL,
    event_id        uuid NOT NULL,
    user_id         text,
    prompt          jsonb NOT NULL,
    context         jsonb NOT NULL DEFAULT '[]',
    output          text NOT NULL,
    model           text NOT NULL,
    action_type     text NOT NULL,
    action_data     jsonb,
    feature         text,
    language        text,
    prompt_version  text,
    experiment      text,
    variant         text,
    occurred_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, response_id)
);

CREATE TABLE trainer.feedback (
    tenant_id           text NOT NULL,
    event_id            uuid NOT NULL,
    response_id         text NOT NULL,
    user_id             text,
    kind                text NOT NULL,
    thumb               text,
    rating              smallint,
    comment             jsonb,
    correction          text,
    replay              jsonb,
    inline_prompt       jsonb,
    inline_output       text,
    inline_model        text,
    inline_action_type  text,
    occurred_at         timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX trainer_feedback_by_response ON trainer.feedback (tenant_id, response_id);
CREATE INDEX trainer_feedback_by_user ON trainer.feedback (tenant_id, user_id);

CREATE TABLE trainer.consent (
    tenant_id         text NOT NULL,
    user_id           text NOT NULL,
    training_allowed  boolean NOT NULL,
    changed_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

-- Feedback arrives on its own topic, possibly before the response it is about: the join is
-- made when read, so neither order loses anything.
CREATE VIEW trainer.feedback_with_response AS
SELECT f.tenant_id, f.event_id, f.response_id, f.user_id, f.kind, f.thumb, f.rating, f.comment,
       f.correction, f.replay, f.occurred_at,
       r.response_id IS NOT NULL AS response_logged,
       COALESCE(r.prompt, f.inline_prompt) AS prompt,
       r.context,
       COALESCE(r.output, f.inline_output) AS output,
       COALESCE(r.model, f.inline_model) AS model,
       COALESCE(r.action_type, f.inline_action_type) AS action_type,
       r.action_data, r.feature, r.language, r.prompt_version
FROM trainer.feedback f
LEFT JOIN trainer.responses r USING (tenant_id, response_id);
