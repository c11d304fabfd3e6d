-- metrics: exact per-minute rollups of feedback, by tenant, action type and model.
CREATE SCHEMA IF NOT EXISTS metrics;

CREATE TABLE metrics.processed_events (
    tenant_id    text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);

CREATE TABLE metrics.response_dims (
    tenant_id    text NOT NULL,
    response_id  text NOT NULL,
    action_type  text NOT NULL,
    model        text NOT NULL,
    PRIMARY KEY (tenant_id, response_id)
);

-- One row per counted feedback event, with the dimensions it is currently counted under.
-- `resolved` is false while the response it is about has not been logged; when the response
-- arrives the fact moves from its provisional dimensions to the response's.
CREATE TABLE metrics.feedback_facts (
    tenant_id     text NOT NULL,
    event_id      uuid NOT NULL,
    response_id   text NOT NULL,
    bucket        timestamptz NOT NULL,
    action_type   text NOT NULL,
    model         text NOT NULL,
    resolved      boolean NOT NULL,
    thumbs_up     integer NOT NULL,
    thumbs_down   integer NOT NULL,
    rating_sum    integer NOT NULL,
    rating_count  integer NOT NULL,
    comments      integer NOT NULL,
    corrections   integer NOT NULL,
    replays_useful      integer NOT NULL,
    replays_not_useful  integer NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX feedback_facts_unresolved ON metrics.feedback_facts (tenant_id, response_id)
    WHERE NOT resolved;

CREATE TABLE metrics.feedback_minute (
    tenant_id     text NOT NULL,
    bucket        timestamptz NOT NULL,
    action_type   text NOT NULL,
    model         text NOT NULL,
    thumbs_up     bigint NOT NULL DEFAULT 0,
    thumbs_down   bigint NOT NULL DEFAULT 0,
    rating_sum    bigint NOT NULL DEFAULT 0,
    rating_count  bigint NOT NULL DEFAULT 0,
    comments      bigint NOT NULL DEFAULT 0,
    corrections   bigint NOT NULL DEFAULT 0,
    replays_useful      bigint NOT NULL DEFAULT 0,
    replays_not_useful  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, bucket, action_type, model)
);

CREATE INDEX feedback_minute_by_time ON metrics.feedback_minute (tenant_id, bucket);
