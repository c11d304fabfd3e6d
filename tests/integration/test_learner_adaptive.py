"""Incremental updates, promotion and customers' weights against real PostgreSQL: a choice
after a refit becomes an incremental version served at once; a version estimated worse is
kept with its reason but neither served nor published; customers with enough choices get
their own weights, and an erasure takes them away."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from feedbackloop.kafka import OutgoingMessage
from services.learner import reads, repository
from services.learner.adaptive import Promotion
from services.learner.learning import FitOptions, Posterior, summarize
from services.learner.processing import UserErased
from services.learner.refits import store
from services.learner.refits.config import RefitConfig
from services.learner.refits.full import refit_due
from services.learner.refits.incremental import update_incrementally
from services.learner.weights_outbox import publish_unpublished
from tests.integration.test_learner_refits import _choices, _write, pool  # noqa: F401

pytestmark = pytest.mark.integration
SPEED = {"price": 0.0, "quality": 0.0, "speed": 1.0}
CONFIG = RefitConfig(min_new_choices=50, interval_seconds=3_600, min_choices=50,
                     customer_min_choices=50, fit=FitOptions())


async def test_a_choice_after_a_refit_is_an_incremental_version_served_at_once(
    pool: Any,  # noqa: F811
) -> None:
    await _write(pool, _choices(80, "price_sensitive", seed=11))
    await refit_due(pool, CONFIG)
    assert await update_incrementally(pool, CONFIG) == []  # nothing since the refit
    await _write(pool, _choices(3, "price_sensitive", seed=12))
    assert await refit_due(pool, CONFIG) == []  # 3 new < 50: the full refit waits
    [outcome] = await update_incrementally(pool, CONFIG)
    assert (outcome.segment, outcome.version, outcome.choices) == ("price_sensitive", 2, 3)
    assert outcome.shift_detected is False
    served = await reads.current_weights(pool, tenant_id="acme",
                                              segment="price_sensitive")
    assert served is not None
    assert (served["version"], served["kind"], served["sample_size"]) == (2, "incremental", 83)
    row = await pool.fetchrow("SELECT * FROM learner.weights_versions "
                              "WHERE segment = 'price_sensitive' AND version = 2")
    assert row["promoted"] is True and row["promotion"]["promoted"] is True
    assert row["posterior"]["factors"] == sorted(["price", "quality", "speed"])
    assert row["drift"]["batch"]["size"] == 3 and row["drift"]["test"]["detected"] is False
    assert await update_incrementally(pool, CONFIG) == []  # absorbed once


async def test_a_version_estimated_worse_is_kept_with_its_reason_but_not_served(
    pool: Any,  # noqa: F811
) -> None:
    await _write(pool, _choices(80, "quality_focused", seed=13))
    await refit_due(pool, CONFIG)
    current = await store.newest_version(pool, tenant_id="acme", segment="quality_focused")
    assert current is not None
    good = Posterior.from_json(current["posterior"])
    backwards = good.mean.copy()
    backwards[: len(good.factors)] = good.beta[::-1]
    worse = Posterior(good.factors, good.rank_terms, backwards, good.covariance, True,
                      good.max_rank)
    decision = Promotion(False, "estimated worse than the current version: (test)", None,
                         None, None, 80)
    await store.insert_weights_version(
        pool, tenant_id="acme", segment="quality_focused",
        fit=summarize(worse, 80, FitOptions()), fit_seconds=0.01, kind="full",
        promotion=decision.to_json())
    served = await reads.current_weights(pool, tenant_id="acme", segment="quality_focused")
    assert served is not None and served["version"] == 1
    sent: list[str] = []

    async def publish(messages: Sequence[OutgoingMessage]) -> None:
        sent.extend(message.value.decode() for message in messages)

    await publish_unpublished(pool, publish)
    assert not any('"segment":"quality_focused","version":2' in m for m in sent)
    [kept] = await pool.fetch("SELECT promoted, promotion, published_at FROM "
                              "learner.weights_versions WHERE segment = 'quality_focused' "
                              "AND version = 2")
    assert kept["promoted"] is False and kept["published_at"] is None
    assert kept["promotion"]["reason"].startswith("estimated worse")


async def test_customers_with_enough_choices_get_weights_and_lose_them_when_erased(
    pool: Any,  # noqa: F811
) -> None:
    await _write(pool, _choices(60, "speed_priority", seed=14))  # all by customer "u"
    await refit_due(pool, CONFIG)
    own = await reads.customer_weights(pool, tenant_id="acme", user_id="u")
    assert own is not None
    assert own["segment"] == "speed_priority" and own["sample_size"] == 60
    assert sum(own["weights"].values()) == pytest.approx(1.0)
    assert 0.0 <= own["confidence"] <= 1.0
    assert np.isfinite(np.array(own["covariance"])).all()
    async with pool.acquire() as connection, connection.transaction():
        await repository.write_effects(connection, [
            UserErased("acme", "u", datetime.now(UTC))])
    assert await reads.customer_weights(pool, tenant_id="acme", user_id="u") is None


async def test_choices_sharing_one_recorded_at_beyond_a_batch_are_all_absorbed(
    pool: Any,  # noqa: F811
) -> None:
    await _write(pool, _choices(80, "price_sensitive", seed=21))
    await refit_due(pool, CONFIG)
    await _write(pool, _choices(10, "price_sensitive", seed=22))  # one transaction: one time
    config = replace(CONFIG, incremental_max_choices=4)
    absorbed = []
    for _ in range(5):
        outcomes = await update_incrementally(pool, config)
        if not outcomes:
            break
        absorbed += [outcome.choices for outcome in outcomes]
    assert absorbed == [4, 4, 2]
    newest = await store.newest_version(pool, tenant_id="acme", segment="price_sensitive")
    assert newest is not None and newest["sample_size"] == 90


async def test_a_shift_moves_the_window_forgets_earlier_choices_and_refits_at_once(
    pool: Any,  # noqa: F811
) -> None:
    # price_sensitive customers who suddenly choose by speed alone: the test calls a shift
    # once the posterior rests on `shift_min_history` (200) choices.
    await _write(pool, _choices(200, "price_sensitive", seed=51))
    await refit_due(pool, CONFIG)
    await _write(pool, _choices(30, "price_sensitive", seed=52))
    [before] = await update_incrementally(pool, CONFIG)
    assert before.shift_detected is False
    await _write(pool, _choices(60, "price_sensitive", seed=53, truth=SPEED))
    changed_at = await pool.fetchval("SELECT max(recorded_at) FROM learner.choices")

    [outcome] = await update_incrementally(pool, CONFIG)
    assert outcome.shift_detected is True and outcome.version == 3
    state = await pool.fetchrow("SELECT * FROM learner.refit_state "
                                "WHERE tenant_id = 'acme' AND segment = 'price_sensitive'")
    assert state["window_start"] == changed_at  # the shifted batch's first choice
    detected = await store.newest_version(pool, tenant_id="acme", segment="price_sensitive")
    assert detected is not None
    # The refit that followed read only the window: the 60 choices after the change.
    assert (detected["version"], detected["kind"], detected["sample_size"]) == (4, "full", 60)
    refitted = await reads.weights_version(pool, tenant_id="acme", segment="price_sensitive",
                                           version=4)
    assert refitted is not None and refitted["weights"]["speed"] > refitted["weights"]["price"]
    assert (state["fitted_through"], state["updated_through"]) == (changed_at, changed_at)
    assert len(await repository.recent_choices_of_segment(
        pool, tenant_id="acme", segment="price_sensitive", limit=1_000)) == 60
    assert await repository.pending_choices(pool) == []
    assert await update_incrementally(pool, CONFIG) == []

    # Learning goes on from the window: the next batch is absorbed, tested against the
    # window's batches only (the shifted one on), not the one before the change.
    await _write(pool, _choices(30, "price_sensitive", seed=54, truth=SPEED))
    [after] = await update_incrementally(pool, CONFIG)
    assert (after.version, after.choices, after.shift_detected) == (5, 30, False)
    newest = await store.newest_version(pool, tenant_id="acme", segment="price_sensitive")
    assert newest is not None and newest["sample_size"] == 90
    history = await store.recent_batch_scores(pool, tenant_id="acme", segment="price_sensitive",
                                              limit=10)
    assert [row["version"] for row in history] == [3, 5]

    # What query shows of it, and what the preference-shift alert reads.
    versions = await reads.weights_versions(pool, tenant_id="acme", history=10)
    shifts = {row["version"]: row["drift"]["test"]["detected"] for row in versions
              if row["segment"] == "price_sensitive" and row["drift"] is not None}
    assert shifts == {2: False, 3: True, 5: False}
    [confidence] = await reads.newest_segment_confidence(pool, segments=["price_sensitive"])
    assert confidence["last_shift_at"] == next(
        row["fitted_at"] for row in versions
        if row["segment"] == "price_sensitive" and row["version"] == 3)
    assert confidence["shift_statistic"] > confidence["shift_threshold"] > 0


async def test_recommendation_outcomes_per_group(pool: Any) -> None:  # noqa: F811
    start = datetime.now(UTC)
    await _write(pool, _choices(3, "price_sensitive", seed=61))
    await _write(pool, _choices(2, "speed_priority", seed=62)[::2])  # sessions, no choice
    end = datetime.now(UTC)

    async def outcomes(group_by: reads.RecommendationGroup) -> list[tuple[str, int, int, int]]:
        rows = await reads.recommendation_outcomes(pool, tenant_id="acme", group_by=group_by,
                                                   start=start, end=end)
        return [(r["grp"], r["sessions"], r["decided"], r["converted"]) for r in rows]

    assert await outcomes("overall") == [("all", 5, 3, 3)]
    assert await outcomes("segment") == [("price_sensitive", 3, 3, 3),
                                         ("speed_priority", 2, 0, 0)]
    assert await outcomes("complexity") == [("simple", 5, 3, 3)]
