"""Evaluates the alert rules on a schedule: reads the rollups, advances the stored states,
queues each state change for the alerts topic and refreshes the analytics gauges.

Contract: one query replica evaluates at a time (a transaction-scoped advisory lock; the others
skip that round). The new states and the `alert.state_changed` messages of their changes are
committed in one transaction (an outbox): the alert relay (`alert_relay.py`) publishes them,
and the webhooks service delivers them to subscribed endpoints, the one configured from
FEEDBACKLOOP_ALERT_WEBHOOK_URL among them. An evaluation that fails is logged and retried at the
next interval (a `Job`, wired in `main.py`); the evaluated-timestamp gauge stops advancing
meanwhile (alert FeedbackloopAnalyticsStale).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from feedbackloop.contract import SEGMENTS, AlertStateChanged
from feedbackloop.pipeline.jobs import Job
from feedbackloop.settings import Settings
from services.learner import reads as learner
from services.metrics import reads as metrics
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


def alert_change(transition: Transition, *, evaluated_at: datetime) -> AlertStateChanged:
    """The `alert.state_changed` message of one transition, with a fresh event id."""
    state = transition.current
    return AlertStateChanged(
        event_id=uuid.uuid4(), tenant_id=state.tenant_id, rule=state.rule,
        subject=state.subject, previous=transition.previous, state=state.state,
        since=state.since, value=state.value, sample=state.sample, threshold=state.threshold,
        evaluated_at=evaluated_at,
    )


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
) -> list[Transition] | None:
    """One evaluation at `now`; the state changes it made, or None when another replica held
    the evaluation lock."""
    inputs, current, recommendations = await _read_inputs(pool, config, end=now)
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
    return transitions


async def _read_inputs(
    pool: asyncpg.Pool, config: AlertConfig, *, end: datetime
) -> tuple[WindowInputs, list[Any], list[Any]]:
    """What an evaluation ending at `end` reads: the windows' totals (now, a day and a week
    earlier, the baseline), choices, action types' first votes and segments' confidence; and
    the current window's feedback and choice rows as read (the gauges show them)."""
    start = end - config.window

    async def feedback(shift: timedelta, span: timedelta = config.window) -> list[Any]:
        return list(await metrics.feedback_window_totals(
            pool, start=end - shift - span, end=end - shift
        ))

    current = await feedback(timedelta(0))
    recommendations = list(await metrics.recommendation_window_totals(pool, start=start, end=end))
    confidence = list(await learner.newest_segment_confidence(pool, segments=list(SEGMENTS)))
    inputs = WindowInputs(
        current=_feedback_totals(current),
        day_earlier=_feedback_totals(await feedback(timedelta(days=1))),
        week_earlier=_feedback_totals(await feedback(timedelta(days=7))),
        baseline=_feedback_totals(await feedback(config.window, BASELINE_SPAN)),
        choices=_choice_totals(recommendations),
        first_voted={
            (row["tenant_id"], row["action_type"]): row["first_voted"]
            for row in await metrics.action_types_first_voted(
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
    return inputs, current, recommendations


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
    changes = [alert_change(t, evaluated_at=now) for t in transitions]
    await repository.queue_alert_changes(connection, changes=[
        (change.event_id, change.tenant_id, change.rule, change.model_dump(mode="json"))
        for change in changes
    ])
    return states, transitions


def alert_evaluation_job(
    pool: asyncpg.Pool, config: AlertConfig, *, interval_seconds: float, gauges: AnalyticsGauges
) -> Job:
    """The evaluation every `interval_seconds` as a job. A failed evaluation is retried at the
    next interval (the backoff is capped there): the stale-analytics alert fires if it keeps
    failing, and `/readyz` shows the job's last error."""

    async def evaluate() -> int:
        await evaluate_alerts(pool, config, now=datetime.now(UTC), gauges=gauges)
        return 0  # due again only at the next interval, whatever changed

    return Job("alert-evaluation", evaluate, interval=interval_seconds,
               retry_max_seconds=interval_seconds)
