"""Steady state found from the data, not picked by eye: MSER-5 truncation of the per-second series.

MSER (White, 1997) chooses the warm-up cut ``d`` that minimises the squared standard error of the
mean of what is left, ``sum((y[d:] - mean(y[d:]))**2) / (n - d)**2``; MSER-5 applies it to means of
batches of 5 observations, which smooths noise (Franklin & White). A cut beyond half the series means
the run never settled within its length: flagged, not hidden. Throughput (completions per second)
and latency (mean end-to-end per second of sending) are cut separately and the later cut wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .columns import Records

BATCH = 5
MIN_BATCHES = 10  # fewer batches than this and MSER runs on single observations (MSER-1)


def mser(series: Sequence[float] | np.ndarray, batch: int = BATCH) -> tuple[int, bool | None]:
    """The truncation point (in observations) and whether the series settled (cut within its first
    half); None when it is too short to tell (fewer than 10 observations)."""
    y = np.asarray(series, dtype=np.float64)
    y = y[np.isfinite(y)] if not np.all(np.isfinite(y)) else y
    if len(y) < MIN_BATCHES:
        return 0, None
    if len(y) < batch * MIN_BATCHES:
        batch = 1
    n = len(y) // batch
    b = y[: n * batch].reshape(n, batch).mean(axis=1)
    # Computed directly per cut (not from running sums, whose cancellation turns ties into noise):
    # a few thousand batches at most, so the quadratic cost is milliseconds.
    stat = np.array([np.var(b[d:]) / (n - d) for d in range(n)])
    last = max(1, n - 4)  # keep at least 5 batches after the cut
    cand = stat[:last]
    d = int(np.flatnonzero(cand <= cand.min() * (1 + 1e-9) + 1e-9)[0])  # the first of equal minima
    return d * batch, d <= n // 2


def per_second(records: Records, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """Completions per second, and mean end-to-end latency (ms) of the requests sent in each second."""
    bins = max(1, math.floor(end - start))
    ok = records.take(records.ok & ~np.isnan(records["end"]))
    at_end = np.floor(ok.at("end") - start).astype(np.int64)
    sent = np.floor(ok.at("intended") - start).astype(np.int64)
    inside = (at_end >= 0) & (at_end < bins)
    done = np.bincount(at_end[inside], minlength=bins).astype(np.float64)
    inside = (sent >= 0) & (sent < bins)
    latency_s = (ok["end"] - ok["intended"])[inside]
    lat_sum = np.bincount(sent[inside], weights=latency_s, minlength=bins)
    lat_n = np.bincount(sent[inside], minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        latency = np.where(lat_n > 0, lat_sum / lat_n * 1000.0, np.nan)
    return done, latency


def window(records: Records, start: float, end: float) -> dict[str, Any]:
    """Where the run became stable: ``start_s``/``end_s`` relative to the load window's start."""
    throughput, latency = per_second(records, start, end)
    cut_t, ok_t = mser(throughput)
    cut_l, ok_l = mser(latency)
    cut = max(cut_t, cut_l)
    stable = None if ok_t is None or ok_l is None else ok_t and ok_l
    out: dict[str, Any] = {
        "method": "MSER-5",
        "start_s": float(cut),
        "end_s": float(len(throughput)),
        "stable": stable,
        "cut_s": {"throughput": float(cut_t), "latency": float(cut_l)},
    }
    if stable is None:
        out["note"] = f"too short to tell: {MIN_BATCHES} or more seconds with completions are needed"
    return out
