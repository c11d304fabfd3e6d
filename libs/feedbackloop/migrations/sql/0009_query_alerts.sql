-- query: the state of each alert rule, per tenant and subject (an action type, or '' for a
-- rule over the whole tenant). The query service is the only writer; `since` is when the
-- current state began, `value` and `sample` what the last evaluation saw.
CREATE SCHEMA IF NOT EXISTS query;

CREATE TABLE query.alert_states (
    rule         text NOT NULL,
    tenant_id    text NOT NULL,
    subject      text NOT NULL,
    state        text NOT NULL CHECK (state IN ('ok', 'pending', 'firing')),
    since        timestamptz NOT NULL,
    value        double precision,
    sample       bigint NOT NULL,
    threshold    double precision NOT NULL,
    evaluated_at timestamptz NOT NULL,
    PRIMARY KEY (rule, tenant_id, subject)
);

CREATE INDEX alert_states_by_tenant ON query.alert_states (tenant_id);
