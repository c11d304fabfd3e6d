-- trainer: what reviewers did in the review console (review.submitted events). Each table
-- keeps the latest event by (occurred_at, event_id) of its identity, so any arrival order
-- gives the same state. Reviewers are API keys (key id and name), never users.

-- A reviewer's current answer to one question about one response.
CREATE TABLE trainer.review_labels (
    tenant_id      text NOT NULL,
    response_id    text NOT NULL,
    reviewer       text NOT NULL,
    label          text NOT NULL,
    value          text NOT NULL,
    reviewer_name  text,
    note           text,
    occurred_at    timestamptz NOT NULL,
    event_id       uuid NOT NULL,
    PRIMARY KEY (tenant_id, response_id, reviewer, label)
);
CREATE INDEX review_labels_by_label ON trainer.review_labels (tenant_id, label);

-- Per response: who marked it reviewed last, and whose it is to review.
CREATE TABLE trainer.review_states (
    tenant_id         text NOT NULL,
    response_id       text NOT NULL,
    reviewed_by       text,
    reviewed_by_name  text,
    reviewed_at       timestamptz,
    reviewed_event    uuid,
    assignee          text,
    assigned_by_name  text,
    assigned_at       timestamptz,
    assigned_event    uuid,
    PRIMARY KEY (tenant_id, response_id)
);

-- The review queue: the newest low signals (down-votes, ratings 1-2, corrections, replays)
-- of a tenant, read newest first.
CREATE INDEX trainer_feedback_review_queue ON trainer.feedback (tenant_id, occurred_at DESC)
    WHERE current AND (thumb = 'down' OR rating <= 2 OR kind IN ('correction', 'replay'));
