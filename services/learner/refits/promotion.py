"""The gate every candidate version passes, full or incremental: an off-policy check against
the version served now (`adaptive.promotion_decision`)."""

from __future__ import annotations

import asyncio

import asyncpg

from services.learner.adaptive import Promotion, pack_logged, promotion_decision
from services.learner.choice_data import ObservedChoice
from services.learner.learning import Posterior, SegmentWeights
from services.learner.refits import store
from services.learner.refits.config import RefitConfig


async def check_promotion(
    pool: asyncpg.Pool, config: RefitConfig, tenant_id: str, segment: str,
    candidate: SegmentWeights, choices: list[ObservedChoice],
) -> Promotion:
    """The off-policy check of a candidate against the version served now, on the newest
    `offpolicy_sessions` logged choices (`choices` is newest first)."""
    assert candidate.posterior is not None
    served = await store.promoted_posterior(pool, tenant_id=tenant_id, segment=segment)
    current = (Posterior.from_json(served["posterior"])
               if served is not None and served["posterior"] else None)
    if served is not None and current is None:
        # Served now by a version from before posteriors were kept: nothing to compare with.
        return Promotion(True, "not checked: the current version keeps no posterior",
                         None, None, None, 0)
    logged = pack_logged(choices[: config.offpolicy_sessions], candidate.factors,
                         config.fit.max_rank_terms)
    return await asyncio.to_thread(
        promotion_decision, logged, candidate.posterior, current,
        min_sessions=config.offpolicy_min_sessions, margin=config.offpolicy_margin,
    )
