-- Learning that adapts in seconds, is checked before it is served, notices when customers
-- change, and reaches single customers (see services/learner/learning.py and refits.py).

-- A version is `full` (a batched refit over the window) or `incremental` (a Newton step from
-- the previous version's posterior on the choices since). `posterior` is the whole Laplace
-- posterior (factor and rank terms) the next incremental step starts from. A version is served
-- only once `promoted`; `promotion` keeps the off-policy estimates and the reason either way.
ALTER TABLE learner.weights_versions
    ADD COLUMN kind text NOT NULL DEFAULT 'full' CHECK (kind IN ('full', 'incremental')),
    ADD COLUMN posterior jsonb,
    ADD COLUMN promoted boolean NOT NULL DEFAULT true,
    ADD COLUMN promotion jsonb,
    ADD COLUMN drift jsonb;

CREATE INDEX weights_versions_promoted ON learner.weights_versions (tenant_id, segment, version)
    WHERE promoted;

-- `updated_through`: the newest `recorded_at` an incremental step (or a full refit) absorbed.
-- `window_start`: choices recorded before it are forgotten by the segment's fits (set when a
-- shift in the segment's preferences was detected: its estimated change point).
ALTER TABLE learner.refit_state
    ADD COLUMN updated_through timestamptz,
    ADD COLUMN window_start timestamptz;

-- Per-customer weights, shrunk toward the customer's segment: one row per customer, replaced
-- by every full refit of the segment that found the customer with enough choices.
CREATE TABLE learner.customer_weights (
    tenant_id    text NOT NULL,
    user_id      text NOT NULL,
    segment      text NOT NULL,
    weights      jsonb NOT NULL,
    intervals    jsonb NOT NULL,
    confidence   double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    sample_size  integer NOT NULL,
    coefficients jsonb NOT NULL,
    covariance   jsonb NOT NULL,
    segment_version integer NOT NULL,
    fitted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
