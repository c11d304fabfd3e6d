-- Endpoint secrets are stored encrypted from now on: `enc1:<base64 of the AES-256-GCM nonce and
-- ciphertext>`, sealed by the query service or the CLI under FEEDBACKLOOP_WEBHOOKS_SECRET_KEY
-- with the endpoint's id as associated data (services/webhooks/sealing.py). SQL has no key, so
-- this migration cannot encrypt the rows written before: they keep the plaintext form
-- (`whsec_...`), are read as they are, and the webhooks service's delivery job encrypts them
-- when it starts and whenever it claims a delivery to one. What the column may hold is
-- constrained to those two forms, so nothing else (a secret of another scheme, an empty string)
-- is ever taken for one.

ALTER TABLE webhooks.endpoints
    ADD CONSTRAINT endpoints_secret_form
    CHECK (starts_with(secret, 'enc1:') OR starts_with(secret, 'whsec_'));

COMMENT ON COLUMN webhooks.endpoints.secret IS
    'enc1:<base64 nonce|AES-256-GCM ciphertext>, associated data the endpoint_id; '
    'whsec_... (plaintext) only in rows written before migration 0023, until the webhooks '
    'service encrypts them';
