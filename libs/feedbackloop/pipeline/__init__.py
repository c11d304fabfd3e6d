"""The pipeline core every service builds on.

- `consumer`: the batch core (decode, apply in one transaction, commit, dead-letter poison).
- `app`: the FastStream app builder around a `ConsumerSpec`, with health, metrics and jobs.
- `jobs`: background work as `Job`s under a `JobRunner` (singleton lock, backoff, readiness).
- `outbox`: an `Outbox` (table to topic, at least once, keyed) and its relay as a job.
"""
