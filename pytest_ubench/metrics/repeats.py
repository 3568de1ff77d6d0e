"""Repeated runs of one point: mean, 95 % confidence interval (Student's t) and coefficient of
variation for every figure, so a result says how far it can be trusted.

CV bands follow AIPerf's guidance: below 5 % excellent, above 20 % unstable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .names import LATENCY_METRICS, PERCENTILES, THROUGHPUT

FIGURES = [f"metrics.{m}.{s}" for m in LATENCY_METRICS for s in ("mean", *PERCENTILES)]
FIGURES += [f"throughput.{t}" for t in THROUGHPUT] + ["requests.error_rate"]


def quality(cv: float | None) -> str:
    if cv is None:
        return "n/a"
    return "excellent" if cv < 0.05 else "good" if cv < 0.10 else "fair" if cv <= 0.20 else "unstable"


def confidence(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None, "cv": None, "quality": "n/a"}
    mean = float(arr.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "ci_low": None, "ci_high": None, "cv": None, "quality": "n/a"}
    from scipy import stats  # heavy import, only when runs are repeated

    sd = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    cv = sd / abs(mean) if mean else None
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "cv": cv, "quality": quality(cv)}


def _get(result: dict[str, Any], path: str) -> Any:
    obj: Any = result
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def across(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every figure's spread over the repeats (figures missing from every repeat are left out)."""
    out = {}
    for path in FIGURES:
        values = [_get(r, path) for r in results]
        if any(isinstance(v, int | float) for v in values):
            out[path] = confidence([v for v in values if isinstance(v, int | float)])
    return out
