-- Integrations: erasure reaches webhook deliveries, current signals and the objects exported to
-- object storage; delivered deliveries and published alert changes are pruned after their
-- retention; no receiver's answer is kept.

-- Whose event a delivery or a current signal tells of: the digest the erasure tombstones use
-- (public.erased_user_digest of the tenant-keyed HMAC), never the HMAC itself; and, for a
-- training example's delivery, the example, which a retraction for erasure removes. Rows
-- written before this migration have neither and are not found by an erasure.
ALTER TABLE webhooks.deliveries ADD COLUMN user_digest text, ADD COLUMN example_id uuid;
ALTER TABLE webhooks.feedback_signals ADD COLUMN user_digest text;
CREATE INDEX webhooks_deliveries_by_user ON webhooks.deliveries (tenant_id, user_digest)
    WHERE user_digest IS NOT NULL;
CREATE INDEX webhooks_deliveries_by_example ON webhooks.deliveries (tenant_id, example_id)
    WHERE example_id IS NOT NULL;
CREATE INDEX webhooks_feedback_signals_by_user ON webhooks.feedback_signals (tenant_id, user_digest)
    WHERE user_digest IS NOT NULL;

-- Erasure tombstones (see 0011): the user's events that occurred before the erasure and arrive
-- after it send nothing.
CREATE TABLE webhooks.erased_users (LIKE profiles.erased_users INCLUDING ALL);

-- Pruning: delivered deliveries by when they were delivered, published changes by when.
CREATE INDEX webhooks_deliveries_delivered ON webhooks.deliveries (delivered_at)
    WHERE state = 'delivered';
CREATE INDEX alert_changes_published ON query.alert_changes (published_at)
    WHERE published_at IS NOT NULL;

-- A failed attempt used to keep up to 200 characters of the receiver's answer; only the
-- status stays.
UPDATE webhooks.deliveries SET last_error = substring(last_error FROM '^HTTP [0-9]{3}')
WHERE last_error ~ '^HTTP [0-9]{3}: ';

-- trainer: which erasure (its erased_at) the objects exported to object storage were last
-- rewritten for; an erasure whose erased_at differs is still to be applied to them.
ALTER TABLE trainer.erased_users ADD COLUMN objects_erased_for timestamptz;
