"""Capacity across a sweep: throughput and latency against the offered load, and the knee.

The knee is the first point beyond which added load never again adds 10 % throughput (no later point
beats it by that much, so one noisy flat step is not taken for saturation) while latency climbs (the
next point's E2E p50 is > 20 % higher): beyond it the service queues instead of serving. Written
into ``<results>/sweeps/<recipe>.json`` so the answer is data, not something read off a plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import write_json
from .results import ResultsDir

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
    """One recipe's sweep: per point the load, throughput and latency; the knee and its load. None
    when the load is not the only thing swept (a vector search parameter too: see ``tradeoff``)."""
    axis = sweep_axis(results)
    if axis is None or len(results) < 2 or len({r["load"][axis] for r in results}) < len(results):
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


def tradeoff(results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Recall against throughput over a recipe's points (vector search parameters, load): every point,
    and the Pareto front (no other point has both more recall and more queries per second)."""
    scored = [r for r in results if r.get("recall") and r["recall"].get("mean") is not None]
    if len(scored) < 2:
        return None
    swept = sorted({k for r in scored for k in r["load"] if k not in ("mode", "warmup_requests")})
    points = [
        {"case_id": r["case_id"], **{k: r["load"].get(k) for k in swept}, "recall": r["recall"]["mean"],
         "recall_min": r["recall"]["min"], "queries_per_s": r["throughput"]["requests_per_s"],
         "e2e_p95_ms": r["metrics"]["e2e_ms"]["p95"], "passed": r["passed"]}
        for r in scored
    ]  # fmt: skip
    points.sort(key=lambda p: (p["recall"], p["queries_per_s"]))
    front = [
        p["case_id"]
        for p in points
        if not any(
            q is not p and q["recall"] >= p["recall"] and q["queries_per_s"] >= p["queries_per_s"]
            and (q["recall"] > p["recall"] or q["queries_per_s"] > p["queries_per_s"])
            for q in points
        )
    ]  # fmt: skip
    return {"recipe": scored[0]["recipe"]["name"], "axes": swept, "points": points, "pareto": front}


def scaling(results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Over a replica sweep: at each point of the other axes, throughput, latency, speedup and efficiency
    per replica count (each case's ``scaling`` part, against the smallest count's)."""
    scaled = sorted((r for r in results if r.get("scaling")), key=lambda r: r["scaling"]["replicas"])
    if len({r["scaling"]["replicas"] for r in scaled}) < 2:
        return None
    points = [
        {"case_id": r["case_id"], **{k: r["scaling"][k] for k in ("replicas", "reference_case", "throughput",
                                                                  "speedup", "efficiency")},
         "ttft_p50_ms": r["metrics"]["ttft_ms"]["p50"],
         "e2e_p50_ms": r["metrics"]["e2e_ms"]["p50"], "e2e_p99_ms": r["metrics"]["e2e_ms"]["p99"],
         "lost": (r.get("replicas") or {}).get("lost", 0), "passed": r["passed"]}
        for r in scaled
    ]  # fmt: skip
    return {"recipe": scaled[0]["recipe"]["name"], "of": scaled[0]["scaling"]["of"], "points": points,
            "rule": "efficiency = throughput(N) / (N / N0 * throughput(N0)), N0 the smallest count"}  # fmt: skip


def describe_scaling(s: dict[str, Any]) -> str:
    """One line: each count's efficiency and throughput."""
    unit = "tok/s" if s["of"] == "output_tokens_per_s" else "req/s"
    shown = ", ".join(
        f"x{p['replicas']} {p['throughput']:.0f} {unit} (efficiency {p['efficiency']:.2f})"
        if p["efficiency"] is not None
        else f"x{p['replicas']} no throughput"
        for p in s["points"]
    )
    return f"replica scaling: {shown}"


@dataclass(frozen=True)
class Summary:
    """A recipe's sweep summary as written: the knee over a load axis, or recall against throughput."""

    path: Path
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        return "recall" if "pareto" in self.data else "scale" if "of" in self.data else "sweep"

    def describe(self) -> str:
        if "pareto" in self.data:
            return f"{self.data['recipe']}: {describe_tradeoff(self.data)}"
        if self.kind == "scale":
            return f"{self.data['recipe']}: {describe_scaling(self.data)}"
        knee, axis = self.data["knee"], self.data["axis"]
        return f"{self.data['recipe']}: " + (f"knee at {axis} = {knee[axis]:g}" if knee else "no knee within the sweep")


def summaries(root: Path, results: Sequence[dict[str, Any]]) -> list[Summary]:
    """``sweeps/<recipe>.json`` (and ``<recipe>-recall.json``, ``<recipe>-scaling.json``) for every recipe
    with two or more points."""
    by_recipe: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_recipe.setdefault(r["recipe"]["name"], []).append(r)
    written = []
    sweeps = ResultsDir(root).sweeps_dir
    for name, group in by_recipe.items():
        for summary, path in (
            (sweep(group), sweeps / f"{name}.json"),
            (tradeoff(group), sweeps / f"{name}-recall.json"),
            (scaling(group), sweeps / f"{name}-scaling.json"),
        ):
            if summary is not None:
                write_json(path, summary)
                written.append(Summary(path, summary))
    return written


def write_sweeps(root: Path, results: Sequence[dict[str, Any]]) -> list[Path]:
    """Where ``summaries`` wrote them."""
    return [s.path for s in summaries(root, results)]


def describe_tradeoff(t: dict[str, Any]) -> str:
    """One line: recall and queries/s of each point on the Pareto front."""
    front = [p for p in t["points"] if p["case_id"] in t["pareto"]]
    shown = "; ".join(f"{p['case_id']}: recall {p['recall']:.3f} at {p['queries_per_s']:.0f} q/s" for p in front)
    return f"recall vs throughput, Pareto front of {len(t['points'])} points: {shown}"
