-- Signals have an identity (tenant, response, person, kind): the latest of its events by
-- (occurred_at, event_id) is the current state, and read models count current signals only.

-- metrics: the current event of each identified feedback signal. `signal` is an opaque digest
-- of the identity (see feedbackloop.contract.signal_digest), so this schema never holds whose
-- signal it is. A retraction that is current leaves no fact; any other current event has its
-- row in metrics.feedback_facts, and no other event of the identity has one.
CREATE TABLE metrics.feedback_signals (
    tenant_id    text NOT NULL,
    signal       text NOT NULL,
    response_id  text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    event_id     uuid NOT NULL,
    retracted    boolean NOT NULL,
    PRIMARY KEY (tenant_id, signal)
);
