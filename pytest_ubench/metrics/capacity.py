"""Capacity across a sweep: throughput and latency against the offered load, and the knee.

The knee is the first point beyond which added load never again adds 10 % throughput (no later point
beats it by that much, so one noisy flat step is not taken for saturation) while latency climbs (the
next point's E2E p50 is > 20 % higher): beyond it the service queues instead of serving. Written
into ``<results>/sweeps/<recipe>.json`` so the answer is data, not something read off a plot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .results import write_json

THROUGHPUT_GAIN = 0.10
LATENCY_CLIMB = 0.20
AXES = ("concurrency", "rate")


def knee(throughput: Sequence[float], latency: Sequence[float | None] | None = None) -> int | None:
    for i in range(len(throughput) - 1):
        flat = throughput[i] > 0 and max(throughput[i + 1 :]) < throughput[i] * (1 + THROUGHPUT_GAIN)
        lat = latency
        climbs = lat is None or (
            lat[i] is not None and lat[i + 1] is not None and lat[i + 1] > lat[i] * (1 + LATENCY_CLIMB)  # type: ignore[operator]
        )
        if flat and climbs:
            return i
    return None


def sweep_axis(results: Sequence[dict[str, Any]]) -> str | None:
    return next((k for k in AXES if all(k in r["load"] for r in results)), None)


def sweep(results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """One recipe's sweep: per point the load, throughput and latency; the knee and its load."""
    axis = sweep_axis(results)
    if axis is None or len(results) < 2:
        return None
    ordered = sorted(results, key=lambda r: r["load"][axis])
    points = [
        {
            "case_id": r["case_id"],
            axis: r["load"][axis],
            "requests_per_s": r["throughput"]["requests_per_s"],
            "output_tokens_per_s": r["throughput"]["output_tokens_per_s"],
            "ttft_p95_ms": r["metrics"]["ttft_ms"]["p95"],
            "e2e_p50_ms": r["metrics"]["e2e_ms"]["p50"],
            "e2e_p95_ms": r["metrics"]["e2e_ms"]["p95"],
            "passed": r["passed"],
        }
        for r in ordered
    ]
    k = knee([p["requests_per_s"] for p in points], [p["e2e_p50_ms"] for p in points])
    return {
        "recipe": ordered[0]["recipe"]["name"],
        "axis": axis,
        "points": points,
        "knee": None
        if k is None
        else {"index": k, axis: points[k][axis], "requests_per_s": points[k]["requests_per_s"]},
        "rule": f"no later point adds {THROUGHPUT_GAIN:.0%} throughput while e2e p50 climbs > {LATENCY_CLIMB:.0%}",
    }


def write_sweeps_under(root: Path) -> list[Path]:
    """The sweep summaries of every case under a results directory."""
    return write_sweeps(root, [json.loads(p.read_text(encoding="utf-8")) for p in sorted(root.glob("*/results.json"))])


def write_sweeps(root: Path, results: Sequence[dict[str, Any]]) -> list[Path]:
    """``sweeps/<recipe>.json`` for every recipe with two or more points on one axis."""
    by_recipe: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_recipe.setdefault(r["recipe"]["name"], []).append(r)
    written = []
    for name, group in by_recipe.items():
        summary = sweep(group)
        if summary is not None:
            path = root / "sweeps" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, summary)
            written.append(path)
    return written
