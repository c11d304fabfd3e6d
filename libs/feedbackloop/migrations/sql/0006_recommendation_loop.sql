-- The recommendation loop. learner: batched refits of the segment weights, each accepted
-- refit a version (an outbox too). profiles: what each user was shown and chose.
ALTER TABLE learner.choices ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX choices_by_recorded ON learner.choices (tenant_id, recorded_at);

-- Per tenant and segment: the choices the last refit covered, so only new ones count toward
-- the next. `fitted_through` is the newest `recorded_at` the last refit read.
CREATE TABLE learner.refit_state (
    tenant_id      text NOT NULL,
    segment        text NOT NULL,
    fitted_through timestamptz NOT NULL,
    fitted_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, segment)
);

-- Every accepted refit. `segment` is one of the customer segments, or 'global' for the fit
-- over every choice of the tenant that the segments are pooled toward. `published_at` is null
-- until the version was acknowledged on the weights topic: a crash between commit and publish
-- leaves it null, and the next pass publishes it.
CREATE TABLE learner.weights_versions (
    tenant_id     text NOT NULL,
    segment       text NOT NULL,
    version       integer NOT NULL,
    factors       text[] NOT NULL,
    weights       jsonb NOT NULL,
    intervals     jsonb NOT NULL,
    confidence    double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    sample_size   integer NOT NULL,
    rank_effects  jsonb NOT NULL,
    coefficients  jsonb NOT NULL,
    covariance    jsonb NOT NULL,
    fit_seconds   double precision NOT NULL,
    fitted_at     timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    PRIMARY KEY (tenant_id, segment, version)
);

CREATE INDEX weights_versions_unpublished ON learner.weights_versions (fitted_at)
    WHERE published_at IS NULL;
-- profiles: what each user was shown and chose, and the segment assigned from it.
CREATE TABLE profiles.recommendation_sessions (
    tenant_id          text NOT NULL,
    session_id         text NOT NULL,
    user_id            text NOT NULL,
    segment            text,
    complexity         text,
    stated_preferences text[] NOT NULL DEFAULT '{}',
    options            jsonb NOT NULL,
    occurred_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, session_id)
);

CREATE INDEX recommendation_sessions_by_user
    ON profiles.recommendation_sessions (tenant_id, user_id);

-- One row per decision: the chosen option (null when none was), and the options shown
-- that were passed over, so acceptance and rejection can be counted per category.
CREATE TABLE profiles.recommendation_choices (
    tenant_id             text NOT NULL,
    event_id              uuid NOT NULL,
    session_id            text NOT NULL,
    user_id               text NOT NULL,
    chosen_item_id        text,
    chosen_rank           integer,
    important_factors     text[] NOT NULL DEFAULT '{}',
    decision_time_seconds double precision,
    satisfaction          smallint,
    occurred_at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX recommendation_choices_by_user
    ON profiles.recommendation_choices (tenant_id, user_id, occurred_at DESC);

CREATE TABLE profiles.recommendation_interactions (
    tenant_id          text NOT NULL,
    event_id           uuid NOT NULL,
    session_id         text NOT NULL,
    user_id            text NOT NULL,
    item_id            text NOT NULL,
    interaction        text NOT NULL,
    time_spent_seconds double precision,
    helpful_rating     smallint,
    occurred_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX recommendation_interactions_by_user
    ON profiles.recommendation_interactions (tenant_id, user_id, occurred_at DESC);
