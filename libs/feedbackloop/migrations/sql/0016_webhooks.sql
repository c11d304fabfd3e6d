-- webhooks: signed deliveries of single pieces of feedback, training examples and alert state
-- changes to each tenant's endpoints. The webhooks consumer owns this schema; the query
-- service and the CLI manage endpoints and replays through services/webhooks/admin.py.
CREATE SCHEMA IF NOT EXISTS webhooks;

CREATE TABLE webhooks.processed_events (
    tenant_id    text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);

-- An endpoint of a tenant: where to POST, the Standard Webhooks secret (whsec_...) each body is
-- signed with, and the event types it receives. `tenant_id` '*' is the endpoint configured
-- from FEEDBACKLOOP_ALERT_WEBHOOK_URL: it receives alert changes of every tenant.
CREATE TABLE webhooks.endpoints (
    endpoint_id  uuid PRIMARY KEY,
    tenant_id    text NOT NULL,
    url          text NOT NULL,
    secret       text NOT NULL,
    event_types  text[] NOT NULL,
    description  text NOT NULL DEFAULT '',
    source       text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'settings')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE INDEX webhooks_endpoints_by_tenant ON webhooks.endpoints (tenant_id) WHERE deleted_at IS NULL;

-- The outbox: one row per message and endpoint, written in the consumer's transaction.
-- `delivery_id` is the webhook-id header, the same on every attempt and replay. The delivery
-- job claims due rows with SKIP LOCKED and a lease (`next_attempt_at` moved past the attempt's
-- timeout), so replicas never send one delivery at the same time, and a crashed sender's
-- deliveries are retried once their lease ends.
CREATE TABLE webhooks.deliveries (
    delivery_id      uuid PRIMARY KEY,
    tenant_id        text NOT NULL,
    endpoint_id      uuid NOT NULL REFERENCES webhooks.endpoints (endpoint_id),
    event_type       text NOT NULL,
    body             text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status      integer,
    last_error       text,
    replays          integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX webhooks_deliveries_due ON webhooks.deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhooks_deliveries_by_tenant ON webhooks.deliveries (tenant_id, created_at DESC);
CREATE INDEX webhooks_deliveries_by_endpoint ON webhooks.deliveries (endpoint_id, created_at DESC);

-- The current event of each identified feedback signal (like metrics.feedback_signals: an
-- opaque digest, never whose it is), and its signal, to tell a new signal from a change.
CREATE TABLE webhooks.feedback_signals (
    tenant_id    text NOT NULL,
    signal       text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    event_id     uuid NOT NULL,
    retracted    boolean NOT NULL,
    value        jsonb,
    PRIMARY KEY (tenant_id, signal)
);

-- The highest revision seen of each training example, and whether it was retracted since.
CREATE TABLE webhooks.training_examples (
    tenant_id   text NOT NULL,
    example_id  uuid NOT NULL,
    revision    integer NOT NULL,
    retracted   boolean NOT NULL,
    PRIMARY KEY (tenant_id, example_id)
);

-- query: alert state changes waiting to be published on the alerts topic (an outbox written in
-- the evaluation's transaction).
CREATE TABLE query.alert_changes (
    seq           bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    tenant_id     text NOT NULL,
    rule          text NOT NULL,
    document      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX alert_changes_unpublished ON query.alert_changes (seq) WHERE published_at IS NULL;
