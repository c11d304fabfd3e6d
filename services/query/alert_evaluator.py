"""Evaluates the alert rules on a schedule: reads the rollups, advances the stored states,
refreshes the analytics gauges and posts state changes to the optional webhook.

Contract: one query replica evaluates at a time (a transaction-scoped advisory lock; the others
skip that round). States and their `since` are committed before the webhook is called; a
webhook call is bounded by its timeout, and one that fails is logged, never retried, and never
undoes an evaluation. An evaluation that fails is logged and retried at the next interval; the
evaluated-timestamp gauge stops advancing meanwhile (alert FeedbackloopAnalyticsStale).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from feedbackloop.contract import SEGMENTS
from feedbackloop.settings import Settings
from services.query import repository
from services.query.alerts import (
    BASELINE_SPAN,
    AlertConfig,
    AlertState,
    ChoiceTotals,
    FeedbackTotals,
    SegmentConfidence,
    Transition,
    WindowInputs,
    advance,
    observe,
)
from services.query.gauges import AnalyticsGauges

logger = logging.getLogger(__name__)


def alert_config(settings: Settings) -> AlertConfig:
    return AlertConfig(
        window=timedelta(minutes=settings.alert_window_minutes),
        hold=timedelta(seconds=settings.alert_for_seconds),
        approval_min_rate=settings.alert_approval_min_rate,
        approval_min_samples=settings.alert_approval_min_samples,
        approval_max_drop=settings.alert_approval_max_drop,
        spike_factor=settings.alert_negative_spike_factor,
        spike_min_count=settings.alert_negative_spike_min_count,
        conversion_min_rate=settings.alert_conversion_min_rate,
        conversion_min_sessions=settings.alert_conversion_min_sessions,
        chosen_rank_max=settings.alert_chosen_rank_max,
        satisfaction_min=settings.alert_satisfaction_min,
        choice_min_samples=settings.alert_choice_min_samples,
        new_action_type_age=timedelta(days=settings.alert_new_action_type_days),
        new_action_type_min_down=settings.alert_new_action_type_min_down,
        confidence_min=settings.alert_learning_confidence_min,
        confidence_min_samples=settings.alert_learning_confidence_min_samples,
        confidence_hold=timedelta(seconds=settings.alert_learning_confidence_for_seconds),
        shift_window=timedelta(seconds=settings.alert_learning_shift_window_seconds),
    )


class Webhook:
    """POSTs `{"alerts": [...]}` with every state change of one evaluation to a URL."""

    def __init__(self, url: str, timeout_seconds: float) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds

    async def notify(self, transitions: Sequence[Transition]) -> None:
        body = {"alerts": [_change(t) for t in transitions]}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
                response = await client.post(self.url, json=body)
                response.raise_for_status()
        except httpx.HTTPError as error:
            logger.warning("alert webhook %s failed: %s", self.url, error)


def _change(transition: Transition) -> dict[str, Any]:
    state = transition.current
    return {
        "rule": state.rule, "tenant_id": state.tenant_id, "subject": state.subject,
        "previous": transition.previous, "state": state.state, "since": state.since.isoformat(),
        "value": state.value, "sample": state.sample, "threshold": state.threshold,
    }


def _feedback_totals(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], FeedbackTotals]:
    totals: dict[tuple[str, str], FeedbackTotals] = defaultdict(FeedbackTotals)
    for row in rows:
        negative = row["thumbs_down"] + row["corrections"] + row["replays_not_useful"]
        totals[(row["tenant_id"], row["action_type"])] += FeedbackTotals(
            int(row["thumbs_up"]), int(row["thumbs_down"]), int(negative)
        )
    return dict(totals)


def _choice_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, ChoiceTotals]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0] * 6)
    names = ("sessions", "choices", "chosen_rank_sum", "chosen_rank_count",
             "satisfaction_sum", "satisfaction_count")
    for row in rows:
        for index, name in enumerate(names):
            sums[row["tenant_id"]][index] += int(row[name])
    return {tenant: ChoiceTotals(*values) for tenant, values in sums.items()}


def _state(row: Mapping[str, Any]) -> AlertState:
    return AlertState(
        row["rule"], row["tenant_id"], row["subject"], row["state"], row["since"],
        row["value"], int(row["sample"]), row["threshold"], row["evaluated_at"],
    )


async def evaluate_alerts(
    pool: asyncpg.Pool,
    config: AlertConfig,
    *,
    now: datetime,
    gauges: AnalyticsGauges | None = None,
    webhook: Webhook | None = None,
) -> list[Transition] | None:
    """One evaluation at `now`; the state changes it made, or None when another replica held
    the evaluation lock."""
    end = now
    start = end - config.window

    async def feedback(shift: timedelta, span: timedelta = config.window) -> list[Any]:
        return list(await repository.feedback_window_totals(
            pool, start=end - shift - span, end=end - shift
        ))

    current = await feedback(timedelta(0))
    recommendations = list(await repository.recommendation_window_totals(pool, start=start, end=end))
    confidence = list(await repository.newest_segment_confidence(pool, segments=list(SEGMENTS)))
    inputs = WindowInputs(
        current=_feedback_totals(current),
        day_earlier=_feedback_totals(await feedback(timedelta(days=1))),
        week_earlier=_feedback_totals(await feedback(timedelta(days=7))),
        baseline=_feedback_totals(await feedback(config.window, BASELINE_SPAN)),
        choices=_choice_totals(recommendations),
        first_voted={
            (row["tenant_id"], row["action_type"]): row["first_voted"]
            for row in await repository.action_types_first_voted(
                pool, since=end - config.new_action_type_age
            )
        },
        confidence={
            (row["tenant_id"], row["segment"]): SegmentConfidence(
                float(row["confidence"]), int(row["sample_size"]), row["last_shift_at"],
                row["shift_statistic"], row["shift_threshold"],
            )
            for row in confidence
        },
    )
    transitions: list[Transition] | None = None
    async with pool.acquire() as connection, connection.transaction():
        if not await repository.try_lock_alert_evaluation(connection):
            # Another replica evaluates this round; this one still reports what it stored.
            rows = await repository.alert_states(connection, tenant_id=None)
            states = [_state(row) for row in rows]
        else:
            states, transitions = await _advance_stored(connection, inputs, config, now)
    if gauges is not None:
        gauges.update(
            feedback=current, recommendations=recommendations, alerts=states,
            window_seconds=config.window.total_seconds(), evaluated_at=now,
            confidence=inputs.confidence, confidence_min_samples=config.confidence_min_samples,
        )
    if webhook is not None and transitions:
        await webhook.notify(transitions)
    return transitions


async def _advance_stored(
    connection: asyncpg.Connection, inputs: WindowInputs, config: AlertConfig, now: datetime
) -> tuple[list[AlertState], list[Transition]]:
    previous = [_state(row) for row in await repository.alert_states(connection, tenant_id=None)]
    states, transitions = advance(
        previous, observe(inputs, config, now), now=now, hold=config.hold, holds=config.holds
    )
    await repository.save_alert_states(
        connection,
        states=[
            (s.rule, s.tenant_id, s.subject, s.state, s.since, s.value, s.sample,
             s.threshold, s.evaluated_at)
            for s in states
        ],
    )
    return states, transitions


async def run_evaluations(
    pool: asyncpg.Pool,
    config: AlertConfig,
    *,
    interval_seconds: float,
    gauges: AnalyticsGauges,
    webhook: Webhook | None,
) -> None:
    """Evaluate every `interval_seconds` until cancelled."""
    while True:
        try:
            await evaluate_alerts(
                pool, config, now=datetime.now(UTC), gauges=gauges, webhook=webhook
            )
        except (OSError, asyncpg.PostgresError) as error:
            logger.warning("alert evaluation failed, retrying in %.0fs: %s", interval_seconds, error)
        except Exception:
            # A bug must not stop every later evaluation silently; the stale-analytics alert
            # fires if it keeps failing.
            logger.exception("alert evaluation failed")
        await asyncio.sleep(interval_seconds)
