from __future__ import annotations

import math
import random

import numpy as np
import pytest

from pytest_ubench.metrics import stats
from pytest_ubench.metrics.columns import Records
from pytest_ubench.metrics.records import Record


def reference_percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, written out independently of numpy."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 10001])
def test_percentiles_match_reference_and_numpy(n):
    rng = random.Random(n)
    values = [rng.lognormvariate(3, 1) for _ in range(n)]
    s = stats.summarize(values)
    for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p99_9", 99.9)):
        assert s[name] == pytest.approx(reference_percentile(values, q), rel=1e-12)
        assert s[name] == pytest.approx(float(np.percentile(values, q)), rel=1e-12)
    assert s["count"] == n
    assert s["mean"] == pytest.approx(sum(values) / n)
    assert (s["min"], s["max"]) == (min(values), max(values))


def test_empty_series_has_no_figures():
    s = stats.summarize([])
    assert s["count"] == 0 and s["p50"] is None and s["max"] is None


def make(intended: float, ttft: float, gaps: list[float], tokens: int | None, error: str | None = None) -> Record:
    r = Record(intended)
    r.start = intended + 0.001
    t = intended + ttft
    r.chunks = [t]
    for g in gaps:
        t += g
        r.chunks.append(t)
    r.first = r.chunks[0]
    r.end = t + 0.002
    r.output_tokens = tokens
    r.error = error
    return r


def test_request_values_follow_the_documented_formulas():
    r = make(10.0, 0.050, [0.010, 0.020, 0.030], tokens=4)
    v = Records.of([r], 10.0).values()
    assert v.ttft_ms[0] == pytest.approx(50.0)
    assert list(v.itl_ms) == pytest.approx([10.0, 20.0, 30.0])
    assert v.e2e_ms[0] == pytest.approx(112.0)
    assert v.tpot_ms[0] == pytest.approx((112.0 - 50.0) / 3)
    assert v.send_lag_ms[0] == pytest.approx(1.0)


def test_summary_throughput_error_rate_and_goodput():
    ok_fast = [make(i * 0.1, 0.010, [0.001] * 9, tokens=10) for i in range(6)]
    ok_slow = [make(i * 0.1, 0.300, [0.001] * 9, tokens=10) for i in range(2)]
    failed = [make(0.5, 0.010, [], tokens=None, error="http_503") for _ in range(2)]
    records = ok_fast + ok_slow + failed
    s = stats.summary(Records.of(records), window_start=0.0, window_end=2.0, bounds=[("ttft_ms", 100.0)])
    assert s["requests"]["total"] == 10 and s["requests"]["ok"] == 8 and s["requests"]["failed"] == 2
    assert s["requests"]["error_rate"] == pytest.approx(0.2)
    assert s["requests"]["errors"] == {"http_503": 2}
    assert s["throughput"]["elapsed_s"] == pytest.approx(2.0)
    assert s["throughput"]["requests_per_s"] == pytest.approx(8 / 2.0)
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx(80 / 2.0)
    # Goodput: only the 6 fast successes met the bound; failures count against it.
    assert s["throughput"]["goodput_requests_per_s"] == pytest.approx(6 / 2.0)
    assert s["metrics"]["ttft_ms"]["count"] == 8  # figures are over successful requests
    assert s["failed_metrics"]["e2e_ms"]["count"] == 2  # ... and kept for failures too


def test_elapsed_extends_to_the_last_completion():
    late = make(1.9, 0.5, [], tokens=1)
    s = stats.summary(Records.of([late]), window_start=0.0, window_end=2.0)
    assert s["throughput"]["elapsed_s"] == pytest.approx(late.end)
