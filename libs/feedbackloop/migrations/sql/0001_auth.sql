-- API keys: the key determines the tenant. Only a SHA-256 of each key is stored.
CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE auth.api_keys (
    key_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    key_hash    text NOT NULL UNIQUE,
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_tenant ON auth.api_keys (tenant_id);
