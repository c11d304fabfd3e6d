"""The query side of experiments without I/O: per-bucket rows made cumulative per variant,
each metric's sufficient statistics, the gauges' labels and the console's curves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest

from feedbackloop.experiments.analysis import analyse
from feedbackloop.experiments.definition import Experiment, ExperimentSpec
from services.experiments.results import results_out, series
from services.metrics.reads import VariantBucket
from services.query.console.charts import curve_charts
from services.query.experiments_gauges import ExperimentGauges, arm_labels

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)


def _experiment(**overrides: object) -> Experiment:
    spec = ExperimentSpec.model_validate({
        "name": "tone", "variants": [{"name": "plain", "weight": 1}, {"name": "warm", "weight": 1}],
        "primary_metric": "conversion", "guardrail_metrics": ["satisfaction", "approval"],
        "minimum_detectable_effect": 0.05, "planned_units": 1_000} | overrides)
    return Experiment(tenant_id="acme", experiment_id="e-1", salt="s", spec=spec,
                      status="running", created_at=T0, started_at=T0, stopped_at=None,
                      concluded_at=None, conclusion=None, winner=None)


def test_series_are_cumulative_and_ignore_variants_not_in_the_definition() -> None:
    rows = [
        VariantBucket(T0, "plain", units=40, sessions=40, converted_sessions=10,
                      satisfaction_count=10, satisfaction_sum=40, satisfaction_sq_sum=170),
        VariantBucket(T0, "warm", units=38, sessions=38, converted_sessions=20,
                      thumbs_up=3, thumbs_down=1),
        VariantBucket(T0, "stray", units=500, sessions=500),
        # A choice whose session was never tagged: converted but no session, clamped.
        VariantBucket(T0 + timedelta(hours=1), "plain", units=2, sessions=2,
                      converted_sessions=5),
    ]
    units, metrics = series(_experiment(), rows)
    assert [dict(u.units) for u in units] == [{"plain": 40, "warm": 38},
                                              {"plain": 42, "warm": 38}]
    conversion = metrics["conversion"]
    assert (conversion[0].arms["plain"].n, conversion[0].arms["plain"].total) == (40, 10.0)
    assert (conversion[1].arms["plain"].n, conversion[1].arms["plain"].total) == (42, 15.0)
    satisfaction = metrics["satisfaction"][1].arms["plain"]
    assert (satisfaction.n, satisfaction.total, satisfaction.total_sq) == (10, 40.0, 170.0)
    assert metrics["approval"][0].arms["warm"].n == 4


def test_results_gauges_and_curves_of_one_analysis() -> None:
    experiment = _experiment()
    rows = [VariantBucket(T0 + timedelta(hours=h), v, units=100, sessions=100,
                          converted_sessions=30 if v == "plain" else 60)
            for h in range(3) for v in ("plain", "warm")]
    units, metrics = series(experiment, rows)
    analysis = analyse(experiment.spec, units, metrics)
    out = results_out(experiment, analysis, rows, "hour")
    assert out.units == 600 and out.verdict.decision == "ship" and out.verdict.variant == "warm"
    warm = out.metrics[0].variants[1]
    assert [p.bucket for p in warm.curve] == [T0 + timedelta(hours=h) for h in range(3)]
    assert warm.curve[-1].p_value == warm.p_value
    registry = CollectorRegistry()
    gauges = ExperimentGauges(registry)
    gauges.update([(experiment, analysis)], 1_700_000_000.0)
    text = generate_latest(registry).decode()
    assert 'feedbackloop_experiment_units{arm="variant-1",experiment_id="e-1"} 300.0' in text
    assert 'feedbackloop_experiment_verdict{decision="ship",experiment_id="e-1"} 1.0' in text
    assert 'feedbackloop_experiment_sample_ratio_mismatch{experiment_id="e-1"} 0.0' in text
    assert "tone" not in text and "warm" not in text  # the tenant's names stay out
    charts = curve_charts(out.model_dump(mode="json"), alpha=0.05)
    assert [c["metric"] for c in charts] == ["conversion"]
    assert charts[0]["p_value"]["series"][1]["values"] == [0.05, 0.05, 0.05]
    assert arm_labels(["a", "b", "c"]) == {"a": "control", "b": "variant-1", "c": "variant-2"}
