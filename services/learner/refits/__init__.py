"""The learner's background refits: batched refits of the segment weights, each accepted
refit committed as a new version, then published on the weights topic (an outbox).

Contract:
- Every `poll_seconds`, the segments due (`processing.segments_due`: N new choices, or T
  seconds with any) are refitted, per tenant: the global fit over the tenant's newest
  `max_choices` choices, then each due segment pooled toward it (`full`, `learning.fit_segments`),
  warm-started from the previous version. The fit runs in a worker thread so the consumer's
  event loop keeps consuming.
- A refit is accepted when it converged and its segment has at least `min_choices` choices;
  accepted refits become versions in one transaction, under a per-tenant advisory lock, that
  also records what the refit read (rejected ones too, so they wait for new choices).
- Committed versions are published by the weights relay (`weights_outbox`: keyed
  `tenant:segment`, at least once, consumers deduplicate on (tenant_id, segment, version)).
- Between refits, every poll, each segment with a version and choices since is updated
  incrementally (`incremental`, `adaptive.incremental_update`: a Newton step from the newest version's
  posterior on the new choices), so a choice reaches the served weights within a poll or two
  (`poll_seconds`, 1 s by default); the new version is `kind = incremental`. Before absorbing
  them the batch is scored against the posterior; the segment's recent batch scores are
  tested for a shift (`adaptive.detect_shift`). A detected shift moves the segment's window
  to the estimated change point (earlier choices are forgotten) and refits it at once.
- Every candidate version, full or incremental, is checked off-policy on the segment's newest
  logged sessions against the version served now (`promotion.py`, `adaptive.promotion_decision`); one
  estimated worse is stored unpromoted with its reason (its `promotion` column), never served nor
  published.
- A full refit also fits each customer with `customer_min_choices` choices in the segment,
  with the segment's posterior as the prior (`learning.fit_customer`).
- The passes run as one job (`job.refits_job`): an error is the job's failure (logged, counted,
  the learner not ready until a pass succeeds) and the pass is retried with bounded backoff.
"""
