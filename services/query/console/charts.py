"""The console's chart data (uPlot's shape: `x`, then `series` of labelled values), from what
the query API answered. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _stamp(text: str) -> int:
    """An ISO timestamp as Unix seconds, the x of every time chart."""
    return int(datetime.fromisoformat(text).timestamp())


def acceptance_series(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Accepted and rejected signals per day, from the user's history (current ones)."""
    days: dict[str, list[int]] = {}
    for item in history:
        if not item["current"]:
            continue
        day = item["occurred_at"][:10]
        counts = days.setdefault(day, [0, 0])
        if item["verdict"] == "accepted":
            counts[0] += 1
        elif item["verdict"] == "rejected":
            counts[1] += 1
    ordered = sorted(days)
    stamps = [int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) for day in ordered]
    return {"x": stamps, "series": [
        {"label": "accepted", "values": [days[d][0] for d in ordered]},
        {"label": "rejected", "values": [days[d][1] for d in ordered]},
    ]}


def trend_chart(trend: dict[str, Any], threshold: float) -> dict[str, Any]:
    """One column per bucket with data, plus the range's ends, so the threshold line spans
    the whole range however few buckets have votes."""
    buckets = {_stamp(p["bucket"]) for series in trend["series"] for p in series["points"]}
    stamps = sorted(buckets | {_stamp(trend["start"]), _stamp(trend["end"])})
    index = {value: i for i, value in enumerate(stamps)}
    series = []
    for group in trend["series"]:
        values: list[float | None] = [None] * len(stamps)
        for point in group["points"]:
            values[index[_stamp(point["bucket"])]] = point["value"]
        series.append({"label": group["group"] or "all", "values": values})
    series.append({"label": f"alert threshold ({threshold:.0%})",
                   "values": [threshold] * len(stamps), "threshold": True})
    return {"x": stamps, "series": series, "y_max": 1}


def weight_charts(weights: dict[str, Any]) -> list[dict[str, Any]]:
    charts = []
    for segment in weights["segments"]:
        versions = list(reversed(segment["history"]))
        factors = sorted(segment["current"]["weights"])
        series = []
        for factor in factors:
            series.append({"label": factor,
                           "values": [v["weights"].get(factor) for v in versions]})
            series.append({"label": f"{factor} low", "band": True,
                           "values": [(v["intervals"].get(factor) or [None])[0] for v in versions]})
            series.append({"label": f"{factor} high", "band": True,
                           "values": [(v["intervals"].get(factor) or [None, None])[1]
                                      for v in versions]})
        charts.append({"segment": segment["segment"], "x": [v["version"] for v in versions],
                       "series": series, "versions": True})
    return charts


def curve_charts(results: dict[str, Any], alpha: float) -> list[dict[str, Any]]:
    """Per metric and variant: the effect with its always-valid interval as bands and zero as
    the line to cross; and the always-valid p-value against alpha."""
    charts = []
    for metric in results["metrics"]:
        for variant in metric["variants"][1:]:
            curve = variant["curve"]
            if not curve:
                continue
            x = [_stamp(point["bucket"]) for point in curve]
            charts.append({
                "metric": metric["metric"], "variant": variant["variant"],
                "effect": {"x": x, "series": [
                    {"label": f"{variant['variant']} - control", "values": [p["effect"] for p in curve]},
                    {"label": "interval low", "band": True, "values": [p["lower"] for p in curve]},
                    {"label": "interval high", "band": True, "values": [p["upper"] for p in curve]},
                    {"label": "no difference", "threshold": True, "values": [0 for _ in curve]},
                ]},
                "p_value": {"x": x, "y_max": 1, "series": [
                    {"label": "always-valid p-value", "values": [p["p_value"] for p in curve]},
                    {"label": "alpha", "threshold": True,
                     "values": [alpha for _ in curve]},
                ]},
            })
    return charts
