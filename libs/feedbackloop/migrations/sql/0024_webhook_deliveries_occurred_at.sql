-- An erasure removes what its user did up to it, not what they did after (they came back): the
-- user's deliveries and current signals whose event occurred at or before the erasure's
-- `erased_at` go, later ones stay, whichever arrived first. `webhooks.feedback_signals` has
-- kept its event's `occurred_at` since 0016; deliveries keep it from now on. A delivery of
-- before has none (NULL): an erasure of its user takes it, as it took every one of them before.

ALTER TABLE webhooks.deliveries ADD COLUMN occurred_at timestamptz;

COMMENT ON COLUMN webhooks.deliveries.occurred_at IS
    'occurred_at of the feedback event a delivery tells of (NULL for other events, and for '
    'deliveries written before migration 0024: an erasure of their user removes those)';
