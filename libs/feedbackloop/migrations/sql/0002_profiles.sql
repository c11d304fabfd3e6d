-- profiles: per user and tenant, what they accepted and rejected.
CREATE SCHEMA IF NOT EXISTS profiles;

CREATE TABLE profiles.processed_events (
    tenant_id    text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);

CREATE TABLE profiles.responses (
    tenant_id    text NOT NULL,
    response_id  text NOT NULL,
    action_type  text NOT NULL,
    model        text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, response_id)
);

CREATE TABLE profiles.feedback (
    tenant_id    text NOT NULL,
    event_id     uuid NOT NULL,
    user_id      text NOT NULL,
    response_id  text NOT NULL,
    kind         text NOT NULL,
    verdict      text NOT NULL CHECK (verdict IN ('accepted', 'rejected', 'neutral')),
    thumb        text,
    rating       smallint,
    comment      text,
    reasons      text[] NOT NULL DEFAULT '{}',
    correction   text,
    action_type  text,
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX feedback_by_user ON profiles.feedback (tenant_id, user_id, occurred_at DESC);

CREATE TABLE profiles.users (
    tenant_id         text NOT NULL,
    user_id           text NOT NULL,
    first_seen_at     timestamptz NOT NULL,
    last_seen_at      timestamptz NOT NULL,
    training_allowed  boolean NOT NULL DEFAULT true,
    consent_changed_at timestamptz,
    PRIMARY KEY (tenant_id, user_id)
);
