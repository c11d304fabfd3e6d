-- learner: the choice log, each choice with the options that were shown.
CREATE SCHEMA IF NOT EXISTS learner;

CREATE TABLE learner.processed_events (
    tenant_id    text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);

CREATE TABLE learner.sessions (
    tenant_id          text NOT NULL,
    session_id         text NOT NULL,
    event_id           uuid NOT NULL,
    user_id            text,
    algorithm_version  text NOT NULL,
    segment            text,
    complexity         text,
    stated_preferences text[] NOT NULL DEFAULT '{}',
    options            jsonb NOT NULL,
    experiment         text,
    variant            text,
    occurred_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, session_id)
);

CREATE TABLE learner.choices (
    tenant_id             text NOT NULL,
    event_id              uuid NOT NULL,
    session_id            text NOT NULL,
    user_id               text,
    chosen_item_id        text,
    chosen_rank           integer,
    important_factors     text[] NOT NULL DEFAULT '{}',
    decision_time_seconds double precision,
    satisfaction          smallint,
    reasoning             text,
    occurred_at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX choices_by_session ON learner.choices (tenant_id, session_id);
CREATE INDEX choices_by_time ON learner.choices (tenant_id, occurred_at);

CREATE VIEW learner.choice_log AS
SELECT c.tenant_id, c.event_id, c.session_id, c.user_id, c.chosen_item_id, c.chosen_rank,
       c.chosen_item_id IS NULL AS none_chosen, c.important_factors, c.decision_time_seconds,
       c.satisfaction, c.reasoning, c.occurred_at,
       s.algorithm_version, s.segment, s.complexity, s.stated_preferences, s.options
FROM learner.choices c
LEFT JOIN learner.sessions s USING (tenant_id, session_id);
