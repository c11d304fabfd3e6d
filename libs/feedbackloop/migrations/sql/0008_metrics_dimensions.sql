-- metrics: more dimensions on the feedback rollups, hour and day rollups kept in the same
-- transaction as the minute ones, and the recommendation rollups (sessions, choices, chosen
-- rank, satisfaction, decision time). Every rollup is exact: it changes only together with the
-- fact rows in metrics.*_facts and the processed event id, so redelivery never double counts.

-- Feedback: prompt version, experiment, variant, language and feature, taken from the logged
-- response (or, until it is logged, from the feedback's own envelope; 'unknown' otherwise).
ALTER TABLE metrics.response_dims
    ADD COLUMN prompt_version text NOT NULL DEFAULT 'unknown',
    ADD COLUMN experiment     text NOT NULL DEFAULT 'unknown',
    ADD COLUMN variant        text NOT NULL DEFAULT 'unknown',
    ADD COLUMN language       text NOT NULL DEFAULT 'unknown',
    ADD COLUMN feature        text NOT NULL DEFAULT 'unknown';

ALTER TABLE metrics.feedback_facts
    ADD COLUMN prompt_version text NOT NULL DEFAULT 'unknown',
    ADD COLUMN experiment     text NOT NULL DEFAULT 'unknown',
    ADD COLUMN variant        text NOT NULL DEFAULT 'unknown',
    ADD COLUMN language       text NOT NULL DEFAULT 'unknown',
    ADD COLUMN feature        text NOT NULL DEFAULT 'unknown';

ALTER TABLE metrics.feedback_minute
    ADD COLUMN prompt_version text NOT NULL DEFAULT 'unknown',
    ADD COLUMN experiment     text NOT NULL DEFAULT 'unknown',
    ADD COLUMN variant        text NOT NULL DEFAULT 'unknown',
    ADD COLUMN language       text NOT NULL DEFAULT 'unknown',
    ADD COLUMN feature        text NOT NULL DEFAULT 'unknown';
ALTER TABLE metrics.feedback_minute DROP CONSTRAINT feedback_minute_pkey;
ALTER TABLE metrics.feedback_minute ADD PRIMARY KEY
    (tenant_id, bucket, action_type, model, prompt_version, experiment, variant, language, feature);

-- Coarser rollups: the same rows with the bucket truncated (UTC) to the hour and the day, so a
-- query over months reads at most ~24x / ~1440x fewer rows. Backfilled from the minute rollup.
CREATE TABLE metrics.feedback_hour (LIKE metrics.feedback_minute INCLUDING ALL);
CREATE TABLE metrics.feedback_day (LIKE metrics.feedback_minute INCLUDING ALL);
INSERT INTO metrics.feedback_hour (tenant_id, bucket, action_type, model, thumbs_up, thumbs_down,
    rating_sum, rating_count, comments, corrections, replays_useful, replays_not_useful,
    prompt_version, experiment, variant, language, feature)
SELECT tenant_id, date_trunc('hour', bucket, 'UTC'), action_type, model,
       sum(thumbs_up), sum(thumbs_down), sum(rating_sum), sum(rating_count), sum(comments),
       sum(corrections), sum(replays_useful), sum(replays_not_useful),
       prompt_version, experiment, variant, language, feature
FROM metrics.feedback_minute
GROUP BY tenant_id, date_trunc('hour', bucket, 'UTC'), action_type, model,
         prompt_version, experiment, variant, language, feature;
INSERT INTO metrics.feedback_day (tenant_id, bucket, action_type, model, thumbs_up, thumbs_down,
    rating_sum, rating_count, comments, corrections, replays_useful, replays_not_useful,
    prompt_version, experiment, variant, language, feature)
SELECT tenant_id, date_trunc('day', bucket, 'UTC'), action_type, model,
       sum(thumbs_up), sum(thumbs_down), sum(rating_sum), sum(rating_count), sum(comments),
       sum(corrections), sum(replays_useful), sum(replays_not_useful),
       prompt_version, experiment, variant, language, feature
FROM metrics.feedback_minute
GROUP BY tenant_id, date_trunc('day', bucket, 'UTC'), action_type, model,
         prompt_version, experiment, variant, language, feature;

-- Recommendations: a session's dimensions (first session_started wins); choices that arrive
-- before their session are counted under provisional dimensions and moved when it arrives.
CREATE TABLE metrics.session_dims (
    tenant_id         text NOT NULL,
    session_id        text NOT NULL,
    algorithm_version text NOT NULL,
    segment           text NOT NULL,
    experiment        text NOT NULL,
    variant           text NOT NULL,
    PRIMARY KEY (tenant_id, session_id)
);

CREATE TABLE metrics.choice_facts (
    tenant_id          text NOT NULL,
    event_id           uuid NOT NULL,
    session_id         text NOT NULL,
    bucket             timestamptz NOT NULL,
    algorithm_version  text NOT NULL,
    segment            text NOT NULL,
    experiment         text NOT NULL,
    variant            text NOT NULL,
    resolved           boolean NOT NULL,
    sessions           integer NOT NULL,
    choices            integer NOT NULL,
    none_chosen        integer NOT NULL,
    chosen_rank_sum    integer NOT NULL,
    chosen_rank_count  integer NOT NULL,
    satisfaction_sum   integer NOT NULL,
    satisfaction_count integer NOT NULL,
    decision_ms_sum    bigint NOT NULL,
    decision_count     integer NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX choice_facts_unresolved ON metrics.choice_facts (tenant_id, session_id)
    WHERE NOT resolved;

CREATE TABLE metrics.recommendation_minute (
    tenant_id          text NOT NULL,
    bucket             timestamptz NOT NULL,
    algorithm_version  text NOT NULL,
    segment            text NOT NULL,
    experiment         text NOT NULL,
    variant            text NOT NULL,
    sessions           bigint NOT NULL DEFAULT 0,
    choices            bigint NOT NULL DEFAULT 0,
    none_chosen        bigint NOT NULL DEFAULT 0,
    chosen_rank_sum    bigint NOT NULL DEFAULT 0,
    chosen_rank_count  bigint NOT NULL DEFAULT 0,
    satisfaction_sum   bigint NOT NULL DEFAULT 0,
    satisfaction_count bigint NOT NULL DEFAULT 0,
    decision_ms_sum    bigint NOT NULL DEFAULT 0,
    decision_count     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, bucket, algorithm_version, segment, experiment, variant)
);
CREATE TABLE metrics.recommendation_hour (LIKE metrics.recommendation_minute INCLUDING ALL);
CREATE TABLE metrics.recommendation_day (LIKE metrics.recommendation_minute INCLUDING ALL);
