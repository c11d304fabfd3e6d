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

-- profiles: feedback stays a history, one row per event, and now holds retractions too (kind =
-- the kind retracted, verdict neutral). `current` marks, per (tenant, user, response, kind),
-- the latest event by (occurred_at, event_id) unless it is a retraction: verdicts, totals and
-- suppression read current rows only, the history shows every change.
ALTER TABLE profiles.feedback
    ADD COLUMN retraction boolean NOT NULL DEFAULT false,
    ADD COLUMN current    boolean NOT NULL DEFAULT true;
CREATE INDEX feedback_by_signal ON profiles.feedback
    (tenant_id, user_id, response_id, kind, occurred_at DESC, event_id DESC);
-- Rows stored before signals had an identity: only the latest of each signal stays current.
UPDATE profiles.feedback f SET current = false
WHERE EXISTS (
    SELECT 1 FROM profiles.feedback g
    WHERE g.tenant_id = f.tenant_id AND g.user_id = f.user_id
      AND g.response_id = f.response_id AND g.kind = f.kind
      AND (g.occurred_at, g.event_id) > (f.occurred_at, f.event_id)
);

-- trainer: feedback per event, retractions included, with the person whose signal it is
-- ('user:<hmac>' or 'key:<feedback key hmac>', NULL when it names nobody). Only `current`
-- rows give examples, explanations and failure patterns.
ALTER TABLE trainer.feedback
    ADD COLUMN person     text,
    ADD COLUMN retraction boolean NOT NULL DEFAULT false,
    ADD COLUMN current    boolean NOT NULL DEFAULT true;
UPDATE trainer.feedback SET person = 'user:' || user_id WHERE user_id IS NOT NULL;
CREATE INDEX trainer_feedback_by_signal ON trainer.feedback
    (tenant_id, response_id, person, kind, occurred_at DESC, event_id DESC);
UPDATE trainer.feedback f SET current = false
WHERE f.person IS NOT NULL AND EXISTS (
    SELECT 1 FROM trainer.feedback g
    WHERE g.tenant_id = f.tenant_id AND g.response_id = f.response_id
      AND g.person = f.person AND g.kind = f.kind
      AND (g.occurred_at, g.event_id) > (f.occurred_at, f.event_id)
);
