"""Is this run worse than its baseline? Decided with statistics, not one ratio.

A metric regresses only when both hold: its centre moved the wrong way by at least ``min_change``
(relative, default 10 %), AND a one-sided Mann-Whitney U test on the raw samples says the shift is
unlikely to be noise (p < ``alpha``, default 0.01). Either alone is not enough: a 30 % jump on five
samples is not evidence, and with thousands of samples a 1 % shift is "significant" yet irrelevant.
Improvements are decided the same way and reported, never failed.

Samples: per request for latencies (TTFT, TPOT, E2E, and ITL as each request's mean gap: the gaps
inside one stream are not independent) and for recall@k (vector queries), per second of the measurement
window for throughput. A run without per-request records (fio) has no samples: "insufficient", never a
comparison of zeros.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .records import Record
from .stats import request_values

LOWER_IS_BETTER = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")
HIGHER_IS_BETTER = ("requests_per_s", "output_tokens_per_s", "recall")
# A relative drop that matters for each metric when the recipe names none: recall near 1 moves little.
DEFAULT_MIN_CHANGE = {"recall": 0.01}
MIN_SAMPLES = 8


@dataclass(frozen=True)
class Comparison:
    metric: str
    baseline: float | None  # median of the samples (latency), mean per second (throughput)
    current: float | None
    change: float | None  # relative, signed: (current - baseline) / baseline
    p_value: float | None
    verdict: str  # regression | improvement | unchanged | insufficient
    samples: tuple[int, int]

    def describe(self) -> str:
        if self.verdict == "insufficient":
            return f"{self.metric}: too few samples to compare ({self.samples[0]} vs {self.samples[1]})"
        return (
            f"{self.metric}: {self.baseline:.4g} -> {self.current:.4g} ({self.change:+.1%}, p={self.p_value:.2g}) "
            f"{self.verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def samples(records: Sequence[Record], elapsed_s: float) -> dict[str, np.ndarray]:
    """The raw samples of a run's measured records, per metric."""
    measured = [r for r in records if not r.warmup and r.ok]
    per_request: dict[str, list[float]] = {m: [] for m in LOWER_IS_BETTER}
    for rec in measured:
        v = request_values(rec)
        for m in ("ttft_ms", "tpot_ms", "e2e_ms"):
            if v[m] is not None and math.isfinite(v[m]):
                per_request[m].append(v[m])
        if v["itl_ms"]:
            per_request["itl_ms"].append(float(np.mean(v["itl_ms"])))
    out = {m: np.asarray(vals, dtype=float) for m, vals in per_request.items()}
    out["recall"] = np.asarray([r.recall for r in measured if not math.isnan(r.recall)], dtype=float)
    if not measured:
        return out | {"requests_per_s": np.empty(0), "output_tokens_per_s": np.empty(0)}
    # Throughput per whole second of the window, counting completions by their end time.
    start = min((r.start for r in measured if math.isfinite(r.start)), default=0.0)
    seconds = max(int(elapsed_s), 1)
    ends = np.asarray([r.end - start for r in measured])
    tokens = np.asarray([r.output_tokens or 0 for r in measured], dtype=float)
    edges = np.arange(seconds + 1, dtype=float)
    out["requests_per_s"] = np.histogram(ends, bins=edges)[0].astype(float)
    out["output_tokens_per_s"] = np.histogram(ends, bins=edges, weights=tokens)[0]
    return out


def compare(
    baseline: Mapping[str, np.ndarray],
    current: Mapping[str, np.ndarray],
    min_change: float | Mapping[str, float] = 0.10,
    alpha: float = 0.01,
) -> list[Comparison]:
    from scipy.stats import mannwhitneyu  # ~0.7 s to import: only when comparing, not in every pytest run

    out = []
    for metric in (*LOWER_IS_BETTER, *HIGHER_IS_BETTER):
        b, c = baseline.get(metric, np.empty(0)), current.get(metric, np.empty(0))
        if len(b) == 0 and len(c) == 0:
            continue  # a figure neither run has (TTFT of a database call, recall of a chat)
        if len(b) < MIN_SAMPLES or len(c) < MIN_SAMPLES:
            out.append(Comparison(metric, None, None, None, None, "insufficient", (len(b), len(c))))
            continue
        lower_better = metric in LOWER_IS_BETTER
        centre = np.median if lower_better else np.mean
        bc, cc = float(centre(b)), float(centre(c))
        change = (cc - bc) / bc if bc else (math.inf if cc > 0 else 0.0)
        threshold = min_change if isinstance(min_change, float | int) else min_change.get(metric, 0.10)
        worse = change >= threshold if lower_better else change <= -threshold
        better = change <= -threshold if lower_better else change >= threshold
        if worse or better:
            went_up = change > 0
            p = float(mannwhitneyu(c, b, alternative="greater" if went_up else "less").pvalue)
            verdict = ("regression" if worse else "improvement") if p < alpha else "unchanged"
        else:
            p = float(mannwhitneyu(c, b, alternative="two-sided").pvalue)
            verdict = "unchanged"
        out.append(Comparison(metric, bc, cc, change, p, verdict, (len(b), len(c))))
    return out


def regressions(comparisons: Sequence[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.verdict == "regression"]


def table(comparisons: Sequence[Comparison]) -> str:
    """Baseline vs current, change and p-value: what a failed gate prints."""
    if not comparisons:
        return "no per-request figures to compare (fio reports one figure per job: compare its ops by hand)"
    lines = [f"{'metric':<22}{'baseline':>12}{'current':>12}{'change':>10}{'p-value':>10}  verdict"]
    for c in comparisons:
        if c.verdict == "insufficient":
            lines.append(f"{c.metric:<22}{'-':>12}{'-':>12}{'-':>10}{'-':>10}  insufficient samples {c.samples}")
            continue
        assert c.baseline is not None and c.current is not None and c.change is not None and c.p_value is not None
        lines.append(
            f"{c.metric:<22}{c.baseline:>12.4g}{c.current:>12.4g}{c.change:>+10.1%}{c.p_value:>10.2g}  {c.verdict}"
        )
    return "\n".join(lines)
