"""Is this run worse than its baseline? Decided where the noise lives: between runs, not between requests.

Thousands of requests of one run are not thousands of independent samples of the machine: its CPU
frequency, its neighbours, its caches and the server's own timers drift from one run to the next, and a
per-request test calls every such drift "significant" (measured: 3 of 5 unchanged reruns flagged, +16 to
+50 % at p < 1e-5). So each run is reduced to one figure per metric (median latency, throughput, mean
recall), and the question is whether the new run's figure lies outside what the baseline's runs predict.

A metric regresses only when both hold:

1. It moved the wrong way by more than a floor: ``min_change`` (relative, default 10 %) and ``min_abs``
   (absolute, for figures so small that timer jitter dominates: ITL and TPOT 0.2 ms, TTFT 1 ms, E2E 2 ms).
2. A one-sided t-test on run-level figures says the move is beyond the baseline's spread: with two or
   more baseline runs, their run-to-run spread (``t = diff / (s * sqrt(1/n + 1/m))``, n - 1 degrees of
   freedom); with one baseline run, the spread of both runs' ten time windows (a block bootstrap's
   blocks), which sees drift within a run but not between runs: such a gate says so.

``alpha`` (default 0.01) is the chance that an unchanged case fails, whatever number of metrics it has:
each of its k metrics is tested at ``alpha / k`` (Bonferroni). Testing each at ``alpha`` made one case
six chances to cry wolf; measured on the main job, 3 of 20 unchanged reruns failed that way, 0 of 20 with
the split.

Improvements are decided the same way and reported, never failed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .columns import Records

LOWER_IS_BETTER = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")
HIGHER_IS_BETTER = ("requests_per_s", "output_tokens_per_s", "recall")
# A relative drop that matters for each metric when the recipe names none: recall near 1 moves little.
DEFAULT_MIN_CHANGE = {"recall": 0.01}
# Absolute floors: below them a change is timer jitter, whatever its relative size (measured here:
# ITL 0.47 -> 0.52 ms between unchanged runs).
DEFAULT_MIN_ABS = {"itl_ms": 0.2, "tpot_ms": 0.2, "ttft_ms": 1.0, "e2e_ms": 2.0}
WINDOWS = 10
MIN_WINDOW_SAMPLES = 3


@dataclass(frozen=True)
class RunFigures:
    """One run of a case as the gate sees it: one figure per metric, and the same per tenth of the run."""

    figures: dict[str, float]
    windows: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunFigures:
        return cls(dict(data.get("figures", {})), {k: list(v) for k, v in data.get("windows", {}).items()})


def run_figures(summary: Mapping[str, Any], measured: Records, start: float, end: float) -> RunFigures:
    """A run's figures from its summary (the published ones) and its time windows from its records;
    ``start``/``end``: the measurement window (the records' clock)."""
    figures: dict[str, float] = {}
    for m in LOWER_IS_BETTER:
        if (v := summary["metrics"].get(m, {}).get("p50")) is not None:
            figures[m] = float(v)
    t = summary["throughput"]
    if summary["requests"]["ok"]:
        figures |= {m: float(t[m]) for m in ("requests_per_s", "output_tokens_per_s")}
    if (summary.get("recall") or {}).get("mean") is not None:
        figures["recall"] = float(summary["recall"]["mean"])
    return RunFigures(figures, _windows(measured.take(measured.ok), start, end))


def _windows(ok: Records, start: float, end: float) -> dict[str, list[float]]:
    span = (end - start) / WINDOWS
    if span <= 0 or not len(ok):
        return {}
    out: dict[str, list[float]] = {m: [] for m in (*LOWER_IS_BETTER, *HIGHER_IS_BETTER)}
    which = np.floor((ok.at("intended") - start) / span)
    for i in range(WINDOWS):
        bucket = ok.take(which == i)
        if len(bucket) < MIN_WINDOW_SAMPLES:
            continue
        values = bucket.values()
        for m in ("ttft_ms", "tpot_ms", "e2e_ms"):
            got = values.series(m)
            got = got[np.isfinite(got)]
            if len(got) >= MIN_WINDOW_SAMPLES:
                out[m].append(float(np.median(got)))
        if len(values.itl_ms):
            out["itl_ms"].append(float(np.median(values.itl_ms)))
        out["requests_per_s"].append(len(bucket) / span)
        out["output_tokens_per_s"].append(float(np.clip(bucket["output_tokens"], 0, None).sum()) / span)
        recalls = bucket["recall"][~np.isnan(bucket["recall"])]
        if len(recalls):
            out["recall"].append(float(np.mean(recalls)))
    return {m: v for m, v in out.items() if v}


@dataclass(frozen=True)
class Comparison:
    metric: str
    baseline: float | None  # mean of the baseline runs' figures
    current: float | None
    change: float | None  # relative, signed: (current - baseline) / baseline
    p_value: float | None  # one-sided, in the direction it moved
    verdict: str  # regression | improvement | unchanged | insufficient
    samples: tuple[int, int]  # runs (or, with one baseline run, windows) on each side
    spread: float | None = None  # the spread the change was judged against (the metric's unit)
    basis: str = ""  # which spread: "3 baseline runs" or "time windows of one baseline run"
    threshold: float | None = None  # the p-value below which it would count: alpha / metrics compared

    def describe(self) -> str:
        if self.verdict == "insufficient":
            return f"{self.metric}: too few samples to compare ({self.samples[0]} vs {self.samples[1]})"
        return (
            f"{self.metric}: {self.baseline:.4g} -> {self.current:.4g} ({self.change:+.1%}, p={self.p_value:.2g} "
            f"vs {self.threshold or 0:.2g}, spread {self.spread:.3g} from {self.basis}) {self.verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    base: Sequence[RunFigures],
    current: Sequence[RunFigures],
    min_change: float | Mapping[str, float] = 0.10,
    alpha: float = 0.01,
    min_abs: Mapping[str, float] | None = None,
) -> list[Comparison]:
    floors = DEFAULT_MIN_ABS if min_abs is None else min_abs
    tested = [t for m in (*LOWER_IS_BETTER, *HIGHER_IS_BETTER) if (t := _test(m, base, current)) is not None]
    threshold = alpha / max(1, sum(c.verdict != "insufficient" for c in tested))
    out = []
    for c in tested:
        if c.verdict == "insufficient":
            out.append(c)
            continue
        assert c.baseline is not None and c.current is not None and c.p_value is not None
        worse = (c.current - c.baseline) * (1 if c.metric in LOWER_IS_BETTER else -1)  # > 0: the wrong way
        own = min_change if isinstance(min_change, float | int) else min_change.get(c.metric, 0.10)
        floor = max(own * abs(c.baseline), floors.get(c.metric, 0.0))
        significant = c.p_value < threshold
        verdict = (
            "regression"
            if worse > floor and significant
            else "improvement"
            if -worse > floor and significant
            else "unchanged"
        )
        out.append(replace(c, verdict=verdict, threshold=threshold))
    return out


def _test(metric: str, base: Sequence[RunFigures], current: Sequence[RunFigures]) -> Comparison | None:
    """The t-test of one metric, verdict still open ("unchanged"): its p-value is one-sided, in the
    direction the figure moved."""
    from scipy.stats import t as student  # ~0.7 s to import: only when comparing, not in every pytest run

    b = [r.figures[metric] for r in base if math.isfinite(r.figures.get(metric, math.nan))]
    c = [r.figures[metric] for r in current if math.isfinite(r.figures.get(metric, math.nan))]
    if not b and not c:
        return None  # a figure neither run has (TTFT of a database call, recall of a chat)
    if len(b) >= 2 and c:
        spread, n, df = float(np.std(b, ddof=1)), (len(b), len(c)), len(b) - 1
        scale, basis = spread * math.sqrt(1 / len(b) + 1 / len(c)), f"{len(b)} baseline runs"
    else:
        wb = [w for r in base for w in r.windows.get(metric, [])]
        wc = [w for r in current for w in r.windows.get(metric, [])]
        if not b or not c or len(wb) < 3 or len(wc) < 3:
            return Comparison(metric, None, None, None, None, "insufficient", (len(b), len(c)))
        pooled = ((len(wb) - 1) * np.var(wb, ddof=1) + (len(wc) - 1) * np.var(wc, ddof=1)) / (len(wb) + len(wc) - 2)
        spread, n, df = float(math.sqrt(pooled)), (len(wb), len(wc)), len(wb) + len(wc) - 2
        scale, basis = spread * math.sqrt(1 / len(wb) + 1 / len(wc)), "time windows of one baseline run"
    cb, cc = float(np.mean(b)), float(np.mean(c))
    change = (cc - cb) / abs(cb) if cb else (math.inf if cc > cb else 0.0)
    diff = abs(cc - cb)
    stat = diff / scale if scale > 0 else (math.inf if diff > 0 else 0.0)
    return Comparison(metric, cb, cc, change, float(student.sf(stat, df)), "unchanged", n, spread, basis)


def regressions(comparisons: Sequence[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.verdict == "regression"]


def table(comparisons: Sequence[Comparison]) -> str:
    """Baseline vs current, change, p-value, the p-value it would have needed (alpha / metrics compared)
    and the spread judged against: what a failed gate prints."""
    if not comparisons:
        return "no per-request figures to compare (fio reports one figure per job: compare its ops by hand)"
    lines = [
        f"{'metric':<20}{'baseline':>10}{'current':>10}{'change':>9}{'p-value':>9}{'needs <':>9}{'spread':>9}  verdict"
    ]
    for c in comparisons:
        if c.verdict == "insufficient":
            lines.append(
                f"{c.metric:<20}{'-':>10}{'-':>10}{'-':>9}{'-':>9}{'-':>9}{'-':>9}  insufficient samples {c.samples}"
            )
            continue
        assert c.baseline is not None and c.current is not None and c.change is not None and c.p_value is not None
        lines.append(
            f"{c.metric:<20}{c.baseline:>10.4g}{c.current:>10.4g}{c.change:>+9.1%}{c.p_value:>9.2g}"
            f"{c.threshold or 0:>9.2g}{c.spread or 0:>9.3g}  {c.verdict} ({c.basis})"
        )
    return "\n".join(lines)
