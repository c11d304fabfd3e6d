-- experiments: definitions as data, the units each variant was shown to, and indexes for the
-- per-variant analysis over the metrics facts.
--
-- The experiments schema holds what tenants define (through the query API and the CLI, via
-- services/experiments/admin.py); ingest reads it (cached) to assign units. Nothing on the
-- assignment path writes here: a unit's variant is a hash of the experiment's salt and the unit.
CREATE SCHEMA IF NOT EXISTS experiments;

CREATE TABLE experiments.experiments (
    tenant_id      text NOT NULL,
    name           text NOT NULL,
    experiment_id  uuid NOT NULL UNIQUE,
    salt           text NOT NULL,
    spec           jsonb NOT NULL,
    status         text NOT NULL DEFAULT 'draft'
                   CHECK (status IN ('draft', 'running', 'stopped', 'concluded')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    stopped_at     timestamptz,
    concluded_at   timestamptz,
    conclusion     text,
    winner         text,
    PRIMARY KEY (tenant_id, name)
);

-- Every change of status, for the record (who asked is the API key or the CLI).
CREATE TABLE experiments.transitions (
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    action      text NOT NULL,
    from_status text NOT NULL,
    to_status   text NOT NULL,
    actor       text NOT NULL,
    note        text,
    FOREIGN KEY (tenant_id, name) REFERENCES experiments.experiments (tenant_id, name)
);
CREATE INDEX experiments_transitions_by_experiment ON experiments.transitions (tenant_id, name, at);

-- metrics: the units exposed to each variant. One row per (experiment, unit), the first
-- exposure's variant and minute; `unit` is an opaque digest of the tenant, experiment and the
-- unit's id (the user's HMAC or the session id), never the id. Written by the metrics
-- consumer in the transaction that claims the exposure event, so replays never double count.
CREATE TABLE metrics.experiment_units (
    tenant_id   text NOT NULL,
    experiment  text NOT NULL,
    unit        text NOT NULL,
    variant     text NOT NULL,
    bucket      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, experiment, unit)
);

-- Per minute and variant: units first exposed, exposures, and exposures of a unit to another
-- variant than its first (`crossovers`: a client that did not keep to its assignment).
CREATE TABLE metrics.experiment_exposure_minute (
    tenant_id   text NOT NULL,
    experiment  text NOT NULL,
    variant     text NOT NULL,
    bucket      timestamptz NOT NULL,
    units       bigint NOT NULL DEFAULT 0,
    exposures   bigint NOT NULL DEFAULT 0,
    crossovers  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, experiment, variant, bucket)
);

-- The analysis reads one experiment's facts at a time.
CREATE INDEX feedback_facts_by_experiment ON metrics.feedback_facts (tenant_id, experiment, variant)
    WHERE experiment <> 'unknown';
CREATE INDEX choice_facts_by_experiment ON metrics.choice_facts (tenant_id, experiment, variant)
    WHERE experiment <> 'unknown';
CREATE INDEX session_dims_by_experiment ON metrics.session_dims (tenant_id, experiment, variant)
    WHERE experiment <> 'unknown';
